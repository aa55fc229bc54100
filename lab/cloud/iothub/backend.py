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
from lab.cloud.iothub import deployments
from lab.cloud.iothub.errors import IotHubError
from lab.cloud.iothub.models import (
    APPLIED,
    DESIRED,
    EDGE_SYSTEM_MODULES,
    TARGETED,
    Configuration,
    Device,
    Module,
    Twin,
    merge_patch,
    remove_path,
    set_path,
    strip_metadata,
)
from lab.cloud.iothub.query import QueryError, compile_condition, parse_query
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


class IotHubBackend:
    def __init__(self, clock: Clock, ids: IdGenerator, host_name: str = "127.0.0.1") -> None:
        self.clock = clock
        self.ids = ids
        self.host_name = host_name
        self.reset()

    def reset(self) -> None:
        self.devices: dict[str, Device] = {}
        self.configurations: dict[str, Configuration] = {}
        self._sequence = 0

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
            if not module_id:
                # Target conditions may name the device twin's reported properties.
                self._apply_deployments(self.device(device_id))
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
            raise IotHubError.invalid_target_condition("'targetCondition' must be a string")
        try:
            compile_condition(condition)
        except QueryError as exc:
            raise IotHubError.invalid_target_condition(f"'targetCondition' is invalid: {exc}") from exc
        return condition

    def _check_quota(self, content: dict[str, Any]) -> None:
        """100 edge deployments and 100 device configurations per paid hub (counted apart, as the quotas list them)."""
        edge = bool(content.get("modulesContent"))
        same_kind = sum(1 for record in self.configurations.values() if record.is_edge_deployment == edge)
        if same_kind >= deployments.MAX_CONFIGURATIONS:
            raise IotHubError.configuration_count_limit(deployments.MAX_CONFIGURATIONS)

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
        metrics = deployments.check_metric_queries((body.get("metrics") or {}).get("queries") or {})
        condition = self._check_condition(body.get("targetCondition"))
        content = deployments.check_content(body.get("content"))
        existing = self.configurations.get(configuration_id)
        now = self.clock.now()
        if existing is None:
            if strip_etag(if_match) not in (None, "*"):
                raise IotHubError.precondition_failed(f"configuration '{configuration_id}' (it does not exist)")
            self._check_quota(content)
            self._sequence += 1
            record = Configuration(
                configuration_id=configuration_id,
                etag=self._device_etag(),
                content=content,
                created=now,
                updated=now,
                target_condition=condition,
                priority=priority,
                labels=dict(labels),
                metric_queries=metrics,
                schema_version=str(body.get("schemaVersion") or "1.0"),
                sequence=self._sequence,
            )
            self.configurations[configuration_id] = record
            created = True
        else:
            if if_match is None:
                raise IotHubError.configuration_exists(configuration_id)
            _if_match(if_match, existing.etag, f"configuration '{configuration_id}'")
            if not deployments.same_content(content, existing.content):
                raise IotHubError.immutable_configuration_content(configuration_id)
            record = existing
            record.target_condition, record.priority = condition, priority
            record.labels, record.metric_queries = dict(labels), metrics
            record.etag, record.updated = self._device_etag(), now
            created = False
        self._apply_all_deployments()
        return record, created

    def delete_configuration(self, configuration_id: str, if_match: str | None) -> None:
        """The devices fall back to what else targets them; an edge device nothing else targets keeps its modules
        (deleting a deployment does not remove modules), a device configuration's settings are removed."""
        record = self.configuration(configuration_id)
        _if_match(if_match, record.etag, f"configuration '{configuration_id}'")
        del self.configurations[configuration_id]
        self._apply_all_deployments()

    def list_configurations(self, top: int | None) -> list[Configuration]:
        rows = [self.configurations[key] for key in sorted(self.configurations)]
        return rows[:top] if top else rows

    def _metric_documents(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(device twins, module twins) as the query language sees them."""
        devices = [self.devices[key] for key in sorted(self.devices)]
        modules = [device.module_twin_wire(device.modules[m]) for device in devices for m in sorted(device.modules)]
        return [device.twin_wire() for device in devices], modules

    def configuration_wire(self, record: Configuration) -> dict[str, Any]:
        """The record with its system and custom metrics evaluated now."""
        device_twins, module_twins = self._metric_documents()
        system: dict[str, int] = {}
        for name, text in record.system_metric_queries().items():
            if name == "targetedCount":
                system[name] = sum(1 for twin in device_twins if deployments.targets(record, twin))
            else:
                system[name] = deployments.count_rows(text, device_twins, module_twins)
        custom = {
            name: deployments.count_rows(text, device_twins, module_twins)
            for name, text in record.metric_queries.items()
        }
        return record.to_wire(system, custom)

    def test_queries(self, body: Any) -> dict[str, Any]:
        body = body if isinstance(body, dict) else {}
        result: dict[str, Any] = {"targetConditionError": "", "customMetricQueryErrors": {}}
        try:
            compile_condition(body.get("targetCondition") or "")
        except QueryError as exc:
            result["targetConditionError"] = str(exc)
        for name, text in (body.get("customMetricQueries") or {}).items():
            try:
                parse_query(text)
            except QueryError as exc:
                result["customMetricQueryErrors"][name] = str(exc)
        return result

    def apply_configuration_content(self, device_id: str, body: Any) -> None:
        """Configuration_ApplyOnEdgeDevice: the modules' desired properties, written as sent (no targeting)."""
        device = self.device(device_id)
        if not isinstance(body, dict) or not isinstance(body.get("modulesContent"), dict):
            raise IotHubError.invalid_configuration_content("'modulesContent' is required")
        if body.get("deviceContent") or body.get("moduleContent"):
            raise IotHubError.invalid_configuration_content("only 'modulesContent' can be applied on an edge device")
        for module_id, entry in body["modulesContent"].items():
            if not isinstance(entry, dict) or set(entry) != {DESIRED} or not isinstance(entry[DESIRED], dict):
                raise IotHubError.invalid_configuration_content(
                    f"'modulesContent.{module_id}' must be {{\"properties.desired\": {{...}}}}"
                )
        modules = {module_id: entry[DESIRED] for module_id, entry in body["modulesContent"].items()}
        if len(deployments.deployment_modules(body["modulesContent"])) > deployments.MAX_MODULES_PER_DEPLOYMENT:
            raise IotHubError.invalid_configuration_content(
                f"a deployment can have at most {deployments.MAX_MODULES_PER_DEPLOYMENT} modules"
            )
        self._write_modules_desired(device, modules)

    def _replace_desired(self, twin: Twin, desired: dict[str, Any]) -> None:
        """A service-side write: only a real change bumps the desired $version (edgeAgent reacts to every bump)."""
        if twin.desired == desired:
            return
        self._set_desired(twin, copy.deepcopy(desired))
        twin.version += 1
        twin.etag = self.ids.hub_etag()

    def _write_modules_desired(self, device: Device, modules: dict[str, dict[str, Any]]) -> None:
        """Module twins that exist get their desired properties; content for a module not (yet) registered is
        written when it is (put_module re-evaluates the device)."""
        for module_id, desired in modules.items():
            module = device.modules.get(module_id)
            if module is not None:
                self._replace_desired(module.twin, desired)

    def _apply_deployments(self, device: Device) -> None:
        """Re-evaluate every automatic configuration for one device (its tags, reported properties or the set of
        configurations changed): device configurations on the device twin, edge deployments on its modules."""
        device_twin = device.twin_wire()
        self._apply_device_configurations(device, device_twin)
        if device.iot_edge:
            self._apply_edge_deployments(device, device_twin)

    def _apply_edge_deployments(self, device: Device, device_twin: dict[str, Any]) -> None:
        targeting = [
            c for c in self.configurations.values() if c.is_edge_deployment and deployments.targets(c, device_twin)
        ]
        base, layers = deployments.choose_edge(targeting)
        applied = {record.configuration_id for record in ([base] if base else []) + layers}
        agent = device.modules.get("$edgeAgent")
        if agent is not None:
            agent.twin.configurations = {
                record.configuration_id: {"status": APPLIED if record.configuration_id in applied else TARGETED}
                for record in sorted(targeting, key=lambda r: r.configuration_id)
            }
        device.applied_configuration = base.configuration_id if base else None
        device.applied_layers = [layer.configuration_id for layer in layers]
        if base is not None:
            self._write_modules_desired(device, deployments.merged_modules_desired(base, layers))

    def _apply_device_configurations(self, device: Device, device_twin: dict[str, Any]) -> None:
        """The highest-priority device configuration's paths on the device twin; the previous one's paths removed
        first (a configuration that stops applying takes its settings with it)."""
        targeting = [
            c for c in self.configurations.values() if c.is_device_configuration and deployments.targets(c, device_twin)
        ]
        best = max(targeting, key=Configuration.rank) if targeting else None
        desired = copy.deepcopy(device.twin.desired)
        for path in device.device_content_paths:
            remove_path(desired, path)
        items = deployments.device_content_items(best) if best else []
        for path, value in items:
            set_path(desired, path, value)
        device.device_content_paths = [path for path, _value in items]
        device.twin.configurations = {
            record.configuration_id: {"status": APPLIED if record is best else TARGETED}
            for record in sorted(targeting, key=lambda r: r.configuration_id)
        }
        self._replace_desired(device.twin, desired)

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
            parsed = parse_query(text)
        except QueryError as exc:
            raise IotHubError.argument_invalid(f"Query is not supported: {exc}") from exc
        device_twins, module_twins = self._metric_documents()
        documents = device_twins if parsed.collection == "devices" else module_twins
        rows = [parsed.project(doc) for doc in documents if parsed.predicate(doc)]
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
                    "appliedLayers": list(device.applied_layers),
                    "modules": [
                        {**device.modules[m].to_wire(), "twin": device.module_twin_wire(device.modules[m])}
                        for m in sorted(device.modules)
                    ],
                }
            )
        return {
            "hostName": self.host_name,
            "devices": devices,
            "configurations": [self.configuration_wire(self.configurations[k]) for k in sorted(self.configurations)],
        }
