# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# PRIVATE to the edgefleet.iotedge collection. Do not use this from other collections:
# it may change at any time.

"""What individual enrollments and enrollment groups share: DPS's vocabulary and the common options.

Both enrollment cores validate initial_twin, reprovision_policy and the choices the same way, read them from a DPS
record into the same snake_case view, and write them back in DPS's wire shape, through these functions.
"""

from __future__ import annotations

import math

from ansible_collections.edgefleet.iotedge.plugins.module_utils._http import ConfigurationError
from ansible_collections.edgefleet.iotedge.plugins.module_utils._shown import shown

STATES = ("present", "absent")
PROVISIONING_STATUSES = ("enabled", "disabled")
ALLOCATION_POLICIES = ("hashed", "geoLatency", "static", "custom")
TWIN_PARTS = ("tags", "desired_properties")
REPROVISION_KEYS = ("update_hub_assignment", "migrate_device_data")
# Service bookkeeping inside a twin collection, at any depth; never part of what the user manages.
TWIN_METADATA_KEYS = ("$metadata", "$version")
# DPS's counters at the top of a TwinCollection; a user's own key of that name is kept.
TWIN_COUNTERS = ("version", "count")


# ---- validation (before any request) -----------------------------------------------------------------------


def check_choice(value, choices, field: str) -> None:
    if value is not None and value not in choices:
        raise ConfigurationError(f"{field}: {shown(value)} is not known; use one of {', '.join(choices)}")


def check_iot_hubs(value, field: str) -> None:
    if value is not None and (not isinstance(value, list) or not all(isinstance(h, str) and h for h in value)):
        raise ConfigurationError(f"{field}: must be a list of IoT hub host names (e.g. myhub.azure-devices.net)")


# IoT Hub's twin rules (iot-hub-devguide-device-twins, "Tags and properties format" and "Twin size"): keys up to
# 1 KB of UTF-8 without control characters, '.', '$' or spaces; values are booleans, numbers, strings up to 4 KB,
# objects or arrays; objects nest at most 10 deep below tags or desired; tags hold at most 8 KB, desired 32 KB.
TWIN_KEY_MAX_BYTES = 1024
TWIN_STRING_MAX_BYTES = 4 * 1024
TWIN_MAX_DEPTH = 10
TWIN_INTEGER_RANGE = (-4503599627370496, 4503599627370495)
TWIN_SIZE_LIMITS = {"tags": 8 * 1024, "desired_properties": 32 * 1024}
_TWIN_KEY_FORBIDDEN = ".$ "


def _control_free(text: str) -> str:
    """The characters IoT Hub counts: Unicode control characters (C0, C1) are left out."""
    return "".join(ch for ch in text if not (ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F))


def _twin_key_problem(key) -> str | None:
    if not isinstance(key, str) or not key:
        return f"key {shown(key)} is not a non-empty string"
    if len(key.encode("utf-8", "surrogatepass")) > TWIN_KEY_MAX_BYTES:
        return f"key {shown(key)} is longer than {TWIN_KEY_MAX_BYTES} bytes"
    if any(ch in _TWIN_KEY_FORBIDDEN for ch in key) or _control_free(key) != key:
        return (
            f"key {shown(key)} has a character IoT Hub refuses in twin keys ('.', '$', a space or a control character)"
        )
    return None


def _twin_value_size(value, where: str, depth: int) -> int:
    """Check one twin value; return its size as IoT Hub counts it (strings in characters, numbers 8, booleans 4)."""
    if isinstance(value, bool):
        return 4
    if isinstance(value, int):
        low, high = TWIN_INTEGER_RANGE
        if not low <= value <= high:
            raise ConfigurationError(f"{where}: {value} is outside the integers IoT Hub keeps ({low} to {high})")
        return 8
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigurationError(f"{where}: {value} is not a number JSON can carry")
        return 8
    if isinstance(value, str):
        if len(value.encode("utf-8", "surrogatepass")) > TWIN_STRING_MAX_BYTES:
            raise ConfigurationError(f"{where}: the string is longer than {TWIN_STRING_MAX_BYTES} bytes")
        return len(_control_free(value))
    if isinstance(value, dict):
        return _twin_object_size(value, where, depth + 1)
    if isinstance(value, (list, tuple)):
        return sum(_twin_value_size(item, f"{where}[{index}]", depth) for index, item in enumerate(value))
    if value is None:
        raise ConfigurationError(f"{where}: null is not a value a twin keeps; remove the key instead")
    raise ConfigurationError(
        f"{where}: a {type(value).__name__} is not a twin value; use a string, a number, a boolean, a dictionary "
        "or a list"
    )


def _twin_object_size(value: dict, where: str, depth: int) -> int:
    if depth > TWIN_MAX_DEPTH:
        raise ConfigurationError(
            f"{where}: objects nest more than {TWIN_MAX_DEPTH} levels deep, which IoT Hub refuses; flatten the value"
        )
    size = 0
    for key, item in value.items():
        problem = _twin_key_problem(key)
        if problem:
            raise ConfigurationError(f"{where}: {problem}; use letters, digits, '-' or '_' in keys")
        size += len(key.encode("utf-8")) + _twin_value_size(item, f"{where}.{key}", depth)
    return size


def validate_twin_collection(value, field: str, part: str) -> dict:
    """A twin collection (``tags`` or ``desired_properties``) that IoT Hub accepts, checked at every depth."""
    if not isinstance(value, dict):
        raise ConfigurationError(f"{field}: must be a dictionary, got {type(value).__name__}")
    size = _twin_object_size(value, field, 0)
    limit = TWIN_SIZE_LIMITS[part]
    if size > limit:
        raise ConfigurationError(
            f"{field}: takes {size} bytes as IoT Hub counts them, more than the {limit} it allows for {part}; "
            "keep less in the twin"
        )
    return value


def validate_initial_twin(value, field: str) -> dict | None:
    """The parts given (``tags``, ``desired_properties``); None when the option is unset."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ConfigurationError(f"{field}: must be a dictionary with tags and/or desired_properties")
    unknown = sorted(set(value) - set(TWIN_PARTS))
    if unknown:
        raise ConfigurationError(
            f"{field}: unknown key(s) {', '.join(unknown)}; use a dictionary with tags and/or desired_properties"
        )
    return {
        part: validate_twin_collection(value[part], f"{field}.{part}", part)
        for part in TWIN_PARTS
        if value.get(part) is not None
    }


def validate_reprovision_policy(value, field: str) -> dict | None:
    """Both keys as booleans (DPS's default, true, for a key left out); None when the option is unset."""
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - set(REPROVISION_KEYS):
        raise ConfigurationError(
            f"{field}: use a dictionary with update_hub_assignment and migrate_device_data (booleans)"
        )
    policy = {key: True if value.get(key) is None else value[key] for key in REPROVISION_KEYS}
    if not all(isinstance(flag, bool) for flag in policy.values()):
        raise ConfigurationError(f"{field}: update_hub_assignment and migrate_device_data are booleans")
    return policy


# ---- DPS record <-> snake_case view ------------------------------------------------------------------------


def strip_metadata(collection) -> dict:
    """A twin collection without ``$metadata`` / ``$version``, at any depth."""
    if not isinstance(collection, dict):
        return {}
    return {
        key: strip_metadata(value) if isinstance(value, dict) else value
        for key, value in collection.items()
        if key not in TWIN_METADATA_KEYS
    }


def strip_twin_bookkeeping(collection, managed=None) -> dict:
    """A TwinCollection without DPS's bookkeeping: metadata anywhere, and the top-level counters unless
    ``managed`` (what the user asked for) has a key of that name."""
    result = strip_metadata(collection)
    for counter in TWIN_COUNTERS:
        if counter not in (managed or {}):
            result.pop(counter, None)
    return result


def initial_twin_view(twin: dict, managed: dict | None = None) -> dict:
    """``initialTwin`` of a record -> ``{tags, desired_properties}``; ``managed`` is the initial_twin asked for."""
    managed = managed or {}
    return {
        "tags": strip_twin_bookkeeping(twin.get("tags"), managed.get("tags")),
        "desired_properties": strip_twin_bookkeeping(
            (twin.get("properties") or {}).get("desired"), managed.get("desired_properties")
        ),
    }


def initial_twin_wire(view: dict) -> dict:
    return {"tags": view["tags"], "properties": {"desired": view["desired_properties"]}}


def reprovision_policy_view(policy) -> dict | None:
    if not isinstance(policy, dict):
        return None
    return {
        "update_hub_assignment": policy.get("updateHubAssignment", True),
        "migrate_device_data": policy.get("migrateDeviceData", True),
    }


def reprovision_policy_wire(view: dict) -> dict:
    return {"updateHubAssignment": view["update_hub_assignment"], "migrateDeviceData": view["migrate_device_data"]}


__all__ = (
    "ALLOCATION_POLICIES",
    "PROVISIONING_STATUSES",
    "STATES",
    "TWIN_PARTS",
    "check_choice",
    "check_iot_hubs",
    "initial_twin_view",
    "initial_twin_wire",
    "reprovision_policy_view",
    "reprovision_policy_wire",
    "strip_metadata",
    "strip_twin_bookkeeping",
    "validate_initial_twin",
    "validate_reprovision_policy",
    "validate_twin_collection",
)
