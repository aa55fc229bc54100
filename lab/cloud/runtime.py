"""Everything the lab's servers share: settings, clock, seeded ids, the backends, faults and the request log."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from lab.cloud.clock import Clock, IdGenerator, SystemClock, iso_utc
from lab.cloud.dps.backend import DpsBackend, DpsSettings
from lab.cloud.faults import FaultInjector
from lab.cloud.iothub.backend import IotHubBackend
from lab.cloud.sas import SasPolicy, derived_key

DEFAULT_MANAGEMENT_TOKEN = "edgefleet-lab-management-token"
REQUEST_LOG_SIZE = 2000


@dataclass
class LabSettings:
    """Knobs for one lab; the defaults give a reproducible lab with well-known development keys."""

    seed: int = 0
    id_scope: str = "0ne00C0FFEE"
    dps_name: str = "edgefleet-lab-dps"
    hub_count: int = 1
    require_verified_ca: bool = True
    assigning_polls: int = 0
    retry_after: int = 3
    management_token: str = DEFAULT_MANAGEMENT_TOKEN
    dps_port: int = 0
    device_port: int = 0
    hub_ports: list[int] = field(default_factory=list)
    # The EST server: its port, how long the certificates it issues last, and its basic-auth user (the password is
    # derived from the seed, like the SAS keys).
    est_port: int = 0
    est_cert_seconds: int = 30 * 86400
    est_username: str = "edgefleet-device"


def dps_policies(seed: int) -> dict[str, SasPolicy]:
    return {
        "provisioningserviceowner": SasPolicy(
            "provisioningserviceowner",
            derived_key("dps/provisioningserviceowner", seed),
            frozenset(
                {
                    "ServiceConfig",
                    "EnrollmentRead",
                    "EnrollmentWrite",
                    "DeviceConnect",
                    "RegistrationStatusRead",
                    "RegistrationStatusWrite",
                }
            ),
        ),
        "enrollmentread": SasPolicy(
            "enrollmentread",
            derived_key("dps/enrollmentread", seed),
            frozenset({"EnrollmentRead", "RegistrationStatusRead"}),
        ),
    }


def hub_policies(seed: int, index: int) -> dict[str, SasPolicy]:
    rights = {
        "iothubowner": {"RegistryRead", "RegistryWrite", "ServiceConnect", "DeviceConnect"},
        "service": {"ServiceConnect"},
        "registryRead": {"RegistryRead"},
        "registryReadWrite": {"RegistryRead", "RegistryWrite"},
    }
    return {
        name: SasPolicy(name, derived_key(f"iothub{index}/{name}", seed), frozenset(granted))
        for name, granted in rights.items()
    }


class LabRuntime:
    def __init__(self, settings: LabSettings | None = None, clock: Clock | None = None) -> None:
        self.settings = settings or LabSettings()
        self.clock = clock or SystemClock()
        self.lock = threading.RLock()
        self.ids = IdGenerator(self.settings.seed)
        self.faults = FaultInjector()
        self.request_log: deque[dict[str, Any]] = deque(maxlen=REQUEST_LOG_SIZE)
        self.dps = DpsBackend(self.clock, self.ids, self._dps_settings())
        self.dps_policies = dps_policies(self.settings.seed)
        self.hubs = [IotHubBackend(self.clock, self.ids) for _index in range(max(1, self.settings.hub_count))]
        self.hub_policies = [hub_policies(self.settings.seed, index) for index in range(len(self.hubs))]
        # Set by CloudLab, which keeps the EST server's CA files in its state directory.
        self.est: Any = None

    def _dps_settings(self) -> DpsSettings:
        return DpsSettings(
            id_scope=self.settings.id_scope,
            dps_name=self.settings.dps_name,
            require_verified_ca=self.settings.require_verified_ca,
            assigning_polls=self.settings.assigning_polls,
            retry_after=self.settings.retry_after,
        )

    def hub_by_host(self, host: str | None) -> IotHubBackend | None:
        if host is None:
            return self.hubs[0]
        return next((hub for hub in self.hubs if hub.host_name.lower() == host.lower()), None)

    def reset(self, seed: int | None = None) -> None:
        """Forget records, faults, logged requests and runtime setting changes; ids restart from the seed.

        Keys and ports stay as they are, so clients configured from cloud.json keep working.
        """
        with self.lock:
            self.ids.reseed(self.settings.seed if seed is None else seed)
            self.dps.settings = self._dps_settings()
            self.dps.reset()
            for hub in self.hubs:
                hub.reset()
            if self.est is not None:
                self.est.reset()
            self.faults.clear()
            self.request_log.clear()

    def log_request(
        self,
        service: str,
        method: str,
        path: str,
        query: str,
        operation: str | None,
        status: int | None,
        if_match: str | None,
    ) -> None:
        self.request_log.append(
            {
                "time": iso_utc(self.clock.now()),
                "service": service,
                "method": method,
                "path": path,
                "query": query,
                "operation": operation,
                "status": status,
                "ifMatch": if_match,
            }
        )

    def state(self) -> dict[str, Any]:
        with self.lock:
            return {
                "time": iso_utc(self.clock.now()),
                "dps": self.dps.to_state(),
                "iothubs": [hub.to_state() for hub in self.hubs],
                "faults": self.faults.to_list(),
                **({"est": self.est.state()} if self.est is not None else {}),
            }
