# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# PRIVATE to the edgefleet.iotedge collection. Do not use this from other collections:
# it may change at any time.

"""The iothub_device core: enable, disable or delete existing IoT Hub device identities (a retired host's device).

Per device: one GET of the identity, then (not in check mode) one write with If-Match = the etag that was read.
A status change PUTs back the identity exactly as it was read with only ``status`` and ``statusReason`` changed, so
its authentication (keys, X.509 thumbprints or certificateAuthority), capabilities and scopes stay as they are.
A 412 (the device changed between the read and the write) reads it again and retries once; a write whose answer was
lost and that the retry policy sent again also ends in a 412, and that re-read shows it applied.
Devices the hub does not know are reported as ``missing``: nothing is created.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from ansible_collections.edgefleet.iotedge.plugins.module_utils._http import ApiError, ConfigurationError
from ansible_collections.edgefleet.iotedge.plugins.module_utils._iothub import _requested_ids

STATES = ("present", "absent")
STATUSES = ("enabled", "disabled")
# statusReason set with status=disabled (IoT Hub keeps up to 128 characters); enabling clears it.
DISABLED_REASON = "retired by edgefleet"
WRITE_ACTIONS = ("disable", "enable", "delete")
# A 412 is answered by reading again and writing once more; a second 412 fails the device.
WRITE_ATTEMPTS = 2


@dataclass
class DeviceStateRequest:
    device_ids: list = field(default_factory=list)
    status: str = "disabled"
    state: str = "present"


@dataclass
class DeviceOutcome:
    device_id: str
    action: str  # none | disable | enable | delete | missing
    status_before: str | None
    status: str | None

    def result(self) -> dict:
        return {
            "device_id": self.device_id,
            "status_before": self.status_before,
            "status": self.status,
            "action": self.action,
        }


class DeviceConflict(Exception):
    """The device changed between read and write on every attempt (412 each time)."""

    def __init__(self, device_id: str, error: ApiError):
        super().__init__(device_id)
        self.device_id = device_id
        self.error = error


def _check_request(request: DeviceStateRequest) -> list:
    if request.state not in STATES:
        raise ConfigurationError(f"state: must be one of {', '.join(STATES)}, got {request.state!r}")
    if request.state == "present" and request.status not in STATUSES:
        raise ConfigurationError(f"status: must be one of {', '.join(STATUSES)}, got {request.status!r}")
    if not isinstance(request.device_ids, list):
        raise ConfigurationError("device_ids: must be a list of device ids")
    return _requested_ids(request.device_ids)


def plan_action(record: dict | None, request: DeviceStateRequest) -> str:
    """What the device needs: ``missing`` when the hub does not know it, ``none`` when it is as wanted."""
    if record is None:
        return "missing"
    if request.state == "absent":
        return "delete"
    if record.get("status") == request.status:
        return "none"
    return "enable" if request.status == "enabled" else "disable"


def _status(record: dict | None) -> str | None:
    return record.get("status") if record else None


def _predicted_status(record: dict | None, action: str, request: DeviceStateRequest) -> str | None:
    if action in ("enable", "disable"):
        return request.status
    if action == "delete":
        return None
    return _status(record)


def with_status(record: dict, status: str) -> dict:
    """The identity as read, with only the status and its reason changed (what the PUT sends back)."""
    body = copy.deepcopy(record)
    body["status"] = status
    body["status_reason"] = DISABLED_REASON if status == "disabled" else None
    return body


def _write(client, device_id: str, record: dict, action: str) -> dict | None:
    """Send the one write ``action`` needs; the identity after it (None after a delete)."""
    if action == "delete":
        client.delete_device(device_id, record.get("etag"))
        return None
    status = "enabled" if action == "enable" else "disabled"
    return client.update_device(device_id, with_status(record, status), record.get("etag"))


def _settled(record: dict | None, action: str, request: DeviceStateRequest) -> bool:
    """Is the device, read again after a refused write, already as that write would have left it?"""
    if action == "delete":
        return record is None
    return record is not None and plan_action(record, request) == "none"


def converge_device(client, device_id: str, request: DeviceStateRequest, *, check_mode: bool) -> DeviceOutcome:
    """Read one device, decide, and (not in check mode) write with If-Match; re-read and retry once on a 412."""
    record = client.get_device(device_id)
    before = _status(record)
    action = plan_action(record, request)
    if check_mode or action not in WRITE_ACTIONS:
        return DeviceOutcome(device_id, action, before, _predicted_status(record, action, request))
    attempt = 1
    while True:
        try:
            after = _write(client, device_id, record, action)
        except ApiError as error:
            # 412: the etag changed (another client, or our own write whose answer was lost and was sent again).
            # 404: the device is gone (for a delete, that is what was wanted).
            if error.status not in (404, 412):
                raise
            record = client.get_device(device_id)
            if _settled(record, action, request):
                # Counted as done: the device went from ``before`` to the wanted state during this run.
                return DeviceOutcome(device_id, action, before, _status(record))
            action = plan_action(record, request)
            if action == "missing":
                # Deleted by someone else between the read and the write: there is nothing to enable or disable.
                return DeviceOutcome(device_id, "missing", before, None)
            if attempt >= WRITE_ATTEMPTS:
                raise DeviceConflict(device_id, error) from None
            attempt += 1
        else:
            return DeviceOutcome(device_id, action, before, _status(after))


def _diff_view(outcome: DeviceOutcome) -> dict | None:
    return None if outcome.action == "delete" else {"status": outcome.status}


def ensure_device_state(client, request: DeviceStateRequest, *, check_mode: bool) -> dict:
    """The iothub_device core: every listed device (in the order given, each once) to the wanted state.

    A device that kept changing under the writes (412 twice) does not stop the others; the run then fails naming it.
    """
    device_ids = _check_request(request)
    outcomes, conflicts = [], []
    for device_id in device_ids:
        try:
            outcomes.append(converge_device(client, device_id, request, check_mode=check_mode))
        except DeviceConflict as conflict:
            conflicts.append(conflict)
    if conflicts:
        first = conflicts[0].error
        names = ", ".join(repr(conflict.device_id) for conflict in conflicts)
        done = [outcome.device_id for outcome in outcomes if outcome.action in WRITE_ACTIONS]
        several = len(conflicts) > 1
        last = f"{first.status} {first.error_code}" if first.error_code else str(first.status)
        raise first.reworded(
            f"IoT Hub device{'s' if several else ''} {names} changed between read and write twice (last answer: "
            f"{last}): another client is updating {'them' if several else 'it'} at the same time. "
            f"{'Done for the others: ' + ', '.join(done) if done else 'No other device was changed'}; "
            "re-run when the other client has finished."
        )
    changed = [outcome for outcome in outcomes if outcome.action in WRITE_ACTIONS]
    return {
        "changed": bool(changed),
        "devices": [outcome.result() for outcome in outcomes],
        "diff": {
            "before": {outcome.device_id: {"status": outcome.status_before} for outcome in changed},
            "after": {outcome.device_id: _diff_view(outcome) for outcome in changed},
        },
    }


__all__ = (
    "DISABLED_REASON",
    "STATES",
    "STATUSES",
    "DeviceStateRequest",
    "converge_device",
    "ensure_device_state",
    "plan_action",
    "with_status",
)
