"""IoT Hub records (devices, modules, twins, configurations) and their wire shapes (iothub service.json)."""

from __future__ import annotations

import copy
import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from lab.cloud.clock import iso_utc

NEVER = "0001-01-01T00:00:00Z"
EDGE_SYSTEM_MODULES = ("$edgeAgent", "$edgeHub")


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
    applied_configuration: str | None = None

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


@dataclass
class Configuration:
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

    @property
    def is_edge_deployment(self) -> bool:
        return bool(self.content.get("modulesContent"))

    def to_wire(self, targeted: int, applied: int) -> dict[str, Any]:
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
            "systemMetrics": {
                "results": {"targetedCount": targeted, "appliedCount": applied},
                "queries": {
                    "targetedCount": "select deviceId from devices where capabilities.iotEdge = true and "
                    + (self.target_condition or "true"),
                    "appliedCount": f"select deviceId from devices.modules where moduleId = '$edgeAgent' "
                    f"and configurations.[[{self.configuration_id}]].status = 'Applied'",
                },
            },
            "metrics": {"results": dict.fromkeys(self.metric_queries, 0), "queries": dict(self.metric_queries)},
            "etag": self.etag,
        }
