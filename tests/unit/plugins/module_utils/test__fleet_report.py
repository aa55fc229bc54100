"""The fleet report's rows from a host's chain, the PKI's copy, DPS and IoT Hub; certificates made here."""

from __future__ import annotations

import csv
import datetime
import io
import os

import pytest
from cryptography.hazmat.primitives import serialization

from ansible_collections.edgefleet.iotedge.plugins.module_utils._fleet_report import (
    COLUMNS,
    chart_png,
    ensure_chart,
    fleet_report,
)
from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki import fingerprints
from ansible_collections.edgefleet.iotedge.tests.unit.pki_factories import NOW, self_signed


def device(name: str, days: float):
    certificate = self_signed(
        name, not_before=NOW - datetime.timedelta(days=1), not_after=NOW + datetime.timedelta(days=days)
    )[0]
    return certificate.public_bytes(serialization.Encoding.PEM).decode(), fingerprints(certificate)["sha256"]


def enrollment(thumbprint: str, status: str = "assigned") -> dict:
    return {
        "certificates": {"primary": {"thumbprint_sha256": thumbprint}, "secondary": None},
        "registration_state": {"status": status},
    }


def facts(tmp_path, name: str, chain: str, thumbprint: str, issued_pem: str | None = None, **overrides) -> dict:
    issued = tmp_path / f"{name}.pem"
    issued.write_text(issued_pem if issued_pem is not None else chain)
    values = {
        "registration_id": name,
        "chain_pem": chain,
        "issued_cert_path": str(issued),
        "enrollment": enrollment(thumbprint),
        "hub_device": {"status": "enabled"},
        "edge_agent": "running",
        "check_errors": [],
    }
    values.update(overrides)
    return values


def test_a_healthy_host_has_its_days_left_and_no_problem(tmp_path):
    chain, thumbprint = device("gw-01", days=100.5)
    report = fleet_report({"gw-01": facts(tmp_path, "gw-01", chain, thumbprint)}, min_days=30, now=NOW)
    [row] = report["rows"]
    assert (row["days_left"], row["issued_here"], row["dps_certificate"], row["dps_status"]) == (
        100,
        "yes",
        "matches",
        "assigned",
    )
    assert row["not_after"] == (NOW + datetime.timedelta(days=100.5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert (row["problems"], report["flagged"], report["below_threshold"]) == ([], [], [])


def test_a_chain_replaced_by_hand_is_flagged_with_what_follows_from_it(tmp_path):
    issued, issued_thumbprint = device("gw-02", days=365)
    replaced = device("gw-02", days=9)[0]
    report = fleet_report(
        {"gw-02": facts(tmp_path, "gw-02", replaced, issued_thumbprint, issued_pem=issued)}, min_days=30, now=NOW
    )
    [row] = report["rows"]
    assert (row["days_left"], row["issued_here"], row["dps_certificate"]) == (9, "NO", "differs")
    assert row["problems"] == [
        "the identity certificate ends in 9 days (threshold 30)",
        "the chain on the host is not the one the fleet PKI issued (replaced by hand?)",
        "DPS holds another certificate for this registration id: the device cannot register",
    ]
    assert report["flagged"] == report["below_threshold"] == ["gw-02"]


def test_a_host_without_a_chain_a_missing_hub_device_and_check_errors(tmp_path):
    chain, thumbprint = device("gw-03", days=200)
    inputs = facts(
        tmp_path,
        "gw-03",
        "",
        thumbprint,
        issued_pem=chain,
        read_error="file not found",
        hub_device={},
        enrollment=None,
        edge_agent="not running",
        check_errors=["certs-match-private-keys"],
    )
    [row] = fleet_report({"gw-03": inputs}, min_days=30, now=NOW)["rows"]
    assert (row["days_left"], row["issued_here"], row["dps_certificate"], row["hub_device"]) == (
        "",
        "unknown",
        "no enrollment",
        "missing",
    )
    assert row["problems"] == [
        "no identity chain on the host (file not found)",
        "the hub device is missing",
        "iotedge check errors: certs-match-private-keys",
    ]


def test_not_checked_parts_are_said_so_and_the_csv_and_table_hold_every_host(tmp_path):
    first, first_print = device("gw-01", days=50)
    second, second_print = device("gw-02", days=60)
    inputs = {
        "gw-02": facts(tmp_path, "gw-02", second, second_print, hub_device=None, enrollment="group"),
        "gw-01": facts(tmp_path, "gw-01", first, first_print),
    }
    report = fleet_report(inputs, min_days=30, now=NOW)
    assert [row["host"] for row in report["rows"]] == ["gw-01", "gw-02"]
    assert (report["rows"][1]["hub_device"], report["rows"][1]["dps_certificate"]) == ("not checked", "group")
    rows = list(csv.DictReader(io.StringIO(report["csv"])))
    assert list(rows[0]) == list(COLUMNS)
    assert [(row["host"], row["days_left"]) for row in rows] == [("gw-01", "50"), ("gw-02", "60")]
    table = report["table"].splitlines()
    assert table[0].split()[:2] == ["HOST", "REGISTRATION"] and [line.split()[0] for line in table[1:]] == [
        "gw-01",
        "gw-02",
    ]


def test_the_chart_is_a_png_and_the_same_rows_draw_the_same_bytes(tmp_path):
    pytest.importorskip("matplotlib")
    first, first_print = device("gw-01", days=10)
    second, second_print = device("gw-02", days=300)
    inputs = {
        "gw-01": facts(tmp_path, "gw-01", first, first_print),
        "gw-02": facts(tmp_path, "gw-02", second, second_print),
        "gw-03": facts(tmp_path, "gw-03", "", first_print, issued_pem=first),
    }
    rows = fleet_report(inputs, min_days=30, now=NOW)["rows"]
    png = chart_png(rows, 30)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert chart_png(rows, 30) == png
    assert chart_png(rows[:2], 30) != png


def test_the_chart_is_written_where_it_differs_and_check_mode_writes_nothing(tmp_path):
    pytest.importorskip("matplotlib")
    chain, thumbprint = device("gw-01", days=10)
    rows = fleet_report({"gw-01": facts(tmp_path, "gw-01", chain, thumbprint)}, min_days=30, now=NOW)["rows"]
    dest = tmp_path / "fleet-report.png"
    assert ensure_chart(rows, 30, str(dest), check_mode=True) is True and not dest.exists()
    assert ensure_chart(rows, 30, str(dest), check_mode=False) is True
    assert dest.read_bytes() == chart_png(rows, 30) and os.stat(dest).st_mode & 0o777 == 0o644
    assert ensure_chart(rows, 30, str(dest), check_mode=False) is False


def listed(registration_id: str, issuer: str, provisioning: str = "enabled", status: str | None = "assigned") -> dict:
    """An individual enrollment as dps_enrollment_info lists it."""
    return {
        "registration_id": registration_id,
        "certificates": {"primary": {"issuer": issuer, "thumbprint_sha256": "AB"}, "secondary": None},
        "provisioning_status": provisioning,
        "registration_state": {"status": status} if status else None,
    }


def test_enrollments_of_the_fleet_ca_that_no_host_claims_are_listed(tmp_path):
    chain, thumbprint = device("gw-01", days=100)
    claimed = facts(tmp_path, "gw-01", chain, thumbprint)
    claimed["enrollment"]["certificates"]["primary"]["issuer"] = "CN=edgefleet Intermediate CA"
    enrollments = [
        listed("gw-01", "CN=edgefleet Intermediate CA"),  # claimed by a host
        listed("gw-07", "CN=edgefleet Intermediate CA", status=None),  # removed from inventory, never retired
        listed("GW-08", "CN=edgefleet Intermediate CA", provisioning="disabled", status="disabled"),
        listed("sensor-1", "CN=another team's CA"),  # not this fleet's
    ]
    report = fleet_report({"gw-01": claimed}, min_days=30, now=NOW, enrollments=enrollments)
    assert report["unclaimed"] == [
        {
            "registration_id": "GW-08",
            "issuer": "CN=edgefleet Intermediate CA",
            "provisioning_status": "disabled",
            "registration_status": "disabled",
        },
        {
            "registration_id": "gw-07",
            "issuer": "CN=edgefleet Intermediate CA",
            "provisioning_status": "enabled",
            "registration_status": "not registered",
        },
    ]
    assert fleet_report({"gw-01": claimed}, min_days=30, now=NOW)["unclaimed"] == []


def test_the_edge_ca_the_runtime_uses_has_its_own_days_left_and_threshold(tmp_path):
    chain, thumbprint = device("gw-01", days=200)
    edge_ca = device("gw-01.ca", days=12.5)[0]
    other_ca = device("gw-02.ca", days=300)[0]
    hosts = {
        "gw-01": facts(tmp_path, "gw-01", chain, thumbprint, edge_ca_pem=edge_ca + other_ca),
        "gw-02": facts(tmp_path, "gw-02", *device("gw-02", days=200), edge_ca_pem=other_ca),
        "gw-03": facts(tmp_path, "gw-03", *device("gw-03", days=200)),
        "gw-04": facts(tmp_path, "gw-04", *device("gw-04", days=200), edge_ca_pem="not a certificate"),
    }
    rows = {row["host"]: row for row in fleet_report(hosts, min_days=30, now=NOW)["rows"]}
    assert (rows["gw-01"]["edge_ca_days_left"], rows["gw-02"]["edge_ca_days_left"]) == (12, 300)
    assert rows["gw-01"]["edge_ca_not_after"] == (NOW + datetime.timedelta(days=12.5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert rows["gw-01"]["problems"] == ["the Edge CA ends in 12 days (threshold 30)"]
    assert rows["gw-02"]["problems"] == []
    # Not read (an older runtime, an unreachable host): empty columns, no problem of its own.
    assert (rows["gw-03"]["edge_ca_days_left"], rows["gw-03"]["problems"]) == ("", [])
    assert rows["gw-04"]["problems"][0].startswith("the Edge CA cannot be read: ")
