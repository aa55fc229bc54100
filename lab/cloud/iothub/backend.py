"""IoT Hub state and logic, pure Python; raises ``IotHubError`` named constructors."""

from __future__ import annotations

import base64
import binascii
import copy
import json
import re
from typing import Any

from cryptography import x509

from lab.cloud.clock import Clock, IdGenerator
from lab.cloud.http import strip_etag
from lab.cloud.iothub.errors import IotHubError
from lab.cloud.iothub.models import (
    EDGE_SYSTEM_MODULES,
    Configuration,
    Device,
    Module,
    Twin,
    merge_patch,
    strip_metadata,
)
from lab.cloud.iothub.query import QueryError, compile_condition, compile_select
from lab.cloud.x509 import common_name, sha1_thumbprint, sha256_thumbprint

AUTH_TYPES = ("sas", "selfSigned", "certificateAuthority", "none")
# fullmatch everywhere: '$' would also match before a trailing newline.
CONFIGURATION_ID = re.compile(r'[^&^\[\]{}\\|"<>/\x00-\x1f]{1,128}')
THUMBPRINT = re.compile(r"[0-9A-Fa-f]{40}|[0-9A-Fa-f]{64}")
DEFAULT_PAGE_SIZE = 100


def _if_match(if_match: str | None, current: str, what: str) -> None:
    wanted = strip_etag(if_match)
    if wanted is not None and wanted != "*" and wanted != current:
        raise IotHubError.precondition_failed(what)


def _normalized(value: Any) -> Any:
    """Content compared for immutability: drop nulls and empty objects the SDK may add or omit."""
    if isinstance(value, dict):
        cleaned = {k: _normalized(v) for k, v in value.items() if v is not None}
        return {k: v for k, v in cleaned.items() if v != {}}
    return value


class IotHubBackend:
    def __init__(self, clock: Clock, ids: IdGenerator, host_name: str = "127.0.0.1") -> None:
        self.clock = clock
        self.ids = ids
        self.host_name = host_name
        self.reset()

    def reset(self) -> None:
        self.devices: dict[str, Device] = {}
        self.configurations: dict[str, Configuration] = {}

    # ---- helpers -------------------------------------------------------------------------------------------

    def _device_etag(self) -> str:
        return base64.b64encode(str(self.ids.counter()).encode()).decode()

    def _generation_id(self) -> str:
        return "638" + str(int(self.ids.hex(12), 16)).rjust(15, "0")[:15]

    def _new_twin(self) -> Twin:
        return Twin(etag=self.ids.hub_etag())

    def device(self, device_id: str) -> Device:
        found = self.devices.get(device_id)
        if found is None:
            raise IotHubError.device_not_found(device_id)
        return found

    def module(self, device_id: str, module_id: str) -> Module:
        found = self.device(device_id).modules.get(module_id)
        if found is None:
            raise IotHubError.module_not_found(device_id, module_id)
        return found

    def _authentication(self, value: Any, where: str) -> dict[str, Any]:
        if value is None:
            value = {"type": "sas"}
        if not isinstance(value, dict) or value.get("type", "sas") not in AUTH_TYPES:
            raise IotHubError.argument_invalid(f"'{where}.type' must be one of {list(AUTH_TYPES)}")
        auth_type = value.get("type", "sas")
        if auth_type == "sas":
            keys = value.get("symmetricKey") or {}
            for slot in ("primaryKey", "secondaryKey"):
                if keys.get(slot):
                    try:
                        base64.b64decode(keys[slot], validate=True)
                    except (binascii.Error, ValueError) as exc:
                        raise IotHubError.argument_invalid(f"'{where}.symmetricKey.{slot}' is not base64") from exc
            return {
                "symmetricKey": {
                    "primaryKey": keys.get("primaryKey") or self.ids.key(),
                    "secondaryKey": keys.get("secondaryKey") or self.ids.key(),
                },
                "x509Thumbprint": {"primaryThumbprint": None, "secondaryThumbprint": None},
                "type": "sas",
            }
        thumbprints = {"primaryThumbprint": None, "secondaryThumbprint": None}
        if auth_type == "selfSigned":
            given = value.get("x509Thumbprint") or {}
            primary = given.get("primaryThumbprint")
            if not primary or not THUMBPRINT.fullmatch(primary):
                raise IotHubError.argument_invalid(
                    f"'{where}.x509Thumbprint.primaryThumbprint' must be SHA-1 or SHA-256 hex"
                )
            secondary = given.get("secondaryThumbprint")
            if secondary and not THUMBPRINT.fullmatch(secondary):
                raise IotHubError.argument_invalid(f"'{where}.x509Thumbprint.secondaryThumbprint' must be hex")
            thumbprints = {
                "primaryThumbprint": primary.upper(),
                "secondaryThumbprint": secondary.upper() if secondary else None,
            }
        return {
            "symmetricKey": {"primaryKey": None, "secondaryKey": None},
            "x509Thumbprint": thumbprints,
            "type": auth_type,
        }

    def _ensure_edge_modules(self, device: Device) -> None:
        # IoT Hub creates the edge runtime's module identities with the device (protocols.md 4.3).
        for module_id in EDGE_SYSTEM_MODULES:
            if module_id not in device.modules:
                device.modules[module_id] = Module(
                    device_id=device.device_id,
                    module_id=module_id,
                    generation_id=self._generation_id(),
                    etag=self._device_etag(),
                    authentication={
                        "symmetricKey": {"primaryKey": None, "secondaryKey": None},
                        "x509Thumbprint": {"primaryThumbprint": None, "secondaryThumbprint": None},
                        "type": "none",
                    },
                    twin=self._new_twin(),
                )

    # ---- devices -------------------------------------------------------------------------------------------

    def put_device(self, device_id: str, body: Any, if_match: str | None) -> Device:
        if not isinstance(body, dict):
            raise IotHubError.argument_invalid("The device body must be a JSON object")
        if body.get("deviceId") not in (None, device_id):
            raise IotHubError.argument_invalid(f"'deviceId' in the body differs from the URL ('{device_id}')")
        existing = self.devices.get(device_id)
        if existing is None and if_match is not None:
            raise IotHubError.precondition_failed(f"device '{device_id}' (it does not exist)")
        if existing is not None:
            if if_match is None:
                raise IotHubError.device_exists(device_id)
            _if_match(if_match, existing.etag, f"device '{device_id}'")
        status = body.get("status") or "enabled"
        if status not in ("enabled", "disabled"):
            raise IotHubError.argument_invalid("'status' must be 'enabled' or 'disabled'")
        capabilities = body.get("capabilities") or {}
        iot_edge = bool(capabilities.get("iotEdge", False)) if isinstance(capabilities, dict) else False
        authentication = self._authentication(body.get("authentication"), "authentication")
        now = self.clock.now()
        if existing is None:
            device = Device(
                device_id=device_id,
                generation_id=self._generation_id(),
                etag=self._device_etag(),
                authentication=authentication,
                twin=self._new_twin(),
                status_updated=now,
            )
            self.devices[device_id] = device
        else:
            device = existing
            device.etag = self._device_etag()
            device.authentication = authentication
            if device.status != status:
                device.status_updated = now
        device.status = status
        device.status_reason = body.get("statusReason")
        device.iot_edge = iot_edge
        device.parent_scopes = list(body.get("parentScopes") or [])
        if iot_edge:
            device.device_scope = f"ms-azure-iot-edge://{device_id}-{device.generation_id}"
            self._ensure_edge_modules(device)
        else:
            device.device_scope = body.get("deviceScope")
        self._apply_deployments(device)
        return device

    def delete_device(self, device_id: str, if_match: str | None) -> None:
        device = self.device(device_id)
        _if_match(if_match, device.etag, f"device '{device_id}'")
        del self.devices[device_id]

    def list_devices(self, top: int | None) -> list[Device]:
        rows = [self.devices[key] for key in sorted(self.devices)]
        return rows[:top] if top else rows

    def statistics(self) -> dict[str, int]:
        enabled = sum(1 for d in self.devices.values() if d.status == "enabled")
        return {
            "totalDeviceCount": len(self.devices),
            "enabledDeviceCount": enabled,
            "disabledDeviceCount": len(self.devices) - enabled,
        }

    # ---- twins ---------------------------------------------------------------------------------------------

    def _twin_of(self, device_id: str, module_id: str | None) -> Twin:
        return self.module(device_id, module_id).twin if module_id else self.device(device_id).twin

    def update_twin(
        self, device_id: str, module_id: str | None, body: Any, if_match: str | None, replace: bool
    ) -> Twin:
        """PATCH (merge) or PUT (replace) tags and desired properties; reported ones belong to the device."""
        twin = self._twin_of(device_id, module_id)
        _if_match(if_match, twin.etag, f"the twin of '{device_id}'")
        if not isinstance(body, dict):
            raise IotHubError.argument_invalid("The twin body must be a JSON object")
        properties = body.get("properties") or {}
        if not isinstance(properties, dict):
            raise IotHubError.argument_invalid("'properties' must be an object")
        if strip_metadata(properties.get("reported") or {}):
            raise IotHubError.argument_invalid("Reported properties can only be updated by the device")
        tags = body.get("tags")
        desired = properties.get("desired")
        for name, value in (("tags", tags), ("properties.desired", desired)):
            if value is not None and not isinstance(value, dict):
                raise IotHubError.argument_invalid(f"'{name}' must be an object")
        changed = False
        if replace:
            new_tags = copy.deepcopy(tags or {})
            new_desired = strip_metadata(copy.deepcopy(desired or {}))
        else:
            new_tags = copy.deepcopy(twin.tags)
            merge_patch(new_tags, tags or {})
            new_desired = copy.deepcopy(twin.desired)
            merge_patch(new_desired, strip_metadata(desired or {}))
        if new_tags != twin.tags:
            twin.tags, changed = new_tags, True
        if new_desired != twin.desired:
            self._set_desired(twin, new_desired)
            changed = True
        if changed:
            twin.version += 1
            twin.etag = self.ids.hub_etag()
            if not module_id:
                self._apply_deployments(self.device(device_id))
        return twin

    def _set_desired(self, twin: Twin, desired: dict[str, Any]) -> None:
        twin.desired = desired
        twin.desired_version += 1
        twin.desired_updated = self.clock.now()

    def report(self, device_id: str, module_id: str | None, reported: Any, connection_state: str | None = None) -> Twin:
        """Lab-only stand-in for what a device does over MQTT/AMQP: patch reported properties, set connected."""
        twin = self._twin_of(device_id, module_id)
        if reported is not None:
            if not isinstance(reported, dict):
                raise IotHubError.argument_invalid("'reported' must be an object")
            merge_patch(twin.reported, strip_metadata(reported))
            twin.reported_version += 1
            twin.reported_updated = self.clock.now()
            twin.version += 1
            twin.etag = self.ids.hub_etag()
        if connection_state is not None:
            if connection_state not in ("Connected", "Disconnected"):
                raise IotHubError.argument_invalid("'connectionState' must be 'Connected' or 'Disconnected'")
            holder: Device | Module = self.module(device_id, module_id) if module_id else self.device(device_id)
            holder.connection_state = connection_state
            holder.connection_state_updated = self.clock.now()
        return twin

    # ---- modules -------------------------------------------------------------------------------------------

    def put_module(self, device_id: str, module_id: str, body: Any, if_match: str | None) -> Module:
        device = self.device(device_id)
        if not isinstance(body, dict):
            raise IotHubError.argument_invalid("The module body must be a JSON object")
        if body.get("moduleId") not in (None, module_id) or body.get("deviceId") not in (None, device_id):
            raise IotHubError.argument_invalid("'moduleId'/'deviceId' in the body differ from the URL")
        existing = device.modules.get(module_id)
        if existing is None and strip_etag(if_match) not in (None, "*"):
            raise IotHubError.precondition_failed(f"module '{module_id}' (it does not exist)")
        if existing is not None:
            if if_match is None:
                raise IotHubError.module_exists(device_id, module_id)
            _if_match(if_match, existing.etag, f"module '{module_id}'")
        authentication = self._authentication(body.get("authentication"), "authentication")
        if existing is None:
            module = Module(
                device_id=device_id,
                module_id=module_id,
                generation_id=self._generation_id(),
                etag=self._device_etag(),
                authentication=authentication,
                twin=self._new_twin(),
                managed_by=body.get("managedBy"),
            )
            device.modules[module_id] = module
            self._apply_deployments(device)
        else:
            module = existing
            module.etag = self._device_etag()
            module.authentication = authentication
            module.managed_by = body.get("managedBy")
        return module

    def delete_module(self, device_id: str, module_id: str, if_match: str | None) -> None:
        module = self.module(device_id, module_id)
        _if_match(if_match, module.etag, f"module '{module_id}'")
        del self.devices[device_id].modules[module_id]

    def list_modules(self, device_id: str) -> list[Module]:
        device = self.device(device_id)
        return [device.modules[key] for key in sorted(device.modules)]

    # ---- configurations (deployments) ----------------------------------------------------------------------

    def configuration(self, configuration_id: str) -> Configuration:
        found = self.configurations.get(configuration_id)
        if found is None:
            raise IotHubError.configuration_not_found(configuration_id)
        return found

    @staticmethod
    def _check_condition(condition: Any) -> str:
        if condition is None:
            return ""
        if not isinstance(condition, str):
            raise IotHubError.argument_invalid("'targetCondition' must be a string")
        try:
            compile_condition(condition)
        except QueryError as exc:
            raise IotHubError.argument_invalid(f"'targetCondition' is invalid: {exc}") from exc
        return condition

    @staticmethod
    def _check_content(content: Any) -> dict[str, Any]:
        if not isinstance(content, dict) or not any(
            content.get(key) for key in ("modulesContent", "moduleContent", "deviceContent")
        ):
            raise IotHubError.argument_invalid("'content' needs modulesContent, moduleContent or deviceContent")
        modules = content.get("modulesContent")
        if modules:
            if not isinstance(modules, dict):
                raise IotHubError.argument_invalid("'content.modulesContent' must be an object")
            layered = any("properties.desired." in key for entry in modules.values() for key in (entry or {}))
            for module_id in EDGE_SYSTEM_MODULES:
                if not layered and not isinstance((modules.get(module_id) or {}).get("properties.desired"), dict):
                    raise IotHubError.argument_invalid(
                        f"'content.modulesContent.{module_id}.properties.desired' is required in an edge deployment"
                    )
        return _normalized(content)

    def put_configuration(self, configuration_id: str, body: Any, if_match: str | None) -> tuple[Configuration, bool]:
        """Create or update; content is immutable after creation, as in the real hub. Returns (record, created)."""
        if not isinstance(body, dict):
            raise IotHubError.argument_invalid("The configuration body must be a JSON object")
        if not CONFIGURATION_ID.fullmatch(configuration_id):
            raise IotHubError.argument_invalid('Configuration id: at most 128 chars, none of & ^ [ ] { } \\ | " < > /')
        if body.get("id") not in (None, configuration_id):
            raise IotHubError.argument_invalid("'id' in the body differs from the URL")
        priority = body.get("priority", 0) or 0
        if not isinstance(priority, int) or isinstance(priority, bool) or priority < 0:
            raise IotHubError.argument_invalid("'priority' must be a non-negative integer")
        labels = body.get("labels") or {}
        metrics = (body.get("metrics") or {}).get("queries") or {}
        condition = self._check_condition(body.get("targetCondition"))
        content = self._check_content(body.get("content"))
        existing = self.configurations.get(configuration_id)
        now = self.clock.now()
        if existing is None:
            if strip_etag(if_match) not in (None, "*"):
                raise IotHubError.precondition_failed(f"configuration '{configuration_id}' (it does not exist)")
            record = Configuration(
                configuration_id=configuration_id,
                etag=self._device_etag(),
                content=content,
                created=now,
                updated=now,
                target_condition=condition,
                priority=priority,
                labels=dict(labels),
                metric_queries=dict(metrics),
                schema_version=str(body.get("schemaVersion") or "1.0"),
            )
            self.configurations[configuration_id] = record
            created = True
        else:
            if if_match is None:
                raise IotHubError.configuration_exists(configuration_id)
            _if_match(if_match, existing.etag, f"configuration '{configuration_id}'")
            if content != existing.content:
                raise IotHubError.argument_invalid(
                    "Configuration content cannot be updated; only targetCondition, priority, labels and metrics can "
                    "change. Delete and re-create it, or create a new id with a higher priority."
                )
            record = existing
            record.target_condition, record.priority = condition, priority
            record.labels, record.metric_queries = dict(labels), dict(metrics)
            record.etag, record.updated = self._device_etag(), now
            created = False
        self._apply_all_deployments()
        return record, created

    def delete_configuration(self, configuration_id: str, if_match: str | None) -> None:
        record = self.configuration(configuration_id)
        _if_match(if_match, record.etag, f"configuration '{configuration_id}'")
        del self.configurations[configuration_id]
        for device in self.devices.values():
            if device.applied_configuration == configuration_id:
                device.applied_configuration = None
        self._apply_all_deployments()

    def list_configurations(self, top: int | None) -> list[Configuration]:
        rows = [self.configurations[key] for key in sorted(self.configurations)]
        return rows[:top] if top else rows

    def configuration_metrics(self, record: Configuration) -> tuple[int, int]:
        targeted = applied = 0
        if record.is_edge_deployment:
            matches = compile_condition(record.target_condition)
            for device in self.devices.values():
                if device.iot_edge and matches(device.twin_wire()):
                    targeted += 1
                    applied += device.applied_configuration == record.configuration_id
        return targeted, applied

    def test_queries(self, body: Any) -> dict[str, Any]:
        body = body if isinstance(body, dict) else {}
        result: dict[str, Any] = {"targetConditionError": "", "customMetricQueryErrors": {}}
        try:
            compile_condition(body.get("targetCondition") or "")
        except QueryError as exc:
            result["targetConditionError"] = str(exc)
        for name, text in (body.get("customMetricQueries") or {}).items():
            try:
                compile_select(text)
            except QueryError as exc:
                result["customMetricQueryErrors"][name] = str(exc)
        return result

    def apply_configuration_content(self, device_id: str, body: Any) -> None:
        device = self.device(device_id)
        modules = body.get("modulesContent") if isinstance(body, dict) else None
        if not isinstance(modules, dict):
            raise IotHubError.argument_invalid("'modulesContent' is required")
        self._write_modules_content(device, modules)

    def _write_modules_content(self, device: Device, modules: dict[str, Any]) -> None:
        for module_id, entry in modules.items():
            module = device.modules.get(module_id)
            desired = (entry or {}).get("properties.desired")
            if module is not None and isinstance(desired, dict) and module.twin.desired != desired:
                self._set_desired(module.twin, copy.deepcopy(desired))
                module.twin.version += 1
                module.twin.etag = self.ids.hub_etag()

    def _apply_deployments(self, device: Device) -> None:
        """Give an edge device the highest-priority matching deployment (ties: newest) as module desired state."""
        if not device.iot_edge:
            return
        twin_document = device.twin_wire()
        candidates = [
            c
            for c in self.configurations.values()
            if c.is_edge_deployment and compile_condition(c.target_condition)(twin_document)
        ]
        if not candidates:
            return
        best = max(candidates, key=lambda c: (c.priority, c.created, c.configuration_id))
        device.applied_configuration = best.configuration_id
        self._write_modules_content(device, best.content["modulesContent"])

    def _apply_all_deployments(self) -> None:
        for device in self.devices.values():
            self._apply_deployments(device)

    # ---- query ---------------------------------------------------------------------------------------------

    def query(
        self, body: Any, page_size: int | None, continuation: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        text = body.get("query") if isinstance(body, dict) else None
        if not isinstance(text, str):
            raise IotHubError.argument_invalid('Query body must be {"query": "SELECT * FROM devices ..."}')
        try:
            collection, predicate = compile_select(text)
        except QueryError as exc:
            raise IotHubError.argument_invalid(f"Query is not supported: {exc}") from exc
        documents: list[dict[str, Any]] = []
        for key in sorted(self.devices):
            device = self.devices[key]
            if collection == "devices":
                documents.append(device.twin_wire())
            else:
                documents.extend(device.module_twin_wire(device.modules[m]) for m in sorted(device.modules))
        rows = [doc for doc in documents if predicate(doc)]
        size = page_size or DEFAULT_PAGE_SIZE
        offset = 0
        if continuation:
            try:
                token = json.loads(base64.b64decode(continuation, validate=True))
                offset, same = int(token["offset"]), token["query"] == text
            except (binascii.Error, ValueError, KeyError, TypeError) as exc:
                raise IotHubError.argument_invalid("'x-ms-continuation' is not a token this hub issued") from exc
            if not same:
                raise IotHubError.argument_invalid("'x-ms-continuation' belongs to a different query")
        next_offset = offset + size
        token_out = None
        if next_offset < len(rows):
            token_out = base64.b64encode(json.dumps({"query": text, "offset": next_offset}).encode()).decode()
        return rows[offset:next_offset], token_out

    # ---- provisioning (called by the DPS emulator) and device credentials ----------------------------------

    def provision_device(
        self,
        device_id: str,
        authentication: dict[str, Any],
        iot_edge: bool,
        initial_twin: dict[str, Any] | None,
        twin_policy: str,
        migrated_twin: dict[str, Any] | None,
    ) -> None:
        """Create or update the device DPS assigned here; apply the initial twin on creation or reset."""
        existing = self.devices.get(device_id)
        body = {"deviceId": device_id, "authentication": authentication, "capabilities": {"iotEdge": iot_edge}}
        if existing is not None:
            body["status"] = existing.status
        device = self.put_device(device_id, body, "*" if existing else None)
        twin_source: dict[str, Any] | None = None
        if migrated_twin is not None:
            twin_source = migrated_twin
        elif existing is None or twin_policy == "reset":
            twin_source = initial_twin or {}
        if twin_source is not None:
            desired = (twin_source.get("properties") or {}).get("desired") or {}
            self.update_twin(
                device.device_id,
                None,
                {"tags": twin_source.get("tags") or {}, "properties": {"desired": desired}},
                None,
                replace=True,
            )

    def export_twin(self, device_id: str) -> dict[str, Any] | None:
        device = self.devices.get(device_id)
        if device is None:
            return None
        return {"tags": copy.deepcopy(device.twin.tags), "properties": {"desired": copy.deepcopy(device.twin.desired)}}

    def device_matches_certificate(self, device_id: str, chain: list[x509.Certificate]) -> bool:
        """X.509 device authentication for the runtime's own calls: thumbprint (selfSigned) or CN (CA-signed)."""
        device = self.devices.get(device_id)
        if device is None or not chain:
            return False
        leaf = chain[0]
        auth = device.authentication
        if auth.get("type") == "selfSigned":
            thumbprints = {t for t in (auth.get("x509Thumbprint") or {}).values() if t}
            return bool({sha1_thumbprint(leaf), sha256_thumbprint(leaf)} & thumbprints)
        if auth.get("type") == "certificateAuthority":
            return common_name(leaf) == device_id
        return False

    def device_keys(self, device_id: str) -> list[str]:
        device = self.devices.get(device_id)
        keys = (device.authentication.get("symmetricKey") or {}) if device else {}
        return [key for key in (keys.get("primaryKey"), keys.get("secondaryKey")) if key]

    # ---- state dump ----------------------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        devices = []
        for key in sorted(self.devices):
            device = self.devices[key]
            devices.append(
                {
                    **device.to_wire(),
                    "twin": device.twin_wire(),
                    "appliedConfiguration": device.applied_configuration,
                    "modules": [
                        {**device.modules[m].to_wire(), "twin": device.module_twin_wire(device.modules[m])}
                        for m in sorted(device.modules)
                    ],
                }
            )
        return {
            "hostName": self.host_name,
            "devices": devices,
            "configurations": [
                self.configurations[k].to_wire(*self.configuration_metrics(self.configurations[k]))
                for k in sorted(self.configurations)
            ],
        }
