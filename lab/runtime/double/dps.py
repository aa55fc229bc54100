"""DPS registration over HTTPS with an X.509 client certificate, as IoT Edge's clients do it (protocols.md 2.5).

PUT .../register with the identity chain and key as client certificate, trusting only the system store; 202
expected; then GET the operation every 5 s, with no limit, until it is no longer "assigning". Shared by 1.2+'s
aziot-identityd and 1.1's iotedged.
"""

from __future__ import annotations

import http.client
import json
import ssl
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote, urlsplit

DPS_API_VERSION = "2021-06-01"
POLL_SECONDS = 5
CLOUD_TIMEOUT_SECONDS = 70


class ProvisioningError(Exception):
    """Why DPS did not assign the device (the daemon logs it, then falls back to its backup or fails)."""


def common_name(pem: str) -> str:
    """The subject CN of the first certificate in ``pem`` (openssl comes with ca-certificates)."""
    subject = subprocess.run(
        ["openssl", "x509", "-noout", "-subject", "-nameopt", "RFC2253"],
        input=pem,
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    for part in subject.strip().removeprefix("subject=").split(","):
        if part.startswith("CN="):
            return part[3:]
    raise ProvisioningError("the identity certificate has no CN and no registration_id is configured")


def tls_context(cert_pem: str, key_pem: str, private_dir: Path) -> ssl.SSLContext:
    """System trust only (as aziot), the identity chain and key as client certificate.

    ``ssl`` loads a key from a file only: it goes to a temporary file in the daemon's own 0700 home, then away.
    """
    context = ssl.create_default_context()
    with tempfile.TemporaryDirectory(dir=private_dir if private_dir.is_dir() else None) as private:
        cert_file, key_file = Path(private) / "cert.pem", Path(private) / "key.pem"
        for path, content in ((cert_file, cert_pem), (key_file, key_pem)):
            path.touch(mode=0o600)
            path.write_text(content)
        context.load_cert_chain(cert_file, key_file)
    return context


def _request(endpoint, context, method: str, path: str, body: dict | None):
    parts = urlsplit(endpoint)
    connection = http.client.HTTPSConnection(
        parts.hostname, parts.port or 443, context=context, timeout=CLOUD_TIMEOUT_SECONDS
    )
    try:
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        connection.request(method, path, body=payload, headers=headers)
        response = connection.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw else None
    finally:
        connection.close()


def _dps_failure(status: int, body) -> ProvisioningError:
    body = body if isinstance(body, dict) else {}
    code = body.get("errorCode", body.get("code"))
    message = body.get("message", body.get("errorMessage"))
    if code is None or message is None:
        return ProvisioningError(f"DPS: HTTP error {status}")
    return ProvisioningError(f"DPS: {message} (error code {code})")


def read_device_backup(path: Path) -> dict:
    """A provisioning backup (identityd's device_info, 1.1's provisioning_backup.json): the device and its hub.

    OSError when it cannot be read, ValueError when it is not a usable backup.
    """
    device = json.loads(path.read_text())
    if not isinstance(device, dict) or not device.get("hub") or not device.get("device_id"):
        raise ValueError(f"{path} has no hub or device id")
    return device


def file_key_sender(endpoint: str, cert_pem: str, key_pem: str, private_dir: Path):
    """``send(method, path, body) -> (status, body)`` over mutual TLS with a key keyd read from a file."""
    context = tls_context(cert_pem, key_pem, private_dir)
    return lambda method, path, body: _request(endpoint, context, method, path, body)


def register_with_dps(scope: str, registration_id: str, send) -> dict:
    """PUT .../register (202 expected), then GET the operation every 5 s until it is no longer assigning; ``send``
    makes each request over mutual TLS with the device's identity (file_key_sender, or keyd's for a token key)."""
    base = f"/{quote(scope)}/registrations/{quote(registration_id)}"
    status, body = send("PUT", f"{base}/register?api-version={DPS_API_VERSION}", {"registrationId": registration_id})
    if status != 202 or not isinstance(body, dict) or "operationId" not in body:
        raise _dps_failure(status, body)
    operation = body["operationId"]
    while True:
        time.sleep(POLL_SECONDS)
        status, body = send("GET", f"{base}/operations/{quote(operation)}?api-version={DPS_API_VERSION}", None)
        if status not in (200, 202) or not isinstance(body, dict) or "registrationState" not in body:
            raise _dps_failure(status, body)
        state = body["registrationState"]
        if body.get("status") == "assigning":
            continue
        if body.get("status") == "assigned":
            return state
        if body.get("status") == "failed":
            raise ProvisioningError(f"DPS: {state.get('errorMessage')} (error code {state.get('errorCode')})")
        raise ProvisioningError(f"DPS: unexpected registration status {body.get('status')!r}")
