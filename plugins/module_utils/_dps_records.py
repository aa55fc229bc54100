# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# PRIVATE to the edgefleet.iotedge collection. Do not use this from other collections:
# it may change at any time.

"""What individual enrollments and enrollment groups share: DPS's vocabulary and the common options.

Both enrollment cores validate initial_twin, reprovision_policy and the choices the same way, read them from a DPS
record into the same snake_case view, and write them back in DPS's wire shape, through these functions.
"""

from __future__ import annotations

from ansible_collections.edgefleet.iotedge.plugins.module_utils._http import ConfigurationError

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
        raise ConfigurationError(f"{field}: {value!r} is not known; use one of {', '.join(choices)}")


def check_iot_hubs(value, field: str) -> None:
    if value is not None and (not isinstance(value, list) or not all(isinstance(h, str) and h for h in value)):
        raise ConfigurationError(f"{field}: must be a list of IoT hub host names (e.g. myhub.azure-devices.net)")


def _property_map(value, field: str) -> dict:
    if not isinstance(value, dict):
        raise ConfigurationError(f"{field}: must be a dictionary, got {type(value).__name__}")
    for key in value:
        if not isinstance(key, str) or not key or key.startswith("$"):
            raise ConfigurationError(f"{field}: key {key!r} is not allowed; keys are non-empty and do not start with $")
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
    return {part: _property_map(value[part], f"{field}.{part}") for part in TWIN_PARTS if value.get(part) is not None}


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
)
