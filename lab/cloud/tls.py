"""The lab CA and TLS server contexts.

Servers use pyOpenSSL because Python 3.11's ``ssl`` cannot show a server the full chain a client sent
(protocols.md 2.7); the DPS device endpoint needs that chain to match enrollments as DPS does.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL

CA_VALIDITY = dt.timedelta(days=3650)
SERVER_VALIDITY = dt.timedelta(days=825)


def _write_private(path: Path, data: bytes) -> None:
    """Write a secret atomically with mode 0600."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def _write_public(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


@dataclass(frozen=True)
class ServerIdentity:
    """Files a TLS server needs: the certificate chain (leaf then CA) and its key."""

    chain_path: Path
    key_path: Path


class LabCA:
    """A private CA whose certificate the lab writes out as the CA bundle clients trust.

    The CA is reused when the state directory already holds one, so hosts that installed it stay valid.
    """

    CERT_FILE = "ca.pem"
    KEY_FILE = "ca.key"

    def __init__(self, certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey, directory: Path) -> None:
        self.certificate = certificate
        self.key = key
        self.directory = directory

    @property
    def bundle_path(self) -> Path:
        return self.directory / self.CERT_FILE

    @classmethod
    def load_or_create(cls, directory: Path, now: dt.datetime | None = None) -> LabCA:
        directory.mkdir(parents=True, exist_ok=True)
        cert_path, key_path = directory / cls.CERT_FILE, directory / cls.KEY_FILE
        if cert_path.exists() and key_path.exists():
            certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            if isinstance(key, ec.EllipticCurvePrivateKey):
                return cls(certificate, key, directory)
        now = now or dt.datetime.now(dt.UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edgefleet lab"),
                x509.NameAttribute(NameOID.COMMON_NAME, "edgefleet lab CA"),
            ]
        )
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + CA_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        _write_private(
            key_path,
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
        )
        _write_public(cert_path, certificate.public_bytes(serialization.Encoding.PEM))
        return cls(certificate, key, directory)

    def issue_server_identity(self, name: str = "server", now: dt.datetime | None = None) -> ServerIdentity:
        """A server certificate for 127.0.0.1 and localhost, the only addresses the lab listens on."""
        now = now or dt.datetime.now(dt.UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + SERVER_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
                ),
                critical=False,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        chain_path = self.directory / f"{name}-chain.pem"
        key_path = self.directory / f"{name}.key"
        _write_public(
            chain_path,
            certificate.public_bytes(serialization.Encoding.PEM)
            + self.certificate.public_bytes(serialization.Encoding.PEM),
        )
        _write_private(
            key_path,
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
        )
        return ServerIdentity(chain_path, key_path)


def _accept_any_client_certificate(
    _connection: SSL.Connection, _certificate: object, _error: int, _depth: int, _ok: int
) -> bool:
    # The TLS layer only collects the chain; the service decides as DPS does (who enrolled, who is verified).
    return True


def server_context(identity: ServerIdentity, request_client_certificate: bool) -> SSL.Context:
    """A TLS 1.2+ server context; optionally asks for (but does not require) a client certificate."""
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    context.set_min_proto_version(SSL.TLS1_2_VERSION)
    context.use_certificate_chain_file(str(identity.chain_path))
    context.use_privatekey_file(str(identity.key_path))
    context.check_privatekey()
    if request_client_certificate:
        context.set_verify(SSL.VERIFY_PEER, _accept_any_client_certificate)
        context.set_session_id(b"edgefleet-lab")
    return context
