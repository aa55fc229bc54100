"""Fleet identities: profile, layout, idempotency, renewal, reissue on change, guard rails, check mode."""

from __future__ import annotations

import datetime
import os
import shutil

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ansible_collections.edgefleet.iotedge.plugins.module_utils import _pki
from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki import PkiError, PkiPassphraseError, signed_by
from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki_ca import ensure_ca, load_ca
from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki_identity import IdentityRequest, ensure_identities
from ansible_collections.edgefleet.iotedge.tests.unit.pki_factories import NOW, ca_request

DEVICES = ["gw-01", "gw-02", "gw-03"]


def run(ca_dir, out_dir, *, check_mode=False, now=NOW, **overrides):
    values = {"ca_path": str(ca_dir), "path": str(out_dir), "devices": list(DEVICES)}
    values.update(overrides)
    return ensure_identities(IdentityRequest(**values), check_mode=check_mode, now=now)


def snapshot(directory):
    return {
        str(p.relative_to(directory)): (p.read_bytes(), os.stat(p).st_mode & 0o777)
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def test_leaf_profile_and_file_layout(ca_dir, tmp_path):
    out = tmp_path / "ids"
    result = run(ca_dir, out)
    assert result["changed"] is True
    assert result["summary"]["created"] == 3
    ca = load_ca(str(ca_dir), passphrase=None)
    for device in DEVICES:
        leaf = x509.load_pem_x509_certificate((out / device / "identity.cert.pem").read_bytes())
        assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == device
        assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
        usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
        assert usage.digital_signature and not usage.key_encipherment
        assert isinstance(leaf.signature_hash_algorithm, hashes.SHA256)
        assert signed_by(leaf, ca.intermediate_cert)
        chain = x509.load_pem_x509_certificates((out / device / "identity.full-chain.cert.pem").read_bytes())
        assert [c.subject for c in chain] == [leaf.subject, ca.intermediate_cert.subject, ca.root_cert.subject]
        assert os.stat(out / device / "identity.key.pem").st_mode & 0o777 == 0o600
        entry = result["identities"][device]
        assert entry["thumbprint_sha1"] == leaf.fingerprint(hashes.SHA1()).hex().upper()
        assert entry["thumbprint_sha256"] == leaf.fingerprint(hashes.SHA256()).hex().upper()
        assert entry["not_after"] == "2027-11-26T12:00:00Z"
        assert entry["action"] == "create" and entry["changed"] is True
    serials = {
        x509.load_pem_x509_certificate((out / d / "identity.cert.pem").read_bytes()).serial_number for d in DEVICES
    }
    assert len(serials) == 3


def test_rsa_leaf_adds_key_encipherment(ca_dir, tmp_path):
    run(ca_dir, tmp_path / "ids", devices=["gw-01"], key_type="rsa-2048")
    leaf = x509.load_pem_x509_certificate((tmp_path / "ids/gw-01/identity.cert.pem").read_bytes())
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.key_encipherment


def test_second_run_reports_no_change_for_every_device(ca_dir, tmp_path):
    out = tmp_path / "ids"
    run(ca_dir, out)
    before = snapshot(out)
    result = run(ca_dir, out, now=NOW + datetime.timedelta(days=10))
    assert result["changed"] is False
    assert all(entry["changed"] is False for entry in result["identities"].values())
    assert result["summary"]["unchanged"] == 3
    assert snapshot(out) == before


def test_check_mode_on_empty_directory_predicts_and_creates_nothing(ca_dir, tmp_path):
    out = tmp_path / "ids"
    result = run(ca_dir, out, check_mode=True)
    assert result["changed"] is True
    assert {e["action"] for e in result["identities"].values()} == {"create"}
    assert result["identities"]["gw-01"]["thumbprint_sha256"] is None
    assert not out.exists()


def test_check_mode_before_the_ca_exists_predicts_creation(tmp_path):
    result = run(tmp_path / "ca", tmp_path / "ids", check_mode=True)
    assert result["summary"]["created"] == 3
    assert result["identities"]["gw-01"]["not_after"] == "2027-11-26T12:00:00Z"
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(PkiError, match="create the CA first"):
        run(tmp_path / "ca", tmp_path / "ids")


def test_renewal_happens_only_inside_renew_before_days(ca_dir, tmp_path):
    out = tmp_path / "ids"
    run(ca_dir, out, valid_days=60, renew_before_days=20)
    first = run(ca_dir, out, valid_days=60, renew_before_days=20, now=NOW + datetime.timedelta(days=39))
    assert first["changed"] is False
    old_key = (out / "gw-01/identity.key.pem").read_bytes()
    renewed = run(ca_dir, out, valid_days=60, renew_before_days=20, now=NOW + datetime.timedelta(days=41))
    assert renewed["summary"]["renewed"] == 3
    assert renewed["identities"]["gw-01"]["action"] == "renew"
    assert "within renew_before_days" in renewed["identities"]["gw-01"]["reasons"][0]
    assert (out / "gw-01/identity.key.pem").read_bytes() != old_key
    assert renewed["identities"]["gw-01"]["not_after"] == "2027-03-07T12:00:00Z"  # day 41 + 60


def test_key_type_change_reissues(ca_dir, tmp_path):
    out = tmp_path / "ids"
    run(ca_dir, out)
    result = run(ca_dir, out, key_type="ec-p384")
    assert result["summary"]["reissued"] == 3
    assert result["identities"]["gw-02"]["reasons"] == ["key type is ec-p256, wanted ec-p384"]
    leaf = x509.load_pem_x509_certificate((out / "gw-02/identity.cert.pem").read_bytes())
    assert leaf.public_key().curve.name == "secp384r1"


def test_ca_rotated_under_existing_identities_reissues_them(ca_dir, tmp_path):
    out = tmp_path / "ids"
    run(ca_dir, out)
    ensure_ca(ca_request(ca_dir, force=True), check_mode=False, now=NOW)
    result = run(ca_dir, out)
    assert result["summary"]["reissued"] == 3
    assert "not issued by the current CA" in result["identities"]["gw-03"]["reasons"]
    ca = load_ca(str(ca_dir), passphrase=None)
    chain = x509.load_pem_x509_certificates((out / "gw-03/identity.full-chain.cert.pem").read_bytes())
    assert signed_by(chain[0], ca.intermediate_cert)
    assert chain[1] == ca.intermediate_cert and chain[2] == ca.root_cert


def test_cn_changed_by_hand_is_reissued(ca_dir, tmp_path):
    out = tmp_path / "ids"
    run(ca_dir, out)
    for name in ("identity.cert.pem", "identity.key.pem"):
        shutil.copy(out / "gw-02" / name, out / "gw-01" / name)
    result = run(ca_dir, out)
    assert result["identities"]["gw-01"]["action"] == "reissue"
    assert result["identities"]["gw-01"]["reasons"] == ["CN is 'gw-02'"]
    assert result["identities"]["gw-02"]["action"] == "none"


def test_stale_chain_and_loose_key_mode_are_repaired_without_a_new_key(ca_dir, tmp_path):
    out = tmp_path / "ids"
    first = run(ca_dir, out)
    (out / "gw-01/identity.full-chain.cert.pem").unlink()
    os.chmod(out / "gw-02/identity.key.pem", 0o644)
    result = run(ca_dir, out)
    assert result["summary"]["repaired"] == 2
    assert result["identities"]["gw-01"]["thumbprint_sha256"] == first["identities"]["gw-01"]["thumbprint_sha256"]
    assert (out / "gw-01/identity.full-chain.cert.pem").exists()
    assert os.stat(out / "gw-02/identity.key.pem").st_mode & 0o777 == 0o600
    assert run(ca_dir, out)["changed"] is False


def test_missing_key_reissues(ca_dir, tmp_path):
    out = tmp_path / "ids"
    run(ca_dir, out)
    (out / "gw-01/identity.key.pem").unlink()
    result = run(ca_dir, out)
    assert result["identities"]["gw-01"]["action"] == "reissue"


def test_absent_removes_only_the_listed_devices(ca_dir, tmp_path):
    out = tmp_path / "ids"
    run(ca_dir, out)
    result = run(ca_dir, out, devices=["gw-01"], state="absent")
    assert result["changed"] is True and result["summary"]["removed"] == 1
    assert not (out / "gw-01").exists()
    assert (out / "gw-02/identity.cert.pem").exists()
    assert run(ca_dir, out, devices=["gw-01"], state="absent")["changed"] is False


def test_diff_shows_fingerprints_and_dates_never_key_material(ca_dir, tmp_path):
    out = tmp_path / "ids"
    result = run(ca_dir, out)
    after = result["diff"]["after"]["identities"]["gw-01"]
    assert set(after) == {"thumbprint_sha1", "thumbprint_sha256", "not_after", "issuer", "action"}
    assert "PRIVATE" not in repr(result)


# --- guard rails: each fails before anything is written ------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"devices": ["gw-01", "GW-02"]}, "devices[1]: registration id 'GW-02' has uppercase letters; use 'gw-02'"),
        ({"devices": ["gw-01", 'gw"02']}, "devices[1]: registration id 'gw\"02' is not valid for DPS"),
        ({"devices": ["gw-01", "gw-01"]}, "devices[1]: registration id 'gw-01' is also devices[0]"),
        ({"devices": [{"registraton_id": "x"}]}, "devices[0]: unknown key(s) registraton_id"),
        ({"devices": ["a" * 65]}, "has 65 characters"),
        ({"key_type": "ed25519"}, "key_type: 'ed25519' is not supported"),
        ({"generation": "1.3"}, "generation: '1.3' is not known"),
        ({"valid_days": 30, "renew_before_days": 30}, "renew_before_days: 30 is not below valid_days (30)"),
        ({"valid_days": 0}, "valid_days: must be at least 1"),
    ],
    ids=[
        "uppercase",
        "quote",
        "duplicate",
        "unknown-key",
        "too-long",
        "key-type",
        "generation",
        "renew-window",
        "valid-days",
    ],
)
def test_bad_input_fails_before_writing(ca_dir, tmp_path, overrides, message):
    out = tmp_path / "ids"
    with pytest.raises(PkiError) as error:
        run(ca_dir, out, **overrides)
    assert message in str(error.value)
    assert not out.exists()


def test_generation_1_1_refuses_a_chain_past_2038(tmp_path):
    ca_dir = tmp_path / "ca"
    ensure_ca(ca_request(ca_dir, valid_days=5000), check_mode=False, now=NOW)
    with pytest.raises(PkiError) as error:
        run(ca_dir, tmp_path / "ids", generation="1.1")
    assert str(error.value).startswith("ca_path: the CA's root certificate would expire on 2040-08-04T12:00:00Z")
    assert "on or after 2038-01-01, which IoT Edge 1.1 (libiothsm, 32-bit time) cannot use" in str(error.value)
    assert "pki_ca not_after: '2037-12-31'" in str(error.value)
    assert not (tmp_path / "ids").exists()
    run(ca_dir, tmp_path / "ids", generation="1.2+")


def test_nothing_past_2049(tmp_path):
    ca_dir = tmp_path / "ca"
    late = datetime.datetime(2049, 6, 1, tzinfo=datetime.UTC)
    ensure_ca(ca_request(ca_dir, not_after="2049-12-31T23:59:59Z", valid_days=365), check_mode=False, now=late)
    # The CA caps the leaf, so a leaf can never outlive 2049 here; the CA itself is refused past it.
    with pytest.raises(PkiError, match="after 2049-12-31"):
        ensure_ca(ca_request(tmp_path / "ca2", valid_days=400), check_mode=False, now=late)


def test_unchained_ca_directory_is_refused(ca_dir, tmp_path):
    other = tmp_path / "other"
    ensure_ca(ca_request(other), check_mode=False, now=NOW)
    shutil.copy(other / "intermediate.cert.pem", ca_dir / "intermediate.cert.pem")
    shutil.copy(other / "intermediate.key.pem", ca_dir / "intermediate.key.pem")
    with pytest.raises(PkiError, match=r"^ca_path: .*intermediate.cert.pem was not issued by .*root.cert.pem"):
        run(ca_dir, tmp_path / "ids")
    assert not (tmp_path / "ids").exists()


def test_wrong_or_missing_ca_passphrase_is_refused(tmp_path):
    ca_dir = tmp_path / "ca"
    ensure_ca(ca_request(ca_dir, passphrase="right"), check_mode=False, now=NOW)
    with pytest.raises(PkiPassphraseError, match=r"^passphrase: cannot decrypt .*root.key.pem"):
        run(ca_dir, tmp_path / "ids", passphrase="wrong")
    with pytest.raises(PkiPassphraseError, match=r"^passphrase: .* is encrypted; give the passphrase"):
        run(ca_dir, tmp_path / "ids")
    assert not (tmp_path / "ids").exists()
    assert run(ca_dir, tmp_path / "ids", passphrase="right")["summary"]["created"] == 3


def test_missing_ca_directory_says_to_create_it(tmp_path):
    with pytest.raises(PkiError, match=r"^ca_path: .* is not a directory; create the CA first with edgefleet"):
        run(tmp_path / "nope", tmp_path / "ids")


def test_ca_expiring_before_the_renew_window_is_refused(tmp_path):
    ca_dir = tmp_path / "ca"
    ensure_ca(ca_request(ca_dir, valid_days=20), check_mode=False, now=NOW)
    with pytest.raises(PkiError, match=r"sooner than renew_before_days \(30\) from now"):
        run(ca_dir, tmp_path / "ids")


def test_failure_half_way_leaves_no_half_written_identity(ca_dir, tmp_path, monkeypatch):
    out = tmp_path / "ids"
    run(ca_dir, out)
    before = snapshot(out)
    real_stage = _pki.stage_file
    calls = []

    def failing_stage(path, data, mode):
        calls.append(path)
        if len(calls) == 5:  # the second device's second file
            raise OSError(28, "No space left on device", path)
        return real_stage(path, data, mode)

    monkeypatch.setattr(_pki, "stage_file", failing_stage)
    with pytest.raises(OSError):
        run(ca_dir, out, key_type="ec-p384")
    after = snapshot(out)
    # gw-01 was fully replaced, gw-02 and gw-03 kept their complete old sets; no temp file anywhere.
    assert {k: v for k, v in after.items() if not k.startswith("gw-01")} == {
        k: v for k, v in before.items() if not k.startswith("gw-01")
    }
    assert sorted(after) == sorted(before)
    leaf = x509.load_pem_x509_certificate((out / "gw-01/identity.cert.pem").read_bytes())
    chain = x509.load_pem_x509_certificates((out / "gw-01/identity.full-chain.cert.pem").read_bytes())
    assert chain[0] == leaf and leaf.public_key().curve.name == "secp384r1"


def test_a_batch_killed_mid_write_leaves_nothing_the_next_run_keeps(ca_dir, tmp_path):
    """Staged files and directories of an interrupted run may hold a private key: the next run removes them."""
    out = tmp_path / "ids"
    run(ca_dir, out)
    staged_dir = out / ".tmp-k1ll3d"
    staged_dir.mkdir()
    (staged_dir / "identity.key.pem").write_bytes(b"-----BEGIN PRIVATE KEY-----\n")
    staged_file = out / "gw-02" / ".tmp-x9"
    staged_file.write_bytes(b"-----BEGIN PRIVATE KEY-----\n")
    before = snapshot(out)

    predicted = run(ca_dir, out, check_mode=True)
    assert predicted["changed"] is True
    assert predicted["temporaries_removed"] == [str(staged_dir), str(staged_file)]
    assert snapshot(out) == before

    result = run(ca_dir, out)
    assert result["changed"] is True and result["summary"]["unchanged"] == 3
    assert not staged_dir.exists() and not staged_file.exists()
    assert run(ca_dir, out)["changed"] is False


def test_a_refused_batch_creates_no_directory(ca_dir, tmp_path):
    out = tmp_path / "ids"
    with pytest.raises(PkiError, match="is not a directory"):
        run(ca_dir / "missing-ca", out)
    assert not out.exists()


# ---- rotation: staged renewals, promotion -------------------------------------------------------------------------


def leaf_of(path):
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_a_staged_renewal_waits_in_next_beside_the_current_identity(ca_dir, tmp_path):
    out = tmp_path / "ids"
    run(ca_dir, out, valid_days=60, renew_before_days=20)
    current = snapshot(out / "gw-01")
    later = NOW + datetime.timedelta(days=41)
    staged = run(ca_dir, out, valid_days=60, renew_before_days=20, now=later, staged=True)
    assert staged["changed"] is True and staged["summary"]["staged"] == 3 and staged["summary"]["renewed"] == 0
    entry = staged["identities"]["gw-01"]
    assert (entry["action"], entry["rotation"]) == ("none", "stage")
    assert "within renew_before_days" in entry["reasons"][0]
    assert {k: v for k, v in snapshot(out / "gw-01").items() if not k.startswith("next/")} == current
    new_leaf = leaf_of(out / "gw-01/next/identity.cert.pem")
    assert entry["next"]["cert_path"] == str(out / "gw-01/next/identity.cert.pem")
    assert entry["next"]["thumbprint_sha1"] == new_leaf.fingerprint(hashes.SHA1()).hex().upper()
    assert entry["thumbprint_sha1"] == leaf_of(out / "gw-01/identity.cert.pem").fingerprint(hashes.SHA1()).hex().upper()
    assert os.stat(out / "gw-01/next/identity.key.pem").st_mode & 0o777 == 0o600
    assert staged["diff"]["after"]["identities"]["gw-01"]["action"] == "stage"
    # A run that could not finish the rotation finds the staged identity and keeps it.
    again = run(ca_dir, out, valid_days=60, renew_before_days=20, now=later, staged=True)
    assert again["changed"] is False and again["summary"]["rotating"] == 3
    assert again["identities"]["gw-01"]["rotation"] == "staged"
    assert again["identities"]["gw-01"]["next"]["thumbprint_sha1"] == entry["next"]["thumbprint_sha1"]


def test_promotion_makes_the_staged_identity_current_and_retires_the_old_one(ca_dir, tmp_path):
    out = tmp_path / "ids"
    run(ca_dir, out)
    old_leaf = leaf_of(out / "gw-02/identity.cert.pem")
    old_files = snapshot(out / "gw-02")
    staged = run(ca_dir, out, staged=True, rotate=["gw-02"])
    assert [d for d, e in staged["identities"].items() if e["rotation"] == "stage"] == ["gw-02"]
    assert staged["identities"]["gw-02"]["reasons"] == ["rotation asked for (rotate)"]
    new_sha1 = staged["identities"]["gw-02"]["next"]["thumbprint_sha1"]
    promoted = run(ca_dir, out, staged=True, promote=["gw-02"])
    entry = promoted["identities"]["gw-02"]
    assert promoted["changed"] is True and promoted["summary"]["promoted"] == 1
    assert (entry["rotation"], entry["thumbprint_sha1"]) == ("promote", new_sha1)
    assert not (out / "gw-02/next").exists()
    retired = out / "gw-02/retired" / f"{old_leaf.serial_number:x}"
    assert entry["retired_path"] == str(retired)
    assert snapshot(retired) == old_files
    chain = x509.load_pem_x509_certificates((out / "gw-02/identity.full-chain.cert.pem").read_bytes())
    assert chain[0] == leaf_of(out / "gw-02/identity.cert.pem")
    assert chain[0].fingerprint(hashes.SHA1()).hex().upper() == new_sha1
    assert chain[0].serial_number != old_leaf.serial_number
    assert run(ca_dir, out, staged=True, promote=["gw-02"])["changed"] is False


def test_a_staged_identity_of_a_rotated_ca_is_staged_again(ca_dir, tmp_path):
    out = tmp_path / "ids"
    run(ca_dir, out)
    run(ca_dir, out, staged=True, rotate=["gw-03"])
    ensure_ca(ca_request(ca_dir, force=True), check_mode=False, now=NOW)
    result = run(ca_dir, out, staged=True)
    assert {d: e["rotation"] for d, e in result["identities"].items()} == dict.fromkeys(DEVICES, "stage")
    assert "not issued by the current CA" in result["identities"]["gw-03"]["reasons"]
    ca = load_ca(str(ca_dir), passphrase=None)
    assert signed_by(leaf_of(out / "gw-03/next/identity.cert.pem"), ca.intermediate_cert)


def test_check_mode_predicts_a_stage_and_writes_nothing(ca_dir, tmp_path):
    out = tmp_path / "ids"
    run(ca_dir, out)
    before = snapshot(out)
    result = run(ca_dir, out, check_mode=True, staged=True, rotate=["gw-01"])
    assert result["changed"] is True and result["identities"]["gw-01"]["next"]["thumbprint_sha1"] is None
    assert snapshot(out) == before


def test_without_staging_a_renewal_still_replaces_in_place(ca_dir, tmp_path):
    out = tmp_path / "ids"
    run(ca_dir, out, valid_days=60, renew_before_days=20)
    result = run(ca_dir, out, valid_days=60, renew_before_days=20, now=NOW + datetime.timedelta(days=41))
    assert result["identities"]["gw-01"]["rotation"] == "none" and "next" not in result["identities"]["gw-01"]
    assert not (out / "gw-01/next").exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"staged": True, "rotate": ["gw-09"]}, "rotate: gw-09 not among devices"),
        ({"promote": ["gw-01"]}, "promote: needs staged=true"),
        ({"staged": True, "rotate": "gw-01"}, "rotate: must be a list of registration ids"),
    ],
)
def test_bad_rotation_input_fails_before_writing(ca_dir, tmp_path, overrides, message):
    out = tmp_path / "ids"
    with pytest.raises(PkiError, match=message):
        run(ca_dir, out, **overrides)
    assert not out.exists()


def test_retired_devices_move_whole_beside_the_identity_directory(ca_dir, tmp_path):
    out = tmp_path / "ids"
    run(ca_dir, out)
    run(ca_dir, out, staged=True, rotate=["gw-02"])
    kept = snapshot(out / "gw-02")
    predicted = run(ca_dir, out, check_mode=True, devices=["gw-02"], state="retired")
    assert predicted["changed"] is True and (out / "gw-02").is_dir()
    retired = run(ca_dir, out, devices=["gw-02", "gw-09"], state="retired")
    entry = retired["identities"]["gw-02"]
    assert retired["summary"] == {"retired": 1, "unchanged": 1} and entry["action"] == "retire"
    target = tmp_path / "ids.retired" / "gw-02" / "20261126T120000Z"
    assert entry["retired_path"] == str(target) and snapshot(target) == kept  # next/ included, nothing lost
    assert (target.parent / "identity.cert.pem").read_bytes() == kept["identity.cert.pem"][0]
    assert not (out / "gw-02").exists() and (out / "gw-01").is_dir()
    assert retired["identities"]["gw-09"]["action"] == "none"
    assert run(ca_dir, out, devices=["gw-02"], state="retired")["changed"] is False
