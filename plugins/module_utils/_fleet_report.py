# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# PRIVATE to the edgefleet.iotedge collection. Do not use this from other collections:
# it may change at any time.

"""The fleet report: one row per host from what the host, the controller's PKI, DPS and IoT Hub say about it.

Runs on the controller (cryptography). The identity certificate's end date is read from the chain on the host, not
from the controller's copy: a chain replaced by hand, or never pushed, is what the report is for. Nothing here
contacts a host or a service; fleet_report.yml gathers the inputs.
"""

from __future__ import annotations

import csv
import datetime
import io
import math

from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki import (
    PkiError,
    common_name_of,
    fingerprints,
    load_certificates,
    not_after_of,
    write_files_atomically,
)

CHART_MODE = 0o644

COLUMNS = (
    "host",
    "registration_id",
    "not_after",
    "days_left",
    "edge_ca_not_after",
    "edge_ca_days_left",
    "issued_here",
    "dps_certificate",
    "dps_status",
    "hub_device",
    "edge_agent",
    "check_errors",
    "problems",
)
HEADERS = (
    "HOST",
    "REGISTRATION ID",
    "NOT AFTER",
    "DAYS",
    "EDGE CA NOT AFTER",
    "EDGE CA DAYS",
    "ISSUED",
    "DPS CERT",
    "DPS",
    "HUB",
    "EDGEAGENT",
    "CHECK",
)


def leaf_of(chain_pem: str, path: str = "the host's chain"):
    """The first certificate of a PEM chain (the device's own)."""
    certificates = load_certificates(chain_pem.encode("utf-8"), path=path)
    return certificates[0]


def days_left(not_after: datetime.datetime, now: datetime.datetime) -> int:
    """Whole days until the end date; negative once it has passed."""
    return math.floor((not_after - now).total_seconds() / 86400)


def issued_thumbprint(path) -> str | None:
    """SHA-256 thumbprint of the leaf the fleet PKI issued; None when there is none (or it cannot be read)."""
    if not path:
        return None
    try:
        with open(path, "rb") as handle:
            return fingerprints(load_certificates(handle.read(), path=path)[0])["sha256"]
    except (OSError, PkiError):
        return None


def _dps_certificate(enrollment, thumbprint: str | None) -> str:
    if enrollment is None:
        return "no enrollment"
    if enrollment == "group":
        return "group"
    held = [
        (slot or {}).get("thumbprint_sha256", "").upper()
        for slot in (enrollment.get("certificates") or {}).values()
        if slot
    ]
    if thumbprint is None:
        return "unknown"
    return "matches" if thumbprint in held else "differs"


def host_row(host: str, facts: dict, now: datetime.datetime, min_days: int) -> dict:
    """One row: ``facts`` holds registration_id, chain_pem (or read_error), issued_cert_path (the leaf the fleet PKI
    issued, on the controller), edge_ca_pem (the runtime's trust bundle, Edge CA first; optional), enrollment
    (dps_enrollment_info's, "group", or None), hub_device (iothub_device_info's, or None when not checked),
    edge_agent and check_errors (ids)."""
    problems = []
    row = dict.fromkeys(COLUMNS, "")
    row.update(host=host, registration_id=facts.get("registration_id") or "-", problems=problems)
    thumbprint = None
    chain = facts.get("chain_pem")
    if chain:
        try:
            leaf = leaf_of(chain)
        except PkiError as error:
            problems.append(f"the chain on the host cannot be read: {error}")
            leaf = None
        if leaf is not None:
            thumbprint = fingerprints(leaf)["sha256"]
            end = not_after_of(leaf)
            row["not_after"] = end.strftime("%Y-%m-%dT%H:%M:%SZ")
            row["days_left"] = days_left(end, now)
            if row["days_left"] < min_days:
                problems.append(f"the identity certificate ends in {row['days_left']} days (threshold {min_days})")
            if common_name_of(leaf.subject) != facts.get("registration_id"):
                problems.append(f"the certificate's CN is {common_name_of(leaf.subject)!r}, not the registration id")
    else:
        problems.append(f"no identity chain on the host ({facts.get('read_error') or 'not read'})")
    issued = issued_thumbprint(facts.get("issued_cert_path"))
    if thumbprint is None or issued is None:
        row["issued_here"] = "unknown"
    else:
        row["issued_here"] = "yes" if thumbprint == issued else "NO"
        if thumbprint != issued:
            problems.append("the chain on the host is not the one the fleet PKI issued (replaced by hand?)")
    _edge_ca_columns(row, facts, now, min_days)
    row["dps_certificate"] = _dps_certificate(facts.get("enrollment"), thumbprint)
    if row["dps_certificate"] == "differs":
        problems.append("DPS holds another certificate for this registration id: the device cannot register")
    enrollment = facts.get("enrollment")
    state = (enrollment or {}).get("registration_state") if isinstance(enrollment, dict) else None
    row["dps_status"] = (state or {}).get("status") or ("-" if enrollment in (None, "group") else "not registered")
    # None: the hub was not read (no connection string); {}: it was, and has no such device.
    hub = facts.get("hub_device")
    if hub is None:
        row["hub_device"] = "not checked"
    else:
        row["hub_device"] = hub.get("status") or "missing"
        if row["hub_device"] != "enabled":
            problems.append(f"the hub device is {row['hub_device']}")
    row["edge_agent"] = facts.get("edge_agent") or "not checked"
    row["check_errors"] = ",".join(facts.get("check_errors") or []) or "-"
    if facts.get("check_errors"):
        problems.append(f"iotedge check errors: {row['check_errors']}")
    return row


def _edge_ca_columns(row: dict, facts: dict, now: datetime.datetime, min_days: int) -> None:
    """The Edge CA the runtime uses: the first certificate of its workload API's trust bundle (``edge_ca_pem``).
    Not read (an older runtime, a host not reached): the columns stay empty and nothing is flagged."""
    pem = facts.get("edge_ca_pem")
    if not pem:
        return
    try:
        edge_ca = leaf_of(pem, path="the runtime's trust bundle")
    except PkiError as error:
        row["problems"].append(f"the Edge CA cannot be read: {error}")
        return
    end = not_after_of(edge_ca)
    row["edge_ca_not_after"] = end.strftime("%Y-%m-%dT%H:%M:%SZ")
    row["edge_ca_days_left"] = days_left(end, now)
    if row["edge_ca_days_left"] < min_days:
        row["problems"].append(f"the Edge CA ends in {row['edge_ca_days_left']} days (threshold {min_days})")


def _issuers(enrollment) -> set:
    slots = (enrollment or {}).get("certificates") or {} if isinstance(enrollment, dict) else {}
    return {slot["issuer"] for slot in slots.values() if slot and slot.get("issuer")}


def unclaimed_enrollments(hosts: dict, enrollments: list) -> list:
    """DPS's individual enrollments that this fleet's CA issued but no inventory host claims any more.

    "This fleet's CA" is read off the hosts' own enrollments: an enrollment whose certificate has the issuer of a
    claimed one. Each: registration_id, issuer, provisioning_status and the registration's status.
    """
    claimed = {str(facts.get("registration_id") or "").lower() for facts in hosts.values()}
    issuers = set().union(*(_issuers(facts.get("enrollment")) for facts in hosts.values()))
    unclaimed = []
    for enrollment in enrollments or []:
        registration_id = enrollment.get("registration_id") or ""
        found = _issuers(enrollment) & issuers
        if registration_id.lower() in claimed or not found:
            continue
        state = enrollment.get("registration_state") or {}
        unclaimed.append(
            {
                "registration_id": registration_id,
                "issuer": sorted(found)[0],
                "provisioning_status": enrollment.get("provisioning_status"),
                "registration_status": state.get("status") or "not registered",
            }
        )
    return sorted(unclaimed, key=lambda item: item["registration_id"])


def unclaimed_registration_ids(claimed: list, enrollments: list) -> list:
    """unclaimed_enrollments for ``claimed`` registration ids, each with its own enrollment among ``enrollments``
    (every individual enrollment of the DPS instance): what provision_edge.yml retires when asked."""
    by_id = {str(item.get("registration_id") or "").lower(): item for item in enrollments or []}
    hosts = {
        str(registration_id): {
            "registration_id": registration_id,
            "enrollment": by_id.get(str(registration_id).lower()),
        }
        for registration_id in claimed
    }
    return unclaimed_enrollments(hosts, enrollments)


def fleet_report(hosts: dict, *, min_days: int, now: datetime.datetime, enrollments: list | None = None) -> dict:
    """rows (sorted by host), table (text), csv (text), below_threshold and flagged (host names), and unclaimed:
    the individual enrollments of this fleet's CA that no host claims (when ``enrollments``, all of DPS's, are given).
    """
    rows = [host_row(host, hosts[host], now, min_days) for host in sorted(hosts)]
    return {
        "rows": rows,
        "table": table(rows),
        "csv": csv_text(rows),
        "below_threshold": [row["host"] for row in rows if row["days_left"] == "" or row["days_left"] < min_days],
        "flagged": [row["host"] for row in rows if row["problems"]],
        "unclaimed": unclaimed_enrollments(hosts, enrollments) if enrollments is not None else [],
    }


def table(rows: list) -> str:
    """The rows as aligned text, then each host's problems under the table."""
    cells = [HEADERS] + [tuple(str(row[column]) for column in COLUMNS[:-1]) for row in rows]
    widths = [max(len(line[index]) for line in cells) for index in range(len(HEADERS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in cells]
    for row in rows:
        lines.extend(f"{row['host']}: {problem}" for problem in row["problems"])
    return "\n".join(lines)


def csv_text(rows: list) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([("; ".join(row[column]) if column == "problems" else row[column]) for column in COLUMNS])
    return buffer.getvalue()


class ChartUnavailable(Exception):
    """matplotlib is not installed in the Python that runs the chart."""


def chart_png(rows: list, min_days: int) -> bytes:
    """Days left per host as a horizontal bar chart (PNG): hosts below ``min_days`` in red, a host without a chain
    as an empty grey bar. The same rows give the same bytes (no timestamp in the file)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot
    except ImportError:
        raise ChartUnavailable(
            "matplotlib is not installed in the controller's Python: pip install matplotlib for the chart"
        ) from None
    ordered = sorted(rows, key=lambda row: (row["days_left"] == "", row["days_left"] or 0, row["host"]))
    hosts = [row["host"] for row in ordered]
    days = [row["days_left"] if row["days_left"] != "" else 0 for row in ordered]
    colours = [
        "#bbbbbb" if row["days_left"] == "" else "#c0392b" if row["days_left"] < min_days else "#2e86c1"
        for row in ordered
    ]
    figure, axes = pyplot.subplots(figsize=(8, max(2.0, 0.3 * len(hosts) + 1)))
    try:
        axes.barh(hosts, days, color=colours)
        axes.axvline(min_days, color="#c0392b", linestyle="--", linewidth=1, label=f"threshold: {min_days} days")
        axes.invert_yaxis()
        axes.set_xlabel("days left on the identity certificate (grey: no chain on the host)")
        axes.set_title("Fleet identity certificates")
        axes.legend(loc="lower right")
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    finally:
        pyplot.close(figure)
    return buffer.getvalue()


def ensure_chart(rows: list, min_days: int, dest: str, *, check_mode: bool) -> bool:
    """Draw the chart and write it to ``dest`` (atomically) where the bytes differ; whether they did.
    Raises ChartUnavailable without matplotlib, OSError when ``dest`` cannot be written."""
    png = chart_png(rows, min_days)
    try:
        with open(dest, "rb") as handle:
            changed = handle.read() != png
    except FileNotFoundError:
        changed = True
    if changed and not check_mode:
        write_files_atomically([(dest, png, CHART_MODE)])
    return changed
