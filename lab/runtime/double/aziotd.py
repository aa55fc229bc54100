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

import json
import ssl
import sys
import tomllib
from pathlib import Path
from urllib.parse import unquote, urlsplit

from . import IDENTITY_SERVICE_VERSION
from .dps import ProvisioningError, common_name, register_with_dps
from .ipc import activated_sockets, call, serve_json
from .journal import log

ETC = Path("/etc/aziot")
KEYD_SOCKET = "/run/aziot/keyd.sock"
CERTD_SOCKET = "/run/aziot/certd.sock"
IDENTITYD_HOME = Path("/var/lib/aziot/identityd")


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
    state = register_with_dps(
        provisioning["global_endpoint"], provisioning["scope_id"], registration_id, cert_pem, key_pem, IDENTITYD_HOME
    )
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
    except (ServiceError, ProvisioningError, OSError, KeyError, ssl.SSLError) as error:
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
