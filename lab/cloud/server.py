"""``CloudLab``: the DPS and IoT Hub emulators on 127.0.0.1, in-process (tests) or from ``python -m lab.cloud``."""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any

from lab.cloud.clock import Clock
from lab.cloud.control import ControlPlane
from lab.cloud.dps.backend import DpsBackend
from lab.cloud.dps.responses import DpsDeviceResponses, DpsManagementResponses, DpsServiceResponses
from lab.cloud.dps.routing import MANAGEMENT_PREFIX
from lab.cloud.est import PREFIX as EST_PREFIX
from lab.cloud.est import EstBackend, EstResponses
from lab.cloud.faults import FaultInjector
from lab.cloud.httpserver import LOOPBACK, LabHttpServer, ThreadedServer
from lab.cloud.iothub.backend import IotHubBackend
from lab.cloud.iothub.responses import IotHubResponses
from lab.cloud.pipeline import ServiceDispatcher
from lab.cloud.runtime import LabRuntime, LabSettings
from lab.cloud.sas import connection_string, derived_key
from lab.cloud.tls import LabCA, server_context

INFO_FILE = "cloud.json"
MANAGEMENT_SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
MANAGEMENT_RESOURCE_GROUP = "edgefleet-lab"


def _hosts(port: int) -> list[str]:
    return [f"{LOOPBACK}:{port}", f"localhost:{port}", LOOPBACK, "localhost"]


class CloudLab:
    """Both emulators plus their control plane. Use ``with CloudLab.start(state_dir) as cloud:``."""

    def __init__(self, state_dir: Path | str, settings: LabSettings | None = None, clock: Clock | None = None) -> None:
        self.state_dir = Path(state_dir)
        self.settings = settings or LabSettings()
        self.runtime = LabRuntime(self.settings, clock)
        self._servers: list[ThreadedServer] = []
        self._started = False

    @classmethod
    def start(
        cls, state_dir: Path | str, settings: LabSettings | None = None, clock: Clock | None = None, **overrides: Any
    ) -> CloudLab:
        """Start every server (port 0 = free port unless settings say otherwise) and write ``cloud.json``."""
        merged = replace(settings or LabSettings(), **overrides)
        lab = cls(state_dir, merged, clock)
        lab._start()
        return lab

    def _start(self) -> None:
        runtime, clock = self.runtime, self.runtime.clock
        ca = LabCA.load_or_create(self.state_dir / "tls")
        self.ca = ca
        identity = ca.issue_server_identity("server")
        plain = server_context(identity, request_client_certificate=False)
        with_client_cert = server_context(identity, request_client_certificate=True)
        control = ControlPlane(runtime, self.endpoints)

        self._dps_hosts: list[str] = []
        dps_service = DpsServiceResponses(runtime.dps, clock, runtime.dps_policies, self._dps_hosts)
        management = DpsManagementResponses(runtime.dps, clock, self.settings.management_token)
        dps_dispatcher = ServiceDispatcher(runtime, control, [("/subscriptions/", management), ("", dps_service)])
        dps_server = LabHttpServer("dps", self.settings.dps_port, plain, dps_dispatcher)
        self._dps_hosts.extend(_hosts(dps_server.port))

        device = DpsDeviceResponses(runtime.dps, clock)
        device_server = LabHttpServer(
            "dps-device",
            self.settings.device_port,
            with_client_cert,
            ServiceDispatcher(runtime, control, [("", device)]),
        )

        hub_servers: list[LabHttpServer] = []
        self._hub_hosts: list[list[str]] = []
        for index, hub in enumerate(runtime.hubs):
            hosts: list[str] = []
            responses = IotHubResponses(hub, clock, runtime.hub_policies[index], hosts)
            port = self.settings.hub_ports[index] if index < len(self.settings.hub_ports) else 0
            dispatcher = ServiceDispatcher(runtime, control, [("", responses)])
            # The hub asks for client certificates so an edge runtime can manage modules with its X.509 identity.
            server = LabHttpServer("iothub", port, with_client_cert, dispatcher)
            hosts.extend(_hosts(server.port))
            hub.host_name = f"{LOOPBACK}:{server.port}"
            dispatcher.hub_host = hub.host_name
            runtime.dps.link_hub(hub)
            hub_servers.append(server)
            self._hub_hosts.append(hosts)

        # The EST server asks for a client certificate (a bootstrap or an EST identity) and takes basic auth too.
        runtime.est = EstBackend(
            self.state_dir / "est",
            clock,
            users={self.settings.est_username: self.est_password},
            cert_validity=dt.timedelta(seconds=self.settings.est_cert_seconds),
        )
        est_server = LabHttpServer(
            "est",
            self.settings.est_port,
            with_client_cert,
            ServiceDispatcher(runtime, control, [("", EstResponses(runtime.est, clock))]),
        )

        self._dps_server, self._device_server, self._hub_servers = dps_server, device_server, hub_servers
        self._est_server = est_server
        self._servers = [ThreadedServer(s).start() for s in (dps_server, device_server, *hub_servers, est_server)]
        self._started = True
        self.write_info()

    # ---- lifecycle -----------------------------------------------------------------------------------------

    def stop(self) -> None:
        for server in self._servers:
            server.stop()
        self._servers = []
        self._started = False

    def __enter__(self) -> CloudLab:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def reset(self, seed: int | None = None) -> None:
        self.runtime.reset(seed)

    def state(self) -> dict[str, Any]:
        return self.runtime.state()

    # ---- what clients need ---------------------------------------------------------------------------------

    @property
    def dps(self) -> DpsBackend:
        return self.runtime.dps

    @property
    def hubs(self) -> list[IotHubBackend]:
        return self.runtime.hubs

    @property
    def faults(self) -> FaultInjector:
        return self.runtime.faults

    @property
    def ca_bundle(self) -> Path:
        return self.ca.bundle_path

    @property
    def dps_port(self) -> int:
        return self._dps_server.port

    @property
    def device_port(self) -> int:
        return self._device_server.port

    @property
    def hub_ports(self) -> list[int]:
        return [server.port for server in self._hub_servers]

    @property
    def dps_host_name(self) -> str:
        return f"{LOOPBACK}:{self.dps_port}"

    @property
    def dps_url(self) -> str:
        return f"https://{self.dps_host_name}"

    @property
    def dps_connection_string(self) -> str:
        return connection_string(self.dps_host_name, self.runtime.dps_policies["provisioningserviceowner"])

    @property
    def id_scope(self) -> str:
        return self.settings.id_scope

    @property
    def global_endpoint(self) -> str:
        """What IoT Edge calls ``provisioning.global_endpoint``."""
        return f"https://{LOOPBACK}:{self.device_port}/"

    @property
    def hub_host_name(self) -> str:
        return self.hubs[0].host_name

    @property
    def hub_url(self) -> str:
        return f"https://{self.hub_host_name}"

    @property
    def hub_connection_string(self) -> str:
        return self.hub_connection_strings()[0]

    def hub_connection_strings(self, policy: str = "iothubowner") -> list[str]:
        return [
            connection_string(hub.host_name, self.runtime.hub_policies[index][policy])
            for index, hub in enumerate(self.hubs)
        ]

    @property
    def control_url(self) -> str:
        return f"{self.dps_url}/_emulator"

    @property
    def management_resource_id(self) -> str:
        return (
            MANAGEMENT_PREFIX.replace("{subscription}", MANAGEMENT_SUBSCRIPTION)
            .replace("{resourceGroup}", MANAGEMENT_RESOURCE_GROUP)
            .replace("{dpsName}", self.settings.dps_name)
        )

    @property
    def est(self) -> EstBackend:
        return self.runtime.est

    @property
    def est_url(self) -> str:
        """What IoT Edge calls ``[cert_issuance.est.urls] default``."""
        return f"https://{LOOPBACK}:{self._est_server.port}{EST_PREFIX}"

    @property
    def est_password(self) -> str:
        return derived_key("est/password", self.settings.seed)[:24]

    @property
    def management_token(self) -> str:
        return self.settings.management_token

    def endpoints(self) -> dict[str, Any]:
        """Ports and URLs only (no keys), for the health answer."""
        return {
            "dps": self.dps_url,
            "global_endpoint": self.global_endpoint,
            "iothubs": [f"https://{hub.host_name}" for hub in self.hubs],
        }

    def describe(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "ca_bundle": str(self.ca_bundle),
            "control_url": self.control_url,
            "dps": {
                "host_name": self.dps_host_name,
                "url": self.dps_url,
                "port": self.dps_port,
                "connection_string": self.dps_connection_string,
                "id_scope": self.id_scope,
                "global_endpoint": self.global_endpoint,
                "device_port": self.device_port,
                "management_url": self.dps_url,
                "management_resource_id": self.management_resource_id,
                "management_token": self.management_token,
                "require_verified_ca": self.settings.require_verified_ca,
            },
            "iothub": {
                "host_name": self.hub_host_name,
                "url": self.hub_url,
                "port": self.hub_ports[0],
                "connection_string": self.hub_connection_string,
            },
            "iothubs": [
                {"host_name": hub.host_name, "url": f"https://{hub.host_name}", "port": port, "connection_string": cs}
                for hub, port, cs in zip(self.hubs, self.hub_ports, self.hub_connection_strings(), strict=True)
            ],
            "est": {
                "url": self.est_url,
                "username": self.settings.est_username,
                "password": self.est_password,
                "ca_cert": str(self.est.ca.cert_path),
                "ca_key": str(self.est.ca.key_path),
                "bootstrap_ca_cert": str(self.est.bootstrap_ca.cert_path),
                "bootstrap_ca_key": str(self.est.bootstrap_ca.key_path),
            },
        }

    def write_info(self, path: Path | str | None = None) -> Path:
        """Write ``describe()`` as JSON (mode 0600: it holds connection strings), atomically."""
        target = Path(path) if path else self.state_dir / INFO_FILE
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(target.suffix + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(self.describe(), handle, indent=2)
        os.replace(tmp, target)
        return target
