"""A CA rollover of a fleet enrolled through an enrollment group, on real lab hosts: the new CA waits beside the old
one, DPS accepts both while the hosts move (one of them, refused once, stays on the old CA until the next run), then
the new CA replaces the old one everywhere. Read afterwards: the chains on the hosts (openssl verify against each root),
what DPS holds (certificates, the group's references, registrations), the controller's CA directory."""

from __future__ import annotations

from existing_ca import openssl
from test_identity_rotation import HOST_CHAIN, edge_agent_on, registrations
from test_retire import register_with

PLAYBOOK = "playbooks/provision_edge.yml"
GROUP = {"edgefleet_dps_enrollment_type": "group"}


def sha1_of(path) -> str:
    output = openssl("x509", "-in", str(path), "-noout", "-fingerprint", "-sha1").stdout
    return output.strip().split("=", 1)[1].replace(":", "").upper()


def chains_to(fleet, host: str, root_path, work_dir) -> bool:
    """openssl verify, on the controller, of the chain on the host (leaf, intermediate) against this root alone."""
    chain = work_dir / f"{host}-chain.pem"
    chain.write_text(fleet.sh(host, f"cat {HOST_CHAIN}"))
    verified = openssl("verify", "-CAfile", str(root_path), "-untrusted", str(chain), str(chain))
    return verified.returncode == 0 and verified.stdout.strip().endswith(": OK")


def dps_certificates(fleet) -> dict:
    """Name -> (SHA-1 thumbprint, verified) of the CA certificates DPS holds."""
    return {c["name"]: (c["info"]["sha1Thumbprint"], c["isVerified"]) for c in fleet.state()["dps"]["certificates"]}


def group_references(fleet) -> dict:
    (group,) = fleet.state()["dps"]["enrollmentGroups"]
    return group["attestation"]["x509"]["caReferences"]


def test_group_ca_rollover_moves_every_device_then_retires_the_old_ca(fleet_factory, ansible_playbook, tmp_path):
    fleet = fleet_factory(2)
    first = ansible_playbook(PLAYBOOK, inventory=fleet.inventory, extra_vars=GROUP)
    assert first.returncode == 0, first.output
    ca_dir = fleet.state_dir / "pki" / "ca"
    identities = fleet.state_dir / "pki" / "identities"
    old_root = (ca_dir / "root.cert.pem").read_bytes()
    old_root_path = tmp_path / "old-root.pem"
    old_root_path.write_bytes(old_root)
    old_sha1 = sha1_of(ca_dir / "root.cert.pem")
    assert dps_certificates(fleet) == {"edgefleet-root": (old_sha1, True)}
    assert group_references(fleet) == {"primary": "edgefleet-root"}
    updated_before = {host: registrations(fleet)[host]["lastUpdatedDateTimeUtc"] for host in fleet.hosts}

    # edge-02's registration with its new chain fails once: it goes back to its old chain, which the group accepts
    # while the rollover is under way.
    fleet.add_fault(
        {"operation": "RuntimeRegistration_RegisterDevice", "path": "/registrations/edge-02/"}, {"status": 503}, count=1
    )
    rolling = ansible_playbook(
        PLAYBOOK,
        inventory=fleet.inventory,
        extra_vars=GROUP | {"edgefleet_pki_ca_rotate": True, "edgefleet_identity_rotation_timeout": 20},
    )
    assert rolling.returncode != 0
    assert "edge-02 (edge-02): the identity rotation did not complete" in rolling.output
    fleet.clear_faults()
    new_root = (ca_dir / "next" / "root.cert.pem").read_bytes()
    new_root_path = tmp_path / "new-root.pem"
    new_root_path.write_bytes(new_root)
    new_sha1 = sha1_of(ca_dir / "next" / "root.cert.pem")
    assert (ca_dir / "root.cert.pem").read_bytes() == old_root, "the old CA stays while a device needs it"
    assert dps_certificates(fleet) == {"edgefleet-root": (old_sha1, True), "edgefleet-root-rollover": (new_sha1, True)}
    assert group_references(fleet) == {"primary": "edgefleet-root", "secondary": "edgefleet-root-rollover"}
    assert chains_to(fleet, "edge-01", new_root_path, tmp_path)
    assert not chains_to(fleet, "edge-01", old_root_path, tmp_path)
    assert chains_to(fleet, "edge-02", old_root_path, tmp_path)
    assert not chains_to(fleet, "edge-02", new_root_path, tmp_path)
    for host in fleet.hosts:
        assert registrations(fleet)[host]["status"] == "assigned", host
        assert edge_agent_on(fleet, host) == "running", host

    # The next run (nothing asked for) moves edge-02 and ends the rollover.
    ended = ansible_playbook(PLAYBOOK, inventory=fleet.inventory, extra_vars=GROUP)
    assert ended.returncode == 0, ended.output
    assert (ca_dir / "root.cert.pem").read_bytes() == new_root
    assert not (ca_dir / "next").exists()
    (retired,) = (ca_dir / "retired").iterdir()
    assert (retired / "root.cert.pem").read_bytes() == old_root and (retired / "root.key.pem").is_file()
    assert (retired / "intermediate.key.pem").is_file()
    assert dps_certificates(fleet) == {"edgefleet-root-rollover": (new_sha1, True)}
    assert group_references(fleet) == {"primary": "edgefleet-root-rollover"}
    for host in fleet.hosts:
        assert chains_to(fleet, host, new_root_path, tmp_path), host
        assert not chains_to(fleet, host, old_root_path, tmp_path), host
        assert registrations(fleet)[host]["status"] == "assigned", host
        assert registrations(fleet)[host]["lastUpdatedDateTimeUtc"] != updated_before[host], host
        assert edge_agent_on(fleet, host) == "running", host
    # DPS no longer takes a chain of the old CA: its reference and its certificate are gone.
    (old_identity,) = (identities / "edge-01" / "retired").iterdir()
    status, operation = register_with(fleet, old_identity, "edge-01")
    assert status != 202 or operation["status"] != "assigned", operation
    status, operation = register_with(fleet, identities / "edge-01", "edge-01")
    assert (status, operation["status"]) == (202, "assigned"), operation

    again = ansible_playbook(PLAYBOOK, inventory=fleet.inventory, extra_vars=GROUP)
    assert again.returncode == 0, again.output
    assert {host: again.recap(host)["changed"] for host in fleet.hosts} == dict.fromkeys(fleet.hosts, 0)
    assert dps_certificates(fleet) == {"edgefleet-root-rollover": (new_sha1, True)}


def test_individual_enrollments_roll_over_to_a_new_ca_in_one_run(fleet_factory, ansible_playbook, tmp_path):
    fleet = fleet_factory(2)
    first = ansible_playbook(PLAYBOOK, inventory=fleet.inventory)
    assert first.returncode == 0, first.output
    ca_dir = fleet.state_dir / "pki" / "ca"
    old_root_path = tmp_path / "old-root.pem"
    old_root_path.write_bytes((ca_dir / "root.cert.pem").read_bytes())

    rolled = ansible_playbook(PLAYBOOK, inventory=fleet.inventory, extra_vars={"edgefleet_pki_ca_rotate": True})
    assert rolled.returncode == 0, rolled.output
    assert not (ca_dir / "next").exists()
    new_sha1 = sha1_of(ca_dir / "root.cert.pem")
    assert new_sha1 != sha1_of(old_root_path)
    # Every device moved in this run, so the rollover ended in it: DPS holds the new CA alone.
    assert dps_certificates(fleet) == {"edgefleet-root-rollover": (new_sha1, True)}
    enrollments = {e["registrationId"]: e for e in fleet.state()["dps"]["enrollments"]}
    for host in fleet.hosts:
        slots = enrollments[host]["attestation"]["x509"]["clientCertificates"]
        assert list(slots) == ["primary"], host
        assert chains_to(fleet, host, ca_dir / "root.cert.pem", tmp_path), host
        assert not chains_to(fleet, host, old_root_path, tmp_path), host
        assert registrations(fleet)[host]["status"] == "assigned", host
        assert edge_agent_on(fleet, host) == "running", host

    again = ansible_playbook(PLAYBOOK, inventory=fleet.inventory)
    assert again.returncode == 0, again.output
    assert {host: again.recap(host)["changed"] for host in fleet.hosts} == dict.fromkeys(fleet.hosts, 0)
