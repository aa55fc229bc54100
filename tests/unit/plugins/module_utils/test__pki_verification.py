"""Proof-of-possession certificates."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki import PkiError, signed_by
from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki_ca import ensure_ca, load_ca
from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki_verification import (
    VerificationRequest,
    ensure_verification_certificate,
)
from ansible_collections.edgefleet.iotedge.tests.unit.pki_factories import NOW, ca_request

CODE = "2A8C4E1F0B3D5A7C9E1F3B5D7A9C1E3F5B7D9A1C3E5F7B9D"


def run(ca_dir, path, *, check_mode=False, **overrides):
    values = {"ca_path": str(ca_dir), "path": str(path), "verification_code": CODE}
    values.update(overrides)
    return ensure_verification_certificate(VerificationRequest(**values), check_mode=check_mode, now=NOW)


@pytest.mark.parametrize("signer", ["root", "intermediate"])
def test_certificate_carries_the_code_and_is_signed_by_the_chosen_ca(ca_dir, tmp_path, signer):
    path = tmp_path / "verify.pem"
    result = run(ca_dir, path, signer=signer)
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == CODE
    ca = load_ca(str(ca_dir), passphrase=None)
    assert signed_by(cert, ca.root_cert if signer == "root" else ca.intermediate_cert)
    assert result["changed"] is True and len(result["thumbprint_sha1"]) == 40
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")) == []


def test_idempotent_and_new_code_reissues(ca_dir, tmp_path):
    path = tmp_path / "verify.pem"
    first = run(ca_dir, path)
    again = run(ca_dir, path)
    assert again["changed"] is False and again["thumbprint_sha1"] == first["thumbprint_sha1"]
    other = run(ca_dir, path, verification_code="ABCDEF0123")
    assert other["changed"] is True and other["reasons"] == ["CN is not the verification code"]


def test_signer_switch_reissues(ca_dir, tmp_path):
    path = tmp_path / "verify.pem"
    run(ca_dir, path, signer="root")
    assert run(ca_dir, path, signer="intermediate")["reasons"] == ["not signed by the intermediate"]


def test_check_mode_writes_nothing(ca_dir, tmp_path):
    result = run(ca_dir, tmp_path / "verify.pem", check_mode=True)
    assert result["changed"] is True and not (tmp_path / "verify.pem").exists()


def test_check_mode_before_the_ca_exists_predicts_a_certificate(tmp_path):
    result = run(tmp_path / "no-ca", tmp_path / "verify.pem", check_mode=True)
    assert result["changed"] is True and result["thumbprint_sha1"] is None
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"verification_code": "has space"}, "verification_code: 'has space' is not a verification code"),
        ({"verification_code": "x" * 65}, "is not a verification code"),
        ({"signer": "leaf"}, "signer: 'leaf' is not known"),
    ],
)
def test_bad_input(ca_dir, tmp_path, overrides, message):
    with pytest.raises(PkiError, match=message):
        run(ca_dir, tmp_path / "verify.pem", **overrides)
    assert not (tmp_path / "verify.pem").exists()


def test_intermediate_signer_without_intermediate(tmp_path):
    ca_dir = tmp_path / "ca"
    ensure_ca(ca_request(ca_dir, intermediate=False), check_mode=False, now=NOW)
    with pytest.raises(PkiError, match="signer: the CA in ca_path has no intermediate; use signer=root"):
        run(ca_dir, tmp_path / "verify.pem", signer="intermediate")
