"""IoT Hub records (devices, modules, twins, configurations) and their wire shapes (iothub service.json)."""

from __future__ import annotations

import copy
import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from lab.cloud.clock import iso_utc

NEVER = "0001-01-01T00:00:00Z"
EDGE_SYSTEM_MODULES = ("$edgeAgent", "$edgeHub")
DESIRED = "properties.desired"
APPLIED, TARGETED = "Applied", "Targeted"


def merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """JSON merge-patch as twins use it: ``null`` removes a key, objects merge, everything else replaces."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            merge_patch(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def strip_metadata(properties: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in properties.items() if not key.startswith("$")}


@dataclass
class Twin:
    etag: str
    tags: dict[str, Any] = field(default_factory=dict)
    desired: dict[str, Any] = field(default_factory=dict)
    reported: dict[str, Any] = field(default_factory=dict)
    version: int = 1
    desired_version: int = 1
    reported_version: int = 1
    desired_updated: dt.datetime | None = None
    reported_updated: dt.datetime | None = None
    # The hub's "configurations" section: {configuration id: {"status": "Applied"|"Targeted"}}
    # (iotedge doc/reported_states_during_deployment.md); absent while no automatic configuration targets the twin.
    configurations: dict[str, dict[str, str]] = field(default_factory=dict)

    def properties_wire(self) -> dict[str, Any]:
        desired_time = iso_utc(self.desired_updated) if self.desired_updated else NEVER
        reported_time = iso_utc(self.reported_updated) if self.reported_updated else NEVER
        return {
            "desired": {
                **copy.deepcopy(self.desired),
                "$metadata": {"$lastUpdated": desired_time, "$lastUpdatedVersion": self.desired_version},
                "$version": self.desired_version,
            },
            "reported": {
                **copy.deepcopy(self.reported),
                "$metadata": {"$lastUpdated": reported_time},
                "$version": self.reported_version,
            },
        }


@dataclass
class Module:
    device_id: str
    module_id: str
    generation_id: str
    etag: str
    authentication: dict[str, Any]
    twin: Twin
    managed_by: str | None = None
    connection_state: str = "Disconnected"
    connection_state_updated: dt.datetime | None = None

    def to_wire(self) -> dict[str, Any]:
        return {
            "moduleId": self.module_id,
            "managedBy": self.managed_by,
            "deviceId": self.device_id,
            "generationId": self.generation_id,
            "etag": self.etag,
            "connectionState": self.connection_state,
            "connectionStateUpdatedTime": iso_utc(self.connection_state_updated)
            if self.connection_state_updated
            else NEVER,
            "lastActivityTime": NEVER,
            "cloudToDeviceMessageCount": 0,
            "authentication": copy.deepcopy(self.authentication),
        }


@dataclass
class Device:
    device_id: str
    generation_id: str
    etag: str
    authentication: dict[str, Any]
    twin: Twin
    status: str = "enabled"
    status_reason: str | None = None
    iot_edge: bool = False
    device_scope: str | None = None
    parent_scopes: list[str] = field(default_factory=list)
    connection_state: str = "Disconnected"
    status_updated: dt.datetime | None = None
    connection_state_updated: dt.datetime | None = None
    modules: dict[str, Module] = field(default_factory=dict)
    # The standard edge deployment and the layered ones merged on it (ascending priority), as last evaluated.
    applied_configuration: str | None = None
    applied_layers: list[str] = field(default_factory=list)
    # The desired-property paths the applied device configuration wrote (removed when it stops applying).
    device_content_paths: list[list[str]] = field(default_factory=list)

    def to_wire(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "deviceId": self.device_id,
            "generationId": self.generation_id,
            "etag": self.etag,
            "connectionState": self.connection_state,
            "status": self.status,
            "statusReason": self.status_reason,
            "connectionStateUpdatedTime": iso_utc(self.connection_state_updated)
            if self.connection_state_updated
            else NEVER,
            "statusUpdatedTime": iso_utc(self.status_updated) if self.status_updated else NEVER,
            "lastActivityTime": NEVER,
            "cloudToDeviceMessageCount": 0,
            "authentication": copy.deepcopy(self.authentication),
            "capabilities": {"iotEdge": self.iot_edge},
        }
        if self.device_scope:
            body["deviceScope"] = self.device_scope
        body["parentScopes"] = list(self.parent_scopes)
        return body

    def _twin_common(self, twin: Twin) -> dict[str, Any]:
        auth = self.authentication
        body: dict[str, Any] = {
            "deviceId": self.device_id,
            "etag": twin.etag,
            "deviceEtag": self.etag,
            "status": self.status,
            "statusUpdateTime": iso_utc(self.status_updated) if self.status_updated else NEVER,
            "connectionState": self.connection_state,
            "lastActivityTime": NEVER,
            "cloudToDeviceMessageCount": 0,
            "authenticationType": auth.get("type", "sas"),
            "x509Thumbprint": copy.deepcopy(
                auth.get("x509Thumbprint") or {"primaryThumbprint": None, "secondaryThumbprint": None}
            ),
            "modelId": "",
            "version": twin.version,
        }
        if twin.configurations:
            body["configurations"] = copy.deepcopy(twin.configurations)
        return body

    def twin_wire(self) -> dict[str, Any]:
        body = self._twin_common(self.twin)
        if self.status_reason is not None:
            body["statusReason"] = self.status_reason  # Twin.statusReason (service.json); omitted when unset
        body["capabilities"] = {"iotEdge": self.iot_edge}
        if self.device_scope:
            body["deviceScope"] = self.device_scope
        body["parentScopes"] = list(self.parent_scopes)
        body["tags"] = copy.deepcopy(self.twin.tags)
        body["properties"] = self.twin.properties_wire()
        return body

    def module_twin_wire(self, module: Module) -> dict[str, Any]:
        body = self._twin_common(module.twin)
        body["moduleId"] = module.module_id
        body["deviceEtag"] = module.etag
        body["connectionState"] = module.connection_state
        body["authenticationType"] = module.authentication.get("type", "sas")
        body["properties"] = module.twin.properties_wire()
        if module.twin.tags:
            body["tags"] = copy.deepcopy(module.twin.tags)
        return body


def desired_path(key: str) -> list[str] | None:
    """``properties.desired.a.b`` -> ``['a', 'b']``; ``properties.desired`` -> ``[]``; anything else -> None."""
    if key == DESIRED:
        return []
    if key.startswith(DESIRED + ".") and all(key[len(DESIRED) + 1 :].split(".")):
        return key[len(DESIRED) + 1 :].split(".")
    return None


def set_path(target: dict[str, Any], path: list[str], value: Any) -> None:
    """Set ``value`` (a copy) at ``path`` inside ``target``, creating or replacing the objects on the way."""
    for part in path[:-1]:
        if not isinstance(target.get(part), dict):
            target[part] = {}
        target = target[part]
    target[path[-1]] = copy.deepcopy(value)


def remove_path(target: dict[str, Any], path: list[str]) -> None:
    """Remove the value at ``path`` and the objects it leaves empty on the way up."""
    if not path or not isinstance(target.get(path[0]), dict if len(path) > 1 else object):
        return
    if len(path) > 1:
        remove_path(target[path[0]], path[1:])
        if target[path[0]]:
            return
    target.pop(path[0], None)


@dataclass
class Configuration:
    """An automatic configuration: an edge deployment (``modulesContent``, standard or layered) or an automatic
    device configuration (``deviceContent``). ``content`` is kept exactly as sent, empty objects included."""

    configuration_id: str
    etag: str
    content: dict[str, Any]
    created: dt.datetime
    updated: dt.datetime
    target_condition: str = ""
    priority: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    metric_queries: dict[str, str] = field(default_factory=dict)
    schema_version: str = "1.0"
    # Creation order: breaks priority ties between configurations created within one clock tick.
    sequence: int = 0

    @property
    def is_edge_deployment(self) -> bool:
        return bool(self.content.get("modulesContent"))

    @property
    def is_device_configuration(self) -> bool:
        return bool(self.content.get("deviceContent"))

    @property
    def is_layered(self) -> bool:
        """A deployment is layered when a module's content names a path below ``properties.desired`` (az iot edge
        deployment create's rule; the REST body has no flag)."""
        modules = self.content.get("modulesContent") or {}
        return any(key.startswith(DESIRED + ".") for entry in modules.values() for key in (entry or {}))

    def rank(self) -> tuple[int, dt.datetime, int]:
        """Highest priority wins; ties go to the most recently created."""
        return self.priority, self.created, self.sequence

    def system_metric_queries(self) -> dict[str, str]:
        """The query texts the hub shows in ``systemMetrics.queries`` (az iot extension's captured hub answers)."""
        condition = self.target_condition.strip()
        config = f"configurations.[[{self.configuration_id}]].status = 'Applied'"
        if not self.is_edge_deployment:
            targeted = "" if not condition else "select deviceId from devices"
            if condition and condition != "*":
                targeted += f" where {condition}"
            return {"targetedCount": targeted, "appliedCount": f"select deviceId from devices where {config}"}
        targeted = "" if not condition else "select deviceId from devices where capabilities.iotEdge = true"
        if condition and condition != "*":
            targeted += f" and {condition}"
        applied = f"select deviceId from devices.modules where moduleId = '$edgeAgent' and {config}"
        reported = f"{applied} and properties.desired.$version = properties.reported.lastDesiredVersion"
        return {
            "targetedCount": targeted,
            "appliedCount": applied,
            "reportedSuccessfulCount": f"{reported} and properties.reported.lastDesiredStatus.code = 200",
            "reportedFailedCount": f"{reported} and properties.reported.lastDesiredStatus.code != 200",
        }

    def to_wire(self, system_results: dict[str, int], custom_results: dict[str, int]) -> dict[str, Any]:
        return {
            "id": self.configuration_id,
            "schemaVersion": self.schema_version,
            "labels": dict(self.labels),
            "content": copy.deepcopy(self.content),
            "contentType": "assignment",
            "targetCondition": self.target_condition,
            "createdTimeUtc": iso_utc(self.created),
            "lastUpdatedTimeUtc": iso_utc(self.updated),
            "priority": self.priority,
            "systemMetrics": {"results": dict(system_results), "queries": self.system_metric_queries()},
            "metrics": {"results": dict(custom_results), "queries": dict(self.metric_queries)},
            "etag": self.etag,
        }
