"""An EST server (RFC 7030) for the lab: ``cacerts``, ``simpleenroll`` and ``simplereenroll`` under
``/.well-known/est[/<label>]``, issuing device certificates from a CA of its own.

Clients authenticate with HTTP basic credentials or a TLS client certificate: a bootstrap identity (issued by the
bootstrap CA the server trusts) or a certificate the server issued. ``simplereenroll`` takes only the latter, and the
CSR must keep its subject (RFC 7030 4.2.2). Requests and responses carry base64 DER: a PKCS#10 CSR in, a PKCS#7
certs-only structure out (``application/pkcs7-mime``), as aziot-certd sends and reads them.

The CA files live in ``<state dir>/est/``; the collection hands the CA in as the fleet CA, uploads it to DPS and
proves possession for a group enrollment, as one would with a real EST server's issuing CA.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lab.cloud.clock import Clock, iso_utc
from lab.cloud.http import Request, Response, Route, RouteMatch, Router, ServiceError
from lab.cloud.service import BaseService

REALM = "edgefleet-lab-est"
CA_VALIDITY = dt.timedelta(days=3650)
DEFAULT_CERT_VALIDITY = dt.timedelta(days=30)
PREFIX = "/.well-known/est"
ROUTES = [
    Route("GET", PREFIX + "/cacerts", "CaCerts", "cacerts"),
    Route("POST", PREFIX + "/simpleenroll", "SimpleEnroll", "simple_enroll"),
    Route("POST", PREFIX + "/simplereenroll", "SimpleReenroll", "simple_reenroll"),
    Route("GET", PREFIX + "/{label}/cacerts", "CaCerts", "cacerts"),
    Route("POST", PREFIX + "/{label}/simpleenroll", "SimpleEnroll", "simple_enroll"),
    Route("POST", PREFIX + "/{label}/simplereenroll", "SimpleReenroll", "simple_reenroll"),
]


class EstError(ServiceError):
    """EST errors are plain text (RFC 7030 4.2.3: a human-readable body)."""

    def to_response(self, request_id: str, tracking_id: str, timestamp: str) -> Response:
        headers = {"Content-Type": "text/plain; charset=utf-8", **self.headers}
        return Response(self.status, (self.message + "\n").encode(), headers)


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


@dataclass
class _Ca:
    cert: x509.Certificate
    key: Any
    cert_path: Path
    key_path: Path

    @classmethod
    def load_or_create(cls, directory: Path, name: str, common_name: str, now: dt.datetime) -> _Ca:
        cert_path, key_path = directory / f"{name}.cert.pem", directory / f"{name}.key.pem"
        if cert_path.exists() and key_path.exists():
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            return cls(cert, key, cert_path, key_path)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + CA_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        directory.mkdir(parents=True, exist_ok=True)
        _write(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()), 0o600)  # fmt: skip
        _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        return cls(cert, key, cert_path, key_path)

    def issued(self, certificate: x509.Certificate) -> bool:
        """Whether ``certificate`` is signed by this CA's key."""
        if certificate.issuer != self.cert.subject:
            return False
        public_key = self.cert.public_key()
        try:
            if isinstance(public_key, ec.EllipticCurvePublicKey):
                public_key.verify(
                    certificate.signature,
                    certificate.tbs_certificate_bytes,
                    ec.ECDSA(certificate.signature_hash_algorithm),
                )
            else:
                public_key.verify(
                    certificate.signature,
                    certificate.tbs_certificate_bytes,
                    padding.PKCS1v15(),
                    certificate.signature_hash_algorithm,
                )
        except InvalidSignature:
            return False
        return True

    def issue(self, subject: x509.Name, public_key, now: dt.datetime, validity: dt.timedelta, *, client: bool):
        usage = x509.KeyUsage(
            digital_signature=True,
            content_commitment=False,
            key_encipherment=isinstance(public_key, rsa.RSAPublicKey),
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=False,
            crl_sign=False,
            encipher_only=False,
            decipher_only=False,
        )
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + validity)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage, critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.cert.public_key()), critical=False)
        )
        if client:
            builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        return builder.sign(self.key, hashes.SHA256())


@dataclass
class EstBackend:
    """The issuing CA, the bootstrap CA it trusts, the basic-auth users and what was issued."""

    directory: Path
    clock: Clock
    users: dict = field(default_factory=dict)
    cert_validity: dt.timedelta = DEFAULT_CERT_VALIDITY
    issued: list = field(default_factory=list)

    def __post_init__(self) -> None:
        now = self.clock.now()
        self.ca = _Ca.load_or_create(self.directory, "ca", "edgefleet lab EST issuing CA", now)
        self.bootstrap_ca = _Ca.load_or_create(self.directory, "bootstrap-ca", "edgefleet lab EST bootstrap CA", now)

    def reset(self) -> None:
        self.issued.clear()

    def state(self) -> dict:
        return {
            "issued": list(self.issued),
            "cert_validity_seconds": int(self.cert_validity.total_seconds()),
            "users": sorted(self.users),
        }

    def bootstrap_identity(self, common_name: str) -> tuple[str, str]:
        """(certificate PEM, key PEM) of a bootstrap identity the server accepts, as a manufacturer would install."""
        key = ec.generate_private_key(ec.SECP256R1())
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return self._bootstrap_certificate(common_name, key.public_key()), key_pem.decode()

    def bootstrap_certificate(self, common_name: str, public_key_pem: str) -> str:
        """A bootstrap certificate for a key the device keeps (in its HSM); ValueError for what is not a public key."""
        if not isinstance(public_key_pem, str):
            raise ValueError("not text")
        public_key = serialization.load_pem_public_key(public_key_pem.encode())
        if not isinstance(public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
            raise ValueError(f"a {type(public_key).__name__} cannot sign a TLS handshake here")
        return self._bootstrap_certificate(common_name, public_key)

    def _bootstrap_certificate(self, common_name: str, public_key) -> str:
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        cert = self.bootstrap_ca.issue(subject, public_key, self.clock.now(), CA_VALIDITY / 2, client=True)
        return cert.public_bytes(serialization.Encoding.PEM).decode()

    # ---- the protocol -----------------------------------------------------------------------------------------

    def authenticate(self, request: Request, *, reenroll: bool) -> tuple[str, x509.Certificate | None]:
        """How the client proved who it is: ('certificate' | 'bootstrap' | 'basic', its certificate or None)."""
        leaf = request.client_chain[0] if request.client_chain else None
        now = self.clock.now()
        if leaf is not None and not (leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc):
            leaf = None  # an expired client certificate proves nothing
        header = request.header("Authorization")
        if header is not None and not self._basic_ok(header):
            raise EstError(401, "Unauthorized", "the user name or password is wrong", _challenge())
        if leaf is not None and self.ca.issued(leaf):
            return "certificate", leaf
        if reenroll:
            raise EstError(
                401, "Unauthorized", "simplereenroll needs the certificate being renewed as TLS client certificate",
                _challenge(),
            )  # fmt: skip
        if leaf is not None and self.bootstrap_ca.issued(leaf):
            return "bootstrap", leaf
        if header is not None:
            return "basic", None
        raise EstError(401, "Unauthorized", "authentication required", _challenge())

    def _basic_ok(self, header: str) -> bool:
        scheme, _space, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _colon, password = base64.b64decode(encoded, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        expected = self.users.get(user)
        return expected is not None and secrets.compare_digest(expected.encode(), password.encode())

    def enroll(self, request: Request, label: str | None, *, reenroll: bool) -> x509.Certificate:
        auth, client = self.authenticate(request, reenroll=reenroll)
        csr = _csr_of(request)
        if reenroll and client is not None and csr.subject != client.subject:
            raise EstError(400, "BadRequest", "simplereenroll must keep the subject of the certificate it renews")
        cert = self.ca.issue(csr.subject, csr.public_key(), self.clock.now(), self.cert_validity, client=True)
        self.issued.append(
            {
                "time": iso_utc(self.clock.now()),
                "operation": "simplereenroll" if reenroll else "simpleenroll",
                "label": label,
                "auth": auth,
                "subject": cert.subject.rfc4514_string(),
                "serial": format(cert.serial_number, "X"),
                "not_after": iso_utc(cert.not_valid_after_utc),
            }
        )
        return cert


def _challenge() -> dict:
    return {"WWW-Authenticate": f'Basic realm="{REALM}"'}


def _csr_of(request: Request) -> x509.CertificateSigningRequest:
    content_type = (request.header("Content-Type") or "").split(";")[0].strip().lower()
    if content_type != "application/pkcs10":
        raise EstError(415, "UnsupportedMediaType", "send the CSR as application/pkcs10 (base64 DER)")
    try:
        csr = x509.load_der_x509_csr(base64.b64decode(b"".join(request.body.split()), validate=True))
    except (binascii.Error, ValueError):
        raise EstError(400, "BadRequest", "the body is not a base64 DER PKCS#10 certificate request") from None
    if not csr.is_signature_valid:
        raise EstError(400, "BadRequest", "the CSR is not signed by the key it carries")
    return csr


def _pkcs7_response(certificates: list) -> Response:
    der = pkcs7.serialize_certificates(certificates, serialization.Encoding.DER)
    body = base64.encodebytes(der)
    headers = {
        "Content-Type": "application/pkcs7-mime; smime-type=certs-only",
        "Content-Transfer-Encoding": "base64",
    }
    return Response(200, body, headers)


class EstResponses(BaseService):
    name = "est"

    def __init__(self, backend: EstBackend, clock: Clock) -> None:
        super().__init__(Router(ROUTES), clock)
        self.backend = backend

    def requires_api_version(self, route: Route) -> bool:
        return False

    def authorize(self, request: Request, match: RouteMatch) -> None:
        return None  # each operation authenticates its own way

    def route_missing(self, request: Request, allowed: list[str]) -> EstError:
        if allowed:
            return EstError(405, "MethodNotAllowed", f"use {', '.join(allowed)}", {"Allow": ", ".join(allowed)})
        return EstError(404, "NotFound", f"no EST operation at {request.path}")

    def api_version_missing(self) -> EstError:
        return EstError(400, "BadRequest", "no api-version")

    def internal_error(self, status: int = 500) -> EstError:
        return EstError(status, "InternalError", "the EST server failed")

    def throttled(self, retry_after: int) -> EstError:
        return EstError(503, "ServiceUnavailable", "try again later", {"Retry-After": str(retry_after)})

    def cacerts(self, request: Request, _principal: Any, label: str | None = None) -> Response:
        return _pkcs7_response([self.backend.ca.cert])

    def simple_enroll(self, request: Request, _principal: Any, label: str | None = None) -> Response:
        return _pkcs7_response([self.backend.enroll(request, label, reenroll=False)])

    def simple_reenroll(self, request: Request, _principal: Any, label: str | None = None) -> Response:
        return _pkcs7_response([self.backend.enroll(request, label, reenroll=True)])
