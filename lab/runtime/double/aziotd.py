"""``aziotd <service>``: the identity-service daemons of the double, each as its own user (systemd units).

- aziot-keyd (aziotks) hands out the preloaded private keys it can read; a key aziotks cannot read fails here, as
  on a real device.
- aziot-certd (aziotcs) hands out the preloaded certificates it can read.
- aziot-identityd (aziotid) provisions at startup: it gets the identity certificate and key from certd and keyd,
  registers with DPS over mutual TLS (trusting only the system store), polls every 5 s until assigned, keeps a
  backup of the result, and then tells the edge daemon which device it is on which hub.
- aziot-tpmd (aziottpm) has nothing to do for X.509 and only answers.
"""

from __future__ import annotations

import http.client
import json
import ssl
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from . import IDENTITY_SERVICE_VERSION
from .ipc import activated_sockets, call, serve_json
from .journal import log

ETC = Path("/etc/aziot")
KEYD_SOCKET = "/run/aziot/keyd.sock"
CERTD_SOCKET = "/run/aziot/certd.sock"
IDENTITYD_HOME = Path("/var/lib/aziot/identityd")
DPS_API_VERSION = "2021-06-01"
POLL_SECONDS = 5
CLOUD_TIMEOUT_SECONDS = 70


class ServiceError(Exception):
    """What the daemon logs at ERROR before it exits (systemd restarts it)."""


def load_config(service: str) -> dict:
    path = ETC / service / "config.d" / "00-super.toml"
    try:
        return tomllib.loads(path.read_text())
    except OSError as error:
        raise ServiceError(f"could not read config from {path}: {error.strerror}") from None


def file_of(uri: str) -> Path:
    parts = urlsplit(uri)
    if parts.scheme != "file" or parts.netloc not in ("", "localhost"):
        raise ServiceError(f"{uri} does not have a valid URI: not a valid path")
    return Path(unquote(parts.path))


# ---- keyd and certd ---------------------------------------------------------------------------------------


def preloaded_reader(table: str, what: str):
    def handle(request: dict) -> dict:
        config = load_config("keyd" if table == "preloaded_keys" else "certd")
        item_id = request.get("id", "")
        location = (config.get(table) or {}).get(item_id)
        if location is None:
            return {"error": f"{what} {item_id!r} not found"}
        if isinstance(location, str) and location.startswith("pkcs11:"):
            return {"error": f"{what} {item_id!r}: PKCS#11 keys are not implemented by the edgefleet test double"}
        path = file_of(location)
        try:
            return {"pem": path.read_text()}
        except OSError as error:
            message = f"could not load {what} {item_id!r} from {path}: {error.strerror} (os error {error.errno})"
            log("ERROR", message)
            return {"error": message}

    return handle


# ---- identityd --------------------------------------------------------------------------------------------


def _fetch(socket_path: str, request: dict, what: str) -> str:
    answer = call(socket_path, request)
    if "pem" not in answer:
        raise ServiceError(f"could not get {what}: {answer.get('error', 'no answer')}")
    return answer["pem"]


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
    raise ServiceError("the identity certificate has no CN and no registration_id is configured")


def tls_context(cert_pem: str, key_pem: str) -> ssl.SSLContext:
    """System trust only (as aziot), the identity chain and key as client certificate."""
    context = ssl.create_default_context()
    with tempfile.TemporaryDirectory(dir=IDENTITYD_HOME if IDENTITYD_HOME.is_dir() else None) as private:
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


def _dps_failure(status: int, body) -> ServiceError:
    body = body if isinstance(body, dict) else {}
    code = body.get("errorCode", body.get("code"))
    message = body.get("message", body.get("errorMessage"))
    if code is None or message is None:
        return ServiceError(f"DPS: HTTP error {status}")
    return ServiceError(f"DPS: {message} (error code {code})")


def register_with_dps(provisioning: dict, cert_pem: str, key_pem: str, registration_id: str) -> dict:
    """PUT .../register (202 expected), then GET the operation every 5 s until it is no longer assigning."""
    endpoint = provisioning["global_endpoint"]
    scope = provisioning["scope_id"]
    context = tls_context(cert_pem, key_pem)
    base = f"/{quote(scope)}/registrations/{quote(registration_id)}"
    status, body = _request(
        endpoint, context, "PUT", f"{base}/register?api-version={DPS_API_VERSION}", {"registrationId": registration_id}
    )
    if status != 202 or not isinstance(body, dict) or "operationId" not in body:
        raise _dps_failure(status, body)
    operation = body["operationId"]
    while True:
        time.sleep(POLL_SECONDS)
        status, body = _request(
            endpoint, context, "GET", f"{base}/operations/{quote(operation)}?api-version={DPS_API_VERSION}", None
        )
        if status not in (200, 202) or not isinstance(body, dict) or "registrationState" not in body:
            raise _dps_failure(status, body)
        state = body["registrationState"]
        if body.get("status") == "assigning":
            continue
        if body.get("status") == "assigned":
            return state
        if body.get("status") == "failed":
            raise ServiceError(f"DPS: {state.get('errorMessage')} (error code {state.get('errorCode')})")
        raise ServiceError(f"DPS: unexpected registration status {body.get('status')!r}")


def provision() -> dict:
    config = load_config("identityd")
    provisioning = config.get("provisioning") or {}
    if provisioning.get("source") != "dps":
        raise ServiceError("only DPS provisioning is implemented by the edgefleet test double")
    attestation = provisioning.get("attestation") or {}
    if attestation.get("method") != "x509":
        raise ServiceError("only X.509 attestation is implemented by the edgefleet test double")
    cert_pem = _fetch(CERTD_SOCKET, {"id": attestation["identity_cert"]}, "the identity certificate")
    key_pem = _fetch(KEYD_SOCKET, {"id": attestation["identity_pk"]}, "the identity private key")
    # Prefer the registration ID specified in config, but use the certificate's subject otherwise (identity.rs).
    registration_id = attestation.get("registration_id") or common_name(cert_pem)
    state = register_with_dps(provisioning, cert_pem, key_pem, registration_id)
    log("INFO", "Successfully provisioned with DPS.")
    device = {"hub": state["assignedHub"], "device_id": state["deviceId"], "registration_id": registration_id}
    backup = IDENTITYD_HOME / "device_info"
    backup.write_text(json.dumps(device) + "\n")
    backup.chmod(0o600)
    return device


def identityd(listener) -> int:
    log("INFO", f"Starting Azure IoT Identity Service {IDENTITY_SERVICE_VERSION} (edgefleet test double)")
    log("INFO", "Provisioning starting. Reason: Startup")
    try:
        device = provision()
    except (ServiceError, OSError, KeyError, ssl.SSLError) as error:
        log("ERROR", f"Failed to provision with IoT Hub: {error}")
        return 1
    log("INFO", "Provisioning complete.")
    log("INFO", "Identity reconciliation started. Reason: Startup")
    log("INFO", "Identity reconciliation complete.")

    def handle(request: dict) -> dict:
        if request.get("op") == "get_device":
            return device
        return {"error": f"unknown operation {request.get('op')!r}"}

    serve_json(listener, handle)
    return 0


# ---- entry point ------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    service = args[0] if args else "aziotd"
    if "--version" in args:
        print(f"{service} {IDENTITY_SERVICE_VERSION}")
        return 0
    sockets = list(activated_sockets().values())
    if not sockets:
        log("ERROR", f"{service}: no socket from systemd; start it through {service}.socket")
        return 1
    listener = sockets[0]
    if service == "aziot-identityd":
        return identityd(listener)
    handlers = {
        "aziot-keyd": preloaded_reader("preloaded_keys", "key pair"),
        "aziot-certd": preloaded_reader("preloaded_certs", "certificate"),
        "aziot-tpmd": lambda request: {"error": "no TPM in the edgefleet test double"},
    }
    if service not in handlers:
        log("ERROR", f"unknown service {service}")
        return 1
    log("INFO", f"Starting {service} {IDENTITY_SERVICE_VERSION} (edgefleet test double)")
    serve_json(listener, handlers[service])
    return 0
