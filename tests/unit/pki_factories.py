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


def self_signed(common_name: str, *, not_before, not_after):
    """An EC P-256 certificate with only a CN, signed by its own key; returns (certificate, key).

    Device stand-ins for code that reads CN, validity and thumbprints (DPS compares thumbprints either way).
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )
    return certificate, key


def self_signed_device(common_name: str, days: int = 30) -> tuple[x509.Certificate, str]:
    """A device certificate valid from yesterday, and its PEM."""
    now = datetime.datetime.now(datetime.UTC)
    certificate = self_signed(
        common_name, not_before=now - datetime.timedelta(days=1), not_after=now + datetime.timedelta(days=days)
    )[0]
    return certificate, certificate.public_bytes(serialization.Encoding.PEM).decode()
