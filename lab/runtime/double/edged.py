"""``aziot-edged``: the edge daemon of the double (user iotedge, sockets from systemd).

It obtains the device's provisioning data from aziot-identityd (which registers with DPS on its start), "runs"
edgeAgent - the double has no container engine, so a module is a record with an image, a status and a start time -
then, as edgeAgent would, follows ``$edgeAgent``'s desired properties on the lab hub (a deployment brings edgeHub and
its modules), reports the modules' status back, and serves the management API that ``iotedge list`` reads.
"""

from __future__ import annotations

import datetime
import http.client
import json
import socketserver
import ssl
import sys
import threading
import time
import tomllib
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import quote

from . import EDGE_VERSION
from .aziotd import request_reprovision
from .ipc import activated_sockets, call
from .journal import log

CONFIG = Path("/etc/aziot/edged/config.d/00-super.toml")
IDENTITYD_SOCKET = "/run/aziot/identityd.sock"
MGMT_SOCKET_NAME = "aziot-edged.mgmt.socket"
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


def report_to_hub(device: dict, modules: list[dict]) -> None:
    """edgeAgent's reported properties: the runtime status of the system modules and the deployment's modules."""

    def section(module: dict) -> dict:
        return {
            "runtimeStatus": module["status"]["runtimeStatus"]["status"],
            "settings": {"image": module["config"]["settings"]["image"]},
            "lastStartTimeUtc": module["status"]["startTime"],
        }

    system = {m["name"]: section(m) for m in modules if m["name"] in ("edgeAgent", "edgeHub")}
    custom = {m["name"]: section(m) for m in modules if m["name"] not in ("edgeAgent", "edgeHub")}
    reported = {"runtime": {"type": "docker"}, "systemModules": system, "modules": custom}
    _hub_call(device, "PATCH", "$edgeAgent", {"reported": reported, "connectionState": "Connected"})


def desired_modules(desired: dict) -> dict[str, str]:
    """name -> image for edgeHub and the deployment's modules that should run (``status`` other than stopped)."""
    wanted = {}
    edge_hub = ((desired.get("systemModules") or {}).get("edgeHub") or {}).get("settings") or {}
    if edge_hub.get("image"):
        wanted["edgeHub"] = edge_hub["image"]
    for name, module in (desired.get("modules") or {}).items():
        image = ((module or {}).get("settings") or {}).get("image")
        if image and (module.get("status") or "running") == "running":
            wanted[name] = image
    return wanted


def follow_deployments(device: dict, agent: dict) -> None:
    """Apply ``$edgeAgent``'s desired properties to the module records and report, whenever they change."""
    applied = None
    while True:
        try:
            desired = _hub_call(device, "GET", "$edgeAgent").get("properties", {}).get("desired", {})
            wanted = desired_modules(desired)
            if wanted != applied:
                current = {module["name"]: module for module in ManagementApi.modules}
                modules = [agent]
                for name, image in sorted(wanted.items()):
                    existing = current.get(name)
                    if existing and existing["config"]["settings"]["image"] == image:
                        modules.append(existing)
                        continue
                    log("INFO", f"Creating and starting module {name}...")
                    modules.append(module_record(name, image, now()))
                ManagementApi.modules = modules
                report_to_hub(device, modules)
                applied = wanted
        except (OSError, ValueError, ssl.SSLError) as error:
            log("WARN", f"Could not read or report the deployment on {device['hub']}: {error}")
        time.sleep(DEPLOYMENT_POLL_SECONDS)


def run_edge_runtime(device: dict, image: str, listener) -> None:
    """Start edgeAgent, follow deployments in the background and serve the management API, forever."""
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


class UnixHttpServer(socketserver.UnixStreamServer):
    def __init__(self, listener) -> None:
        super().__init__("", ManagementApi, bind_and_activate=False)
        self.socket = listener

    def get_request(self):
        connection, _address = self.socket.accept()
        return connection, ("mgmt.sock", 0)


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
    image = ((settings.get("agent") or {}).get("config") or {}).get("image", DEFAULT_AGENT_IMAGE)
    run_edge_runtime(device, image, sockets[MGMT_SOCKET_NAME])
    return 0
