"""Identity keys generated inside a PKCS#11 token (SoftHSM) on real lab hosts: the role initialises the token as
aziotks, the token makes the key and signs the CSR, the controller signs it, and the runtime double's keyd has the
token sign the DPS handshake. No key file exists on the host or the controller; the PINs never reach the output."""

from __future__ import annotations

import json

from existing_ca import openssl
from test_device_keys import private_keys_under
from test_identity_rotation import HOST_CHAIN, edge_agent_on, enrollment_certificates, registrations, serial_on

PLAYBOOK = "playbooks/provision_edge.yml"
USER_PIN = "73915468"
SO_PIN = "84026579"
TOKEN_SETTINGS = f"""\
edgefleet_identity_key_origin: device
edgefleet_iotedge_identity_key_method: pkcs11
edgefleet_iotedge_identity_key_pkcs11_uri: "pkcs11:token=edge%20fleet;object=device-id?pin-value={USER_PIN}"
edgefleet_iotedge_pkcs11_lib_path: /usr/lib/softhsm/libsofthsm2.so
edgefleet_iotedge_pkcs11_base_slot: "pkcs11:token=edge%20fleet?pin-value={USER_PIN}"
edgefleet_iotedge_pkcs11_init_token: true
edgefleet_iotedge_pkcs11_so_pin: "{SO_PIN}"
edgefleet_iotedge_pkcs11_user_groups: [softhsm]
"""
P11TOOL = f"runuser -u aziotks -- env GNUTLS_PIN={USER_PIN} p11tool --provider /usr/lib/softhsm/libsofthsm2.so --login"


def token_public_key(fleet, host: str, label: str = "device-id") -> str:
    return fleet.sh(host, f"{P11TOOL} --export-pubkey 'pkcs11:token=edge%20fleet;object={label};type=public'")


def token_labels(fleet, host: str) -> list:
    listed = fleet.sh(host, f"{P11TOOL} --list-privkeys 'pkcs11:token=edge%20fleet'", check=False)
    return sorted(line.split(":", 1)[1].strip() for line in listed.splitlines() if line.strip().startswith("Label:"))


def test_keys_generated_inside_a_token_on_two_devices(fleet_factory, ansible_playbook):
    fleet = fleet_factory(2)
    with (fleet.inventory / "group_vars" / "all.yml").open("a") as group_vars:
        group_vars.write(TOKEN_SETTINGS)
    # edge-02 renews with a new key, generated inside the token beforehand (edgefleet_identity_rotate_key).
    (fleet.inventory / "host_vars").mkdir(exist_ok=True)
    (fleet.inventory / "host_vars" / "edge-02.yml").write_text("edgefleet_identity_rotate_key: true\n")
    first = ansible_playbook(PLAYBOOK, "-v", inventory=fleet.inventory)
    assert first.returncode == 0, first.output
    assert USER_PIN not in first.output and SO_PIN not in first.output
    identities = fleet.state_dir / "pki" / "identities"
    assert [key for key in private_keys_under(fleet.state_dir / "pki") if not key.startswith("ca/")] == []
    for host in fleet.hosts:
        slots = fleet.sh(host, "softhsm2-util --show-slots")
        assert "Label:            edge fleet" in slots, slots
        objects = fleet.sh(host, f"{P11TOOL} --list-privkeys 'pkcs11:token=edge%20fleet'")
        assert "Label: device-id" in objects and "CKA_NEVER_EXTRACTABLE" in objects and "CKA_SENSITIVE" in objects
        # No key file: the secrets directory is empty, the token's files are aziotks's.
        assert fleet.sh(host, "find /var/aziot/secrets -type f | wc -l").strip() == "0"
        assert fleet.sh(host, "find /var/lib/softhsm/tokens -mindepth 1 ! -user aziotks | wc -l").strip() == "0"
        # The certificate is for the token's key, and DPS registered the device through it.
        certificate_key = openssl(
            "x509", "-noout", "-pubkey", "-in", str(identities / host / "identity.cert.pem")
        ).stdout
        assert token_public_key(fleet, host) == certificate_key
        assert registrations(fleet)[host]["status"] == "assigned"
        assert enrollment_certificates(fleet)[host] == {"primary": serial_on(fleet, host)}
        assert edge_agent_on(fleet, host) == "running"
        config = fleet.sh(host, "cat /etc/aziot/config.toml")
        assert "identity_pk = " in config and "pkcs11_lib_path" in config
        keyd = fleet.sh(host, "cat /etc/aziot/keyd/config.d/00-super.toml")
        assert 'device-id = "pkcs11:token=edge%20fleet;object=device%2Did?pin-value=' in keyd, keyd
        checks = json.loads(fleet.sh(host, "iotedge check --output json", check=False))["checks"]
        for check_id in ("key-pairs-read", "certs-match-private-keys", "certs-read"):
            assert checks[check_id]["result"] == {"result": "ok"}, (host, check_id, checks[check_id])
        assert not [name for name, check in checks.items() if check["result"]["result"] in ("error", "fatal")]
        assert fleet.sh(host, f"cat {HOST_CHAIN}") == (identities / host / "identity.full-chain.cert.pem").read_text()

    rerun = ansible_playbook(PLAYBOOK, inventory=fleet.inventory)
    assert rerun.returncode == 0, rerun.output
    assert {host: rerun.recap(host)["changed"] for host in fleet.hosts} == dict.fromkeys(fleet.hosts, 0)

    # A renewal of edge-01 (asked for) signs the token's key again and rolls: the new certificate is pushed, the host
    # registers with it through the token, the old certificate leaves DPS, and the key never moved.
    key_before, serial = token_public_key(fleet, "edge-01"), serial_on(fleet, "edge-01")
    rotated = ansible_playbook(
        PLAYBOOK, "--limit", "edge-01", inventory=fleet.inventory, extra_vars={"edgefleet_identity_rotate": True}
    )
    assert rotated.returncode == 0, rotated.output
    assert serial_on(fleet, "edge-01") != serial and token_public_key(fleet, "edge-01") == key_before
    assert enrollment_certificates(fleet)["edge-01"] == {"primary": serial_on(fleet, "edge-01")}
    assert not (identities / "edge-01" / "next").exists()
    assert registrations(fleet)["edge-01"]["status"] == "assigned"
    assert edge_agent_on(fleet, "edge-01") == "running"

    # edge-02 renews with the key that waited inside the token: the key pairs are relabelled, the old one deleted, a
    # new next key made; it registers through the token with its new certificate.
    assert token_labels(fleet, "edge-02") == ["device-id", "device-id-next"]
    waiting, old_key = token_public_key(fleet, "edge-02", "device-id-next"), token_public_key(fleet, "edge-02")
    serial = serial_on(fleet, "edge-02")
    renewed = ansible_playbook(
        PLAYBOOK, "--limit", "edge-02", inventory=fleet.inventory, extra_vars={"edgefleet_identity_rotate": True}
    )
    assert renewed.returncode == 0, renewed.output
    assert token_public_key(fleet, "edge-02") == waiting
    assert token_labels(fleet, "edge-02") == ["device-id", "device-id-next"]
    assert token_public_key(fleet, "edge-02", "device-id-next") not in (waiting, old_key)
    assert serial_on(fleet, "edge-02") != serial
    assert enrollment_certificates(fleet)["edge-02"] == {"primary": serial_on(fleet, "edge-02")}
    assert registrations(fleet)["edge-02"]["status"] == "assigned"
    assert edge_agent_on(fleet, "edge-02") == "running"
    checks = json.loads(fleet.sh("edge-02", "iotedge check --output json", check=False))["checks"]
    assert checks["certs-match-private-keys"]["result"] == {"result": "ok"}
    settled = ansible_playbook(PLAYBOOK, inventory=fleet.inventory)
    assert {host: settled.recap(host)["changed"] for host in fleet.hosts} == dict.fromkeys(fleet.hosts, 0)

    # Retired, edge-02's identity keys leave its token.
    (fleet.inventory / "host_vars" / "edge-02.yml").write_text(
        "edgefleet_identity_rotate_key: true\nedgefleet_retired: true\n"
    )
    retired = ansible_playbook(PLAYBOOK, inventory=fleet.inventory)
    assert retired.returncode == 0, retired.output
    assert token_labels(fleet, "edge-02") == []
    assert token_labels(fleet, "edge-01") == ["device-id"]
