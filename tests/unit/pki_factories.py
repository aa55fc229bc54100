"""Builders shared by the PKI unit tests."""

from __future__ import annotations

import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki_ca import CaRequest

NOW = datetime.datetime(2026, 11, 26, 12, 0, 0, tzinfo=datetime.UTC)


def ca_request(path, **overrides) -> CaRequest:
    values = {
        "path": str(path),
        "root_common_name": "Test Root CA",
        "intermediate": True,
        "intermediate_common_name": "Test Intermediate CA",
        "key_type": "ec-p256",
        "valid_days": 3650,
        "not_after": None,
        "passphrase": None,
        "state": "present",
        "generation": "1.2+",
        "force": False,
    }
    values.update(overrides)
    return CaRequest(**values)


def self_signed_device(common_name: str, days: int = 30) -> tuple[x509.Certificate, str]:
    """A device certificate valid from yesterday, and its PEM (self-signed: for code that reads CN and thumbprints)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    return certificate, certificate.public_bytes(serialization.Encoding.PEM).decode()
