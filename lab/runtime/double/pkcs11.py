"""PKCS#11 in the double: keyd's URI form, and what keyd does with a key inside a token.

The key never leaves the token: its public half is read with ``p11tool`` (gnutls-bin), and a TLS connection that
must prove the device holds it is made by ``curl`` through OpenSSL's pkcs11 engine (libengine-pkcs11-openssl), which
has the token sign. The PIN reaches those tools through their environment or a 0600 file, never a command line.
The lab image has these packages; lab/README.md says what the double does not do.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from . import x509

# Every byte but ASCII letters and digits is percent-encoded, upper-case (percent_encoding::NON_ALPHANUMERIC).
_ALPHANUMERIC = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")


def _encoded(text: str) -> str:
    return "".join(chr(byte) if byte in _ALPHANUMERIC else f"%{byte:02X}" for byte in text.encode("utf-8"))


@dataclass(frozen=True)
class Pkcs11Uri:
    """keyd's PKCS#11 URI (pkcs11/src/lib.rs): a slot by id or token label, an optional object label and PIN; every
    other attribute is dropped, and a slot id wins over a token label."""

    slot_id: int | None = None
    token: str | None = None
    object_label: str | None = None
    pin: str | None = None

    @classmethod
    def parse(cls, value: str) -> Pkcs11Uri:
        if not value.startswith("pkcs11:"):
            raise ValueError("URI does not have pkcs11 scheme")
        path, _question, query = value[len("pkcs11:") :].partition("?")
        found: dict = {}
        for component in path.split(";"):
            key, _equals, text = component.partition("=")
            key = _decoded(key, key)
            if key in ("object", "slot-id", "token"):
                found[key] = _decoded(text, key)
        for component in query.split("&"):
            key, _equals, text = component.partition("=")
            if _decoded(key, key) == "pin-value":
                found["pin-value"] = _decoded(text, "pin-value")
        slot_id = found.get("slot-id")
        # CK_SLOT_ID is an unsigned long, parsed as Rust parses integers (an optional '+', digits only).
        if slot_id is not None and (not re.fullmatch(r"\+?[0-9]+", slot_id) or int(slot_id) >= 2**64):
            raise ValueError(f"pin-value path component has malformed value [{slot_id}]")
        if slot_id is None and found.get("token") is None:
            raise ValueError("URI has neither [slot-id] nor [token] components")
        return cls(
            slot_id=int(slot_id) if slot_id is not None else None,
            token=None if slot_id is not None else found["token"],
            object_label=found.get("object"),
            pin=found.get("pin-value"),
        )

    def without_pin(self) -> str:
        """The URI as keyd writes it, its PIN left out: what messages show."""
        return str(Pkcs11Uri(self.slot_id, self.token, self.object_label))

    def __str__(self) -> str:
        text = f"pkcs11:slot-id={self.slot_id}" if self.slot_id is not None else f"pkcs11:token={_encoded(self.token)}"
        if self.object_label is not None:
            text += f";object={_encoded(self.object_label)}"
        if self.pin is not None:
            text += f"?pin-value={_encoded(self.pin)}"
        return text


def _decoded(text: str, key: str) -> str:
    try:
        return unquote(text, errors="strict")
    except UnicodeDecodeError:
        raise ValueError(f"URI component with key [{key!r}] is not valid UTF-8") from None


class Pkcs11Error(Exception):
    """What keyd answers when a token key cannot be used; the message names the key and the cause."""


@dataclass(frozen=True)
class TokenKey:
    """A key pair in a token: the library, and the key's URI as keyd has it (PIN included)."""

    lib_path: str
    uri: Pkcs11Uri

    def object_uri(self, kind: str) -> str:
        """The RFC 7512 URI of the key's private or public object, without the PIN (for p11tool and libp11)."""
        if self.uri.slot_id is not None:
            raise Pkcs11Error(
                f"{self.uri.without_pin()}: the edgefleet test double finds keys by token label only "
                "(pkcs11:token=...;object=...); SoftHSM numbers its slots anew when a token is made"
            )
        if self.uri.object_label is None:
            raise Pkcs11Error(f"{self.uri.without_pin()}: the URI names no object (object=...)")
        return str(Pkcs11Uri(token=self.uri.token, object_label=self.uri.object_label)) + f";type={kind}"

    def _tool(self, name: str) -> str:
        found = shutil.which(name)
        if found is None:
            packages = {"p11tool": "gnutls-bin", "curl": "curl and libengine-pkcs11-openssl"}[name]
            raise Pkcs11Error(f"keyd needs {name} for PKCS#11 keys: install {packages}")
        return found

    def public_key_pem(self) -> str:
        environment = {**os.environ, "GNUTLS_PIN": self.uri.pin or ""}
        done = subprocess.run(
            [
                self._tool("p11tool"),
                "--provider",
                self.lib_path,
                "--login",
                "--export-pubkey",
                self.object_uri("public"),
            ],
            capture_output=True,
            text=True,
            env=environment,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        found = re.search(r"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----\n", done.stdout, re.S)
        if done.returncode != 0 or found is None:
            raise Pkcs11Error(f"could not read the public key of {self.uri.without_pin()}: {_last_line(done.stderr)}")
        return found.group(0)

    @contextlib.contextmanager
    def _engine_workspace(self, work_dir: Path):
        """A private directory under ``work_dir`` for one openssl run through libp11's engine, with the engine's
        configuration (the PIN in it, mode 0600): (directory, configuration file); removed afterwards."""
        work_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=work_dir) as private:
            config_file = Path(private) / "openssl.cnf"
            config_file.touch(mode=0o600)
            config_file.write_text(_engine_config(self.lib_path, self.uri.pin))
            yield Path(private), config_file

    def sign_certificate(
        self, csr_pem: str, issuer_cert_pem: str | None, days: int, subject: dict | None, work_dir: Path
    ) -> str:
        """A certificate for the CSR that the token's key signs (a local CA's key in a token): openssl through
        libp11's engine, the key never read out."""
        with self._engine_workspace(work_dir) as (_private_dir, config_file):
            signer = x509.TokenSigner(self.object_uri("private"), str(config_file))
            try:
                return x509.issue(
                    csr_pem,
                    signer_key_pem=None,
                    issuer_cert_pem=issuer_cert_pem,
                    days=days,
                    subject=subject,
                    token_signer=signer,
                )
            except x509.X509Error as error:
                raise Pkcs11Error(f"{self.uri.without_pin()} could not sign the certificate: {error}") from None

    def https(self, cert_pem: str, url: str, method: str, body: dict | None, timeout: int, work_dir: Path) -> tuple:
        """A JSON request (DPS) with mutual TLS whose handshake the token signs: (status, parsed JSON body or None)."""
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if body is not None else {}
        status, _content_type, raw = self.request(cert_pem, url, method, payload, headers, [], timeout, work_dir)
        return status, json.loads(raw) if raw.strip() else None

    def request(
        self,
        cert_pem: str,
        url: str,
        method: str,
        body: bytes | None,
        headers: dict,
        trusted_pems: list,
        timeout: int,
        work_dir: Path,
    ) -> tuple[int, str, bytes]:
        """One HTTPS request with mutual TLS whose handshake the token signs: (status, content type, body). The
        server is trusted by the system store and ``trusted_pems``."""
        curl = self._tool("curl")
        with self._engine_workspace(work_dir) as (private_dir, config_file):
            cert_file, body_file, sent_file, trust_file = (
                private_dir / name for name in ("cert.pem", "body", "sent", "trusted.pem")
            )
            cert_file.write_text(cert_pem)
            command = [
                curl, "--silent", "--show-error", "--max-time", str(timeout), "--request", method,
                "--cert", str(cert_file), "--engine", "pkcs11", "--key-type", "ENG", "--key", self.object_uri("private"),
                "--output", str(body_file), "--write-out", "%{http_code} %{content_type}",
            ]  # fmt: skip
            if trusted_pems:
                trust_file.write_text("".join(trusted_pems))
                command += ["--cacert", str(trust_file), "--capath", "/etc/ssl/certs"]
            for name, value in headers.items():
                command += ["--header", f"{name}: {value}"]
            if body is not None:
                sent_file.write_bytes(body)
                command += ["--data-binary", f"@{sent_file}"]
            done = subprocess.run(
                [*command, url],
                capture_output=True,
                text=True,
                env={**os.environ, "OPENSSL_CONF": str(config_file)},
                stdin=subprocess.DEVNULL,
                check=False,
            )
            if done.returncode != 0:
                raise Pkcs11Error(f"the TLS request with {self.uri.without_pin()} failed: {_last_line(done.stderr)}")
            raw = body_file.read_bytes() if body_file.exists() else b""
        status, _space, content_type = done.stdout.strip().partition(" ")
        return int(status or 0), content_type, raw


def _engine_config(lib_path: str, pin: str | None) -> str:
    """OpenSSL's configuration of libp11's engine: the token library, and the PIN it logs in with."""
    lines = [
        "openssl_conf = openssl_init",
        "[openssl_init]",
        "engines = engine_section",
        "[engine_section]",
        "pkcs11 = pkcs11_section",
        "[pkcs11_section]",
        "engine_id = pkcs11",
        f"MODULE_PATH = {lib_path}",
        "init = 0",
    ]
    if pin is not None:
        lines.insert(-1, f"PIN = {pin}")
    return "\n".join(lines) + "\n"


def _last_line(text: str) -> str:
    lines = [line for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else "no message"
