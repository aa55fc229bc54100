"""Identity rotation inside provision_edge.yml on real lab hosts (individual enrollments): forced for every host,
one host whose registration DPS refuses goes back to its old identity and completes on the next run, and a renewal
that renew_before_days makes due rolls the same way. Read afterwards: the chains on the hosts, what DPS holds, the
controller's identity directories."""

from __future__ import annotations

import re

from existing_ca import openssl
from lab_hosts import summary_rows

PLAYBOOK = "playbooks/provision_edge.yml"
HOST_CHAIN = "/var/aziot/certs/device-id.pem"
HOST_KEY = "/var/aziot/secrets/device-id.key.pem"


def serial_of(openssl_output: str) -> str:
    """A serial number as DPS shows it (hex, upper case, no leading zeros); openssl pads it to whole bytes."""
    return format(int(openssl_output.strip().split("=", 1)[1], 16), "X")


def serial_on(fleet, host: str) -> str:
    return serial_of(fleet.sh(host, f"openssl x509 -in {HOST_CHAIN} -noout -serial"))


def key_digest_on(fleet, host: str) -> str:
    return fleet.sh(host, f"sha256sum {HOST_KEY}").split()[0]


def enrollment_certificates(fleet) -> dict:
    """Per registration id: the serial numbers DPS holds, by slot."""
    held = {}
    for enrollment in fleet.state()["dps"]["enrollments"]:
        slots = enrollment["attestation"]["x509"]["clientCertificates"]
        held[enrollment["registrationId"]] = {slot: c["info"]["serialNumber"] for slot, c in slots.items()}
    return held


def registrations(fleet) -> dict:
    return {r["registrationId"]: r for r in fleet.state()["dps"]["registrations"]}


def controller_serial(path) -> str:
    return serial_of(openssl("x509", "-in", str(path), "-noout", "-serial").stdout)


def edge_agent_on(fleet, host: str) -> str:
    listed = fleet.sh(host, "iotedge list")
    return re.search(r"^edgeAgent\s+(\S+)", listed, re.MULTILINE).group(1)


def test_rotation_switches_every_host_and_a_refused_one_goes_back_then_completes(fleet_factory, ansible_playbook):
    fleet = fleet_factory(3)
    # Settings of the enrollments that the bulk write and each rotation's own write must both send.
    with (fleet.inventory / "group_vars" / "all.yml").open("a") as group_vars:
        group_vars.write(
            "edgefleet_dps_reprovision_policy: {update_hub_assignment: true, migrate_device_data: false}\n"
        )
    first = ansible_playbook(PLAYBOOK, inventory=fleet.inventory)
    assert first.returncode == 0, first.output
    identities = fleet.state_dir / "pki" / "identities"
    before = {host: (serial_on(fleet, host), key_digest_on(fleet, host)) for host in fleet.hosts}
    assert enrollment_certificates(fleet) == {host: {"primary": before[host][0]} for host in fleet.hosts}
    updated_before = {host: registrations(fleet)[host]["lastUpdatedDateTimeUtc"] for host in fleet.hosts}

    # edge-03's registration with its new certificate fails (DPS answers 503 to its register call); the one with its
    # old certificate, on the way back, succeeds.
    fleet.add_fault(
        {"operation": "RuntimeRegistration_RegisterDevice", "path": "/registrations/edge-03/"}, {"status": 503}, count=1
    )
    rotated = ansible_playbook(
        PLAYBOOK,
        inventory=fleet.inventory,
        extra_vars={"edgefleet_identity_rotate": True, "edgefleet_identity_rotation_timeout": 20},
    )
    assert rotated.returncode != 0
    assert "edge-03 (edge-03): the identity rotation did not complete" in rotated.output
    assert "The host is back on its previous identity, which DPS still accepts" in rotated.output
    assert [(fault["hits"], fault["remaining"]) for fault in fleet.faults()] == [(1, 0)]
    fleet.clear_faults()

    held = enrollment_certificates(fleet)
    for host in ("edge-01", "edge-02"):
        serial, key_digest = serial_on(fleet, host), key_digest_on(fleet, host)
        assert serial != before[host][0] and key_digest != before[host][1], host
        assert held[host] == {"primary": serial}, host  # the old certificate is gone from the enrollment
        assert controller_serial(identities / host / "identity.cert.pem") == serial
        assert not (identities / host / "next").exists()
        assert (identities / host / "retired" / before[host][0].lower() / "identity.key.pem").is_file()
        assert registrations(fleet)[host]["status"] == "assigned"
        assert registrations(fleet)[host]["lastUpdatedDateTimeUtc"] != updated_before[host]
        assert fleet.sh(host, f"ls {HOST_CHAIN}.*~ {HOST_KEY}.*~ | wc -l").strip() == "2"  # the old files, kept
        assert edge_agent_on(fleet, host) == "running"
        verified = fleet.sh(host, f"openssl verify -partial_chain -CAfile {HOST_CHAIN} {HOST_CHAIN}", check=False)
        assert verified.strip().endswith("OK"), verified
    # edge-03 runs on its old identity, which DPS still holds beside the waiting new one.
    assert (serial_on(fleet, "edge-03"), key_digest_on(fleet, "edge-03")) == before["edge-03"]
    waiting = controller_serial(identities / "edge-03" / "next" / "identity.cert.pem")
    assert held["edge-03"] == {"primary": waiting, "secondary": before["edge-03"][0]}
    assert controller_serial(identities / "edge-03" / "identity.cert.pem") == before["edge-03"][0]
    assert edge_agent_on(fleet, "edge-03") == "running"
    assert registrations(fleet)["edge-03"]["status"] == "assigned"  # registered again with the old certificate

    # The next run (no rotation asked for) completes edge-03's with the identity that waited.
    completed = ansible_playbook(PLAYBOOK, inventory=fleet.inventory)
    assert completed.returncode == 0, completed.output
    assert serial_on(fleet, "edge-03") == waiting
    assert enrollment_certificates(fleet)["edge-03"] == {"primary": waiting}
    assert not (identities / "edge-03" / "next").exists()
    hub = fleet.group_vars["lab_iothub_hostname"]
    assert summary_rows(completed.stdout) == {host: [host, "assigned", hub, "running"] for host in fleet.hosts}

    settled = ansible_playbook(PLAYBOOK, inventory=fleet.inventory)
    assert settled.returncode == 0, settled.output
    assert {host: settled.recap(host)["changed"] for host in fleet.hosts} == dict.fromkeys(fleet.hosts, 0)
    policies = {e["registrationId"]: e.get("reprovisionPolicy") for e in fleet.state()["dps"]["enrollments"]}
    assert policies == {host: {"updateHubAssignment": True, "migrateDeviceData": False} for host in fleet.hosts}

    # renew_before_days: identities issued for 3 days are due once 4 days are asked for before the end.
    short = {"edgefleet_pki_valid_days": 3, "edgefleet_pki_renew_before_days": 2}
    issued = ansible_playbook(
        PLAYBOOK, inventory=fleet.inventory, extra_vars=short | {"edgefleet_identity_rotate": True}
    )
    assert issued.returncode == 0, issued.output
    short_serials = {host: serial_on(fleet, host) for host in fleet.hosts}
    due = {"edgefleet_pki_valid_days": 5, "edgefleet_pki_renew_before_days": 4}
    renewed = ansible_playbook(PLAYBOOK, inventory=fleet.inventory, extra_vars=due)
    assert renewed.returncode == 0, renewed.output
    held = enrollment_certificates(fleet)
    for host in fleet.hosts:
        serial = serial_on(fleet, host)
        assert serial != short_serials[host] and held[host] == {"primary": serial}, host
    again = ansible_playbook(PLAYBOOK, inventory=fleet.inventory, extra_vars=due)
    assert again.returncode == 0, again.output
    assert {host: again.recap(host)["changed"] for host in fleet.hosts} == dict.fromkeys(fleet.hosts, 0)
