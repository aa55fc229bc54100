"""Fixtures for the lab emulators: one in-process lab per session (reset before every test) and test PKI."""

from __future__ import annotations

import datetime as dt
import http.client
import json
import os
import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lab.cloud import CloudLab
from lab.cloud.sas import make_token

NOW = dt.datetime.now(dt.UTC)


@dataclass
class Issued:
    """A certificate, its key, and the files a device would hold."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    chain: list[x509.Certificate]

    @property
    def pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode()

    def write(self, directory: Path, name: str) -> tuple[Path, Path]:
        """(fullchain.pem = cert then issuers, key.pem)."""
        chain_path, key_path = directory / f"{name}.fullchain.pem", directory / f"{name}.key.pem"
        chain_path.write_bytes(
            b"".join(c.public_bytes(serialization.Encoding.PEM) for c in [self.certificate, *self.chain])
        )
        key_path.write_bytes(
            self.key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        return chain_path, key_path


class Pki:
    """Builds root -> intermediate -> leaf chains like the collection's edge_pki role does."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @staticmethod
    def _issue(common_name: str, issuer: Issued | None, not_after: dt.datetime, extensions: list) -> tuple:
        """Key and certificate signed by `issuer` (self-signed without one)."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer.certificate.subject if issuer else subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(days=1))
            .not_valid_after(not_after)
        )
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical=critical)
        return key, builder.sign(issuer.key if issuer else key, hashes.SHA256())

    def ca(self, name: str, issuer: Issued | None = None, not_after: dt.datetime | None = None) -> Issued:
        key, certificate = self._issue(
            name,
            issuer,
            not_after or NOW + dt.timedelta(days=365),
            [(x509.BasicConstraints(ca=True, path_length=None), True)],
        )
        chain = [issuer.certificate, *issuer.chain] if issuer else []
        return Issued(certificate, key, chain)

    def leaf(self, common_name: str, issuer: Issued | None = None, not_after: dt.datetime | None = None) -> Issued:
        key, certificate = self._issue(
            common_name,
            issuer,
            not_after or NOW + dt.timedelta(days=30),
            [
                (x509.BasicConstraints(ca=False, path_length=None), True),
                (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False),
            ],
        )
        # The device sends leaf + intermediates, never the root (the root is what DPS already trusts).
        chain = [c for c in ([issuer.certificate, *issuer.chain] if issuer else []) if c.issuer != c.subject]
        return Issued(certificate, key, chain)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def root(pki: Pki) -> Issued:
    return pki.ca("edgefleet test root")


@pytest.fixture(scope="session")
def intermediate(pki: Pki, root: Issued) -> Issued:
    return pki.ca("edgefleet test intermediate", root)


@pytest.fixture(scope="session")
def lab_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudLab]:
    with CloudLab.start(tmp_path_factory.mktemp("cloud")) as cloud:
        yield cloud


@pytest.fixture
def cloud(lab_session: CloudLab, monkeypatch: pytest.MonkeyPatch) -> CloudLab:
    lab_session.reset()
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(lab_session.ca_bundle))
    return lab_session


SOFTHSM = Path("/usr/lib/softhsm/libsofthsm2.so")


@dataclass(frozen=True)
class SoftToken:
    """A SoftHSM2 token of the test's own (its files in the test's directory), as the role initialises one."""

    label: str
    pin: str

    def _p11tool(self, *argv: str) -> str:
        environment = {**os.environ, "GNUTLS_SO_PIN": "5678", "GNUTLS_PIN": self.pin}
        done = subprocess.run(
            ["p11tool", "--provider", str(SOFTHSM), *argv], env=environment, check=True, capture_output=True, text=True
        )
        return done.stdout

    def generate(self, object_label: str) -> ec.EllipticCurvePublicKey:
        """A P-256 key made inside the token; only its public half comes out."""
        token = f"pkcs11:token={self.label}"
        self._p11tool("--login", "--generate-privkey=ecdsa", "--curve=secp256r1", f"--label={object_label}", token)
        exported = self._p11tool("--login", "--export-pubkey", f"{token};object={object_label}")
        public_key = serialization.load_pem_public_key(
            exported[exported.index("-----BEGIN PUBLIC KEY-----") :].encode()
        )
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        return public_key

    def uri(self, object_label: str) -> str:
        return f"pkcs11:token={self.label};object={object_label}?pin-value={self.pin}"


@pytest.fixture
def soft_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SoftToken:
    if not SOFTHSM.exists() or shutil.which("p11tool") is None or shutil.which("curl") is None:
        pytest.skip("needs softhsm2, gnutls-bin, curl and libengine-pkcs11-openssl (make setup installs them)")
    (tmp_path / "tokens").mkdir()
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tmp_path / 'tokens'}\nobjectstore.backend = file\n")
    monkeypatch.setenv("SOFTHSM2_CONF", str(conf))
    token = SoftToken("lab", "1234")
    token._p11tool("--initialize", "--label", token.label, "pkcs11:token=")
    token._p11tool("--initialize-pin", f"pkcs11:token={token.label}")
    return token


class HttpsClient:
    """A tiny client over http.client: JSON in, (status, headers, JSON) out."""

    def __init__(self, port: int, context: ssl.SSLContext) -> None:
        self.port = port
        self.context = context

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], Any]:
        connection = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.context, timeout=10)
        try:
            payload = json.dumps(body).encode() if body is not None else None
            all_headers = {"Content-Type": "application/json"} if payload is not None else {}
            all_headers.update(headers or {})
            connection.request(method, path, body=payload, headers=all_headers)
            response = connection.getresponse()
            raw = response.read()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, json.loads(raw) if raw else None
        finally:
            connection.close()


def trust(cloud: CloudLab) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cloud.ca_bundle))


@pytest.fixture
def dps_http(cloud: CloudLab) -> HttpsClient:
    return HttpsClient(cloud.dps_port, trust(cloud))


@pytest.fixture
def control(cloud: CloudLab) -> HttpsClient:
    return HttpsClient(cloud.dps_port, trust(cloud))


def dps_token(cloud: CloudLab, policy: str = "provisioningserviceowner", ttl: int = 3600) -> str:
    key = cloud.runtime.dps_policies[policy].key
    return make_token(cloud.dps_host_name, key, policy, int(time.time()) + ttl)


@pytest.fixture
def device_client(cloud: CloudLab, pki: Pki):
    """Factory: an HttpsClient to the DPS global endpoint presenting ``issued`` (leaf + chain) over mutual TLS."""

    def build(issued: Issued | None, name: str = "device") -> HttpsClient:
        context = trust(cloud)
        if issued is not None:
            chain_path, key_path = issued.write(pki.directory, f"{name}-{issued.certificate.serial_number}")
            context.load_cert_chain(chain_path, key_path)
        return HttpsClient(cloud.device_port, context)

    return build


def x509_enrollment(registration_id: str, pem: str, **extra: Any) -> dict[str, Any]:
    return {
        "registrationId": registration_id,
        "attestation": {"type": "x509", "x509": {"clientCertificates": {"primary": {"certificate": pem}}}},
        **extra,
    }


def group_enrollment(group_id: str, pem: str | None = None, ca_name: str | None = None, **extra: Any) -> dict[str, Any]:
    x509_attestation: dict[str, Any] = (
        {"signingCertificates": {"primary": {"certificate": pem}}} if pem else {"caReferences": {"primary": ca_name}}
    )
    return {"enrollmentGroupId": group_id, "attestation": {"type": "x509", "x509": x509_attestation}, **extra}


@dataclass(frozen=True)
class Kit:
    """Helpers handed to tests as a fixture (test modules do not import conftest)."""

    cloud: CloudLab

    def dps_auth(self, policy: str = "provisioningserviceowner", ttl: int = 3600) -> dict[str, str]:
        return {"Authorization": dps_token(self.cloud, policy, ttl)}

    @staticmethod
    def x509_enrollment(registration_id: str, pem: str, **extra: Any) -> dict[str, Any]:
        return x509_enrollment(registration_id, pem, **extra)

    @staticmethod
    def group_enrollment(
        group_id: str, pem: str | None = None, ca_name: str | None = None, **extra: Any
    ) -> dict[str, Any]:
        return group_enrollment(group_id, pem, ca_name, **extra)

    def https(self, port: int) -> HttpsClient:
        return HttpsClient(port, trust(self.cloud))


@pytest.fixture
def kit(cloud: CloudLab) -> Kit:
    return Kit(cloud)


class Bodies:
    """Request-body builders that need no running lab (backend tests)."""

    x509_enrollment = staticmethod(x509_enrollment)
    group_enrollment = staticmethod(group_enrollment)


@pytest.fixture
def bodies() -> type[Bodies]:
    return Bodies
