"""playbooks/provision_edge.yml's guards on real lab hosts, beyond the bad inventories (test_rollout.py).

Fleet-level errors fail only the hosts concerned; answers DPS lost after acting are settled; an enrollment deleted
out of band is repaired; a tag removed from inventory is removed from DPS; a full disk leaves the host as it was;
configuration backups stay at the number asked. Each test reads the real state: the emulators' records, the files
on the hosts.
"""

from __future__ import annotations

import json
import re
import shlex

import yaml
from lab_hosts import Fleet, summary_rows

from ansible_collections.edgefleet.iotedge.plugins.module_utils._dps_client import (
    DpsServiceClient,
    parse_connection_string,
)

PLAYBOOK = "playbooks/provision_edge.yml"


def dps_client(fleet: Fleet) -> DpsServiceClient:
    """The collection's own DPS client, pointed at the fleet's emulator (what an operator's script would use)."""
    return DpsServiceClient(
        parse_connection_string(fleet.group_vars["edgefleet_dps_connection_string"]),
        ca_bundle=fleet.group_vars["edgefleet_ca_bundle"],
    )


def enrollments(fleet: Fleet) -> dict:
    return {e["registrationId"]: e for e in fleet.state()["dps"]["enrollments"]}


def registrations(fleet: Fleet) -> dict:
    return {r["registrationId"]: (r["status"], r["deviceId"]) for r in fleet.state()["dps"]["registrations"]}


def test_fleet_errors_fail_their_hosts_and_a_rerun_repairs_drift_removals_and_full_disks(
    fleet_factory, ansible_playbook, tmp_path
):
    fleet = fleet_factory(3)
    hub = fleet.group_vars["lab_iothub_hostname"]
    everyone = {host: [host, "assigned", hub, "running"] for host in fleet.hosts}

    # Two hosts with one registration id: both named and failed; the third is provisioned and the summary printed.
    shared = tmp_path / "shared-id.yml"
    shared.write_text(yaml.safe_dump({"all": {"hosts": {"edge-03": {"edgefleet_registration_id": "edge-01"}}}}))
    run = ansible_playbook(PLAYBOOK, "-i", str(shared), inventory=fleet.inventory)
    assert run.returncode != 0
    assert "edge-01 and edge-03 all have the registration id 'edge-01'" in run.output
    assert run.recap("edge-01")["failed"] == 1 and run.recap("edge-03")["failed"] == 1
    assert run.recap("edge-02")["failed"] == 0
    rows = summary_rows(run.stdout)
    assert rows["edge-02"] == everyone["edge-02"]
    assert rows["edge-01"][3] == "FAILED" and rows["edge-03"][3] == "FAILED"
    assert sorted(enrollments(fleet)) == ["edge-02"]

    # Tags from inventory reach the enrollments; an unknown edgefleet_ variable is named with its likely spelling.
    tags = {"edgefleet_dps_twin_tags": {"environment": "test", "site": {"floor": 2}}}
    typo = {"edgefleet_iotedge_auto_reprovision_mode": "OnErrorOnly"}
    run = ansible_playbook(PLAYBOOK, inventory=fleet.inventory, extra_vars={**tags, **typo})
    assert run.returncode == 0, run.output
    assert summary_rows(run.stdout) == everyone
    assert re.search(
        r"edgefleet_iotedge_auto_reprovision_mode is not a variable of edgefleet\.iotedge, so it has no effect; "
        r"did you mean\s+edgefleet_iotedge_auto_reprovisioning_mode\?",
        run.output,
    )
    assert all(e["initialTwin"]["tags"] == tags["edgefleet_dps_twin_tags"] for e in enrollments(fleet).values())
    assert 'auto_reprovisioning_mode = "Dynamic"' in fleet.sh("edge-01", "cat /etc/aziot/config.toml")

    # A tag removed from inventory is removed from DPS (the default, no tags).
    run = ansible_playbook(PLAYBOOK, inventory=fleet.inventory)
    assert run.returncode == 0, run.output
    assert all(e["initialTwin"]["tags"] == {} for e in enrollments(fleet).values())
    assert {host: run.recap(host)["changed"] for host in fleet.hosts} == {"edge-01": 1, "edge-02": 0, "edge-03": 0}

    # An enrollment deleted out of band takes its registration with it: one run re-creates it and registers again.
    assert dps_client(fleet).delete_enrollment("edge-02") is True
    assert "edge-02" not in registrations(fleet)
    run = ansible_playbook(PLAYBOOK, inventory=fleet.inventory)
    assert run.returncode == 0, run.output
    assert re.search(r"Reprovision with DPS\] \*+\nchanged: \[edge-02\]", run.stdout), run.stdout
    assert registrations(fleet) == {host: ("assigned", host) for host in fleet.hosts}
    assert summary_rows(run.stdout) == everyone
    rerun = ansible_playbook(PLAYBOOK, inventory=fleet.inventory)
    assert rerun.returncode == 0, rerun.output
    assert {host: rerun.recap(host)["changed"] for host in fleet.hosts} == dict.fromkeys(fleet.hosts, 0)

    # A full disk: the backup copy fails half-way; the configuration in use stays, no empty backup is left.
    config = fleet.sh("edge-03", "cat /etc/aziot/config.toml")
    fleet_full_disk(fleet, "edge-03", "/etc/aziot")
    change = {"edgefleet_iotedge_auto_reprovisioning_mode": "OnErrorOnly", "edgefleet_iotedge_config_backups": 2}
    full = ansible_playbook(PLAYBOOK, "--limit", "edge-03", inventory=fleet.inventory, extra_vars=change)
    assert full.returncode != 0
    assert "edge-03: could not write /etc/aziot/config.toml" in full.output
    assert "No space left on device" in full.output and "the empty backup file was removed" in full.output
    assert fleet.sh("edge-03", "cat /etc/aziot/config.toml") == config
    assert backups(fleet, "edge-03") == []

    # Room again: each change keeps a backup, and only the newest two stay.
    fleet.sh("edge-03", "rm /etc/aziot/filler")
    for mode in ("OnErrorOnly", "Dynamic", "OnErrorOnly"):
        changed = ansible_playbook(
            PLAYBOOK,
            "--limit",
            "edge-03",
            inventory=fleet.inventory,
            extra_vars={**change, "edgefleet_iotedge_auto_reprovisioning_mode": mode},
        )
        assert changed.returncode == 0, changed.output
    kept = backups(fleet, "edge-03")
    assert len(kept) == 2
    assert sorted(fleet.sh("edge-03", f"grep -h auto_reprovisioning_mode {' '.join(kept)}").split("\n")[:-1]) == [
        'auto_reprovisioning_mode = "Dynamic"',
        'auto_reprovisioning_mode = "OnErrorOnly"',
    ]


def fleet_full_disk(fleet: Fleet, host: str, directory: str) -> None:
    """Put ``directory`` on a small tmpfs (its files copied over) and fill it: the next write there fails."""
    quoted = shlex.quote(directory)
    fleet.podman(
        "exec",
        "--privileged",
        fleet.container(host),
        "sh",
        "-c",
        f"cp -a {quoted}/. /tmp/full-disk && mount -t tmpfs -o size=256k tmpfs {quoted} && "
        f"cp -a /tmp/full-disk/. {quoted}/ && (dd if=/dev/zero of={quoted}/filler bs=1k 2>/dev/null; true)",
    )
    assert fleet.sh(host, f"df --output=avail -k {quoted} | tail -1").strip() == "0"


def backups(fleet: Fleet, host: str) -> list[str]:
    return fleet.sh(host, "ls /etc/aziot/config.toml.*~ 2>/dev/null; true").split()


def test_answers_lost_after_dps_acted_are_settled_and_the_rollout_completes(fleet_factory, ansible_playbook):
    """The CA upload, the proof of possession and the group create each lose their answer once after DPS acted."""
    fleet = fleet_factory(2)
    for service, operation in [
        ("dps-management", "DpsCertificate_CreateOrUpdate"),
        ("dps-management", "DpsCertificate_GenerateVerificationCode"),
        ("dps-management", "DpsCertificate_VerifyCertificate"),
        ("dps", "EnrollmentGroup_CreateOrUpdate"),
    ]:
        fleet.add_fault({"service": service, "operation": operation}, {"drop": True, "afterProcessing": True})
    group = {"edgefleet_dps_enrollment_type": "group"}
    run = ansible_playbook(PLAYBOOK, inventory=fleet.inventory, extra_vars=group)
    assert run.returncode == 0, run.output
    assert [fault["hits"] for fault in fleet.faults()] == [1, 1, 1, 1], json.dumps(fleet.faults())
    hub = fleet.group_vars["lab_iothub_hostname"]
    assert summary_rows(run.stdout) == {host: [host, "assigned", hub, "running"] for host in fleet.hosts}
    state = fleet.state()
    assert [(c["name"], c["isVerified"]) for c in state["dps"]["certificates"]] == [("edgefleet-root", True)]
    assert [g["enrollmentGroupId"] for g in state["dps"]["enrollmentGroups"]] == ["edgefleet"]
    assert registrations(fleet) == {host: ("assigned", host) for host in fleet.hosts}
    rerun = ansible_playbook(PLAYBOOK, inventory=fleet.inventory, extra_vars=group)
    assert rerun.returncode == 0, rerun.output
    assert {host: rerun.recap(host)["changed"] for host in fleet.hosts} == dict.fromkeys(fleet.hosts, 0)
