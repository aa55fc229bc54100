"""The fleet CA: profiles, idempotency, rotation without loss, guard rails."""

from __future__ import annotations

import datetime
import os
import shutil

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki import PkiError, PkiPassphraseError, signed_by
from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki_ca import ensure_ca, load_ca
from ansible_collections.edgefleet.iotedge.tests.unit.pki_factories import NOW, ca_request


def _cert(path):
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_new_ca_has_root_and_intermediate_profiles(tmp_path):
    result = ensure_ca(ca_request(tmp_path / "ca"), check_mode=False, now=NOW)
    assert result["changed"] is True
    assert result["actions"] == ["create root", "create intermediate"]
    root, inter = _cert(tmp_path / "ca/root.cert.pem"), _cert(tmp_path / "ca/intermediate.cert.pem")
    root_bc = root.extensions.get_extension_for_class(x509.BasicConstraints)
    assert root_bc.critical and root_bc.value.ca and root_bc.value.path_length is None
    root_ku = root.extensions.get_extension_for_class(x509.KeyUsage)
    assert root_ku.critical and root_ku.value.key_cert_sign and root_ku.value.crl_sign
    inter_bc = inter.extensions.get_extension_for_class(x509.BasicConstraints)
    assert inter_bc.critical and inter_bc.value.ca and inter_bc.value.path_length == 0
    assert signed_by(inter, root) and signed_by(root, root)
    assert inter.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Test Intermediate CA"
    for key in ("root.key.pem", "intermediate.key.pem"):
        assert os.stat(tmp_path / "ca" / key).st_mode & 0o777 == 0o600
    assert (tmp_path / "ca/ca-chain.cert.pem").read_bytes() == (
        (tmp_path / "ca/intermediate.cert.pem").read_bytes() + (tmp_path / "ca/root.cert.pem").read_bytes()
    )
    assert result["root"]["thumbprint_sha1"] == root.fingerprint(hashes.SHA1()).hex().upper()
    assert len(result["root"]["thumbprint_sha256"]) == 64
    assert result["intermediate"]["not_after"] <= result["root"]["not_after"]


def test_second_run_changes_nothing(ca_dir):
    before = {p.name: p.read_bytes() for p in ca_dir.iterdir()}
    result = ensure_ca(ca_request(ca_dir), check_mode=False, now=NOW + datetime.timedelta(days=1))
    assert result["changed"] is False and result["actions"] == []
    assert {p.name: p.read_bytes() for p in ca_dir.iterdir()} == before


def test_check_mode_predicts_and_writes_nothing(tmp_path):
    result = ensure_ca(ca_request(tmp_path / "ca"), check_mode=True, now=NOW)
    assert result["changed"] is True
    assert not (tmp_path / "ca").exists()


def test_key_type_change_rotates_and_retires_old_files(ca_dir):
    old_root = (ca_dir / "root.cert.pem").read_bytes()
    result = ensure_ca(ca_request(ca_dir, key_type="rsa-2048"), check_mode=False, now=NOW)
    assert result["changed"] is True
    assert "reissue root: key type is ec-p256, wanted rsa-2048" in result["actions"]
    retired = ca_dir / "retired" / "20261126T120000Z"
    assert (retired / "root.cert.pem").read_bytes() == old_root
    assert (retired / "intermediate.key.pem").exists()
    loaded = load_ca(str(ca_dir), passphrase=None)
    assert loaded.root_cert.public_key().key_size == 2048
    assert signed_by(loaded.intermediate_cert, loaded.root_cert)


def test_passphrase_encrypts_keys_and_wrong_passphrase_is_refused(tmp_path):
    path = tmp_path / "ca"
    ensure_ca(ca_request(path, passphrase="correct horse"), check_mode=False, now=NOW)
    assert b"ENCRYPTED" in (path / "root.key.pem").read_bytes()
    snapshot = {p.name: p.read_bytes() for p in path.iterdir()}
    with pytest.raises(PkiPassphraseError, match=r"^passphrase: cannot decrypt .*root.key.pem with the passphrase"):
        ensure_ca(ca_request(path, passphrase="wrong"), check_mode=False, now=NOW)
    with pytest.raises(PkiPassphraseError, match=r"^passphrase: .*root.key.pem is encrypted; give the passphrase"):
        ensure_ca(ca_request(path), check_mode=False, now=NOW)
    assert {p.name: p.read_bytes() for p in path.iterdir()} == snapshot


def test_a_passphrase_added_later_is_refused_until_reencrypt_is_asked_for(ca_dir):
    files = {p.name: p.read_bytes() for p in ca_dir.iterdir() if p.is_file()}
    with pytest.raises(PkiError) as refused:
        ensure_ca(ca_request(ca_dir, passphrase="pw"), check_mode=False, now=NOW)
    assert str(refused.value).startswith("passphrase: ")
    assert "is not encrypted" in str(refused.value) and "reencrypt=true" in str(refused.value)
    assert {p.name: p.read_bytes() for p in ca_dir.iterdir() if p.is_file()} == files
    assert not (ca_dir / "retired").exists()

    result = ensure_ca(ca_request(ca_dir, passphrase="pw", reencrypt=True), check_mode=False, now=NOW)
    assert [a.split(" (")[0] for a in result["actions"]] == [
        "encrypt the root key with the passphrase",
        "encrypt the intermediate key with the passphrase",
    ]
    # Same keys and certificates, now encrypted; the unencrypted files kept aside (0600, directory 0700).
    assert (ca_dir / "root.cert.pem").read_bytes() == files["root.cert.pem"]
    backup = ca_dir / "retired" / "20261126T120000Z"
    assert result["retired_path"] == str(backup)
    for key in ("root.key.pem", "intermediate.key.pem"):
        assert (backup / key).read_bytes() == files[key]
        assert os.stat(backup / key).st_mode & 0o777 == 0o600
        assert b"ENCRYPTED" in (ca_dir / key).read_bytes()
    assert os.stat(backup).st_mode & 0o777 == 0o700
    load_ca(str(ca_dir), passphrase="pw")
    # Idempotent, with reencrypt left on as well.
    assert ensure_ca(ca_request(ca_dir, passphrase="pw"), check_mode=False, now=NOW)["changed"] is False
    assert ensure_ca(ca_request(ca_dir, passphrase="pw", reencrypt=True), check_mode=False, now=NOW)["changed"] is False


def test_reencrypt_changes_or_removes_the_passphrase_with_the_previous_one(ca_dir):
    ensure_ca(ca_request(ca_dir, passphrase="old", reencrypt=True), check_mode=False, now=NOW)
    with pytest.raises(PkiPassphraseError, match="cannot decrypt"):
        ensure_ca(ca_request(ca_dir, passphrase="new"), check_mode=False, now=NOW)
    with pytest.raises(PkiError, match="previous_passphrase: only used with reencrypt=true"):
        ensure_ca(ca_request(ca_dir, passphrase="new", previous_passphrase="old"), check_mode=False, now=NOW)
    later = NOW + datetime.timedelta(hours=1)
    changed = ensure_ca(
        ca_request(ca_dir, passphrase="new", previous_passphrase="old", reencrypt=True), check_mode=False, now=later
    )
    assert changed["changed"] is True
    load_ca(str(ca_dir), passphrase="new")
    backup = ca_dir / "retired" / "20261126T130000Z"
    load_ca_from_backup = (backup / "root.key.pem").read_bytes()
    assert b"ENCRYPTED" in load_ca_from_backup
    # previous_passphrase no longer opens the keys: the run after goes on with the new passphrase alone.
    assert (
        ensure_ca(
            ca_request(ca_dir, passphrase="new", previous_passphrase="old", reencrypt=True),
            check_mode=False,
            now=later,
        )["changed"]
        is False
    )
    plain = ensure_ca(
        ca_request(ca_dir, passphrase=None, previous_passphrase="new", reencrypt=True),
        check_mode=False,
        now=later + datetime.timedelta(hours=1),
    )
    assert plain["actions"][0].startswith("store the root key without encryption")
    load_ca(str(ca_dir), passphrase=None)


@pytest.mark.parametrize("passphrase", [["pw"], 1234, {"a": "b"}])
def test_a_passphrase_that_is_not_text_is_refused_before_anything_changes(ca_dir, passphrase):
    files = {p.name: p.read_bytes() for p in ca_dir.iterdir() if p.is_file()}
    with pytest.raises(PkiError, match=r"^passphrase: must be a string, got a (list|int|dict)"):
        ensure_ca(ca_request(ca_dir, passphrase=passphrase, reencrypt=True), check_mode=False, now=NOW)
    assert {p.name: p.read_bytes() for p in ca_dir.iterdir() if p.is_file()} == files


def test_temporaries_an_interrupted_run_left_are_removed(ca_dir):
    leftover = ca_dir / ".tmp-abc123"
    leftover.write_bytes(b"-----BEGIN PRIVATE KEY-----\n")
    predicted = ensure_ca(ca_request(ca_dir), check_mode=True, now=NOW)
    assert predicted["changed"] is True and leftover.exists()
    result = ensure_ca(ca_request(ca_dir), check_mode=False, now=NOW)
    assert result["actions"] == ["remove 1 temporary file(s) an interrupted run left"]
    assert not leftover.exists()
    assert ensure_ca(ca_request(ca_dir), check_mode=False, now=NOW)["changed"] is False


def test_two_runs_started_together_create_one_ca(tmp_path):
    """Each run holds the directory lock from its first read to its last write: the second finds the first's CA."""
    import multiprocessing

    path = tmp_path / "ca"
    context = multiprocessing.get_context("fork")
    with context.Pool(4) as pool:
        results = pool.starmap(_create_ca, [(str(path),)] * 4)
    assert sorted(changed for changed, _thumbprint in results) == [False, False, False, True]
    assert len({thumbprint for _changed, thumbprint in results}) == 1
    assert not (path / "retired").exists()


def _create_ca(path: str):
    result = ensure_ca(ca_request(path), check_mode=False, now=NOW)
    return result["changed"], result["root"]["thumbprint_sha256"]


def test_not_after_cap_reissues_a_ca_that_ends_later(ca_dir):
    result = ensure_ca(ca_request(ca_dir, not_after="2030-01-01"), check_mode=False, now=NOW)
    assert result["changed"] is True
    assert result["root"]["not_after"] == "2030-01-01T00:00:00Z"
    assert ensure_ca(ca_request(ca_dir, not_after="2030-01-01"), check_mode=False, now=NOW)["changed"] is False


def test_intermediate_false_retires_the_intermediate(ca_dir):
    result = ensure_ca(ca_request(ca_dir, intermediate=False), check_mode=False, now=NOW)
    assert result["signer"] == "root"
    assert not (ca_dir / "intermediate.cert.pem").exists()
    assert (ca_dir / "retired" / "20261126T120000Z" / "intermediate.cert.pem").exists()
    assert (ca_dir / "ca-chain.cert.pem").read_bytes() == (ca_dir / "root.cert.pem").read_bytes()


def test_generation_1_1_refuses_a_ca_past_2038(tmp_path):
    with pytest.raises(PkiError) as error:
        ensure_ca(ca_request(tmp_path / "ca", generation="1.1", valid_days=5000), check_mode=False, now=NOW)
    assert str(error.value).startswith("valid_days: the root CA would expire on 2040-08-04T12:00:00Z")
    assert "on or after 2038-01-01, which IoT Edge 1.1 (libiothsm, 32-bit time) cannot use" in str(error.value)
    assert "set not_after (e.g. '2037-12-31') or lower valid_days" in str(error.value)
    assert not (tmp_path / "ca").exists()


def test_any_generation_refuses_a_ca_past_2049(tmp_path):
    with pytest.raises(PkiError, match="after 2049-12-31"):
        ensure_ca(ca_request(tmp_path / "ca", valid_days=9000), check_mode=False, now=NOW)
    assert not (tmp_path / "ca").exists()


def test_unchained_intermediate_is_an_error_not_a_silent_replacement(tmp_path, ca_dir):
    other = tmp_path / "other"
    ensure_ca(ca_request(other), check_mode=False, now=NOW)
    for name in ("intermediate.cert.pem", "intermediate.key.pem"):
        shutil.copy(other / name, ca_dir / name)
    with pytest.raises(PkiError, match=r"^path: .*intermediate.cert.pem was not issued by .*root.cert.pem; the root "):
        ensure_ca(ca_request(ca_dir), check_mode=False, now=NOW)
    with pytest.raises(PkiError, match=r"^ca_path: .*do not chain"):
        load_ca(str(ca_dir), passphrase=None)


def test_key_that_does_not_match_its_certificate_is_an_error(tmp_path, ca_dir):
    other = tmp_path / "other"
    ensure_ca(ca_request(other), check_mode=False, now=NOW)
    shutil.copy(other / "root.key.pem", ca_dir / "root.key.pem")
    with pytest.raises(PkiError, match=r"root.key.pem does not belong to .*root.cert.pem"):
        ensure_ca(ca_request(ca_dir), check_mode=False, now=NOW)


def test_missing_key_beside_a_certificate_is_an_error(ca_dir):
    (ca_dir / "root.key.pem").unlink()
    with pytest.raises(PkiError, match=r"root.cert.pem exists but .*root.key.pem is missing; restore"):
        ensure_ca(ca_request(ca_dir), check_mode=False, now=NOW)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"key_type": "dsa-1024"}, "key_type: 'dsa-1024' is not supported"),
        ({"valid_days": 0}, "valid_days: must be at least 1"),
        ({"root_common_name": ""}, "root_common_name: give a common name of 1 to 64 characters"),
        ({"intermediate_common_name": "Test Root CA"}, "intermediate_common_name: must differ from root_common_name"),
        ({"not_after": "2020-01-01"}, "not_after: 2020-01-01 is in the past"),
    ],
)
def test_bad_input_names_the_field(tmp_path, overrides, message):
    with pytest.raises(PkiError, match=message):
        ensure_ca(ca_request(tmp_path / "ca", **overrides), check_mode=False, now=NOW)
    assert not (tmp_path / "ca").exists()


def test_absent_removes_the_ca_files(ca_dir):
    result = ensure_ca(ca_request(ca_dir, state="absent"), check_mode=False, now=NOW)
    assert result["changed"] is True  # the lock file goes with the CA files
    assert sorted(p.name for p in ca_dir.iterdir()) == []
    assert ensure_ca(ca_request(ca_dir, state="absent"), check_mode=False, now=NOW)["changed"] is False


# ---- the fleet CA as an input: create=false and a CA handed in as text ------------------------------------------

CA_FILES = ("root.cert.pem", "root.key.pem", "intermediate.cert.pem", "intermediate.key.pem")
CONTENT = ("root_cert_content", "root_key_content", "intermediate_cert_content", "intermediate_key_content")


def _contents(ca_dir, *, strip=True) -> dict:
    """The CA's files as a credential or lookup('file') hands them in (lookup strips the last line break)."""
    texts = [(ca_dir / name).read_text() for name in CA_FILES]
    return dict(zip(CONTENT, [t.rstrip("\n") if strip else t for t in texts], strict=True))


def _snapshot(path):
    return {p.name: p.read_bytes() for p in path.iterdir() if p.is_file()} if path.exists() else None


@pytest.mark.parametrize("check_mode", [True, False])
@pytest.mark.parametrize("existing", [True, False])
def test_create_false_on_an_empty_directory_fails_naming_the_files_and_writes_nothing(tmp_path, check_mode, existing):
    path = tmp_path / "ca"
    if existing:
        path.mkdir()
    with pytest.raises(PkiError) as refused:
        ensure_ca(ca_request(path, create=False), check_mode=check_mode, now=NOW)
    message = str(refused.value)
    assert message.startswith(f"create: is false and the fleet CA in {path} is not complete (root.cert.pem, ")
    assert "intermediate.key.pem missing there" in message
    assert "role: edgefleet_pki_ca_dir" in message and "edgefleet_pki_ca_root_key_content" in message
    assert "set intermediate to false" not in message.lower()
    # Not even the lock file: an empty directory stays empty, a missing one missing.
    assert (sorted(os.listdir(path)) == []) if existing else not path.exists()


def test_create_false_names_a_missing_intermediate_and_the_alternative(ca_dir):
    for name in ("intermediate.cert.pem", "intermediate.key.pem"):
        (ca_dir / name).unlink()
    before = _snapshot(ca_dir)
    with pytest.raises(PkiError, match=r"\(intermediate.cert.pem, intermediate.key.pem missing there\)") as refused:
        ensure_ca(ca_request(ca_dir, create=False), check_mode=True, now=NOW)
    assert "set intermediate to false (role: edgefleet_pki_intermediate)" in str(refused.value)
    with pytest.raises(PkiError, match=r"^create: is false"):
        ensure_ca(ca_request(ca_dir, create=False), check_mode=False, now=NOW)
    assert _snapshot(ca_dir) == before
    # Signing with the root needs no intermediate: that is allowed.
    result = ensure_ca(ca_request(ca_dir, create=False, intermediate=False), check_mode=False, now=NOW)
    assert result["signer"] == "root"


def test_create_false_with_a_complete_ca_changes_nothing(ca_dir):
    before = _snapshot(ca_dir)
    for check_mode in (True, False):
        result = ensure_ca(ca_request(ca_dir, create=False), check_mode=check_mode, now=NOW)
        assert result["changed"] is False, result["actions"]
    assert _snapshot(ca_dir) == before


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"force": True}, "force=true"),
        ({"root_common_name": "Another Root CA"}, "common name is 'Test Root CA', wanted 'Another Root CA'"),
        ({"key_type": "ec-p384"}, "key type is ec-p256, wanted ec-p384"),
        ({"not_after": "2030-01-01"}, "after not_after 2030-01-01T00:00:00Z"),
    ],
)
def test_create_false_refuses_every_new_root_key(ca_dir, overrides, reason):
    before = _snapshot(ca_dir)
    for check_mode in (True, False):
        with pytest.raises(PkiError) as refused:
            ensure_ca(ca_request(ca_dir, create=False, **overrides), check_mode=check_mode, now=NOW)
        message = str(refused.value)
        assert message.startswith(f"create: is false and the root CA in {ca_dir} would be issued again (")
        assert reason in message and "set create to true for one run to rotate" in message
    assert _snapshot(ca_dir) == before
    assert not (ca_dir / "retired").exists()


def test_create_false_refuses_an_expired_root(ca_dir):
    with pytest.raises(PkiError, match=r"would be issued again \(expired on 2036-11-"):
        ensure_ca(ca_request(ca_dir, create=False), check_mode=True, now=NOW + datetime.timedelta(days=3700))


def test_create_false_still_renews_the_intermediate_under_the_same_root(ca_dir):
    root = (ca_dir / "root.cert.pem").read_bytes()
    root_key = (ca_dir / "root.key.pem").read_bytes()
    result = ensure_ca(
        ca_request(ca_dir, create=False, intermediate_common_name="Test Intermediate CA 2027"),
        check_mode=False,
        now=NOW,
    )
    assert result["actions"] == [
        "reissue intermediate: common name is 'Test Intermediate CA', wanted 'Test Intermediate CA 2027'"
    ]
    assert (ca_dir / "root.cert.pem").read_bytes() == root and (ca_dir / "root.key.pem").read_bytes() == root_key
    loaded = load_ca(str(ca_dir), passphrase=None)
    assert signed_by(loaded.intermediate_cert, loaded.root_cert)
    assert (ca_dir / "retired" / "20261126T120000Z" / "intermediate.cert.pem").exists()


def test_create_false_still_reencrypts_the_keys(ca_dir):
    result = ensure_ca(ca_request(ca_dir, create=False, passphrase="pw", reencrypt=True), check_mode=False, now=NOW)
    assert result["changed"] is True
    load_ca(str(ca_dir), passphrase="pw")


@pytest.mark.parametrize("passphrase", [None, "vault-pass"])
def test_a_ca_handed_in_as_text_is_installed_as_given_and_then_left_alone(tmp_path, passphrase):
    source = tmp_path / "source"
    ensure_ca(ca_request(source, passphrase=passphrase), check_mode=False, now=NOW)
    contents = _contents(source)
    target = tmp_path / "fresh" / "ca"
    predicted = ensure_ca(ca_request(target, create=False, passphrase=passphrase, **contents), check_mode=True, now=NOW)
    assert predicted["changed"] is True and not (tmp_path / "fresh").exists()
    result = ensure_ca(ca_request(target, create=False, passphrase=passphrase, **contents), check_mode=False, now=NOW)
    assert result["actions"] == [
        "install root.cert.pem from root_cert_content",
        "install root.key.pem from root_key_content",
        "install intermediate.cert.pem from intermediate_cert_content",
        "install intermediate.key.pem from intermediate_key_content",
    ]
    assert result["root"]["thumbprint_sha256"] == predicted["root"]["thumbprint_sha256"]
    for name in (*CA_FILES, "ca-chain.cert.pem"):
        assert (target / name).read_bytes() == (source / name).read_bytes(), name
        assert os.stat(target / name).st_mode & 0o777 == (0o600 if name.endswith(".key.pem") else 0o644)
    assert os.stat(target).st_mode & 0o777 == 0o700
    again = ensure_ca(ca_request(target, create=False, passphrase=passphrase, **contents), check_mode=False, now=NOW)
    assert again["changed"] is False and again["actions"] == []
    # With the trailing line breaks a file has, too.
    unstripped = _contents(source, strip=False)
    assert (
        ensure_ca(ca_request(target, passphrase=passphrase, **unstripped), check_mode=False, now=NOW)["changed"]
        is False
    )


def test_a_handed_in_ca_replaces_another_one_and_keeps_it_in_retired(tmp_path, ca_dir):
    source = tmp_path / "source"
    ensure_ca(ca_request(source), check_mode=False, now=NOW)
    old = _snapshot(ca_dir)
    result = ensure_ca(ca_request(ca_dir, create=False, **_contents(source)), check_mode=False, now=NOW)
    assert (
        result["actions"][0] == "replace root.cert.pem with root_cert_content (the previous file is kept in retired/)"
    )
    assert result["diff"]["before"]["root"]["thumbprint_sha256"] != result["diff"]["after"]["root"]["thumbprint_sha256"]
    retired = ca_dir / "retired" / "20261126T120000Z"
    assert {name: (retired / name).read_bytes() for name in CA_FILES} == {name: old[name] for name in CA_FILES}
    assert (ca_dir / "root.key.pem").read_bytes() == (source / "root.key.pem").read_bytes()


def test_a_handed_in_root_alone_keeps_the_intermediate_it_issued_and_replaces_a_foreign_one(tmp_path, ca_dir):
    source = tmp_path / "source"
    ensure_ca(ca_request(source), check_mode=False, now=NOW)
    root_only = {k: v for k, v in _contents(ca_dir).items() if k.startswith("root_")}
    # The directory's own root, handed in: its intermediate stays.
    assert ensure_ca(ca_request(ca_dir, create=False, **root_only), check_mode=False, now=NOW)["changed"] is False
    # Another root: its intermediate is not this root's. create=false refuses to make one; create=true makes one.
    foreign_root = {k: v for k, v in _contents(source).items() if k.startswith("root_")}
    before = _snapshot(ca_dir)
    with pytest.raises(PkiError, match=r"^create: is false and .*intermediate.cert.pem was not issued by the root"):
        ensure_ca(ca_request(ca_dir, create=False, **foreign_root), check_mode=False, now=NOW)
    assert _snapshot(ca_dir) == before
    result = ensure_ca(ca_request(ca_dir, **foreign_root), check_mode=False, now=NOW)
    assert "reissue intermediate: not issued by the root handed in" in result["actions"]
    loaded = load_ca(str(ca_dir), passphrase=None)
    assert loaded.root_cert.fingerprint(hashes.SHA256()) == _cert(source / "root.cert.pem").fingerprint(hashes.SHA256())
    assert signed_by(loaded.intermediate_cert, loaded.root_cert)


@pytest.fixture
def handed(tmp_path):
    source = tmp_path / "source"
    ensure_ca(ca_request(source, passphrase="right"), check_mode=False, now=NOW)
    other = tmp_path / "other"
    ensure_ca(ca_request(other), check_mode=False, now=NOW)
    return _contents(source), _contents(other)


@pytest.mark.parametrize(
    ("change", "passphrase", "message"),
    [
        ({"root_key_content": ""}, "right", r"^root_key_content: is empty while root_cert_content is given"),
        ({"root_cert_content": "", "root_key_content": ""}, "right", r"^root_cert_content: is empty while interm"),
        ({}, None, r"^passphrase: root_key_content is encrypted; give the passphrase"),
        ({}, "wrong", r"^passphrase: cannot decrypt root_key_content with the passphrase given"),
        ({"root_cert_content": "/srv/ca/root.cert.pem"}, "right", r"^root_cert_content: is not PEM text .* file name"),
        ({"root_cert_content": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"}, "right", "no readable"),
        ({"root_cert_content": ["a"]}, "right", r"^root_cert_content: must be PEM text, got a list"),
        ("two certificates", "right", r"^root_cert_content: holds 2 certificates; give the root certificate alone"),
        ("intermediate as root", "right", r"^root_cert_content: 'Test Intermediate CA' is not a self-signed root"),
        ("foreign intermediate", "right", r"^intermediate_cert_content: 'Test Intermediate CA' was not issued by"),
        ("foreign key", None, r"^root_key_content: is not the key of root_cert_content"),
        ("unencrypted key", "right", r"^root_key_content: is not encrypted, but passphrase is set"),
    ],
)
def test_a_bad_ca_handed_in_is_refused_before_anything_is_written(tmp_path, handed, change, passphrase, message):
    contents, other = handed
    contents = dict(contents)
    if change == "two certificates":
        contents["root_cert_content"] += "\n" + contents["intermediate_cert_content"]
    elif change == "intermediate as root":
        contents["root_cert_content"] = contents["intermediate_cert_content"]
    elif change == "foreign intermediate":
        contents.update(intermediate_cert_content=other["intermediate_cert_content"])
    elif change == "foreign key":
        contents = dict(other, root_key_content=other["intermediate_key_content"])
    elif change == "unencrypted key":
        contents.update(root_key_content=other["root_key_content"], root_cert_content=other["root_cert_content"])
        contents.update(intermediate_cert_content="", intermediate_key_content="")
    else:
        contents.update(change)
    target = tmp_path / "target"
    with pytest.raises(PkiError, match=message) as refused:
        ensure_ca(ca_request(target, passphrase=passphrase, **contents), check_mode=False, now=NOW)
    key_lines = [line for line in contents["root_key_content"].splitlines() if not line.startswith("-----")]
    assert "PRIVATE KEY" not in str(refused.value)
    assert not [line for line in key_lines if line in str(refused.value)]
    assert not target.exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"root_common_name": "Other Root"}, r"^root_common_name: the root CA handed in \(root_cert_content\) has"),
        ({"key_type": "rsa-2048"}, r"^key_type: the root CA handed in \(root_cert_content\) has a ec-p256 key"),
        ({"force": True}, r"^root_cert_content: the root CA handed in cannot be used: force=true"),
        ({"not_after": "2030-01-01"}, r"^root_cert_content: .* after not_after .* never replaced by a new one"),
        ({"intermediate": False}, r"^intermediate_cert_content: is given while intermediate is false"),
        ({"state": "absent"}, r"^root_cert_content: only used with state=present"),
    ],
)
def test_a_handed_in_ca_is_never_reissued_a_reason_to_is_an_error(tmp_path, handed, overrides, message):
    contents = handed[0]
    with pytest.raises(PkiError, match=message):
        ensure_ca(
            ca_request(tmp_path / "target", passphrase="right", **contents, **overrides), check_mode=True, now=NOW
        )
    assert not (tmp_path / "target").exists()
