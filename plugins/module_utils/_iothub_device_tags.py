# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# PRIVATE to the edgefleet.iotedge collection. Do not use this from other collections:
# it may change at any time.

"""The iothub_device_tags core: keep the tags of device twins in step with inventory.

An enrollment's initial twin reaches IoT Hub only when the device first registers; after that, a host that moves to
another group keeps its old tags unless something writes the new ones. This core does, for many devices at once:

1. Every listed device's twin is read with ``SELECT * FROM devices WHERE deviceId IN [...]`` queries (as few as the
   query length budget allows, paged). Ids that cannot go into a query unchanged, and ids the query did not return
   (query results can lag behind the registry), are read one by one with ``GET /twins/{id}``, which also decides
   whether the hub knows the device.
2. Each twin's tags are compared with the wanted ones, and a JSON merge patch (RFC 7396, what ``PATCH /twins/{id}``
   applies to ``tags``) is computed that leaves exactly the wanted values: a merge patch merges nested objects, so
   the patch also sets to ``null`` every nested key that must go. Only ``tags`` is sent, so desired properties are
   untouched (``PUT /twins/{id}`` would replace them too).
3. The result of every patch is checked against the hub's tag limits before the first write.
4. Only the twins that differ are patched, each with If-Match = the etag it was read with. A 412 (the twin changed
   in between) reads that twin again, recomputes, and writes once more; a second 412 fails the run naming the device,
   after every other device has been handled. 429 and 5xx go through the registry's RetryPolicy.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field

from ansible_collections.edgefleet.iotedge.plugins.module_utils._dps_records import (
    _twin_key_problem,
    validate_twin_collection,
)
from ansible_collections.edgefleet.iotedge.plugins.module_utils._http import ApiError, ConfigurationError
from ansible_collections.edgefleet.iotedge.plugins.module_utils._iothub import (
    QUERY_PAGE_SIZE,
    _query_by_device,
    _queryable,
)
from ansible_collections.edgefleet.iotedge.plugins.module_utils._shown import shown

PURGE_MODES = ("managed", "none", "all")
ACTIONS = ("none", "update", "missing")
# A 412 is answered by reading again and writing once more; a second 412 fails the device.
WRITE_ATTEMPTS = 2
# Twin.deviceId in the IoT Hub REST spec (api-version 2021-04-12): up to 128 ASCII characters, letters, digits and
# - : . + % _ # * ? ! ( ) , = @ ; $ '
DEVICE_ID = re.compile(r"[A-Za-z0-9\-:.+%_#*?!(),=@;$']{1,128}")


@dataclass
class DeviceTagsRequest:
    devices: dict = field(default_factory=dict)
    purge: str = "managed"
    managed_keys: list = field(default_factory=list)
    page_size: int = QUERY_PAGE_SIZE


@dataclass
class TagsOutcome:
    device_id: str
    action: str  # none | update | missing
    tags_before: dict | None
    tags: dict | None

    def result(self) -> dict:
        return {
            "device_id": self.device_id,
            "action": self.action,
            "tags_before": self.tags_before,
            "tags": self.tags,
        }


@dataclass
class TagsPlan:
    """What one twin needs: the patch to send (empty when none), with the tags and etag it was computed from."""

    device_id: str
    etag: str | None
    before: dict
    patch: dict
    after: dict


class TagsNotWritten(Exception):
    """One device whose tags could not be written; the others go on and the run fails naming it at the end."""

    def __init__(self, device_id: str, reason: str, error: Exception):
        super().__init__(device_id)
        self.device_id = device_id
        self.reason = reason
        self.error = error


# ---- validation (before any request) -------------------------------------------------------------------------


def device_field(device_id: str) -> str:
    """How a device's wanted tags are named in messages: ``devices['gw-01']`` (an id may contain dots)."""
    return f"devices[{device_id!r}]"


def _check_device_id(device_id) -> str:
    if not isinstance(device_id, str) or DEVICE_ID.fullmatch(device_id) is None:
        raise ConfigurationError(
            f"devices: {shown(device_id)} is not an IoT Hub device id (1 to 128 ASCII letters, digits or "
            "- : . + % _ # * ? ! ( ) , = @ ; $ '); use the device id the host registered with"
        )
    return device_id


def _check_managed_keys(request: DeviceTagsRequest) -> list:
    keys = request.managed_keys or []
    if not isinstance(keys, list):
        raise ConfigurationError("managed_keys: must be a list of top-level tag names")
    if keys and request.purge != "managed":
        raise ConfigurationError(
            f"managed_keys: only used with purge=managed (purge is {request.purge!r}); remove managed_keys or set "
            "purge to managed"
        )
    for key in keys:
        problem = _twin_key_problem(key)
        if problem:
            raise ConfigurationError(f"managed_keys: {problem}; name top-level tags as they are in the twin")
    return keys


def check_request(request: DeviceTagsRequest) -> dict:
    """The wanted tags per device id, in the order given, each checked against IoT Hub's twin rules.

    Raises ConfigurationError naming the option (and the device and key) before anything is read or written.
    """
    if request.purge not in PURGE_MODES:
        raise ConfigurationError(f"purge: must be one of {', '.join(PURGE_MODES)}, got {shown(request.purge)}")
    _check_managed_keys(request)
    if not isinstance(request.devices, dict):
        raise ConfigurationError(
            "devices: must be a dictionary of device id -> the tags that device must have (a dictionary)"
        )
    wanted = {}
    for device_id, tags in request.devices.items():
        _check_device_id(device_id)
        if not isinstance(tags, dict):
            raise ConfigurationError(
                f"{device_field(device_id)}: must be a dictionary of tags, got {type(tags).__name__}; use {{}} for "
                "a device that must have no tags of its own"
            )
        # Keys (1 KB, no '.', '$', space or control characters), values, depth 10 and the 8 KB of tags.
        wanted[device_id] = validate_twin_collection(tags, device_field(device_id), "tags")
    return wanted


def managed_tag_keys(wanted: dict, managed_keys) -> set:
    """purge=managed: the top-level keys named by any listed device, plus the ones named in managed_keys."""
    keys = set(managed_keys or [])
    for tags in wanted.values():
        keys.update(tags)
    return keys


# ---- the patch ----------------------------------------------------------------------------------------------


def same_json(left, right) -> bool:
    """Equal as JSON values: booleans are not numbers (Python has True == 1), 2 and 2.0 are the same number."""
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left == right
    if isinstance(left, (int, float)) and isinstance(right, (int, float)):
        return left == right
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(same_json(left[key], right[key]) for key in left)
    if isinstance(left, (list, tuple)) and isinstance(right, (list, tuple)):
        return len(left) == len(right) and all(same_json(a, b) for a, b in zip(left, right))
    if isinstance(left, str) and isinstance(right, str):
        return left == right
    return left is None and right is None


def tags_patch(current: dict, wanted: dict, removable) -> dict:
    """The merge patch that turns ``current`` into ``current`` with every key of ``wanted`` set exactly.

    Keys in ``removable`` (top-level) that ``wanted`` lacks are removed (``null``). Below the top level the wanted
    value is the whole truth: where both sides are objects the patch recurses and nulls the keys the wanted object
    lacks, because a merge patch would otherwise keep them; any other difference sends the wanted value as is
    (arrays replace, and an object sent where there was none becomes exactly that object).
    """
    patch = {}
    for key, value in wanted.items():
        if key not in current:
            patch[key] = copy.deepcopy(value)
        elif isinstance(value, dict) and isinstance(current[key], dict):
            nested = tags_patch(current[key], value, current[key].keys())
            if nested:
                patch[key] = nested
        elif not same_json(current[key], value):
            patch[key] = copy.deepcopy(value)
    for key in removable:
        if key in current and key not in wanted:
            patch[key] = None
    return patch


def apply_merge_patch(target: dict, patch: dict) -> dict:
    """RFC 7396 as the hub applies it to ``tags``: the tags after the patch (a new dict; ``target`` is kept)."""
    result = copy.deepcopy(target)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            result[key] = apply_merge_patch(result[key] if isinstance(result.get(key), dict) else {}, value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def removable_keys(purge: str, managed: set, current: dict):
    """The top-level keys of the twin that this run owns, so that a wanted tag set without them removes them."""
    if purge == "all":
        return list(current)
    if purge == "managed":
        return sorted(managed)
    return []


def plan_tags(device_id: str, twin: dict, wanted: dict, purge: str, managed: set) -> TagsPlan:
    """The patch one twin needs, and the tags it would leave (checked against the 8 KB the hub allows)."""
    before = twin.get("tags") or {}
    patch = tags_patch(before, wanted, removable_keys(purge, managed, before))
    after = apply_merge_patch(before, patch) if patch else copy.deepcopy(before)
    if patch:
        # The wanted tags alone were checked; the tags this run keeps count against the same limit.
        validate_twin_collection(after, f"{device_field(device_id)} (with the tags the twin keeps)", "tags")
    return TagsPlan(device_id, twin.get("etag"), before, patch, after)


# ---- reads ----------------------------------------------------------------------------------------------------


def read_twins(client, device_ids: list, page_size: int) -> dict:
    """device id -> its twin (``as_dict()`` of the SDK model), or None when the hub does not know the device.

    IN queries first; then one ``GET /twins/{id}`` for each id that could not be queried, that the query did not
    return, or whose row lacks the etag a safe write needs.
    """
    queried = _query_by_device(client, "devices", [i for i in device_ids if _queryable(i)], page_size)
    twins = {}
    for device_id in device_ids:
        rows = queried.get(device_id)
        twin = rows[0] if rows else None
        twins[device_id] = twin if twin is not None and twin.get("etag") else client.get_twin(device_id)
    return twins


# ---- writes ---------------------------------------------------------------------------------------------------


def write_tags(client, plan: TagsPlan, wanted: dict, purge: str, managed: set) -> TagsOutcome:
    """PATCH one twin with If-Match; on 412 (or 404) read it again, recompute and write once more."""
    device_id, before = plan.device_id, plan.before
    attempt = 1
    while True:
        try:
            updated = client.update_twin_tags(device_id, plan.patch, plan.etag)
        except ApiError as error:
            # 412: the twin changed since it was read (another client, or our own write whose answer was lost and
            # that the retry policy sent again). 404: the device was deleted in between.
            if error.status not in (404, 412):
                raise
            twin = client.get_twin(device_id)
            if twin is None:
                return TagsOutcome(device_id, "missing", before, None)
            try:
                plan = plan_tags(device_id, twin, wanted, purge, managed)
            except ConfigurationError as refused:
                raise TagsNotWritten(device_id, str(refused), refused) from None
            if not plan.patch:
                # Counted as done: the twin went from ``before`` to the wanted tags during this run.
                return TagsOutcome(device_id, "update", before, plan.after)
            if attempt >= WRITE_ATTEMPTS:
                raise TagsNotWritten(device_id, "changed between read and write twice", error) from None
            attempt += 1
        else:
            return TagsOutcome(device_id, "update", before, updated.get("tags") or {})


def _failure(failures: list, outcomes: list) -> Exception:
    """One error naming every device that was not written and the ones that were."""
    conflicts = [failure for failure in failures if isinstance(failure.error, ApiError)]
    parts = []
    if conflicts:
        first = conflicts[0].error
        last = f"{first.status} {first.error_code}" if first.error_code else str(first.status)
        names = ", ".join(repr(failure.device_id) for failure in conflicts)
        several = len(conflicts) > 1
        parts.append(
            f"IoT Hub device twin{'s' if several else ''} {names} changed between read and write twice (last answer: "
            f"{last}): another client is updating {'them' if several else 'it'} at the same time."
        )
    for failure in failures:
        if not isinstance(failure.error, ApiError):
            parts.append(f"Not written: {failure.reason}.")
    done = [outcome.device_id for outcome in outcomes if outcome.action == "update"]
    parts.append(
        f"{'Tags written for the others: ' + ', '.join(done) if done else 'No other twin was changed'}; re-run when "
        "the other client has finished."
    )
    message = " ".join(parts)
    if conflicts:
        return conflicts[0].error.reworded(message)
    return ConfigurationError(message)


def ensure_device_tags(client, request: DeviceTagsRequest, *, check_mode: bool) -> dict:
    """The iothub_device_tags core: every listed device's twin tags to the wanted ones (in the order given).

    Check mode reads and predicts; it writes nothing. A device that kept changing under the writes (412 twice) does
    not stop the others; the run then fails naming it.
    """
    wanted = check_request(request)
    managed = managed_tag_keys(wanted, request.managed_keys) if request.purge == "managed" else set()
    device_ids = list(wanted)
    twins = read_twins(client, device_ids, request.page_size) if device_ids else {}
    plans, outcomes = {}, {}
    for device_id in device_ids:
        twin = twins[device_id]
        if twin is None:
            # Not registered yet: its enrollment's initial twin gives it its tags at first registration.
            outcomes[device_id] = TagsOutcome(device_id, "missing", None, None)
        else:
            # Every plan is checked against the hub's limits here, before the first write.
            plans[device_id] = plan_tags(device_id, twin, wanted[device_id], request.purge, managed)
    failures = []
    for device_id, plan in plans.items():
        if not plan.patch:
            outcomes[device_id] = TagsOutcome(device_id, "none", plan.before, plan.before)
        elif check_mode:
            outcomes[device_id] = TagsOutcome(device_id, "update", plan.before, plan.after)
        else:
            try:
                outcomes[device_id] = write_tags(client, plan, wanted[device_id], request.purge, managed)
            except TagsNotWritten as failure:
                failures.append(failure)
    ordered = [outcomes[device_id] for device_id in device_ids if device_id in outcomes]
    if failures:
        raise _failure(failures, ordered)
    changed = [outcome for outcome in ordered if outcome.action == "update"]
    return {
        "changed": bool(changed),
        "devices": [outcome.result() for outcome in ordered],
        "summary": {action: sum(1 for outcome in ordered if outcome.action == action) for action in ACTIONS},
        "diff": {
            "before": {outcome.device_id: {"tags": outcome.tags_before} for outcome in changed},
            "after": {outcome.device_id: {"tags": outcome.tags} for outcome in changed},
        },
    }


__all__ = (
    "ACTIONS",
    "PURGE_MODES",
    "DeviceTagsRequest",
    "apply_merge_patch",
    "check_request",
    "ensure_device_tags",
    "managed_tag_keys",
    "plan_tags",
    "read_twins",
    "same_json",
    "tags_patch",
)
