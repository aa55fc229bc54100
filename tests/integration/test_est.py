"""Identity certificates issued by EST on real lab hosts: the lab's EST server issues from its CA, which the collection
takes as the fleet CA, uploads to DPS and proves for a group enrollment; the runtime double's certd enrolls with basic
credentials (edge-01) or a bootstrap identity (edge-02; edge-04 with its key inside a PKCS#11 token), and a wrong
password (edge-03) fails with certd's words."""

from __future__ import annotations

import time
from pathlib import Path

import yaml
from test_identity_rotation import edge_agent_on, registrations

PLAYBOOK = "playbooks/provision_edge.yml"
BOOTSTRAP_DIR = "/etc/edgefleet-est"


def est_fleet(est: dict) -> dict:
    """A group enrollment whose CA is the EST server's, handed in as the fleet CA, and EST issuance for every host."""
    return {
        "edgefleet_dps_enrollment_type": "group",
        "edgefleet_pki_intermediate": False,
        "edgefleet_pki_ca_create": False,
        "edgefleet_pki_root_common_name": "edgefleet lab EST issuing CA",
        "edgefleet_pki_ca_root_cert_content": Path(est["ca_cert"]).read_text(),
        "edgefleet_pki_ca_root_key_content": Path(est["ca_key"]).read_text(),
        "edgefleet_iotedge_identity_cert_method": "est",
        "edgefleet_iotedge_est_url": est["url"],
    }


SOFTHSM = "/usr/lib/softhsm/libsofthsm2.so"
TOKEN_PIN = "4321"


def bootstrap_key_in_a_token(fleet, host: str) -> str:
    """As a manufacturer would: a token on the device (its files aziotks's, once the runtime is installed) holding a
    bootstrap key generated inside it, and the bootstrap certificate for that key; returns the key's URI."""
    fleet.sh(host, f"softhsm2-util --init-token --free --label bootstrap --so-pin 8765 --pin {TOKEN_PIN}")
    fleet.sh(
        host,
        f"GNUTLS_PIN={TOKEN_PIN} p11tool --provider {SOFTHSM} --login --generate-privkey=ecdsa --curve=secp256r1 "
        "--label=bootstrap 'pkcs11:token=bootstrap'",
    )
    public_key = fleet.sh(
        host,
        f"GNUTLS_PIN={TOKEN_PIN} p11tool --provider {SOFTHSM} --login --export-pubkey "
        "'pkcs11:token=bootstrap;object=bootstrap;type=public'",
    )
    public_key = public_key[public_key.index("-----BEGIN PUBLIC KEY-----") :]
    # The token's files go to the runtime's key service; the directory above them stays softhsm's.
    fleet.sh(host, "chown -R aziotks:aziotks /var/lib/softhsm/tokens/*")
    bootstrap = fleet.est_control({"bootstrap_identity": f"{host}-bootstrap", "public_key": public_key})
    fleet.sh(host, f"mkdir -p {BOOTSTRAP_DIR} && chmod 0755 {BOOTSTRAP_DIR}")
    fleet.sh(host, f"cat > {BOOTSTRAP_DIR}/bootstrap.pem <<'EOF'\n{bootstrap['cert']}EOF")
    fleet.sh(host, f"chmod 0644 {BOOTSTRAP_DIR}/bootstrap.pem")
    return f"pkcs11:token=bootstrap;object=bootstrap?pin-value={TOKEN_PIN}"


def test_est_issuance_with_basic_auth_and_a_bootstrap_identity(fleet_factory, ansible_playbook):
    fleet = fleet_factory(4)
    est = fleet.cloud["est"]
    settings = est_fleet(est)
    with (fleet.inventory / "group_vars" / "all.yml").open("a") as group_vars:
        group_vars.write(yaml.safe_dump(settings))
    host_vars = fleet.inventory / "host_vars"
    host_vars.mkdir(exist_ok=True)
    (host_vars / "edge-01.yml").write_text(
        yaml.safe_dump(
            {"edgefleet_iotedge_est_username": est["username"], "edgefleet_iotedge_est_password": est["password"]}
        )
    )
    # edge-02's bootstrap identity, as its manufacturer would have installed it.
    bootstrap = fleet.est_control({"bootstrap_identity": "edge-02-bootstrap"})
    fleet.sh("edge-02", f"mkdir -p {BOOTSTRAP_DIR} && chmod 0755 {BOOTSTRAP_DIR}")
    fleet.sh("edge-02", f"cat > {BOOTSTRAP_DIR}/bootstrap.pem <<'EOF'\n{bootstrap['cert']}EOF")
    fleet.sh("edge-02", f"cat > {BOOTSTRAP_DIR}/bootstrap.key.pem <<'EOF'\n{bootstrap['key']}EOF")
    fleet.sh("edge-02", f"chmod 0644 {BOOTSTRAP_DIR}/bootstrap.pem {BOOTSTRAP_DIR}/bootstrap.key.pem")
    (host_vars / "edge-02.yml").write_text(
        yaml.safe_dump(
            {
                "edgefleet_iotedge_est_bootstrap_cert_path": f"{BOOTSTRAP_DIR}/bootstrap.pem",
                "edgefleet_iotedge_est_bootstrap_key_path": f"{BOOTSTRAP_DIR}/bootstrap.key.pem",
            }
        )
    )
    (host_vars / "edge-03.yml").write_text(
        yaml.safe_dump(
            {"edgefleet_iotedge_est_username": est["username"], "edgefleet_iotedge_est_password": "wrong-pass"}
        )
    )
    # edge-04's bootstrap key is inside a PKCS#11 token: the runtime is installed first (its aziotks owns the token).
    installed = ansible_playbook(PLAYBOOK, "--tags", "install", "--limit", "edge-04", inventory=fleet.inventory)
    assert installed.returncode == 0, installed.output
    token_uri = bootstrap_key_in_a_token(fleet, "edge-04")
    (host_vars / "edge-04.yml").write_text(
        yaml.safe_dump(
            {
                "edgefleet_iotedge_est_bootstrap_cert_path": f"{BOOTSTRAP_DIR}/bootstrap.pem",
                "edgefleet_iotedge_est_bootstrap_key_pkcs11_uri": token_uri,
                "edgefleet_iotedge_pkcs11_lib_path": SOFTHSM,
                "edgefleet_iotedge_pkcs11_base_slot": f"pkcs11:token=bootstrap?pin-value={TOKEN_PIN}",
                "edgefleet_iotedge_pkcs11_user_groups": ["softhsm"],
            }
        )
    )

    run = ansible_playbook(PLAYBOOK, inventory=fleet.inventory, extra_vars={"edgefleet_iotedge_wait_timeout": 60})
    assert est["password"] not in run.output and "wrong-pass" not in run.output and TOKEN_PIN not in run.output
    assert run.recap("edge-01")["failed"] == 0 and run.recap("edge-02")["failed"] == 0, run.output
    assert run.recap("edge-04")["failed"] == 0, run.output
    assert run.recap("edge-03")["failed"] == 1
    issued = fleet.est_state()["issued"]
    # edge-01 by basic auth; edge-02 first its EST identity with the bootstrap identity, then its device certificate
    # with that EST identity; edge-04 the same, its bootstrap key signing inside the token.
    assert sorted((r["subject"], r["auth"]) for r in issued) == [
        ("CN=edge-01", "basic"),
        ("CN=edge-02", "bootstrap"),
        ("CN=edge-02", "certificate"),
        ("CN=edge-04", "bootstrap"),
        ("CN=edge-04", "certificate"),
    ]
    keyd = fleet.sh("edge-04", "cat /etc/aziot/keyd/config.d/00-super.toml")
    assert 'est-bootstrap-id = "pkcs11:token=bootstrap;object=bootstrap?pin-value=' in keyd, keyd
    assert "softhsm" in fleet.sh("edge-04", "id -nG aziotks").split()
    for host in ("edge-01", "edge-02", "edge-04"):
        assert registrations(fleet)[host]["status"] == "assigned"
        assert edge_agent_on(fleet, host) == "running"
        certificate = fleet.sh(host, "cat /var/lib/aziot/certd/certs/device-id.pem")
        subject = fleet.sh(
            host, "openssl x509 -noout -subject -nameopt RFC2253 -in /var/lib/aziot/certd/certs/device-id.pem"
        )
        assert subject.strip() == f"subject=CN={host}" and certificate.count("BEGIN CERTIFICATE") == 2
    # edge-03: certd's own words in its journal; DPS never saw the device.
    journal = fleet.sh("edge-03", "journalctl --no-pager -o cat -u aziot-certd")
    assert "EST endpoint did not return successful response: 401 Unauthorized" in journal, journal
    assert "edge-03" not in registrations(fleet)

    rerun = ansible_playbook(PLAYBOOK, "--limit", "edge-01,edge-02,edge-04", inventory=fleet.inventory)
    assert rerun.returncode == 0, rerun.output
    assert {host: rerun.recap(host)["changed"] for host in ("edge-01", "edge-02", "edge-04")} == dict.fromkeys(
        ("edge-01", "edge-02", "edge-04"), 0
    )
    assert len(fleet.est_state()["issued"]) == len(issued)
    assert all(record["subject"] != "CN=edge-03" for record in fleet.est_state()["issued"])


def test_an_est_certificate_is_renewed_and_registered_again_by_the_runtime_alone(fleet_factory, ansible_playbook):
    fleet = fleet_factory(1)
    est = fleet.cloud["est"]
    settings = {
        **est_fleet(est),
        "edgefleet_iotedge_est_username": est["username"],
        "edgefleet_iotedge_est_password": est["password"],
        "edgefleet_iotedge_est_auto_renew": True,
    }
    with (fleet.inventory / "group_vars" / "all.yml").open("a") as group_vars:
        group_vars.write(yaml.safe_dump(settings))
    # Certificates of three minutes (two, plus the minute they are backdated): the runtime renews at 80% of that.
    fleet.est_control({"cert_validity_seconds": 120})
    run = ansible_playbook(PLAYBOOK, inventory=fleet.inventory)
    assert run.returncode == 0, run.output
    first = fleet.sh("edge-01", "openssl x509 -noout -serial -in /var/lib/aziot/certd/certs/device-id.pem")
    registered = registrations(fleet)["edge-01"]["lastUpdatedDateTimeUtc"]
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(fleet.est_state()["issued"]) < 2:
        time.sleep(5)
    issued = fleet.est_state()["issued"]
    assert [(r["subject"], r["operation"], r["auth"]) for r in issued[:2]] == [
        ("CN=edge-01", "simpleenroll", "basic"),
        ("CN=edge-01", "simpleenroll", "basic"),
    ]
    time.sleep(15)  # the registration with the new certificate, then the move into place
    journal = fleet.sh("edge-01", "journalctl --no-pager -o cat -u aziot-identityd")
    assert "Attempting to renew certificate device-id." in journal and "Certificate device-id was renewed." in journal
    assert fleet.sh("edge-01", "openssl x509 -noout -serial -in /var/lib/aziot/certd/certs/device-id.pem") != first
    assert registrations(fleet)["edge-01"]["lastUpdatedDateTimeUtc"] != registered
    assert registrations(fleet)["edge-01"]["status"] == "assigned"
    assert edge_agent_on(fleet, "edge-01") == "running"
    fleet.est_control({"cert_validity_seconds": 30 * 86400})
