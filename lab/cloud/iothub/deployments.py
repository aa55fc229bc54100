"""Automatic configurations as the hub evaluates them: content rules, targeting, standard/layered merge, metrics.

Pure functions over ``Configuration`` records and twin documents; the backend decides when to run them. Sources:
Microsoft's "Understand IoT Edge automatic deployments" (module-deployment-monitoring.md: one standard deployment by
priority, ties to the newest; layered ones merged by priority above it, never configuring edgeAgent/edgeHub; deleting
a deployment leaves the modules), "Automatic IoT device management" (iot-hub-automatic-device-management-cli.md:
deviceContent paths, one configuration per twin, its settings removed when it stops applying), the az iot
extension's captured hub answers (systemMetrics texts) and "Troubleshoot IoT Hub error codes" (4004xx, 413101).
"""

from __future__ import annotations

import copy
import functools
from typing import Any

from lab.cloud.iothub.errors import IotHubError
from lab.cloud.iothub.models import DESIRED, EDGE_SYSTEM_MODULES, Configuration, desired_path, set_path
from lab.cloud.iothub.query import Predicate, QueryError, compile_condition, parse_query

# Quotas of a paid hub (iot-hub-devguide-quotas-throttling.md, "Other limits").
MAX_CONFIGURATIONS = 100
MAX_MODULES_PER_DEPLOYMENT = 50
CONTENT_SECTIONS = ("modulesContent", "moduleContent", "deviceContent")


@functools.lru_cache(maxsize=512)
def condition(text: str) -> Predicate:
    return compile_condition(text)


def targets(record: Configuration, device_twin: dict[str, Any]) -> bool:
    """Whether the record's target condition selects this device twin. An empty condition selects nothing: the hub
    shows an empty ``targetedCount`` query for it; edge deployments only ever target IoT Edge devices."""
    text = record.target_condition.strip()
    if not text:
        return False
    if record.is_edge_deployment and not (device_twin.get("capabilities") or {}).get("iotEdge"):
        return False
    return condition(text)(device_twin)


# ---- content rules --------------------------------------------------------------------------------------------


def _sections(content: dict[str, Any]) -> dict[str, Any]:
    """The content sections that carry something (the SDK may send or omit empty ones)."""
    return {key: value for key, value in content.items() if key in CONTENT_SECTIONS and value not in (None, {})}


def same_content(sent: dict[str, Any], stored: dict[str, Any]) -> bool:
    """Immutability check: equal sections, empty objects inside them included; an absent, null or empty section is
    the same as none."""
    return _sections(sent) == _sections(stored)


def check_content(content: Any) -> dict[str, Any]:
    """Refuse content the hub would not apply; return it exactly as sent (empty objects are kept)."""
    if not isinstance(content, dict):
        raise IotHubError.invalid_configuration_content(
            "'content' must be an object with modulesContent or deviceContent"
        )
    unknown = sorted(set(content) - set(CONTENT_SECTIONS))
    if unknown:
        raise IotHubError.invalid_configuration_content(f"'content' has unknown sections {unknown}")
    sections = _sections(content)
    if len(sections) != 1:
        raise IotHubError.invalid_configuration_content(
            "'content' needs exactly one of modulesContent (an IoT Edge deployment) or deviceContent (an automatic "
            f"device configuration); got {sorted(sections) or 'none'}"
        )
    if "moduleContent" in sections:
        raise IotHubError.invalid_configuration_content(
            "automatic module configurations ('content.moduleContent') are not implemented by the lab emulator; "
            "use 'modulesContent' for an IoT Edge deployment or 'deviceContent' for device twins"
        )
    if "deviceContent" in sections:
        _check_device_content(sections["deviceContent"])
    else:
        _check_modules_content(sections["modulesContent"])
    return copy.deepcopy(content)


def _check_device_content(device_content: Any) -> None:
    if not isinstance(device_content, dict):
        raise IotHubError.invalid_configuration_content("'content.deviceContent' must be an object")
    for key in device_content:
        if not desired_path(key):
            raise IotHubError.invalid_configuration_content(
                f"'content.deviceContent' key {key!r} must be a path below properties.desired, such as "
                "'properties.desired.firmware'"
            )


def _module_entries(modules: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(modules, dict):
        raise IotHubError.invalid_configuration_content("'content.modulesContent' must be an object")
    for module_id, entry in modules.items():
        if not isinstance(entry, dict):
            raise IotHubError.invalid_configuration_content(f"'content.modulesContent.{module_id}' must be an object")
        for key in entry:
            if desired_path(key) is None:
                raise IotHubError.invalid_configuration_content(
                    f"'content.modulesContent.{module_id}' key {key!r} must be 'properties.desired' or a path below it"
                )
    return modules


def _check_modules_content(modules: Any) -> None:
    entries = _module_entries(modules)
    layered = any(key != DESIRED for entry in entries.values() for key in entry)
    if layered:
        _check_layer(entries)
    else:
        for module_id in EDGE_SYSTEM_MODULES:
            if not isinstance((entries.get(module_id) or {}).get(DESIRED), dict):
                raise IotHubError.invalid_configuration_content(
                    f"'content.modulesContent.{module_id}.properties.desired' is required in an edge deployment"
                )
    count = len(deployment_modules(entries))
    if count > MAX_MODULES_PER_DEPLOYMENT:
        raise IotHubError.invalid_configuration_content(
            f"a deployment can have at most {MAX_MODULES_PER_DEPLOYMENT} modules; this one has {count}"
        )


def _check_layer(entries: dict[str, dict[str, Any]]) -> None:
    """Layered deployments never configure the runtime modules themselves (module-deployment-monitoring.md)."""
    for module_id in EDGE_SYSTEM_MODULES:
        for key in entries.get(module_id) or {}:
            path = desired_path(key) or []
            if not path or path[0] == "systemModules":
                raise IotHubError.invalid_configuration_content(
                    f"a layered deployment cannot set '{module_id}' {key!r}: edgeAgent and edgeHub come from the "
                    "standard deployment; add modules with 'properties.desired.modules.<name>' and routes with "
                    "'properties.desired.routes.<name>'"
                )


def deployment_modules(entries: dict[str, dict[str, Any]]) -> set[str]:
    """The module names a deployment's ``$edgeAgent`` content declares (standard or layered)."""
    names: set[str] = set()
    for key, value in (entries.get("$edgeAgent") or {}).items():
        path = desired_path(key) or []
        if not path and isinstance(value, dict):
            names.update((value.get("modules") or {}) if isinstance(value.get("modules"), dict) else {})
        elif path == ["modules"] and isinstance(value, dict):
            names.update(value)
        elif len(path) >= 2 and path[0] == "modules":
            names.add(path[1])
    return names


def check_metric_queries(queries: Any) -> dict[str, str]:
    if not isinstance(queries, dict):
        raise IotHubError.invalid_custom_metric("'metrics.queries' must be an object of name -> query")
    for name, text in queries.items():
        try:
            if not isinstance(text, str):
                raise QueryError("it must be a string")
            parse_query(text)
        except QueryError as exc:
            raise IotHubError.invalid_custom_metric(f"custom metric {name!r} is invalid: {exc}") from exc
    return dict(queries)


# ---- applying ------------------------------------------------------------------------------------------------


def choose_edge(targeting: list[Configuration]) -> tuple[Configuration | None, list[Configuration]]:
    """(standard deployment, layered ones in ascending priority). Layers apply only on top of a standard deployment
    and only with a higher priority than it."""
    standard = [record for record in targeting if not record.is_layered]
    if not standard:
        return None, []
    base = max(standard, key=Configuration.rank)
    layers = [record for record in targeting if record.is_layered and record.priority > base.priority]
    return base, sorted(layers, key=Configuration.rank)


def merged_modules_desired(base: Configuration, layers: list[Configuration]) -> dict[str, dict[str, Any]]:
    """module id -> desired properties: the standard deployment's, then each layer's paths on top (the higher
    priority last, so it wins a duplicated module or route)."""
    merged = {
        module_id: copy.deepcopy(entry[DESIRED])
        for module_id, entry in base.content["modulesContent"].items()
        if isinstance(entry.get(DESIRED), dict)
    }
    for layer in layers:
        for module_id, entry in layer.content["modulesContent"].items():
            for key, value in entry.items():
                path = desired_path(key) or []
                if not path:
                    merged[module_id] = copy.deepcopy(value) if isinstance(value, dict) else {}
                else:
                    set_path(merged.setdefault(module_id, {}), path, value)
    return merged


def device_content_items(record: Configuration) -> list[tuple[list[str], Any]]:
    return [(desired_path(key) or [], value) for key, value in record.content["deviceContent"].items()]


def count_rows(text: str, devices: list[dict[str, Any]], modules: list[dict[str, Any]]) -> int:
    """A metric's result: the number of rows its query returns (0 for an empty query)."""
    if not text.strip():
        return 0
    try:
        query = parse_query(text)
    except QueryError:
        return 0
    documents = devices if query.collection == "devices" else modules
    return sum(1 for document in documents if query.predicate(document))
