"""``aziot-edged``: the edge daemon of the double (user iotedge, sockets from systemd).

It obtains the device's provisioning data from aziot-identityd (which registers with DPS on its start), makes sure
the Edge CA exists (keyd and certd: the one config.toml preloads, or one certd issues, renewed by
[edge_ca.auto_renew]), serves the workload API (trust bundle, module server certificates issued by the Edge CA),
"runs" edgeAgent - the double has no container engine, so a module is a record with an image, a status and a start
time - then, as edgeAgent would, follows ``$edgeAgent``'s desired properties on the lab hub (a deployment brings edgeHub and
its modules), reports the modules' status back, and serves the management API that ``iotedge list`` reads.
"""

from __future__ import annotations

import datetime
import http.client
import json
import re
import socket
import socketserver
import ssl
import struct
import sys
import tempfile
import threading
import time
import tomllib
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

from . import EDGE_VERSION, x509
from .aziotd import CERTD_SOCKET, KEYD_SOCKET, request_reprovision
from .ipc import activated_sockets, call
from .journal import log

CONFIG = Path("/etc/aziot/edged/config.d/00-super.toml")
IDENTITYD_SOCKET = "/run/aziot/identityd.sock"
MGMT_SOCKET_NAME = "aziot-edged.mgmt.socket"
WORKLOAD_SOCKET_NAME = "aziot-edged.workload.socket"
EDGE_CA_ALIAS = "aziot-edged-ca"
TRUST_BUNDLE_ALIAS = "aziot-edged-trust-bundle"
# The edge daemon's renewal engine checks the Edge CA this often in the double.
RENEWAL_CHECK_SECONDS = 60
DEFAULT_AGENT_IMAGE = "mcr.microsoft.com/azureiotedge-agent:1.5"
# edgeAgent receives desired properties by MQTT push; the double reads them this often instead.
DEPLOYMENT_POLL_SECONDS = 5
# aziot-edged's exit code when its settings cannot be loaded; systemd does not restart it (RestartPreventExitStatus).
EXIT_BAD_SETTINGS = 153


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")


def module_record(name: str, image: str, started: str) -> dict:
    """A module as the management API (api-version 2020-07-07) describes it."""
    return {
        "id": name,
        "name": name,
        "type": "docker",
        "config": {"settings": {"image": image}},
        "status": {"startTime": started, "runtimeStatus": {"status": "running", "description": "running"}},
    }


def _hub_call(device: dict, method: str, module: str | None, body: dict | None = None) -> dict:
    """The lab hub's device-traffic stand-in (control plane /_emulator/iothub/twins, lab/README.md)."""
    host, _separator, port = device["hub"].partition(":")
    connection = http.client.HTTPSConnection(host, int(port or 443), context=ssl.create_default_context(), timeout=30)
    path = f"/_emulator/iothub/twins/{quote(device['device_id'], safe='')}"
    if module:
        path += f"/modules/{quote(module, safe='')}"
    try:
        payload = json.dumps(body).encode() if body is not None else None
        connection.request(method, path, body=payload, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        answer = json.loads(response.read() or b"{}")
    finally:
        connection.close()
    if response.status != 200:
        raise OSError(f"the hub answered {response.status}: {answer}")
    return answer


# The lab's image-pull convention: an image whose registry host is in the ``.invalid`` top-level domain (RFC 6761:
# it never resolves, so a real engine could not pull it either), e.g. ``unpullable.invalid/sensor:2.0``, fails to
# pull; every other image "pulls" at once (lab/README.md).
UNPULLABLE_TLD = ".invalid"
# edgeAgent's lastDesiredStatus codes (iotedge doc/reported_states_during_deployment.md, DeploymentStatusCode.cs).
STATUS_OK, STATUS_SCHEMA, STATUS_EMPTY, STATUS_FAILED = 200, 412, 417, 500
# The deployment schema edgeAgent 1.5 accepts: major 1, at most 1.1 (EdgeAgentConnection.ExpectedSchemaVersion).
EXPECTED_SCHEMA = (1, 1)
SYSTEM_MODULES = ("edgeAgent", "edgeHub")


def registry_host(image: str) -> str | None:
    """Docker's rule: the first path component names a registry when it has a dot or a port, or is localhost."""
    first, slash, _rest = image.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return first.split(":")[0]
    return None


def image_pullable(image: str) -> bool:
    host = registry_host(image)
    return not (host and host.lower().endswith(UNPULLABLE_TLD))


def desired_module_specs(desired: dict) -> dict[str, dict]:
    """name -> {image, status} for edgeHub and the deployment's modules, stopped ones included."""
    specs = {}
    edge_hub = ((desired.get("systemModules") or {}).get("edgeHub")) or {}
    if (edge_hub.get("settings") or {}).get("image"):
        specs["edgeHub"] = {"image": edge_hub["settings"]["image"], "status": edge_hub.get("status") or "running"}
    for name, module in (desired.get("modules") or {}).items():
        image = ((module or {}).get("settings") or {}).get("image")
        if image:
            specs[name] = {"image": image, "status": module.get("status") or "running"}
    return specs


def desired_modules(desired: dict) -> dict[str, str]:
    """name -> image for edgeHub and the deployment's modules that should run (``status`` other than stopped)."""
    return {name: spec["image"] for name, spec in desired_module_specs(desired).items() if spec["status"] == "running"}


def deployment_problem(desired: dict) -> dict | None:
    """lastDesiredStatus for a deployment edgeAgent refuses before planning (EdgeAgentConnection.cs), else None."""
    if not {key: value for key, value in desired.items() if not key.startswith("$")}:
        message = "This device has an empty configuration for the edge agent. Please set a deployment manifest."
        return {"code": STATUS_EMPTY, "description": message}
    schema = str(desired.get("schemaVersion") or "")
    parts = schema.split(".")
    if not 2 <= len(parts) <= 4 or not all(part.isdigit() for part in parts):
        return {"code": STATUS_SCHEMA, "description": f"Invalid desired properties schema version {schema}"}
    version = tuple(int(part) for part in parts[:2])
    if version[0] != EXPECTED_SCHEMA[0] or version > EXPECTED_SCHEMA:
        return {
            "code": STATUS_SCHEMA,
            "description": f"The desired properties schema version {schema} is not compatible with the expected "
            "version 1.1.0",
        }
    return None


def pull_failure(operation: str, image: str) -> str:
    """What edgeAgent's exception says when edged could not pull (ModuleManagementHttpClient + edgelet-docker)."""
    return f'Error calling {operation}: registry operation error: pull image "{image}"'


def reconcile(desired: dict, current: list[dict], agent: dict, started: str) -> tuple[list[dict], dict]:
    """edgeAgent's plan for one desired state: (the module records afterwards, lastDesiredStatus).

    Modules the deployment no longer names are removed; a new module whose image cannot be pulled is never created,
    a changed one keeps running its previous image; the deployment then reports 500 with the failures, as the
    planner's AggregateException reads; otherwise 200."""
    problem = deployment_problem(desired)
    if problem is not None:
        return current, problem
    existing = {module["name"]: module for module in current}
    modules, failures = [agent], []
    for name, spec in sorted(desired_module_specs(desired).items()):
        before = existing.get(name)
        if before and before["config"]["settings"]["image"] == spec["image"]:
            modules.append(with_status(before, spec["status"], started))
            continue
        log("INFO", f"Pulling image via tag {spec['image']}...")
        if not image_pullable(spec["image"]):
            log("WARN", f"Could not pull image {spec['image']}: the registry host does not resolve")
            failures.append(
                pull_failure(f"prepare update for module {name}" if before else f"Create module {name}", spec["image"])
            )
            if before:
                modules.append(before)
            continue
        log("INFO", f"Creating and starting module {name}...")
        modules.append(with_status(module_record(name, spec["image"], started), spec["status"], started))
    if failures:
        description = "One or more errors occurred. " + " ".join(f"({failure})" for failure in failures)
        return modules, {"code": STATUS_FAILED, "description": description}
    return modules, {"code": STATUS_OK, "description": ""}


def with_status(module: dict, status: str, started: str) -> dict:
    """The record with the desired status applied: a stopped module is listed as stopped, a started one runs."""
    runtime = module["status"]["runtimeStatus"]["status"]
    if status == runtime:
        return module
    record = json.loads(json.dumps(module))
    record["status"]["runtimeStatus"] = {"status": status, "description": status}
    if status == "running":
        record["status"]["startTime"] = started
    return record


def reported_properties(modules: list[dict], version: int | None, status: dict | None, removed=()) -> dict:
    """edgeAgent's reported properties: lastDesiredVersion/Status, the runtime, and each module as it runs.
    ``removed`` names modules reported before and gone now (null removes them, as edgeAgent's patch does)."""

    def section(module: dict) -> dict:
        return {
            "runtimeStatus": module["status"]["runtimeStatus"]["status"],
            "status": module["status"]["runtimeStatus"]["status"],
            "settings": {"image": module["config"]["settings"]["image"]},
            "lastStartTimeUtc": module["status"]["startTime"],
            "type": "docker",
        }

    system = {m["name"]: section(m) for m in modules if m["name"] in SYSTEM_MODULES}
    custom: dict = {m["name"]: section(m) for m in modules if m["name"] not in SYSTEM_MODULES}
    custom.update(dict.fromkeys((name for name in removed if name not in SYSTEM_MODULES), None))
    if "edgeHub" in removed:
        system["edgeHub"] = None
    reported: dict = {"schemaVersion": "1.0", "runtime": {"type": "docker"}, "systemModules": system, "modules": custom}
    if version is not None:
        reported["lastDesiredVersion"] = version
    if status is not None:
        reported["lastDesiredStatus"] = status
    return reported


def report_to_hub(
    device: dict, modules: list[dict], version: int | None = None, status: dict | None = None, removed=()
) -> None:
    """Send edgeAgent's reported properties (through the lab hub's device-traffic stand-in) and its connection."""
    reported = reported_properties(modules, version, status, removed)
    _hub_call(device, "PATCH", "$edgeAgent", {"reported": reported, "connectionState": "Connected"})


class DeploymentFollower:
    """edgeAgent's loop in the double: reconcile when the desired $version changes (or the last one failed, as
    edgeAgent retries), then report what runs."""

    def __init__(self, device: dict, agent: dict) -> None:
        self.device = device
        self.agent = agent
        self.version: int | None = None
        self.status: dict | None = None
        self.reported_names: set[str] = set()

    def step(self, desired: dict) -> bool:
        """One reconcile against ``desired``; True when something was reported."""
        version = desired.get("$version")
        if version == self.version and (self.status or {}).get("code") == STATUS_OK:
            return False
        modules, status = reconcile(desired, ManagementApi.modules or [self.agent], self.agent, now())
        names = {module["name"] for module in modules}
        changed = (version, status) != (self.version, self.status) or modules != ManagementApi.modules
        if "edgeHub" in names - self.reported_names:
            edge_hub_server_certificate(self.device)
        ManagementApi.modules = modules
        if changed:
            report_to_hub(self.device, modules, version, status, sorted(self.reported_names - names))
        self.version, self.status, self.reported_names = version, status, names
        return changed


def follow_deployments(device: dict, agent: dict) -> None:
    """Apply ``$edgeAgent``'s desired properties to the module records and report, whenever they change."""
    follower = DeploymentFollower(device, agent)
    while True:
        try:
            desired = _hub_call(device, "GET", "$edgeAgent").get("properties", {}).get("desired", {})
            follower.step(desired)
        except (OSError, ValueError, ssl.SSLError) as error:
            log("WARN", f"Could not read or report the deployment on {device['hub']}: {error}")
        time.sleep(DEPLOYMENT_POLL_SECONDS)


# ---- the Edge CA ------------------------------------------------------------------------------------------


class EdgeCaError(Exception):
    """What keeps the edge daemon from having an Edge CA; it logs it and exits, as the real one does."""


def _service(socket_path: str, request: dict, what: str) -> str:
    answer = call(socket_path, request)
    if "error" in answer:
        raise EdgeCaError(f"{what}: {answer['error']}")
    return answer.get("pem", "")


@dataclass
class EdgeCa:
    """edged's [edge_ca]: the cert and key ids (default aziot-edged-ca), the subject of one it requests, and the
    renewal policy (none for a preloaded Edge CA, which the runtime cannot renew)."""

    cert_id: str
    key_id: str
    common_name: str
    auto_renew: dict | None

    @classmethod
    def from_settings(cls, settings: dict, device_id: str) -> EdgeCa:
        table = settings.get("edge_ca") or {}
        return cls(
            cert_id=table.get("cert", EDGE_CA_ALIAS),
            key_id=table.get("key", EDGE_CA_ALIAS),
            common_name=f"aziot-edge CA {device_id}",
            auto_renew=table.get("auto_renew"),
        )

    def certificate(self) -> str:
        return _service(CERTD_SOCKET, {"id": self.cert_id}, "failed to get edge ca cert")

    def key(self) -> str:
        return _service(KEYD_SOCKET, {"id": self.key_id}, "failed to get edge ca key")

    def trust_bundle(self) -> str:
        return _service(CERTD_SOCKET, {"id": TRUST_BUNDLE_ALIAS}, f'certificate "{TRUST_BUNDLE_ALIAS}" not found')

    def server_certificate(self, module_id: str, gen_id: str, common_name: str) -> dict:
        return server_certificate(self, module_id, gen_id, common_name)

    def ensure(self) -> None:
        """check_edge_ca: create the key if missing, then request a certificate unless certd has one."""
        _service(
            KEYD_SOCKET, {"op": "create_key_pair_if_not_exists", "id": self.key_id}, "failed to create edge ca key"
        )
        if "error" not in call(CERTD_SOCKET, {"id": self.cert_id}):
            log("INFO", "Using existing Edge CA certificate")
        else:
            log("INFO", "Requesting new Edge CA certificate...")
            self._request(self.cert_id, self.key_id, self.common_name)
            log("INFO", "Created new Edge CA certificate")
        if self.auto_renew is None:
            log("WARN", "Auto renewal of the Edge CA is not configured. Edge CA will not be automatically renewed")

    def _request(self, cert_id: str, key_id: str, common_name: str) -> str:
        try:
            csr = x509.new_csr(self.key_of(key_id), common_name, x509.EDGE_CA_EXTENSIONS)
        except x509.X509Error as error:
            raise EdgeCaError(f"failed to generate edge ca csr: {error}") from None
        return _service(
            CERTD_SOCKET,
            {"op": "create_cert", "id": cert_id, "csr": csr, "key_id": key_id},
            "failed to create edge ca cert",
        )

    @staticmethod
    def key_of(key_id: str) -> str:
        return _service(KEYD_SOCKET, {"id": key_id}, f"failed to get key {key_id}")

    def due(self, now: datetime.datetime | None = None) -> bool:
        """cert_renewal's Policy::should_renew for the threshold: a share of the lifetime used, or time left."""
        if self.auto_renew is None:
            return False
        return x509.renewal_due(self.auto_renew, self.certificate(), now)

    def renew(self) -> None:
        """A new certificate with the old one's subject, under the temporary ids, then moved into place; a new key
        when rotate_key (edge_ca.rs renew_cert)."""
        temp = f"{self.cert_id}-temp"
        subject = x509.subject_common_name(self.certificate())
        key_id = self.key_id
        if self.auto_renew.get("rotate_key", True):
            key_id = f"{self.key_id}-temp"
            _service(KEYD_SOCKET, {"op": "delete_key_pair", "id": key_id}, "failed to clear temp key")
            _service(KEYD_SOCKET, {"op": "create_key_pair_if_not_exists", "id": key_id}, "failed to generate temp key")
        self._request(temp, key_id, subject)
        if key_id != self.key_id:
            _service(KEYD_SOCKET, {"op": "move_key_pair", "from": key_id, "id": self.key_id}, "failed to move key")
        _service(CERTD_SOCKET, {"op": "move_cert", "from": temp, "id": self.cert_id}, "failed to move cert")
        log("INFO", "Edge CA was renewed")


def renew_edge_ca_when_due(edge_ca: EdgeCa) -> None:
    """The renewal engine: renew when the policy says so, then restart every module (their server certificates
    were issued by the old Edge CA)."""
    while True:
        time.sleep(RENEWAL_CHECK_SECONDS)
        try:
            if not edge_ca.due():
                continue
            edge_ca.renew()
        except (EdgeCaError, x509.X509Error, OSError) as error:
            log("WARN", f"Edge CA renewal failed: {error}")
            continue
        log("INFO", "Edge CA was renewed; restarting modules")
        restarted = now()
        for module in ManagementApi.modules:
            module["status"]["startTime"] = restarted
        log("INFO", "Edge CA renewal stopped all modules")
        for module in ManagementApi.modules:
            log("INFO", f"Edge CA renewal restarted {module['name']}")


def new_server_key_and_csr(module_id: str, common_name: str) -> tuple[str, str]:
    """The key the edge daemon makes for a module's server certificate, and the CSR: serverAuth, the common name and
    the module id as DNS names (workload certificate/server)."""
    with tempfile.TemporaryDirectory() as scratch:
        key_path = Path(scratch) / "server.key"
        x509.new_key(key_path)
        key_pem = key_path.read_text()
    return key_pem, x509.new_csr(key_pem, common_name, x509.SERVER_EXTENSIONS, (common_name, module_id))


def server_certificate(edge_ca: EdgeCa, module_id: str, gen_id: str, common_name: str) -> dict:
    """The workload API's certificate/server: a new key, a certificate for the CN and the module id issued by the
    Edge CA through certd (cert id aziot-edged/module/<id>:<genid>:server), and its expiration."""
    module_id = module_id.lstrip("$")
    key_pem, csr = new_server_key_and_csr(module_id, common_name)
    chain = _service(
        CERTD_SOCKET,
        {
            "op": "create_cert",
            "id": f"aziot-edged/module/{module_id}:{gen_id}:server",
            "csr": csr,
            "issuer": {"cert_id": edge_ca.cert_id, "key_id": edge_ca.key_id},
        },
        f"failed to create cert aziot-edged/module/{module_id}:{gen_id}:server",
    )
    expiration = x509.validity(chain)[1].isoformat()
    return {"privateKey": {"type": "key", "bytes": key_pem}, "certificate": chain, "expiration": expiration}


def edge_hub_server_certificate(device: dict) -> None:
    """What edgeHub asks the workload API for when it starts: a server certificate for the device's hostname, issued
    by the Edge CA (the double has no edgeHub container; certd keeps the certificate)."""
    if WorkloadApi.issuer is None:
        return
    try:
        issued = WorkloadApi.issuer.server_certificate("edgeHub", "1", device.get("hostname") or socket.gethostname())
    except (EdgeCaError, x509.X509Error, OSError) as error:
        log("WARN", f"edgeHub could not get its server certificate: {error}")
        return
    log("INFO", f"edgeHub got its server certificate from the Edge CA (expires {issued['expiration']})")


def run_edge_runtime(device: dict, image: str, listener, workload_listener=None) -> None:
    """Start edgeAgent, follow deployments in the background and serve the management and workload APIs, forever."""
    if workload_listener is not None:
        threading.Thread(target=UnixHttpServer(workload_listener, WorkloadApi).serve_forever, daemon=True).start()
    log("INFO", "Watchdog checking Edge runtime status")
    log("INFO", "Creating and starting Edge runtime module edgeAgent...")
    agent = module_record("edgeAgent", image, now())
    ManagementApi.modules = [agent]
    log("INFO", "Created Edge runtime module edgeAgent")
    log("INFO", "Started Edge runtime module edgeAgent")
    threading.Thread(target=follow_deployments, args=(device, agent), daemon=True).start()
    log("INFO", "Edge runtime is running")
    UnixHttpServer(listener).serve_forever()


class ManagementApi(BaseHTTPRequestHandler):
    modules: list[dict] = []

    def do_GET(self) -> None:
        if self.path.split("?")[0] == "/modules":
            self._json(200, {"modules": self.modules})
        else:
            self._json(404, {"message": f"no route {self.path}"})

    def _json(self, status: int, body: dict) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def address_string(self) -> str:
        return "mgmt.sock"

    def log_message(self, format: str, *args) -> None:
        """Requests are not journal-worthy."""


class WorkloadApi(BaseHTTPRequestHandler):
    """The workload API's routes that the double serves: the trust bundle, and module server certificates.

    The real daemon admits a caller only if its pid belongs to the module it names; the double has no containers,
    so it serves root only (peer credentials) and refuses everyone else (lab/README.md).
    """

    # What issues: the Edge CA through certd (1.2+), or iotedged's workload CA (1.1); trust_bundle, server_certificate.
    issuer = None
    server_route = re.compile(r"^/modules/(?P<module>[^/]+)/genid/(?P<genid>[^/]+)/certificate/server$")

    def _route(self) -> tuple[str, dict] | None:
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        if not query.get("api-version"):
            self._json(400, {"message": "missing api-version"})
            return None
        if not _caller_is_root(self.connection):
            self._json(403, {"message": "the edgefleet test double serves the workload API to root only"})
            return None
        return parts.path, query

    def do_GET(self) -> None:
        routed = self._route()
        if routed is None:
            return
        if routed[0] != "/trust-bundle":
            self._json(404, {"message": f"no route {routed[0]}"})
            return
        try:
            bundle = self.issuer.trust_bundle()
        except EdgeCaError as error:
            self._json(404, {"message": str(error)})
            return
        self._json(200, {"certificate": bundle})

    def do_POST(self) -> None:
        routed = self._route()
        if routed is None:
            return
        found = self.server_route.match(routed[0])
        if found is None:
            self._json(404, {"message": f"no route {routed[0]}"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"null")
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("commonName"), str):
            self._json(400, {"message": "missing request body"})
            return
        try:
            issued = self.issuer.server_certificate(
                unquote(found["module"]), unquote(found["genid"]), body["commonName"]
            )
        except (EdgeCaError, x509.X509Error) as error:
            self._json(500, {"message": str(error)})
            return
        self._json(201, issued)

    _json = ManagementApi._json
    log_message = ManagementApi.log_message

    def address_string(self) -> str:
        return "workload.sock"


def _caller_is_root(connection) -> bool:
    """SO_PEERCRED: (pid, uid, gid) of the process at the other end of the unix socket."""
    credentials = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", credentials)[1] == 0


class UnixHttpServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, listener, handler=ManagementApi) -> None:
        super().__init__("", handler, bind_and_activate=False)
        self.socket = listener

    def get_request(self):
        connection, _address = self.socket.accept()
        return connection, ("unix", 0)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if "--version" in args:
        print(f"aziot-edged {EDGE_VERSION}")
        return 0
    log("INFO", "Starting Azure IoT Edge Daemon")
    log("INFO", f"Version - {EDGE_VERSION}")
    try:
        settings = tomllib.loads(CONFIG.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        log("ERROR", f"Failed to load settings: {error}")
        return EXIT_BAD_SETTINGS
    sockets = activated_sockets()
    if MGMT_SOCKET_NAME not in sockets:
        log("ERROR", f"{MGMT_SOCKET_NAME} was not passed by systemd")
        return 1
    # AlwaysOnStartup is edged's to carry out: it asks identityd to register again at each of its starts.
    if settings.get("auto_reprovisioning_mode", "Dynamic") == "AlwaysOnStartup":
        failure = request_reprovision()
        if failure is not None:
            log("ERROR", f"Reprovision on startup failed: {failure}")
            return 1
    log("INFO", "Obtaining Edge device provisioning data...")
    try:
        device = call(IDENTITYD_SOCKET, {"op": "get_device"}, timeout=600)
    except (OSError, ValueError) as error:
        log("ERROR", f"Could not obtain provisioning data from aziot-identityd: {error}")
        return 1
    if "device_id" not in device:
        log("ERROR", f"Could not obtain provisioning data from aziot-identityd: {device.get('error', 'no answer')}")
        return 1
    log("INFO", f"Device is {device['device_id']} on {device['hub']}")
    device["hostname"] = settings.get("hostname")
    edge_ca = EdgeCa.from_settings(settings, device["device_id"])
    try:
        edge_ca.ensure()
    except (EdgeCaError, x509.X509Error, OSError) as error:
        log("ERROR", str(error))
        return 1
    WorkloadApi.issuer = edge_ca
    if edge_ca.auto_renew is not None:
        threading.Thread(target=renew_edge_ca_when_due, args=(edge_ca,), daemon=True).start()
    image = ((settings.get("agent") or {}).get("config") or {}).get("image", DEFAULT_AGENT_IMAGE)
    run_edge_runtime(device, image, sockets[MGMT_SOCKET_NAME], sockets.get(WORKLOAD_SOCKET_NAME))
    return 0
