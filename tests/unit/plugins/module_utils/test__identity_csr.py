"""The device-side key and CSR with the real openssl command: modes, owners, idempotence, check mode, bad input."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from ansible_collections.edgefleet.iotedge.plugins.module_utils._identity_csr import (
    CsrError,
    CsrRequest,
    ensure_identity_csr,
    move_key,
)
from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki import csr_problem, key_type_of


def run(argv):
    completed = subprocess.run(argv, capture_output=True, text=True, check=False)
    return completed.returncode, completed.stdout, completed.stderr


def ensure(tmp_path, **overrides):
    values = {"registration_id": "gw-01", "key_path": str(tmp_path / "var/aziot/secrets/device-id.key.pem")}
    values.update(overrides)
    return ensure_identity_csr(CsrRequest(**values), run)


def public_der(key_path):
    key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
    return key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.mark.parametrize("key_type", ["ec-p256", "ec-p384", "rsa-2048"])
def test_a_new_key_and_a_csr_the_controller_accepts(tmp_path, key_type):
    result = ensure(tmp_path, key_type=key_type)
    key_path = tmp_path / "var/aziot/secrets/device-id.key.pem"
    assert result["changed"] and result["key_created"] and result["key_type"] == key_type
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(key_path.parent).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(key_path.parent.parent).st_mode) == 0o755
    public_key, problem = csr_problem(result["csr"], registration_id="gw-01", key_type=key_type)
    assert problem is None and key_type_of(public_key) == key_type
    csr = x509.load_pem_x509_csr(result["csr"].encode())
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "gw-01"
    assert csr.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == public_der(key_path)
    assert "PRIVATE KEY" not in str(result)
    # Nothing but the key is left in the directory (the temporary file was renamed).
    assert os.listdir(key_path.parent) == ["device-id.key.pem"]


def test_a_second_run_keeps_the_key_and_changes_nothing(tmp_path):
    first = ensure(tmp_path)
    key_path = tmp_path / "var/aziot/secrets/device-id.key.pem"
    content = key_path.read_bytes()
    second = ensure(tmp_path)
    assert second["changed"] is False and second["actions"] == [] and second["key_created"] is False
    assert key_path.read_bytes() == content
    assert second["public_key_sha256"] == first["public_key_sha256"]


def test_the_owner_gets_the_key_when_it_exists_and_root_until_then(tmp_path):
    ensure(tmp_path, owner="nobody")
    key_path = tmp_path / "var/aziot/secrets/device-id.key.pem"
    assert os.stat(key_path).st_uid == 65534 and os.stat(key_path.parent).st_uid == 65534
    ensure(tmp_path, key_path=str(tmp_path / "other/key.pem"), owner="aziotks-not-installed")
    assert os.stat(tmp_path / "other/key.pem").st_uid == 0


def test_a_loose_mode_is_tightened_and_a_key_of_another_type_is_kept(tmp_path):
    ensure(tmp_path, key_type="ec-p384")
    key_path = tmp_path / "var/aziot/secrets/device-id.key.pem"
    os.chmod(key_path, 0o644)
    content = key_path.read_bytes()
    result = ensure(tmp_path, key_type="ec-p256")
    assert result["changed"] and result["actions"] == [f"set {key_path} to mode 0600"]
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
    assert key_path.read_bytes() == content and result["key_type"] == "ec-p384"


def test_check_mode_predicts_the_key_and_writes_nothing(tmp_path):
    result = ensure_identity_csr(CsrRequest("gw-01", str(tmp_path / "secrets/key.pem"), check_mode=True), run)
    assert result["changed"] and result["key_created"] and result["csr"] is None
    assert not (tmp_path / "secrets").exists()


def test_an_unreadable_key_names_the_file_and_is_left_alone(tmp_path):
    key_path = tmp_path / "key.pem"
    key_path.write_text("garbage\n")
    key_path.chmod(0o600)
    with pytest.raises(CsrError, match=f"key_path: openssl cannot read {key_path} as a private key"):
        ensure(tmp_path, key_path=str(key_path))
    assert key_path.read_text() == "garbage\n"


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"registration_id": "gw/01"}, "registration_id: "),
        ({"registration_id": "GW-01"}, "registration_id: "),
        ({"registration_id": "gw-01\n"}, "registration_id: "),
        ({"key_type": "dsa"}, "key_type: 'dsa' is not supported"),
        ({"key_path": "relative/key.pem"}, "must be an absolute, normalised path"),
    ],
)
def test_bad_input_fails_before_anything_is_made(tmp_path, overrides, message):
    with pytest.raises(CsrError, match=message):
        ensure(tmp_path, **overrides)
    assert not (tmp_path / "var").exists()


# ---- the next key (edgefleet_identity_rotate_key) and the rotation's moves -----------------------------------------


def key_paths(tmp_path) -> tuple:
    current = tmp_path / "var/aziot/secrets/device-id.key.pem"
    return current, Path(f"{current}.next"), Path(f"{current}.previous")


def sha256_of(key_path) -> str:
    return hashlib.sha256(public_der(key_path)).hexdigest()


def move(tmp_path, activate=None, check_mode=False):
    request = CsrRequest(registration_id="gw-01", key_path=str(key_paths(tmp_path)[0]), check_mode=check_mode)
    return move_key(request, activate, run)


def test_a_next_key_beside_the_current_one_with_its_own_csr_made_once(tmp_path):
    first = ensure(tmp_path, next_key=True)
    current, upcoming, _previous = key_paths(tmp_path)
    assert first["changed"] and first["next_key_path"] == str(upcoming)
    assert stat.S_IMODE(os.stat(upcoming).st_mode) == 0o600
    assert first["next_public_key_sha256"] == sha256_of(upcoming) != first["public_key_sha256"] == sha256_of(current)
    public_key, problem = csr_problem(first["next_csr"], registration_id="gw-01", key_type="ec-p256")
    assert problem is None
    assert public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == public_der(upcoming)
    second = ensure(tmp_path, next_key=True)
    assert second["changed"] is False and second["next_public_key_sha256"] == first["next_public_key_sha256"]
    # Without next_key nothing is said of it, and it is left alone.
    plain = ensure(tmp_path)
    assert plain["next_csr"] is None and upcoming.exists()


def test_check_mode_predicts_the_next_key_without_a_csr(tmp_path):
    ensure(tmp_path)
    predicted = ensure(tmp_path, next_key=True, check_mode=True)
    assert predicted["changed"] and predicted["next_csr"] is None
    assert not key_paths(tmp_path)[1].exists()


def test_activating_the_next_key_keeps_the_current_one_as_previous_and_a_rollback_swaps_back(tmp_path):
    ensure(tmp_path, next_key=True)
    current, upcoming, previous = key_paths(tmp_path)
    old, new = sha256_of(current), sha256_of(upcoming)
    predicted = move(tmp_path, activate=new, check_mode=True)
    assert predicted["changed"] and sha256_of(current) == old and upcoming.exists()

    done = move(tmp_path, activate=new)
    assert done["changed"] and sha256_of(current) == new and sha256_of(previous) == old and not upcoming.exists()
    assert move(tmp_path, activate=new)["changed"] is False
    assert stat.S_IMODE(os.stat(current).st_mode) == 0o600

    # A rollback: the old key is current again, the new one waits as next for the next attempt.
    back = move(tmp_path, activate=old.upper())
    assert back["changed"] and sha256_of(current) == old and sha256_of(upcoming) == new and not previous.exists()


def test_removing_the_previous_key_after_a_completed_rotation(tmp_path):
    ensure(tmp_path, next_key=True)
    current, upcoming, previous = key_paths(tmp_path)
    move(tmp_path, activate=sha256_of(upcoming))
    assert move(tmp_path, check_mode=True)["changed"] and previous.exists()
    assert move(tmp_path)["actions"] == [f"remove {previous}"] and not previous.exists()
    assert move(tmp_path)["changed"] is False and current.exists()


def test_activating_a_key_the_host_does_not_hold_names_the_keys_it_found(tmp_path):
    ensure(tmp_path)
    with pytest.raises(CsrError, match=r"no key on the host has the public key abababababababab\.\.\. .*current "):
        move(tmp_path, activate="ab" * 32)
    with pytest.raises(CsrError, match="64 hex digits"):
        move(tmp_path, activate="not-a-hash")


def test_a_symlink_in_place_of_the_key_is_refused(tmp_path):
    (tmp_path / "elsewhere").write_text("x")
    (tmp_path / "key.pem").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(CsrError, match="exists and is not a regular file"):
        ensure(tmp_path, key_path=str(tmp_path / "key.pem"))


# ---- a key inside a PKCS#11 token (SoftHSM, p11tool and certtool, as a user that is not root) -----------------------

SOFTHSM = Path("/usr/lib/softhsm/libsofthsm2.so")
needs_softhsm = pytest.mark.skipif(
    not SOFTHSM.exists() or shutil.which("p11tool") is None or os.geteuid() != 0,
    reason="needs softhsm2 and gnutls-bin (make setup installs them), as root",
)
KEY_URI = "pkcs11:token=edge;object=device-id?pin-value=1234"


@pytest.fixture
def softhsm(tmp_path, monkeypatch):
    """A SoftHSM token directory of its own, owned by nobody (the tests' stand-in for aziotks)."""
    store = Path(tempfile.mkdtemp(prefix="edgefleet-softhsm-", dir="/var/tmp"))
    os.chmod(store, 0o755)
    (store / "tokens").mkdir()
    os.chown(store / "tokens", 65534, 65534)
    (store / "softhsm2.conf").write_text(f"directories.tokendir = {store / 'tokens'}\nobjectstore.backend = file\n")
    os.chmod(store / "softhsm2.conf", 0o644)
    monkeypatch.setenv("SOFTHSM2_CONF", str(store / "softhsm2.conf"))
    yield store
    shutil.rmtree(store)


def run_with_environment(argv, environ_update=None):
    completed = subprocess.run(
        argv, capture_output=True, text=True, check=False, env={**os.environ, **(environ_update or {})}
    )
    return completed.returncode, completed.stdout, completed.stderr


def ensure_in_token(**overrides):
    values = {
        "registration_id": "gw-01",
        "key_path": "",
        "key_store": "pkcs11",
        "owner": "nobody",
        "pkcs11_lib_path": str(SOFTHSM),
        "pkcs11_key_uri": KEY_URI,
        "pkcs11_init_token": True,
        "pkcs11_so_pin": "5678",
    }
    values.update(overrides)
    return ensure_identity_csr(CsrRequest(**values), run_with_environment)


@needs_softhsm
def test_a_token_and_a_key_inside_it_made_as_the_owner_and_a_csr_signed_by_the_token(softhsm):
    result = ensure_in_token()
    assert result["token_created"] and result["key_created"] and result["key_type"] == "ec-p256"
    assert result["key_uri"] == "pkcs11:token=edge;object=device-id" and result["key_path"] is None
    public_key, problem = csr_problem(result["csr"], registration_id="gw-01", key_type="ec-p256")
    assert problem is None
    # The token's files are the owner's, and nothing secret is in the result.
    assert {os.stat(path).st_uid for path in (softhsm / "tokens").rglob("*")} == {65534}
    assert "1234" not in str(result) and "5678" not in str(result)
    # The CSR's key is the token's: its public key matches the token's public object.
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert result["public_key_sha256"] == hashlib.sha256(der).hexdigest()

    again = ensure_in_token()
    assert again["changed"] is False and again["actions"] == [] and not again["key_created"]
    assert again["public_key_sha256"] == result["public_key_sha256"]


@needs_softhsm
def test_a_key_of_another_type_in_the_token_is_kept(softhsm):
    ensure_in_token(key_type="ec-p384")
    kept = ensure_in_token(key_type="ec-p256")
    assert kept["changed"] is False and kept["key_type"] == "ec-p384"


@needs_softhsm
def test_without_a_token_and_without_leave_to_make_one_the_message_says_what_to_do(softhsm):
    with pytest.raises(CsrError, match="nobody sees no token labelled 'edge'"):
        ensure_in_token(pkcs11_init_token=False)


@needs_softhsm
def test_check_mode_predicts_the_token_and_the_key_and_makes_nothing(softhsm):
    result = ensure_identity_csr(
        CsrRequest(
            "gw-01", "", key_store="pkcs11", owner="nobody", pkcs11_lib_path=str(SOFTHSM), pkcs11_key_uri=KEY_URI,
            pkcs11_init_token=True, pkcs11_so_pin="5678", check_mode=True,
        ),
        run_with_environment,
    )  # fmt: skip
    assert result["token_created"] and result["key_created"] and result["csr"] is None
    assert list((softhsm / "tokens").iterdir()) == []


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"pkcs11_key_uri": "pkcs11:token=edge;object=device-id"}, "pkcs11_key_uri: has no pin-value"),
        ({"pkcs11_key_uri": "pkcs11:slot-id=0;object=k?pin-value=1"}, "pkcs11_key_uri: names a slot-id"),
        ({"pkcs11_key_uri": "file:///k.pem"}, "pkcs11_key_uri: does not start with 'pkcs11:'"),
        ({"pkcs11_lib_path": "libsofthsm2.so"}, "pkcs11_lib_path: give the absolute path"),
        ({"pkcs11_so_pin": ""}, "pkcs11_so_pin: initialising a token"),
        ({"owner": "aziotks-not-installed"}, "owner: there is no user 'aziotks-not-installed' yet"),
        ({"pkcs11_user_groups": ["no-such-group-here"]}, "pkcs11_user_groups: there is no group 'no-such-group-here'"),
    ],
)
def test_bad_token_input_is_refused_before_anything_is_made(overrides, message):
    needs_tools = "owner" in overrides or "pkcs11_user_groups" in overrides
    if needs_tools and shutil.which("p11tool") is None:
        pytest.skip("needs gnutls-bin")
    with pytest.raises(CsrError, match=re.escape(message)):
        ensure_in_token(**overrides)


def move_in_token(activate=None, check_mode=False):
    request = CsrRequest(
        registration_id="gw-01",
        key_path="",
        key_store="pkcs11",
        owner="nobody",
        pkcs11_lib_path=str(SOFTHSM),
        pkcs11_key_uri=KEY_URI,
        check_mode=check_mode,
    )
    return move_key(request, activate, run_with_environment)


def token_labels() -> list:
    listed = run_with_environment(
        ["runuser", "-u", "nobody", "--", "p11tool", "--provider", str(SOFTHSM), "--login", "--list-privkeys",
         "pkcs11:token=edge"],
        {"GNUTLS_PIN": "1234"},
    )[1]  # fmt: skip
    return sorted(re.findall(r"Label: (\S+)", listed))


@needs_softhsm
def test_a_next_key_inside_the_token_then_a_rotation_and_a_rollback_by_relabelling(softhsm):
    first = ensure_in_token(next_key=True)
    assert first["next_key_uri"] == "pkcs11:token=edge;object=device-id-next" and first["next_key_path"] is None
    assert first["next_public_key_sha256"] != first["public_key_sha256"]
    public_key, problem = csr_problem(first["next_csr"], registration_id="gw-01", key_type="ec-p256")
    assert problem is None
    assert (
        hashlib.sha256(
            public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        ).hexdigest()
        == first["next_public_key_sha256"]
    )
    assert token_labels() == ["device-id", "device-id-next"]
    again = ensure_in_token(next_key=True)
    assert again["changed"] is False and again["next_public_key_sha256"] == first["next_public_key_sha256"]

    old, new = first["public_key_sha256"], first["next_public_key_sha256"]
    assert move_in_token(activate=new, check_mode=True)["changed"] and token_labels() == ["device-id", "device-id-next"]
    rotated = move_in_token(activate=new)
    assert rotated["changed"] and token_labels() == ["device-id", "device-id-previous"]
    assert ensure_in_token()["public_key_sha256"] == new
    assert move_in_token(activate=new)["changed"] is False
    # Rollback: the old key is current again, the new one waits as next.
    assert move_in_token(activate=old)["changed"]
    assert token_labels() == ["device-id", "device-id-next"]
    assert ensure_in_token(next_key=True)["next_public_key_sha256"] == new
    # Rotation completed: the previous key leaves the token.
    move_in_token(activate=new)
    assert move_in_token()["actions"] == ["delete pkcs11:token=edge;object=device-id-previous"]
    assert token_labels() == ["device-id"]
    assert move_in_token()["changed"] is False
    with pytest.raises(CsrError, match="no key in token 'edge' has the public key"):
        move_in_token(activate="ab" * 32)
    # A retired host: every key of the identity leaves the token.
    ensure_in_token(next_key=True)
    assert token_labels() == ["device-id", "device-id-next"]
    removed = move_key(
        CsrRequest(
            registration_id="gw-01", key_path="", key_store="pkcs11", owner="nobody", pkcs11_lib_path=str(SOFTHSM),
            pkcs11_key_uri=KEY_URI,
        ),
        None,
        run_with_environment,
        remove_all=True,
    )  # fmt: skip
    assert removed["changed"] and token_labels() == []
