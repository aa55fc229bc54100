"""Certificate helpers shared by the emulators: parsing what clients upload, thumbprints, chain checks."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from lab.cloud.clock import iso_utc


class CertificateParseError(ValueError):
    """The uploaded text is not a certificate in any of the encodings clients use."""


def load_certificate(text: str) -> x509.Certificate:
    """Accept PEM text, base64 of PEM text (seen from the C SDK) or base64 DER (.cer), as DPS does."""
    candidate = text.strip()
    if not candidate:
        raise CertificateParseError("empty certificate")
    if "-----BEGIN CERTIFICATE-----" in candidate:
        try:
            return x509.load_pem_x509_certificate(candidate.encode())
        except ValueError as exc:
            raise CertificateParseError(f"invalid PEM certificate: {exc}") from exc
    try:
        raw = base64.b64decode(candidate, validate=False)
    except (binascii.Error, ValueError) as exc:
        raise CertificateParseError("certificate is neither PEM nor base64") from exc
    if b"-----BEGIN CERTIFICATE-----" in raw:
        return load_certificate(raw.decode(errors="replace"))
    try:
        return x509.load_der_x509_certificate(raw)
    except ValueError as exc:
        raise CertificateParseError(f"invalid DER certificate: {exc}") from exc


def to_pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def sha1_thumbprint(certificate: x509.Certificate) -> str:
    return certificate.fingerprint(hashes.SHA1()).hex().upper()


def sha256_thumbprint(certificate: x509.Certificate) -> str:
    return certificate.fingerprint(hashes.SHA256()).hex().upper()


def common_name(certificate: x509.Certificate) -> str | None:
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else None


def distinguished_name(name: x509.Name) -> str:
    """``CN=..., O=...`` style, most specific attribute first as Azure shows it."""
    return ", ".join(rdn.rfc4514_string() for rdn in reversed(name.rdns))


def certificate_info(certificate: x509.Certificate) -> dict[str, Any]:
    """The X509CertificateInfo object DPS returns instead of the PEM (protocols.md 1.7)."""
    return {
        "subjectName": distinguished_name(certificate.subject),
        "sha1Thumbprint": sha1_thumbprint(certificate),
        "sha256Thumbprint": sha256_thumbprint(certificate),
        "issuerName": distinguished_name(certificate.issuer),
        "notBeforeUtc": iso_utc(certificate.not_valid_before_utc),
        "notAfterUtc": iso_utc(certificate.not_valid_after_utc),
        "serialNumber": format(certificate.serial_number, "X"),
        "version": certificate.version.value + 1,
    }


def is_issued_by(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True when ``issuer``'s key signed ``child`` (name match plus a real signature check)."""
    if child.issuer != issuer.subject:
        return False
    public_key = issuer.public_key()
    try:
        if isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(
                child.signature,
                child.tbs_certificate_bytes,
                padding.PKCS1v15(),
                child.signature_hash_algorithm,  # type: ignore[arg-type]
            )
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(
                child.signature,
                child.tbs_certificate_bytes,
                ec.ECDSA(child.signature_hash_algorithm),  # type: ignore[arg-type]
            )
        else:
            child.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def is_self_signed(certificate: x509.Certificate) -> bool:
    return is_issued_by(certificate, certificate)


def is_valid_at(certificate: x509.Certificate, moment: dt.datetime) -> bool:
    return certificate.not_valid_before_utc <= moment <= certificate.not_valid_after_utc
