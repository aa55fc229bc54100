# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# PRIVATE to the edgefleet.iotedge collection. Do not use this from other collections:
# it may change at any time.

"""A ring rollout's progress and summary, from what iothub_deployment_info reads (pure functions, no I/O).

The role iotedge_deployment applies a version to a ring, then waits until each device of the rings reached so far
has settled: its ``$edgeAgent`` twin lists the version as ``Applied``, edgeAgent reported the current desired
``$version`` (``lastDesiredVersion``, so it acted on what the hub wants now) and ``lastDesiredStatus.code`` is 200
(upstream doc/reported_states_during_deployment.md). A device that acted on it with another code failed; any other
device is still waiting. `progress` sorts the devices so; `summary` makes the per-ring and per-host table.
"""

from __future__ import annotations

import math
import re

SUCCESS = 200
# "3" or "25%": how many failed devices a ring may have before the rollout stops.
_PERCENT = re.compile(r"([0-9]+(?:\.[0-9]+)?)%")
# What a failure description is cut to in the summary table (the whole text is in the failure message).
DESCRIPTION_WIDTH = 60


class RolloutError(ValueError):
    """Bad input to the rollout functions, led by the variable to fix."""


def failure_allowance(max_failures, total: int) -> int:
    """How many of ``total`` devices may fail: a whole number as is, ``N%`` of ``total`` rounded down."""
    if isinstance(max_failures, bool):
        raise RolloutError(
            f"edgefleet_deployment_max_failures: must be a whole number or a percentage, got {max_failures!r}"
        )
    if isinstance(max_failures, int):
        if max_failures < 0:
            raise RolloutError(f"edgefleet_deployment_max_failures: must be 0 or more, got {max_failures}")
        return max_failures
    if isinstance(max_failures, str):
        text = max_failures.strip()
        if text.isdigit():
            return int(text)
        match = _PERCENT.fullmatch(text)
        if match and float(match.group(1)) <= 100:
            return math.floor(total * float(match.group(1)) / 100)
    raise RolloutError(
        f"edgefleet_deployment_max_failures: {max_failures!r} is neither a whole number of devices (such as 0 or 2) "
        "nor a percentage of the ring's devices (such as '10%')"
    )


def _status(view: dict) -> tuple:
    status = view.get("last_desired_status") or {}
    return status.get("code"), status.get("description") or ""


def device_state(view: dict | None, configuration_id: str | None) -> tuple[str, str]:
    """(ok | failed | waiting, why) for one device; ``configuration_id`` None: any deployment will do."""
    if view is None:
        return "waiting", "no deployment of the hub targets it yet (twin tags not read yet, or not an IoT Edge device)"
    if configuration_id is not None and configuration_id not in (view.get("applied") or []):
        applied = ", ".join(view.get("applied") or []) or "nothing"
        return "waiting", f"does not apply {configuration_id} yet (applies {applied})"
    code, description = _status(view)
    if not view.get("in_sync"):
        return "waiting", (
            f"edgeAgent has not reported desired version {view.get('desired_version')} yet (last reported "
            f"{view.get('last_desired_version')})"
        )
    if code == SUCCESS:
        return "ok", ""
    return "failed", f"lastDesiredStatus {code}: {description}".rstrip(": ")


def progress(devices: list, expected: dict, configuration_id: str | None = None, max_failures=0) -> dict:
    """Where the ``expected`` devices (device id -> inventory host) stand with ``configuration_id``.

    ``devices`` is iothub_deployment_info's ``devices`` (with ``devices: true``). The result says which hosts are
    ``ok``, ``failed`` (with the reason) and ``waiting`` (with the reason), whether every device has ``settled``
    (none waiting), the ``allowed`` number of failures and whether they are ``over_threshold``.
    """
    by_id = {view.get("device_id"): view for view in devices or []}
    result: dict = {"ok": [], "failed": [], "waiting": []}
    for device_id, host in sorted(expected.items(), key=lambda item: item[1]):
        state, reason = device_state(by_id.get(device_id), configuration_id)
        entry = {"host": host, "device_id": device_id}
        if state == "ok":
            result["ok"].append(host)
        else:
            result[state].append({**entry, "reason": reason})
    allowed = failure_allowance(max_failures, len(expected))
    result.update(
        total=len(expected),
        allowed=allowed,
        settled=not result["waiting"],
        over_threshold=len(result["failed"]) > allowed,
        failed_text=_listed(result["failed"]),
        waiting_text=_listed(result["waiting"]),
    )
    return result


def _listed(entries: list) -> str:
    """``host (device): reason; ...`` for a failure message."""
    return "; ".join(f"{entry['host']} ({entry['device_id']}): {entry['reason']}" for entry in entries)


def _short(text: str, width: int = DESCRIPTION_WIDTH) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _host_row(host: str, facts: dict, view: dict | None, name: str) -> dict:
    view = view or {}
    applied = view.get("applied") or []
    prefix = name + "-"
    code, description = _status(view)
    modules = {**(view.get("system_modules") or {}), **(view.get("modules") or {})}
    modules.pop("edgeAgent", None)
    return {
        "host": host,
        "device_id": facts.get("device_id"),
        "ring": facts.get("ring"),
        "version": next((item[len(prefix) :] for item in applied if item.startswith(prefix)), ""),
        "layers": sorted(item for item in applied if not item.startswith(prefix)),
        "modules": {module: status for module, status in sorted(modules.items()) if status is not None},
        "desired_version": view.get("desired_version"),
        "last_desired_version": view.get("last_desired_version"),
        "in_sync": bool(view.get("in_sync")),
        "status_code": code,
        "status_description": description,
    }


def _table(rows: list) -> str:
    header = ["RING", "HOST", "VERSION", "LAYERS", "MODULES", "DESIRED", "REPORTED", "STATUS"]
    cells = [header]
    for row in rows:
        status = "" if row["status_code"] is None else str(row["status_code"])
        if row["status_code"] not in (None, SUCCESS) and row["status_description"]:
            status += " " + _short(row["status_description"])
        cells.append(
            [
                row["ring"] or "",
                row["host"],
                row["version"] or "-",
                ", ".join(row["layers"]) or "-",
                ", ".join(f"{module} {status_}" for module, status_ in row["modules"].items()) or "-",
                "" if row["desired_version"] is None else str(row["desired_version"]),
                "" if row["last_desired_version"] is None else str(row["last_desired_version"]),
                status or "-",
            ]
        )
    widths = [max(len(line[column]) for line in cells) for column in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in cells)


def summary(devices: list, hosts: dict, rings: list, name: str) -> dict:
    """One row per host (by ring, in ring order, then host) and one count per ring.

    ``hosts`` maps each inventory host to ``device_id`` and ``ring``; ``name`` is the deployment's base name (its
    versions are ``<name>-<version>``; other applied deployments are listed as layers).
    """
    by_id = {view.get("device_id"): view for view in devices or []}
    order = {ring: index for index, ring in enumerate(rings or [])}
    rows = [_host_row(host, facts, by_id.get(facts.get("device_id")), name) for host, facts in hosts.items()]
    rows.sort(key=lambda row: (order.get(row["ring"], len(order)), row["ring"] or "", row["host"]))
    per_ring: dict = {}
    for row in rows:
        counts = per_ring.setdefault(row["ring"], {"hosts": 0, "ok": 0, "failed": 0, "waiting": 0, "versions": {}})
        counts["hosts"] += 1
        state = "waiting"
        if row["in_sync"]:
            state = "ok" if row["status_code"] == SUCCESS else "failed"
        counts[state] += 1
        version = row["version"] or "none"
        counts["versions"][version] = counts["versions"].get(version, 0) + 1
    lines = [
        f"ring {ring}: {counts['hosts']} host(s), {counts['ok']} ok, {counts['failed']} failed, "
        f"{counts['waiting']} waiting; versions "
        + ", ".join(f"{version} x{count}" for version, count in sorted(counts["versions"].items()))
        for ring, counts in per_ring.items()
    ]
    return {
        "hosts": {row["host"]: row for row in rows},
        "rings": per_ring,
        "table": "\n".join([*lines, "", _table(rows)]) if rows else "no host",
    }


__all__ = ("RolloutError", "device_state", "failure_allowance", "progress", "summary")
