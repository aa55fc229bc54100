"""The Edge CA on real lab hosts: one from the fleet PKI (pushed, used by the runtime double, shown by `iotedge check`
and the fleet report) beside the runtime's own quickstart one with a lifetime of the inventory's; and on IoT Edge 1.1.
What the runtime uses is read through its workload API, as edgeHub reads it: the trust bundle, and a server
certificate that `openssl verify` checks against the fleet root on the controller."""

from __future__ import annotations

import json
import re

from existing_ca import openssl
from test_identity_rotation import registrations

PLAYBOOK = "playbooks/provision_edge.yml"
WORKLOAD = "/var/run/iotedge/workload.sock"
# edgeHub's request, over the workload socket (root: the double serves nobody else).
WORKLOAD_CALL = r"""
import http.client, json, socket, sys
class Unix(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect("{socket}")
connection = Unix("workload")
body = json.dumps({{"commonName": "{common_name}"}}) if "{method}" == "POST" else None
connection.request("{method}", "{path}?api-version=2022-08-03", body=body, headers={{"Content-Type": "application/json"}})
response = connection.getresponse()
print(json.dumps({{"status": response.status, "body": json.loads(response.read())}}))
"""


def workload(fleet, host: str, method: str, path: str, common_name: str = "") -> dict:
    script = WORKLOAD_CALL.format(socket=WORKLOAD, method=method, path=path, common_name=common_name)
    return json.loads(fleet.sh(host, f"python3 - <<'EOF'\n{script}\nEOF"))


def edge_hub_certificate(fleet, host: str) -> str:
    answer = workload(fleet, host, "POST", "/modules/edgeHub/genid/1/certificate/server", common_name=host)
    assert answer["status"] == 201, answer
    return answer["body"]["certificate"]


def verifies(chain_pem: str, root_path, work_dir) -> bool:
    chain = work_dir / "chain.pem"
    chain.write_text(chain_pem)
    verified = openssl("verify", "-CAfile", str(root_path), "-untrusted", str(chain), str(chain))
    return verified.returncode == 0 and verified.stdout.strip().endswith(": OK")


def first_certificate(pem: str) -> str:
    return re.search(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\n", pem, re.S).group(0)


def test_a_fleet_edge_ca_and_a_quickstart_one_of_30_days(fleet_factory, ansible_playbook, tmp_path):
    fleet = fleet_factory(2)
    host_vars = fleet.inventory / "host_vars"
    host_vars.mkdir(exist_ok=True)
    (host_vars / "edge-01.yml").write_text("edgefleet_edge_ca: fleet\n")
    (host_vars / "edge-02.yml").write_text("edgefleet_iotedge_edge_ca_expiry_days: 30\n")
    first = ansible_playbook(PLAYBOOK, inventory=fleet.inventory)
    assert first.returncode == 0, first.output
    pki = fleet.state_dir / "pki"
    root = pki / "ca" / "root.cert.pem"

    # edge-01: the fleet's Edge CA, pushed beside the identity and named in config.toml.
    issued = pki / "identities" / "edge-01" / "edge-ca.full-chain.cert.pem"
    assert fleet.sh("edge-01", "cat /var/aziot/certs/edge-ca.pem") == issued.read_text()
    assert fleet.stat("edge-01", "/var/aziot/secrets/edge-ca.key.pem") == "aziotks:aziotks 600"
    assert (
        fleet.sh("edge-01", "cat /var/aziot/secrets/edge-ca.key.pem")
        == (pki / "identities" / "edge-01" / "edge-ca.key.pem").read_text()
    )
    config = fleet.sh("edge-01", "cat /etc/aziot/config.toml")
    assert (
        '[edge_ca]\ncert = "file:///var/aziot/certs/edge-ca.pem"\npk = "file:///var/aziot/secrets/edge-ca.key.pem"'
        in (config)
    ), config
    assert not (pki / "identities" / "edge-02" / "edge-ca.cert.pem").exists()
    # The runtime uses it: edgeHub's server certificate is issued by it and verifies up to the fleet root.
    edge_ca = first_certificate(issued.read_text())
    bundle = workload(fleet, "edge-01", "GET", "/trust-bundle")
    assert bundle["status"] == 200 and bundle["body"]["certificate"].startswith(edge_ca)
    server = edge_hub_certificate(fleet, "edge-01")
    assert first_certificate(server.split("-----END CERTIFICATE-----\n", 1)[1]) == edge_ca
    assert verifies(server, root, tmp_path)
    journal = fleet.sh("edge-01", "journalctl --no-pager -o cat -u aziot-edged")
    assert "Using existing Edge CA certificate" in journal, journal
    checks = json.loads(fleet.sh("edge-01", "iotedge check --output json"))["checks"]
    assert checks["certs-preloaded"]["result"] == {"result": "ok"}

    # edge-02: the runtime's own Edge CA, 30 days as the inventory asked, which the fleet root does not sign.
    assert "auto_generated_edge_ca_expiry_days = 30" in fleet.sh("edge-02", "cat /etc/aziot/config.toml")
    own = fleet.sh("edge-02", "cat /var/lib/aziot/certd/certs/aziot-edged-ca.pem")
    (tmp_path / "own.pem").write_text(own)
    subject = openssl("x509", "-noout", "-subject", "-in", str(tmp_path / "own.pem")).stdout
    assert "aziot-edge CA edge-02" in subject
    # Valid for 30 days: past 29 days from now, not past 31.
    assert openssl("x509", "-noout", "-checkend", str(29 * 86400), "-in", str(tmp_path / "own.pem")).returncode == 0
    assert openssl("x509", "-noout", "-checkend", str(31 * 86400), "-in", str(tmp_path / "own.pem")).returncode == 1
    other = edge_hub_certificate(fleet, "edge-02")
    assert verifies(other, tmp_path / "own.pem", tmp_path) and not verifies(other, root, tmp_path)

    rerun = ansible_playbook(PLAYBOOK, inventory=fleet.inventory)
    assert rerun.returncode == 0, rerun.output
    assert {host: rerun.recap(host)["changed"] for host in fleet.hosts} == dict.fromkeys(fleet.hosts, 0)

    # A fleet Edge CA the controller lost is issued again (here for 5 days), pushed and used; `iotedge check` warns
    # before it ends and the fleet report flags it.
    (pki / "identities" / "edge-01" / "edge-ca.cert.pem").unlink()
    short = {"edgefleet_pki_edge_ca_valid_days": 5, "edgefleet_pki_renew_before_days": 2}
    registered = registrations(fleet)["edge-01"]["lastUpdatedDateTimeUtc"]
    renewed = ansible_playbook(PLAYBOOK, "--limit", "edge-01", inventory=fleet.inventory, extra_vars=short)
    assert renewed.returncode == 0, renewed.output
    # A new Edge CA is applied, not a reason to register with DPS again.
    assert registrations(fleet)["edge-01"]["lastUpdatedDateTimeUtc"] == registered
    assert fleet.sh("edge-01", "cat /var/aziot/certs/edge-ca.pem") == issued.read_text() != edge_ca
    assert first_certificate(issued.read_text()) != edge_ca
    server = edge_hub_certificate(fleet, "edge-01")
    assert server.split("-----END CERTIFICATE-----\n", 1)[1].startswith(first_certificate(issued.read_text()))
    checks = json.loads(fleet.sh("edge-01", "iotedge check --output json"))["checks"]
    warning = checks["certs-preloaded"]["result"]
    assert warning["result"] == "warning", warning
    assert re.fullmatch(r" 'aziot-edged-ca' will expire soon \(\S+ \S+ UTC, in 4 days\)", warning["details"][0]), (
        warning
    )

    report = ansible_playbook(
        "playbooks/fleet_report.yml",
        inventory=fleet.inventory,
        extra_vars={"edgefleet_report_dir": str(tmp_path / "report"), "edgefleet_report_on_problem": "warn"},
    )
    assert report.returncode == 0, report.output
    rows = {row["host"]: row for row in json.loads((tmp_path / "report" / "fleet-report.json").read_text())}
    assert rows["edge-01"]["edge_ca_days_left"] == 4
    assert rows["edge-02"]["edge_ca_days_left"] == 29
    assert any("Edge CA ends in 4 days" in problem for problem in rows["edge-01"]["problems"]), rows["edge-01"]


def test_a_fleet_edge_ca_on_iotedge_1_1(fleet_factory, ansible_playbook, tmp_path):
    fleet = fleet_factory(1)
    legacy = {"edgefleet_generation": "1.1", "edgefleet_edge_ca": "fleet"}
    first = ansible_playbook(PLAYBOOK, inventory=fleet.inventory, extra_vars=legacy)
    assert first.returncode == 0, first.output
    pki = fleet.state_dir / "pki"
    issued = pki / "identities" / "edge-01" / "edge-ca.full-chain.cert.pem"
    assert fleet.sh("edge-01", "cat /var/iotedge/certs/edge-ca.pem") == issued.read_text()
    assert fleet.stat("edge-01", "/var/iotedge/secrets/edge-ca.key.pem") == "iotedge:iotedge 600"
    config = fleet.sh("edge-01", "cat /etc/iotedge/config.yaml")
    assert 'device_ca_cert: "/var/iotedge/certs/edge-ca.pem"' in config, config
    # 1.1: the device CA signs iotedged's workload CA, which signs edgeHub's certificate; all verify to the root.
    server = edge_hub_certificate(fleet, "edge-01")
    assert verifies(server, pki / "ca" / "root.cert.pem", tmp_path)
    assert "iotedged workload ca" in openssl("x509", "-noout", "-subject", "-in", str(_second(server, tmp_path))).stdout
    checks = json.loads(fleet.sh("edge-01", "iotedge check --output json"))["checks"]
    assert checks["certificates-quickstart"]["result"] == {"result": "ok"}, checks["certificates-quickstart"]
    rerun = ansible_playbook(PLAYBOOK, inventory=fleet.inventory, extra_vars=legacy)
    assert rerun.returncode == 0, rerun.output
    assert rerun.recap("edge-01")["changed"] == 0


def _second(chain: str, work_dir):
    path = work_dir / "second.pem"
    path.write_text(first_certificate(chain.split("-----END CERTIFICATE-----\n", 1)[1]))
    return path
