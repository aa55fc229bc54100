"""Retiring hosts with provision_edge.yml on real lab hosts (edgefleet_retired in host_vars): DPS refuses them, their
registration records are gone, their hub devices disabled, their runtime stopped and key removed, their controller
files retired; the other hosts change nothing. For a group member, a disabled individual enrollment blocks it while
the group stays."""

from __future__ import annotations

import json
import ssl
import types
from pathlib import Path
from urllib.parse import urlsplit

import yaml
from lab_devices import register

PLAYBOOK = "playbooks/provision_edge.yml"
HOST_KEY = "/var/aziot/secrets/device-id.key.pem"


def retire(fleet, host: str) -> None:
    host_vars = fleet.inventory / "host_vars"
    host_vars.mkdir(exist_ok=True)
    (host_vars / f"{host}.yml").write_text("---\nedgefleet_retired: true\n")


def retired_identity(fleet, host: str) -> Path:
    """The one directory the retirement moved the host's identity to."""
    (moved,) = [path for path in (fleet.state_dir / "pki" / "identities.retired" / host).iterdir() if path.is_dir()]
    return moved


def register_with(fleet, identity_dir: Path, registration_id: str) -> tuple[int, dict | None]:
    """A device holding this identity tries DPS (mutual TLS): (register status, final operation body)."""
    cloud = json.loads((fleet.state_dir / "cloud" / "cloud.json").read_text())
    context = ssl.create_default_context(cafile=cloud["ca_bundle"])
    context.load_cert_chain(str(identity_dir / "identity.full-chain.cert.pem"), str(identity_dir / "identity.key.pem"))
    endpoint = urlsplit(fleet.group_vars["edgefleet_dps_global_endpoint"])
    device_lab = types.SimpleNamespace(device_port=endpoint.port, id_scope=fleet.group_vars["edgefleet_dps_id_scope"])
    status, _body, operation = register(device_lab, context, registration_id)
    return status, operation


def by_id(records: list[dict], key: str) -> dict:
    return {record[key]: record for record in records}


def cloud_view(fleet) -> tuple[dict, list, dict]:
    """What DPS and the hub hold: enrollment status and hub device status by id, and the registered ids."""
    state = fleet.state()
    enrollments = {e["registrationId"]: e["provisioningStatus"] for e in state["dps"]["enrollments"]}
    registered = sorted(by_id(state["dps"]["registrations"], "registrationId"))
    devices = {d["deviceId"]: d["status"] for d in state["iothubs"][0]["devices"]}
    return enrollments, registered, devices


# One of three hosts retired: the others stay as they were.
RETIRED_THIRD = (
    {"edge-01": "enabled", "edge-02": "enabled", "edge-03": "disabled"},
    ["edge-01", "edge-02"],
    {"edge-01": "enabled", "edge-02": "enabled", "edge-03": "disabled"},
)


def test_retiring_one_of_three_individually_enrolled_hosts(fleet_factory, ansible_playbook):
    fleet = fleet_factory(3)
    assert ansible_playbook(PLAYBOOK, inventory=fleet.inventory).returncode == 0
    retire(fleet, "edge-03")

    retired = ansible_playbook(PLAYBOOK, inventory=fleet.inventory)
    assert retired.returncode == 0, retired.output
    assert {host: retired.recap(host)["changed"] for host in ("edge-01", "edge-02")} == {"edge-01": 0, "edge-02": 0}
    assert cloud_view(fleet) == RETIRED_THIRD
    assert fleet.sh(
        "edge-03", "systemctl is-active aziot-edged.service aziot-identityd.service", check=False
    ).split() == [
        "inactive",
        "inactive",
    ]
    assert fleet.existing("edge-03", [HOST_KEY]) == []
    identities = fleet.state_dir / "pki" / "identities"
    assert not (identities / "edge-03").exists() and (identities / "edge-01").is_dir()
    moved = retired_identity(fleet, "edge-03")

    again = ansible_playbook(PLAYBOOK, inventory=fleet.inventory)
    assert again.returncode == 0, again.output
    assert {host: again.recap(host)["changed"] for host in fleet.hosts} == dict.fromkeys(fleet.hosts, 0)
    assert retired_identity(fleet, "edge-03") == moved
    # DPS refuses the retired device, even with its own certificate and key.
    status, operation = register_with(fleet, moved, "edge-03")
    assert (status, operation["status"]) == (202, "disabled"), operation


def test_a_retired_group_member_is_blocked_while_the_group_stays(fleet_factory, ansible_playbook):
    fleet = fleet_factory(2)
    group = {"edgefleet_dps_enrollment_type": "group"}
    assert ansible_playbook(PLAYBOOK, inventory=fleet.inventory, extra_vars=group).returncode == 0
    identities = fleet.state_dir / "pki" / "identities"
    retire(fleet, "edge-02")

    retired = ansible_playbook(PLAYBOOK, inventory=fleet.inventory, extra_vars=group)
    assert retired.returncode == 0, retired.output
    assert retired.recap("edge-01")["changed"] == 0
    state = fleet.state()
    assert [(g["enrollmentGroupId"], g["provisioningStatus"]) for g in state["dps"]["enrollmentGroups"]] == [
        ("edgefleet", "enabled")
    ]
    (blocker,) = state["dps"]["enrollments"]
    assert (blocker["registrationId"], blocker["provisioningStatus"]) == ("edge-02", "disabled")
    again = ansible_playbook(PLAYBOOK, inventory=fleet.inventory, extra_vars=group)
    assert again.returncode == 0, again.output
    assert {host: again.recap(host)["changed"] for host in fleet.hosts} == dict.fromkeys(fleet.hosts, 0)
    status, operation = register_with(fleet, retired_identity(fleet, "edge-02"), "edge-02")
    assert (status, operation["status"]) == (202, "disabled"), operation
    # The group still takes its other members.
    status, operation = register_with(fleet, identities / "edge-01", "edge-01")
    assert (status, operation["status"]) == (202, "assigned"), operation


def test_an_enrollment_no_inventory_host_claims_is_retired_when_asked(fleet_factory, ansible_playbook):
    fleet = fleet_factory(3)
    assert ansible_playbook(PLAYBOOK, inventory=fleet.inventory).returncode == 0
    # edge-03 is deleted from inventory instead of being marked retired: DPS would still let it in.
    hosts_file = fleet.inventory / "hosts.yml"
    inventory = yaml.safe_load(hosts_file.read_text())
    del inventory["all"]["children"]["edge"]["hosts"]["edge-03"]
    hosts_file.write_text(yaml.safe_dump(inventory))
    asked = {"edgefleet_retire_unclaimed": True}

    limited = ansible_playbook(PLAYBOOK, "--limit", "edge-01", inventory=fleet.inventory, extra_vars=asked)
    assert limited.returncode != 0
    assert "edgefleet_retire_unclaimed needs a run without --limit" in limited.output
    assert limited.recap("edge-01")["changed"] == 0, "refused before anything was written"
    assert cloud_view(fleet)[0]["edge-03"] == "enabled"

    retired = ansible_playbook(PLAYBOOK, inventory=fleet.inventory, extra_vars=asked)
    assert retired.returncode == 0, retired.output
    # The controller's four writes (enrollment, registration record, hub device, identity files) are counted for the
    # first host of the play that makes them (run_once); the hosts themselves change nothing.
    assert {host: retired.recap(host)["changed"] for host in ("edge-01", "edge-02")} == {"edge-01": 4, "edge-02": 0}
    assert cloud_view(fleet) == RETIRED_THIRD
    assert not (fleet.state_dir / "pki" / "identities" / "edge-03").exists()
    moved = retired_identity(fleet, "edge-03")

    again = ansible_playbook(PLAYBOOK, inventory=fleet.inventory, extra_vars=asked)
    assert again.returncode == 0, again.output
    changed = {host: again.recap(host)["changed"] for host in ("edge-01", "edge-02")}
    assert changed == {"edge-01": 0, "edge-02": 0}, again.output
    # DPS refuses the device, even with its own certificate and key (a refused attempt leaves a record of its own).
    status, operation = register_with(fleet, moved, "edge-03")
    assert (status, operation["status"]) == (202, "disabled"), operation
