"""``aziot-edged``: the edge daemon of the double (user iotedge, sockets from systemd).

It obtains the device's provisioning data from aziot-identityd (which registers with DPS on its start), "runs"
edgeAgent - the double has no container engine, so a module is a record with an image, a status and a start time -
reports edgeAgent's status to the lab's IoT hub, and serves the management API that ``iotedge list`` reads.
"""

from __future__ import annotations

import datetime
import http.client
import json
import socketserver
import ssl
import sys
import tomllib
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import quote

from . import EDGE_VERSION
from .ipc import activated_sockets, call
from .journal import log

CONFIG = Path("/etc/aziot/edged/config.d/00-super.toml")
IDENTITYD_SOCKET = "/run/aziot/identityd.sock"
MGMT_SOCKET_NAME = "aziot-edged.mgmt.socket"
DEFAULT_AGENT_IMAGE = "mcr.microsoft.com/azureiotedge-agent:1.5"
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


def report_to_hub(device: dict, modules: list[dict]) -> None:
    """Lab-only stand-in for edgeAgent's MQTT/AMQP reported properties (lab/README.md, control plane)."""
    reported = {
        "runtime": {"type": "docker"},
        "systemModules": {
            module["name"]: {
                "runtimeStatus": module["status"]["runtimeStatus"]["status"],
                "settings": {"image": module["config"]["settings"]["image"]},
                "lastStartTimeUtc": module["status"]["startTime"],
            }
            for module in modules
        },
    }
    host, _separator, port = device["hub"].partition(":")
    connection = http.client.HTTPSConnection(host, int(port or 443), context=ssl.create_default_context(), timeout=30)
    try:
        path = f"/_emulator/iothub/twins/{quote(device['device_id'], safe='')}/modules/%24edgeAgent"
        body = json.dumps({"reported": reported, "connectionState": "Connected"}).encode()
        connection.request("PATCH", path, body=body, headers={"Content-Type": "application/json"})
        status = connection.getresponse().status
    finally:
        connection.close()
    if status != 200:
        raise OSError(f"the hub answered {status}")


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
    log("INFO", "Watchdog checking Edge runtime status")
    log("INFO", "Creating and starting Edge runtime module edgeAgent...")
    ManagementApi.modules = [module_record("edgeAgent", image, now())]
    log("INFO", "Created Edge runtime module edgeAgent")
    log("INFO", "Started Edge runtime module edgeAgent")
    try:
        report_to_hub(device, ManagementApi.modules)
    except (OSError, ssl.SSLError, ValueError) as error:
        log("WARN", f"Could not report the module status to {device['hub']}: {error}")
    log("INFO", "Edge runtime is running")
    UnixHttpServer(sockets[MGMT_SOCKET_NAME]).serve_forever()
    return 0
