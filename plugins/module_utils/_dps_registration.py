# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# PRIVATE to the edgefleet.iotedge collection. Do not use this from other collections:
# it may change at any time.

"""The dps_registration core: delete device registration records (a retired device's record counts against quota).

A registration record is written by DPS when a device registers; this core only removes records. Each is read first
(what a check-mode run and the diff show, and the etag the delete sends), then deleted; one already gone is no change.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ansible_collections.edgefleet.iotedge.plugins.module_utils._dps_info import _unique, registration_view
from ansible_collections.edgefleet.iotedge.plugins.module_utils._http import ConfigurationError


@dataclass
class RegistrationRequest:
    registration_ids: list = field(default_factory=list)
    state: str = "absent"


def _diff_view(view: dict) -> dict:
    return {key: view.get(key) for key in ("status", "device_id", "assigned_hub", "updated")}


def ensure_registrations(client, request: RegistrationRequest, *, check_mode: bool) -> dict:
    """Delete the listed registration records; returns per id ``action`` (delete or none) and what was there."""
    if request.state != "absent":
        raise ConfigurationError(
            f"state: {request.state!r} is not supported; only absent (devices create their registration records)"
        )
    ids = _unique(request.registration_ids)
    if not ids:
        raise ConfigurationError("registration_ids: list at least one registration id")
    registrations, before, after = [], {}, {}
    for registration_id in ids:
        record = client.get_registration(registration_id)
        if record is None:
            registrations.append({"registration_id": registration_id, "action": "none", "before": None})
            continue
        view = registration_view(record)
        deleted = True if check_mode else client.delete_registration(registration_id, record.get("etag") or "*")
        registrations.append(
            {"registration_id": registration_id, "action": "delete" if deleted else "none", "before": view}
        )
        if deleted:
            before[registration_id], after[registration_id] = _diff_view(view), None
    return {
        "changed": bool(before),
        "registrations": registrations,
        "summary": {"deleted": len(before), "absent": len(ids) - len(before)},
        "diff": {"before": {"registrations": before}, "after": {"registrations": after}},
    }


__all__ = ("RegistrationRequest", "ensure_registrations")
