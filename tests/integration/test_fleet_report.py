"""playbooks/fleet_report.yml on a provisioned lab: every host with its days left, read on the host, and a host whose
chain was replaced by hand flagged."""

from __future__ import annotations

import datetime
import json
import math
import shutil

import yaml
from existing_ca import openssl

PROVISION = "playbooks/provision_edge.yml"
REPORT = "playbooks/fleet_report.yml"


def days_left_of(pem_path) -> int:
    end = openssl("x509", "-in", str(pem_path), "-noout", "-enddate").stdout.strip().split("=", 1)[1]
    not_after = datetime.datetime.strptime(end, "%b %d %H:%M:%S %Y %Z").replace(tzinfo=datetime.UTC)
    return math.floor((not_after - datetime.datetime.now(datetime.UTC)).total_seconds() / 86400)


def test_the_report_lists_every_host_and_flags_a_chain_replaced_by_hand(fleet_factory, ansible_playbook, tmp_path):
    fleet = fleet_factory(2)
    provisioned = ansible_playbook(PROVISION, inventory=fleet.inventory)
    assert provisioned.returncode == 0, provisioned.output
    report_dir = tmp_path / "report"

    healthy = ansible_playbook(REPORT, inventory=fleet.inventory, extra_vars={"edgefleet_report_dir": str(report_dir)})
    assert healthy.returncode == 0, healthy.output
    rows = {row["host"]: row for row in json.loads((report_dir / "fleet-report.json").read_text())}
    identities = fleet.state_dir / "pki" / "identities"
    for host in fleet.hosts:
        row = rows[host]
        assert row["days_left"] == days_left_of(identities / host / "identity.cert.pem"), row
        assert (
            row["issued_here"],
            row["dps_certificate"],
            row["dps_status"],
            row["hub_device"],
            row["edge_agent"],
        ) == (
            "yes",
            "matches",
            "assigned",
            "enabled",
            "running",
        )
        assert row["problems"] == []
    assert (report_dir / "fleet-report.csv").read_text().splitlines()[0].startswith("host,registration_id,not_after")
    assert (report_dir / "fleet-report.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")

    # A chain made by hand on the host, with the right CN: not the fleet's, not the one DPS holds, 9 days left.
    fleet.sh(
        "edge-02",
        "cd /tmp && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout k.pem "
        "-out c.pem -subj /CN=edge-02 -days 10 2>/dev/null && cp c.pem /var/aziot/certs/device-id.pem",
    )
    flagged = ansible_playbook(REPORT, inventory=fleet.inventory, extra_vars={"edgefleet_report_dir": str(report_dir)})
    assert flagged.returncode != 0
    assert "1 host(s) with a problem: edge-02" in flagged.output
    rows = {row["host"]: row for row in json.loads((report_dir / "fleet-report.json").read_text())}
    assert (rows["edge-02"]["days_left"], rows["edge-02"]["issued_here"], rows["edge-02"]["dps_certificate"]) == (
        9,
        "NO",
        "differs",
    )
    assert (
        "the chain on the host is not the one the fleet PKI issued (replaced by hand?)" in rows["edge-02"]["problems"]
    )
    assert rows["edge-01"]["problems"] == []

    warned = ansible_playbook(
        REPORT,
        inventory=fleet.inventory,
        extra_vars={"edgefleet_report_dir": str(report_dir), "edgefleet_report_on_problem": "warn"},
    )
    assert warned.returncode == 0, warned.output
    assert "1 host(s) with a problem: edge-02" in warned.output


def test_an_enrolled_host_removed_from_inventory_is_reported_as_unclaimed(fleet_factory, ansible_playbook, tmp_path):
    fleet = fleet_factory(2)
    assert ansible_playbook(PROVISION, inventory=fleet.inventory).returncode == 0
    # The same inventory without edge-02: its enrollment stays in DPS, with no host that claims it.
    smaller = tmp_path / "inventory"
    shutil.copytree(fleet.inventory, smaller)
    hosts = yaml.safe_load((smaller / "hosts.yml").read_text())
    del hosts["all"]["children"]["edge"]["hosts"]["edge-02"]
    (smaller / "hosts.yml").write_text(yaml.safe_dump(hosts))
    report_dir = tmp_path / "report"
    reported = ansible_playbook(REPORT, inventory=smaller, extra_vars={"edgefleet_report_dir": str(report_dir)})
    assert reported.returncode == 0, reported.output
    assert "with no inventory host: edge-02." in reported.output  # (the YAML callback doubles the quote in fleet's)
    unclaimed = json.loads((report_dir / "fleet-unclaimed.json").read_text())
    assert [(item["registration_id"], item["registration_status"]) for item in unclaimed] == [("edge-02", "assigned")]
