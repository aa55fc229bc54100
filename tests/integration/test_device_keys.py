"""Identity keys made on the device (edgefleet_identity_key_origin: device) on real lab hosts: each host makes its key
and a CSR, the controller signs it, DPS registers the host with it, and the key never reaches the controller (its PKI
directory and the play's output are searched). A renewal signs the same key again; a host that lost its key gets a
certificate for its new one."""

from __future__ import annotations

from existing_ca import openssl
from test_identity_rotation import (
    HOST_CHAIN,
    HOST_KEY,
    edge_agent_on,
    enrollment_certificates,
    key_digest_on,
    registrations,
    serial_on,
)

PLAYBOOK = "playbooks/provision_edge.yml"


def host_public_key(fleet, host: str) -> str:
    return fleet.sh(host, f"openssl pkey -in {HOST_KEY} -pubout")


def controller_public_key(path) -> str:
    return openssl("x509", "-in", str(path), "-noout", "-pubkey").stdout


def private_keys_under(directory) -> list:
    return sorted(
        str(path.relative_to(directory))
        for path in directory.rglob("*")
        if path.is_file() and b"PRIVATE KEY" in path.read_bytes()
    )


def test_keys_made_on_three_devices_never_reach_the_controller(fleet_factory, ansible_playbook):
    fleet = fleet_factory(3)
    with (fleet.inventory / "group_vars" / "all.yml").open("a") as group_vars:
        group_vars.write("edgefleet_identity_key_origin: device\n")
    first = ansible_playbook(PLAYBOOK, "-v", inventory=fleet.inventory)
    assert first.returncode == 0, first.output
    pki = fleet.state_dir / "pki"
    identities = pki / "identities"
    # The only private keys on the controller are the fleet CA's; none went through the play's output.
    assert [key for key in private_keys_under(pki) if not key.startswith("ca/")] == []
    assert "PRIVATE KEY" not in first.output
    for host in fleet.hosts:
        assert fleet.stat(host, HOST_KEY) == "aziotks:aziotks 600"
        assert fleet.stat(host, "/var/aziot/secrets") == "aziotks:aziotks 700"
        # The certificate on the host, the controller's and DPS's are for the key the host made.
        assert host_public_key(fleet, host) == controller_public_key(identities / host / "identity.cert.pem")
        assert fleet.sh(host, f"cat {HOST_CHAIN}") == (identities / host / "identity.full-chain.cert.pem").read_text()
        assert sorted(p.name for p in (identities / host).iterdir()) == [
            "identity.cert.pem",
            "identity.full-chain.cert.pem",
        ]
        assert registrations(fleet)[host]["status"] == "assigned"
        assert enrollment_certificates(fleet)[host] == {"primary": serial_on(fleet, host)}
        assert edge_agent_on(fleet, host) == "running"
    keys = {host: key_digest_on(fleet, host) for host in fleet.hosts}

    rerun = ansible_playbook(PLAYBOOK, inventory=fleet.inventory)
    assert rerun.returncode == 0, rerun.output
    assert {host: rerun.recap(host)["changed"] for host in fleet.hosts} == dict.fromkeys(fleet.hosts, 0)
    assert {host: key_digest_on(fleet, host) for host in fleet.hosts} == keys

    # A rotation of edge-01 signs its key again: a new certificate is pushed, the key stays, and the host registers.
    serial = serial_on(fleet, "edge-01")
    rotated = ansible_playbook(
        PLAYBOOK, "--limit", "edge-01", inventory=fleet.inventory, extra_vars={"edgefleet_identity_rotate": True}
    )
    assert rotated.returncode == 0, rotated.output
    assert serial_on(fleet, "edge-01") != serial and key_digest_on(fleet, "edge-01") == keys["edge-01"]
    assert enrollment_certificates(fleet)["edge-01"] == {"primary": serial_on(fleet, "edge-01")}
    retired = identities / "edge-01" / "retired" / serial.lower()
    assert sorted(p.name for p in retired.iterdir()) == ["identity.cert.pem", "identity.full-chain.cert.pem"]
    assert edge_agent_on(fleet, "edge-01") == "running"

    # edge-02 lost its key (re-imaged): it makes a new one, and its certificate is issued again for that key.
    fleet.sh("edge-02", f"rm {HOST_KEY}")
    replaced = ansible_playbook(PLAYBOOK, inventory=fleet.inventory)
    assert replaced.returncode == 0, replaced.output
    assert key_digest_on(fleet, "edge-02") != keys["edge-02"]
    assert host_public_key(fleet, "edge-02") == controller_public_key(identities / "edge-02" / "identity.cert.pem")
    assert enrollment_certificates(fleet)["edge-02"] == {"primary": serial_on(fleet, "edge-02")}
    assert registrations(fleet)["edge-02"]["status"] == "assigned"
    assert edge_agent_on(fleet, "edge-02") == "running"
    assert replaced.recap("edge-03")["changed"] == 0
    assert [key for key in private_keys_under(pki) if not key.startswith("ca/")] == []

    # A key type asked for one host alone is refused before anything is written: the controller signs with one key
    # type for the whole fleet. The others go on unchanged.
    (fleet.inventory / "host_vars").mkdir(exist_ok=True)
    (fleet.inventory / "host_vars" / "edge-03.yml").write_text("edgefleet_pki_key_type: ec-p384\n")
    odd = ansible_playbook(PLAYBOOK, inventory=fleet.inventory)
    assert odd.returncode != 0
    assert "edgefleet_pki_key_type: is 'ec-p384' on this host but 'ec-p256' on edge-01, edge-02" in odd.output
    assert odd.recap("edge-03")["failed"] == 1
    assert {host: odd.recap(host)["changed"] for host in ("edge-01", "edge-02")} == {"edge-01": 0, "edge-02": 0}
    (fleet.inventory / "host_vars" / "edge-03.yml").unlink()

    # CSRs the controller refuses (here for the fleet's new key type, while each device keeps its key) fail their
    # hosts before DPS, saying what to do; nothing is issued.
    serials = {host: serial_on(fleet, host) for host in fleet.hosts}
    refused = ansible_playbook(PLAYBOOK, inventory=fleet.inventory, extra_vars={"edgefleet_pki_key_type": "ec-p384"})
    assert refused.returncode != 0
    for host in fleet.hosts:
        assert f"csrs[{host}]: the device's CSR carries a ec-p256 key, and key_type asks for ec-p384" in refused.output
        assert refused.recap(host)["failed"] == 1
        assert serial_on(fleet, host) == serials[host] and edge_agent_on(fleet, host) == "running"
    assert {host: (identities / host / "identity.cert.pem").exists() for host in fleet.hosts} == dict.fromkeys(
        fleet.hosts, True
    )


def test_renewals_with_new_keys_made_on_the_devices_and_one_that_goes_back(fleet_factory, ansible_playbook):
    """edgefleet_identity_rotate_key: each host keeps a next key; a rotation makes it current and drops the old one;
    a rotation DPS refuses puts the old key back and the next run completes it with the key that waited."""
    fleet = fleet_factory(2)
    with (fleet.inventory / "group_vars" / "all.yml").open("a") as group_vars:
        group_vars.write("edgefleet_identity_key_origin: device\nedgefleet_identity_rotate_key: true\n")
    first = ansible_playbook(PLAYBOOK, inventory=fleet.inventory)
    assert first.returncode == 0, first.output
    identities = fleet.state_dir / "pki" / "identities"
    next_key = f"{HOST_KEY}.next"

    def digest(host: str, path: str) -> str:
        return fleet.sh(host, f"sha256sum {path}").split()[0]

    before = {}
    for host in fleet.hosts:
        assert fleet.stat(host, next_key) == "aziotks:aziotks 600"
        assert digest(host, next_key) != key_digest_on(fleet, host)
        assert not (identities / host / "next").exists()  # not due: nothing is issued for the next key yet
        before[host] = (serial_on(fleet, host), key_digest_on(fleet, host), digest(host, next_key))
    rerun = ansible_playbook(PLAYBOOK, inventory=fleet.inventory)
    assert {host: rerun.recap(host)["changed"] for host in fleet.hosts} == dict.fromkeys(fleet.hosts, 0)

    # edge-02's registration with its new identity fails once: it goes back to its old key and certificate.
    fleet.add_fault(
        {"operation": "RuntimeRegistration_RegisterDevice", "path": "/registrations/edge-02/"}, {"status": 503}, count=1
    )
    rotated = ansible_playbook(
        PLAYBOOK,
        inventory=fleet.inventory,
        extra_vars={"edgefleet_identity_rotate": True, "edgefleet_identity_rotation_timeout": 20},
    )
    assert rotated.returncode != 0
    assert "edge-02 (edge-02): the identity rotation did not complete" in rotated.output
    fleet.clear_faults()

    # edge-01: the key that waited is the current one; the old key left the host; a new next key waits.
    serial, key, upcoming = before["edge-01"]
    assert serial_on(fleet, "edge-01") != serial and key_digest_on(fleet, "edge-01") == upcoming
    assert fleet.sh("edge-01", f"ls {HOST_KEY}.previous", check=False).strip() == ""
    assert digest("edge-01", next_key) not in (key, upcoming)
    assert host_public_key(fleet, "edge-01") == controller_public_key(identities / "edge-01" / "identity.cert.pem")
    assert enrollment_certificates(fleet)["edge-01"] == {"primary": serial_on(fleet, "edge-01")}
    assert registrations(fleet)["edge-01"]["status"] == "assigned"
    assert edge_agent_on(fleet, "edge-01") == "running"
    assert fleet.stat("edge-01", HOST_KEY) == "aziotks:aziotks 600"
    # edge-02: back on its old key and certificate; the new key waits again as next, for the certificate in next/.
    serial, key, upcoming = before["edge-02"]
    assert (serial_on(fleet, "edge-02"), key_digest_on(fleet, "edge-02"), digest("edge-02", next_key)) == before[
        "edge-02"
    ]
    waiting = identities / "edge-02" / "next" / "identity.cert.pem"
    assert controller_public_key(waiting) == fleet.sh("edge-02", f"openssl pkey -in {next_key} -pubout")
    assert edge_agent_on(fleet, "edge-02") == "running"
    # Never a device key on the controller, nor in the output.
    assert [path for path in private_keys_under(fleet.state_dir / "pki") if not path.startswith("ca/")] == []
    assert "PRIVATE KEY" not in rotated.output

    # The next run completes edge-02's rotation with the key and certificate that waited; then nothing changes.
    completed = ansible_playbook(PLAYBOOK, inventory=fleet.inventory)
    assert completed.returncode == 0, completed.output
    assert key_digest_on(fleet, "edge-02") == upcoming and serial_on(fleet, "edge-02") != serial
    assert enrollment_certificates(fleet)["edge-02"] == {"primary": serial_on(fleet, "edge-02")}
    assert not (identities / "edge-02" / "next").exists()
    settled = ansible_playbook(PLAYBOOK, inventory=fleet.inventory)
    assert {host: settled.recap(host)["changed"] for host in fleet.hosts} == dict.fromkeys(fleet.hosts, 0)
