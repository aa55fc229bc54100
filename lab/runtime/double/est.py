"""certd's EST client (aziot-certd est.rs): ``POST <url>/simpleenroll`` with the CSR as base64 DER, together with
``GET <url>/cacerts``; the issued certificate followed by the CA certificates is the result.

TLS trusts the system store and the configured ``trusted_certs``; the client certificate is an EST identity or the
bootstrap identity; basic credentials go with both requests. Renewals enroll again the same way: certd never calls
``simplereenroll``. Failures carry certd's own words (``EST endpoint did not return successful response: 401
Unauthorized b"..."``).
"""

from __future__ import annotations

import base64
import http.client
import re
import ssl
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

TIMEOUT_SECONDS = 60
REASONS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 415: "Unsupported Media Type"}


class EstFailure(Exception):
    """What certd reports when an issuance by EST fails."""


def _context(trusted_pems: list[str], client: tuple[str, str] | None, private_dir: Path) -> ssl.SSLContext:
    context = ssl.create_default_context()
    for pem in trusted_pems:
        context.load_verify_locations(cadata=pem)
    if client is not None:
        with tempfile.TemporaryDirectory(dir=private_dir if private_dir.is_dir() else None) as private:
            cert_file, key_file = Path(private) / "cert.pem", Path(private) / "key.pem"
            for path, content in ((cert_file, client[0]), (key_file, client[1])):
                path.touch(mode=0o600)
                path.write_text(content)
            context.load_cert_chain(cert_file, key_file)
    return context


def _call(url: str, context, method: str, body: bytes | None, headers: dict) -> tuple[int, dict, bytes]:
    parts = urlsplit(url)
    connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    extra = {"context": context} if parts.scheme == "https" else {}
    connection = connection_class(parts.hostname, parts.port, timeout=TIMEOUT_SECONDS, **extra)
    try:
        connection.request(method, parts.path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    except (OSError, ssl.SSLError) as error:
        raise EstFailure(f"could not connect to the EST server {parts.netloc}: {error}") from None
    finally:
        connection.close()


def _certificates(headers: dict, body: bytes) -> str:
    """The certificates of a PKCS#7 certs-only response (PEM, or base64 DER), as PEM."""
    content_type = headers.get("content-type", "")
    if not (content_type == "application/pkcs7-mime" or content_type.startswith("application/pkcs7-mime;")):
        raise EstFailure(f"EST response has unexpected content type {content_type!r}")
    text = body.decode("ascii", errors="replace")
    if "-----BEGIN PKCS7-----" in text:
        args, stdin = ["pkcs7", "-print_certs"], text.encode()
    else:
        try:
            stdin = base64.b64decode("".join(text.split()), validate=True)
        except ValueError:
            raise EstFailure("EST response is not a base64 PKCS#7 structure") from None
        args = ["pkcs7", "-inform", "DER", "-print_certs"]
    done = subprocess.run(["openssl", *args], input=stdin, capture_output=True, check=False)
    certificates = re.findall(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\n", done.stdout, re.S)
    if done.returncode != 0 or not certificates:
        raise EstFailure("EST response holds no certificate")
    return b"".join(certificates).decode()


def csr_der_base64(csr_pem: str) -> bytes:
    """The PEM CSR's DER in base64 lines of 64 characters, as chunked_base64_encode writes it."""
    body = "".join(line for line in csr_pem.splitlines() if line and not line.startswith("-----"))
    der = base64.b64decode(body)
    encoded = base64.b64encode(der).decode()
    return "".join(encoded[i : i + 64] + "\n" for i in range(0, len(encoded), 64)).encode()


def enroll(
    url: str,
    csr_pem: str,
    *,
    trusted_pems: list[str],
    basic: tuple[str, str] | None,
    private_dir: Path,
    client: tuple[str, str] | None = None,
    send=None,
) -> str:
    """The issued certificate, then the EST server's CA certificates, as PEM. ``send(method, url, body, headers)`` ->
    (status, headers, body) makes the requests instead when the client key is in a token (keyd's)."""
    if send is None:
        context = _context(trusted_pems, client, private_dir)

        def send(method, full_url, body, headers):
            return _call(full_url, context, method, body, headers)

    base = url if url.endswith("/") else url + "/"
    headers = {}
    if basic is not None:
        token = base64.b64encode(f"{basic[0]}:{basic[1]}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    enroll_headers = {**headers, "Content-Type": "application/pkcs10", "Content-Transfer-Encoding": "base64"}
    answers = []
    for method, operation, body, request_headers in (
        ("POST", "simpleenroll", csr_der_base64(csr_pem), enroll_headers),
        ("GET", "cacerts", None, headers),
    ):
        status, response_headers, response_body = send(method, base + operation, body, request_headers)
        if status != 200:
            reason = REASONS.get(status, "")
            raise EstFailure(
                f"EST endpoint did not return successful response: {status} {reason} {_bytes_debug(response_body)}"
            )
        answers.append(_certificates(response_headers, response_body))
    return answers[0] + answers[1]


def _bytes_debug(data: bytes) -> str:
    """bytes::Bytes' Debug form: b"..." with escapes."""
    escapes = {0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t", 0x22: '\\"', 0x5C: "\\\\"}
    text = "".join(escapes.get(byte, chr(byte) if 0x20 <= byte < 0x7F else f"\\x{byte:02x}") for byte in data)
    return f'b"{text}"'
