"""The certificate work of the double's daemons, done with the openssl command line (the lab hosts have no Python
cryptography library): keys, CSRs as the edge daemon makes them, and certd's issuance (self-signed or by an issuer).

The profiles follow the runtime: an Edge CA is CA:TRUE pathlen 0 with digitalSignature and keyCertSign (edge_ca.rs
``extensions``); a module server certificate has serverAuth and its common name and module id as DNS names
(workload ``certificate/server``). Keys are RSA-2048, as the edge daemon asks keyd for ("rsa-2048:*").
"""

from __future__ import annotations

import datetime
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

EDGE_CA_EXTENSIONS = (
    "basicConstraints=critical,CA:TRUE,pathlen:0",
    "keyUsage=critical,digitalSignature,keyCertSign",
)
SERVER_EXTENSIONS = ("extendedKeyUsage=serverAuth",)
# openssl -subj takes these characters of a value escaped.
SUBJECT_ESCAPE = str.maketrans({"/": "\\/", "+": "\\+", "=": "\\=", "\\": "\\\\"})
# certd's validity when the issuance options name none (aziot-certd's default).
DEFAULT_EXPIRY_DAYS = 30


class X509Error(Exception):
    """openssl refused; the message is its own."""


def _openssl(*args: str, stdin: str | None = None, environment: dict | None = None) -> str:
    done = subprocess.run(["openssl", *args], input=stdin, capture_output=True, text=True, check=False, env=environment)
    if done.returncode != 0:
        raise X509Error(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"openssl {args[0]} failed")
    return done.stdout


def _scratch(text: str) -> str:
    handle, path = tempfile.mkstemp(suffix=".pem")
    with os.fdopen(handle, "w") as stream:
        stream.write(text)
    return path


def new_key(path: Path) -> None:
    """An RSA-2048 key, mode 0600, written whole or not at all."""
    staged = path.with_name(f".{path.name}.new")
    _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(staged))
    staged.chmod(0o600)
    os.replace(staged, path)


def _subject_argument(common_name: str, subject: dict | None) -> str:
    """openssl's -subj: CN first (at most 64 characters, as certd truncates it), then the other attributes."""
    attributes = {
        "CN": common_name[:64],
        **{key: value for key, value in (subject or {}).items() if key.upper() != "CN"},
    }
    return "".join(f"/{key}={str(value).translate(SUBJECT_ESCAPE)}" for key, value in attributes.items())


def new_csr(
    key_pem: str,
    common_name: str,
    extensions: tuple[str, ...] = (),
    dns_names: tuple[str, ...] = (),
    subject: dict | None = None,
) -> str:
    key = _scratch(key_pem)
    try:
        args = ["req", "-new", "-utf8", "-key", key, "-subj", _subject_argument(common_name, subject)]
        for extension in extensions:
            args += ["-addext", extension]
        if dns_names:
            args += ["-addext", "subjectAltName=" + ",".join(f"DNS:{name}" for name in dns_names)]
        return _openssl(*args)
    finally:
        os.unlink(key)


def issue(
    csr_pem: str,
    *,
    signer_key_pem: str | None,
    issuer_cert_pem: str | None,
    days: int,
    subject: dict | None = None,
    token_signer: TokenSigner | None = None,
) -> str:
    """The CSR signed by the issuer (self-signed when ``issuer_cert_pem`` is None), its extensions copied.

    The signing key is ``signer_key_pem``, or a key in a PKCS#11 token that ``token_signer`` names (libp11's engine
    signs; the key never leaves the token). ``subject`` replaces the CSR's (certd's issuance option, in its order).
    A certificate never outlives its issuer.
    """
    files = [_scratch(csr_pem)]
    environment = None
    try:
        args = ["x509", "-req", "-in", files[0], "-copy_extensions", "copyall", "-sha256", "-set_serial", _serial()]
        if token_signer is not None:
            signer, environment = token_signer.key_uri, {**os.environ, "OPENSSL_CONF": token_signer.openssl_conf}
            args += ["-engine", "pkcs11", "-CAkeyform" if issuer_cert_pem else "-keyform", "engine"]
        else:
            signer = _scratch(signer_key_pem or "")
            files.append(signer)
        if issuer_cert_pem is None:
            args += ["-signkey", signer]
        else:
            files.append(_scratch(issuer_cert_pem))
            args += ["-CA", files[-1], "-CAkey", signer]
            days = max(1, min(days, days_left(issuer_cert_pem)))
        if subject:
            args += ["-subj", _subject_in_order(subject)]
        args += ["-days", str(days)]
        return _openssl(*args, environment=environment)
    finally:
        for path in files:
            os.unlink(path)


@dataclass(frozen=True)
class TokenSigner:
    """A key in a token for openssl: its RFC 7512 URI and the OpenSSL configuration that loads libp11's engine."""

    key_uri: str
    openssl_conf: str


def _subject_in_order(subject: dict) -> str:
    """openssl's -subj for certd's subject option: its attributes in the table's (sorted) order, the CN cut to 64."""
    parts = []
    for name in sorted(subject):
        value = str(subject[name])
        parts.append(f"/{name}={(value[:64] if name.upper() == 'CN' else value).translate(SUBJECT_ESCAPE)}")
    return "".join(parts)


def _serial() -> str:
    return "0x" + os.urandom(16).hex()


def first_certificate(pem: str) -> str:
    end = "-----END CERTIFICATE-----"
    return pem[: pem.index(end) + len(end)] + "\n" if end in pem else pem


def validity(pem: str) -> tuple[datetime.datetime, datetime.datetime]:
    """(notBefore, notAfter) of the first certificate, UTC."""
    text = _openssl("x509", "-noout", "-startdate", "-enddate", stdin=first_certificate(pem))
    moments = {}
    for line in text.splitlines():
        name, _separator, value = line.partition("=")
        moments[name] = datetime.datetime.strptime(value, "%b %d %H:%M:%S %Y %Z").replace(tzinfo=datetime.UTC)
    return moments["notBefore"], moments["notAfter"]


def days_left(pem: str) -> int:
    return (validity(pem)[1] - datetime.datetime.now(datetime.UTC)).days


def renewal_due(auto_renew: dict, pem: str, now: datetime.datetime | None = None) -> bool:
    """cert_renewal's Policy::should_renew: past a share of the lifetime (``N%``), within a time of the end
    (``Nmin``, ``Nday``), or already expired."""
    not_before, not_after = validity(pem)
    now = now or datetime.datetime.now(datetime.UTC)
    if not_before >= not_after or not_after <= now:
        return True
    threshold = auto_renew["threshold"]
    if threshold.endswith("%"):
        return (now - not_before) * 100 / (not_after - not_before) >= int(threshold[:-1])
    seconds = int(threshold[:-3]) * (60 if threshold.endswith("min") else 86400)
    return (not_after - now).total_seconds() <= seconds


def csr_common_name(csr_pem: str) -> str:
    text = _openssl("req", "-noout", "-subject", "-nameopt", "RFC2253", stdin=csr_pem)
    for part in text.split("=", 1)[-1].strip().split(","):
        if part.startswith("CN="):
            return part[3:]
    return ""


def subject_table(pem: str) -> dict:
    """The first certificate's subject as {short name: value}, in its order (a renewal asks for the same subject)."""
    text = _openssl("x509", "-noout", "-subject", "-nameopt", "sep_multiline,sname,utf8", stdin=first_certificate(pem))
    table = {}
    for line in text.splitlines()[1:]:
        name, _separator, value = line.strip().partition("=")
        table[name] = value
    return table


def subject_common_name(pem: str) -> str:
    text = _openssl("x509", "-noout", "-subject", "-nameopt", "multiline", stdin=first_certificate(pem))
    for line in text.splitlines():
        name, _separator, value = line.partition("=")
        if name.strip() == "commonName":
            return value.strip()
    return ""
