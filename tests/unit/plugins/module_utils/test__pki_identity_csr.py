"""Identities of devices that make their own key: CSRs checked, signed for their key, no key file on the controller."""

from __future__ import annotations

import datetime
import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki import PkiError, public_key_der, signed_by
from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki_ca import load_ca
from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki_identity import IdentityRequest, ensure_identities
from ansible_collections.edgefleet.iotedge.tests.unit.pki_factories import NOW

DEVICES = ["gw-01", "gw-02"]


def run(ca_dir, out_dir, csrs, *, check_mode=False, now=NOW, **overrides):
    values = {"ca_path": str(ca_dir), "path": str(out_dir), "devices": list(DEVICES), "csrs": csrs}
    values.update(overrides)
    return ensure_identities(IdentityRequest(**values), check_mode=check_mode, now=now)


def device_key(curve=None):
    return ec.generate_private_key(curve or ec.SECP256R1())


def csr_for(key, common_name, *, extra=None, signer=None) -> str:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name), *(extra or [])]
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attributes))
    return builder.sign(signer or key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


def leaf(out, device, *parts):
    return x509.load_pem_x509_certificate(out.joinpath(device, *parts, "identity.cert.pem").read_bytes())


def files_under(directory):
    return sorted(
        str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file() and p.name != ".edgefleet.lock"
    )


def test_the_certificate_is_for_the_devices_key_and_no_key_file_is_written(ca_dir, tmp_path):
    out = tmp_path / "ids"
    keys = {device: device_key() for device in DEVICES}
    result = run(ca_dir, out, {device: csr_for(key, device) for device, key in keys.items()})
    ca = load_ca(str(ca_dir), passphrase=None)
    for device, key in keys.items():
        certificate = leaf(out, device)
        assert public_key_der(certificate.public_key()) == public_key_der(key.public_key())
        assert signed_by(certificate, ca.intermediate_cert)
        chain = x509.load_pem_x509_certificates((out / device / "identity.full-chain.cert.pem").read_bytes())
        assert [c.subject for c in chain] == [certificate.subject, ca.intermediate_cert.subject, ca.root_cert.subject]
        entry = result["identities"][device]
        assert entry["action"] == "create" and entry["key_origin"] == "device" and entry["key_path"] is None
    names = ("identity.cert.pem", "identity.full-chain.cert.pem")
    assert files_under(out) == sorted(f"{device}/{name}" for device in DEVICES for name in names)
    assert result["refused"] == {}


def test_a_new_csr_for_the_same_key_changes_nothing(ca_dir, tmp_path):
    out = tmp_path / "ids"
    keys = {device: device_key() for device in DEVICES}
    run(ca_dir, out, {device: csr_for(key, device) for device, key in keys.items()})
    before = {device: leaf(out, device).serial_number for device in DEVICES}
    # ECDSA signatures differ every time: the CSR's bytes change, its key does not.
    result = run(ca_dir, out, {device: csr_for(key, device) for device, key in keys.items()})
    assert result["changed"] is False
    assert {device: leaf(out, device).serial_number for device in DEVICES} == before


def test_a_device_with_a_new_key_is_reissued_in_place_not_staged(ca_dir, tmp_path):
    out = tmp_path / "ids"
    run(ca_dir, out, {"gw-01": csr_for(device_key(), "gw-01")}, devices=["gw-01"])
    replacement = device_key()
    result = run(ca_dir, out, {"gw-01": csr_for(replacement, "gw-01")}, devices=["gw-01"], staged=True)
    entry = result["identities"]["gw-01"]
    assert entry["action"] == "reissue" and entry["rotation"] == "none"
    assert "the device's CSR carries another key than its certificate" in entry["reasons"]
    assert public_key_der(leaf(out, "gw-01").public_key()) == public_key_der(replacement.public_key())
    assert not (out / "gw-01" / "next").exists()


def test_a_due_identity_is_signed_again_for_the_same_key_and_staged(ca_dir, tmp_path):
    out = tmp_path / "ids"
    key = device_key()
    run(ca_dir, out, {"gw-01": csr_for(key, "gw-01")}, devices=["gw-01"])
    current = leaf(out, "gw-01")
    later = NOW + datetime.timedelta(days=340)
    result = run(ca_dir, out, {"gw-01": csr_for(key, "gw-01")}, devices=["gw-01"], staged=True, now=later)
    entry = result["identities"]["gw-01"]
    assert entry["rotation"] == "stage" and entry["next"]["key_path"] is None
    staged = leaf(out, "gw-01", "next")
    assert public_key_der(staged.public_key()) == public_key_der(key.public_key())
    assert staged.serial_number != current.serial_number
    assert files_under(out / "gw-01") == sorted(
        [
            "identity.cert.pem",
            "identity.full-chain.cert.pem",
            "next/identity.cert.pem",
            "next/identity.full-chain.cert.pem",
        ]
    )
    # The device registered with it: the staged certificate becomes current, the old one is kept, still no key.
    result = run(
        ca_dir, out, {"gw-01": csr_for(key, "gw-01")}, devices=["gw-01"], staged=True, promote=["gw-01"], now=later
    )
    assert result["identities"]["gw-01"]["rotation"] == "promote"
    assert leaf(out, "gw-01").serial_number == staged.serial_number
    retired = out / "gw-01" / "retired" / f"{current.serial_number:x}"
    assert sorted(p.name for p in retired.iterdir()) == ["identity.cert.pem", "identity.full-chain.cert.pem"]
    assert not any(p.name.endswith(".key.pem") for p in out.rglob("*"))


def test_with_a_next_key_a_due_renewal_is_issued_for_it_and_promoted_as_usual(ca_dir, tmp_path):
    out = tmp_path / "ids"
    key, upcoming = device_key(), device_key()
    csrs = {"gw-01": csr_for(key, "gw-01")}
    first = run(ca_dir, out, csrs, devices=["gw-01"], staged=True, next_csrs={"gw-01": csr_for(upcoming, "gw-01")})
    # Not due: the next key waits on the device, nothing is issued for it.
    assert first["identities"]["gw-01"]["action"] == "create" and not (out / "gw-01" / "next").exists()
    assert first["identities"]["gw-01"]["public_key_sha256"] == sha256_hex(key)
    later = NOW + datetime.timedelta(days=340)
    result = run(
        ca_dir, out, csrs, devices=["gw-01"], staged=True, now=later, next_csrs={"gw-01": csr_for(upcoming, "gw-01")}
    )
    entry = result["identities"]["gw-01"]
    assert entry["rotation"] == "stage" and entry["next"]["public_key_sha256"] == sha256_hex(upcoming)
    staged = leaf(out, "gw-01", "next")
    assert public_key_der(staged.public_key()) == public_key_der(upcoming.public_key())
    # Re-run before the rotation: the waiting certificate fits the next key and is kept.
    again = run(
        ca_dir, out, csrs, devices=["gw-01"], staged=True, now=later, next_csrs={"gw-01": csr_for(upcoming, "gw-01")}
    )
    assert again["identities"]["gw-01"]["rotation"] == "staged" and leaf(out, "gw-01", "next") == staged
    # The device registered with it; its next key is its current one now (and it has no next key yet).
    promoted = run(
        ca_dir, out, {"gw-01": csr_for(upcoming, "gw-01")}, devices=["gw-01"], staged=True, promote=["gw-01"], now=later
    )
    assert promoted["identities"]["gw-01"]["rotation"] == "promote"
    assert promoted["identities"]["gw-01"]["public_key_sha256"] == sha256_hex(upcoming)
    assert leaf(out, "gw-01") == staged
    settled = run(ca_dir, out, {"gw-01": csr_for(upcoming, "gw-01")}, devices=["gw-01"], staged=True, now=later)
    assert settled["changed"] is False


def test_a_waiting_renewal_for_another_key_is_staged_again_for_the_next_key(ca_dir, tmp_path):
    out = tmp_path / "ids"
    key = device_key()
    csrs = {"gw-01": csr_for(key, "gw-01")}
    run(ca_dir, out, csrs, devices=["gw-01"], staged=True)
    run(ca_dir, out, csrs, devices=["gw-01"], staged=True, rotate=["gw-01"])
    assert public_key_der(leaf(out, "gw-01", "next").public_key()) == public_key_der(key.public_key())
    # edgefleet_identity_rotate_key turned on while a renewal for the same key waited: it is issued for the next key.
    upcoming = device_key()
    result = run(ca_dir, out, csrs, devices=["gw-01"], staged=True, next_csrs={"gw-01": csr_for(upcoming, "gw-01")})
    assert result["identities"]["gw-01"]["rotation"] == "stage"
    assert public_key_der(leaf(out, "gw-01", "next").public_key()) == public_key_der(upcoming.public_key())


@pytest.mark.parametrize(
    "next_csr, reason",
    [
        (lambda key: csr_for(key, "gw-01"), "next_csrs[gw-01]: the device's CSR is for the device's current key"),
        (lambda key: csr_for(device_key(), "gw-02"), "next_csrs[gw-01]: the device's CSR asks for the subject"),
    ],
)
def test_a_bad_next_csr_refuses_that_device_alone(ca_dir, tmp_path, next_csr, reason):
    out = tmp_path / "ids"
    key = device_key()
    result = run(
        ca_dir,
        out,
        {device: csr_for(key if device == "gw-01" else device_key(), device) for device in DEVICES},
        next_csrs={"gw-01": next_csr(key)},
    )
    assert result["refused"]["gw-01"].startswith(reason)
    assert not (out / "gw-01").exists() and (out / "gw-02" / "identity.cert.pem").exists()


def test_a_next_csr_needs_a_csr(ca_dir, tmp_path):
    with pytest.raises(PkiError, match="next_csrs: gw-02 not in csrs"):
        run(ca_dir, tmp_path / "ids", {"gw-01": None}, next_csrs={"gw-02": None})


def sha256_hex(key) -> str:
    return hashlib.sha256(public_key_der(key.public_key())).hexdigest()


@pytest.mark.parametrize(
    "make_csr, reason",
    [
        (lambda key: csr_for(key, "gw-02"), "asks for the subject 'CN=gw-02'; only CN=gw-01 is signed"),
        (
            lambda key: csr_for(key, "gw-01", extra=[x509.NameAttribute(NameOID.ORGANIZATION_NAME, "x")]),
            "only CN=gw-01 is signed",
        ),
        (
            lambda key: csr_for(device_key(ec.SECP384R1()), "gw-01"),
            "carries a ec-p384 key, and key_type asks for ec-p256",
        ),
        (
            lambda key: csr_for(rsa.generate_private_key(public_exponent=65537, key_size=2048), "gw-01"),
            "carries a rsa-2048 key",
        ),
        (lambda key: "not a csr", "is not a PEM certificate signing request"),
        (
            lambda key: "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
            "cannot be parsed",
        ),
    ],
)
def test_a_bad_csr_refuses_that_device_alone(ca_dir, tmp_path, make_csr, reason):
    out = tmp_path / "ids"
    result = run(ca_dir, out, {"gw-01": make_csr(device_key()), "gw-02": csr_for(device_key(), "gw-02")})
    assert reason in result["refused"]["gw-01"]
    assert result["refused"]["gw-01"].startswith("csrs[gw-01]: the device's CSR ")
    assert result["identities"]["gw-01"]["action"] == "refused"
    assert not (out / "gw-01").exists()
    assert result["identities"]["gw-02"]["action"] == "create" and (out / "gw-02" / "identity.cert.pem").exists()


def test_a_csr_not_signed_by_its_key_is_refused(ca_dir, tmp_path):
    """A device cannot ask for a certificate for a key it does not hold (a public key copied from elsewhere)."""
    victim = device_key()
    forged = x509.load_pem_x509_csr(csr_for(victim, "gw-01").encode())
    der = bytearray(forged.public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0x01  # a byte of the signature
    pem = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM).decode()
    result = run(ca_dir, tmp_path / "ids", {"gw-01": pem}, devices=["gw-01"])
    assert "is not signed by the key it carries" in result["refused"]["gw-01"]


def test_no_csr_keeps_an_existing_certificate_and_refuses_a_new_device(ca_dir, tmp_path):
    out = tmp_path / "ids"
    run(ca_dir, out, {"gw-01": csr_for(device_key(), "gw-01")}, devices=["gw-01"])
    result = run(ca_dir, out, {"gw-01": None, "gw-02": None})
    assert result["identities"]["gw-01"]["action"] == "none" and result["changed"] is False
    assert "the device sent no CSR" in result["refused"]["gw-02"]
    # A due one is kept too, and says why it was not renewed.
    result = run(ca_dir, out, {"gw-01": None}, devices=["gw-01"], staged=True, now=NOW + datetime.timedelta(days=340))
    entry = result["identities"]["gw-01"]
    assert entry["action"] == "none" and entry["rotation"] == "none"
    assert "kept: the device sent no CSR in this run" in entry["reasons"]


def test_check_mode_predicts_a_device_without_a_csr_yet(ca_dir, tmp_path):
    result = run(ca_dir, tmp_path / "ids", {"gw-01": None}, devices=["gw-01"], check_mode=True)
    assert result["identities"]["gw-01"]["action"] == "create" and result["refused"] == {}
    assert not (tmp_path / "ids").exists()


def test_devices_without_a_csr_entry_still_get_a_controller_key(ca_dir, tmp_path):
    out = tmp_path / "ids"
    result = run(ca_dir, out, {"gw-01": csr_for(device_key(), "gw-01")})
    assert result["identities"]["gw-02"]["key_origin"] == "controller"
    assert (out / "gw-02" / "identity.key.pem").exists() and not (out / "gw-01" / "identity.key.pem").exists()


@pytest.mark.parametrize(
    "csrs, message",
    [
        (["gw-01"], "csrs: must map registration ids to PEM CSRs"),
        ({"gw-09": None}, "csrs: gw-09 not among devices"),
        ({"gw-01": 7}, "csrs[gw-01]: must be PEM text or null"),
    ],
)
def test_bad_csrs_option_fails_before_writing(ca_dir, tmp_path, csrs, message):
    with pytest.raises(PkiError, match=message.replace("[", r"\[").replace("]", r"\]")):
        run(ca_dir, tmp_path / "ids", csrs)
    assert not (tmp_path / "ids").exists()


def test_a_device_switched_to_its_own_key_leaves_no_key_of_its_in_the_identity_directory(ca_dir, tmp_path):
    out = tmp_path / "ids"
    run(ca_dir, out, {}, devices=["gw-01"])  # the controller made key and certificate
    pushed = serialization.load_pem_private_key((out / "gw-01" / "identity.key.pem").read_bytes(), password=None)
    old = leaf(out, "gw-01")
    # The host kept the pushed key: its CSR is for it, nothing is reissued, and the result says what to do.
    result = run(ca_dir, out, {"gw-01": csr_for(pushed, "gw-01")}, devices=["gw-01"], staged=True)
    entry = result["identities"]["gw-01"]
    assert entry["action"] == "none" and result["changed"] is False
    assert "the controller holds a copy of this device's key" in entry["reasons"][0]
    # The key was removed on the host, which made a new one: reissued for it; the old files are kept in retired/.
    result = run(ca_dir, out, {"gw-01": csr_for(device_key(), "gw-01")}, devices=["gw-01"], staged=True)
    assert result["identities"]["gw-01"]["action"] == "reissue"
    assert sorted(p.name for p in (out / "gw-01").iterdir()) == [
        "identity.cert.pem",
        "identity.full-chain.cert.pem",
        "retired",
    ]
    retired = out / "gw-01" / "retired" / f"{old.serial_number:x}"
    assert sorted(p.name for p in retired.iterdir()) == [
        "identity.cert.pem",
        "identity.full-chain.cert.pem",
        "identity.key.pem",
    ]
