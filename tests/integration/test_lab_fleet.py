"""`python -m lab up|status|down` with real podman hosts: systemd, sshd on loopback, inventory, idempotence, cleanup."""

from __future__ import annotations

import datetime
import json
import os
import re
import ssl
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from lab_devices import FleetPki
from lab_hosts import CONTAINER_PREFIX, PORTS, lab, lab_ports

from ansible_collections.edgefleet.iotedge.plugins.module_utils._dps_client import (
    DpsServiceClient,
    parse_connection_string,
    sas_token,
)
from ansible_collections.edgefleet.iotedge.tests.unit.pki_factories import self_signed

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def listening(port: int) -> list[str]:
    """Local addresses listening on ``port`` (ss -ltn)."""
    lines = subprocess.run(["ss", "-Hltn"], capture_output=True, text=True, check=True).stdout.splitlines()
    return [line.split()[3] for line in lines if line.split()[3].endswith(f":{port}")]


def ansible(inventory: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    return subprocess.run(
        [str(BIN / "ansible"), "-i", str(inventory), *args], capture_output=True, text=True, env=env, check=False
    )


@pytest.fixture
def state_dir(tmp_path):
    directory = tmp_path / "lab"
    yield directory
    lab(directory, "down")  # whatever the test left


def test_up_twice_then_down(state_dir, podman):
    up = lab(state_dir, "up", "--hosts", "2", "--container-prefix", CONTAINER_PREFIX, *PORTS)
    assert up.returncode == 0, up.stderr
    ports = lab_ports(state_dir)
    ssh, dps, device = ports["ssh_base_port"], ports["dps_port"], ports["device_port"]
    status = json.loads(up.stdout)
    assert [(h["name"], h["ssh"], h["state"]) for h in status["hosts"]] == [
        ("edge-01", f"127.0.0.1:{ssh}", "running"),
        ("edge-02", f"127.0.0.1:{ssh + 1}", "running"),
    ]
    for host in status["hosts"]:
        container = host["container"]
        assert podman("exec", container, "cat", "/proc/1/comm").strip() == "systemd"
        assert podman("exec", container, "hostname").strip() == host["name"]
    # sshd and the emulators listen on loopback only
    assert listening(ssh) == [f"127.0.0.1:{ssh}"] and listening(ssh + 1) == [f"127.0.0.1:{ssh + 1}"]
    assert listening(dps) == [f"127.0.0.1:{dps}"]

    inventory = state_dir / "inventory"
    hosts = yaml.safe_load((inventory / "hosts.yml").read_text())
    assert sorted(hosts["all"]["children"]["edge"]["hosts"]) == ["edge-01", "edge-02"]
    group_vars = inventory / "group_vars/all.yml"
    assert group_vars.stat().st_mode & 0o777 == 0o600  # it holds the lab's connection strings
    endpoints = yaml.safe_load(group_vars.read_text())
    assert endpoints["edgefleet_dps_global_endpoint"] == f"https://127.0.0.1:{device}/"
    assert endpoints["edgefleet_dps_connection_string"].startswith(f"HostName=127.0.0.1:{dps};")

    # Ansible reaches every host over real SSH, checking host keys, and each host trusts the lab CA system-wide.
    ping = ansible(inventory, "edge", "-m", "ansible.builtin.ping")
    assert ping.returncode == 0 and ping.stdout.count("pong") == 2, ping.stdout + ping.stderr
    trust = ansible(
        inventory, "edge", "-m", "ansible.builtin.uri", "-a", f"url=https://127.0.0.1:{device}/_emulator/health"
    )
    assert trust.returncode == 0, trust.stdout + trust.stderr

    ids_before = podman("ps", "--filter", f"name={CONTAINER_PREFIX}-edge", "--format", "{{.ID}}").split()
    files_before = {path: path.read_bytes() for path in [inventory / "hosts.yml", group_vars]}
    again = lab(state_dir, "up", "--hosts", "2", "--container-prefix", CONTAINER_PREFIX, *PORTS)
    assert again.returncode == 0, again.stderr
    assert "created" not in again.stderr and "started" not in again.stderr and "replaced" not in again.stderr
    assert podman("ps", "--filter", f"name={CONTAINER_PREFIX}-edge", "--format", "{{.ID}}").split() == ids_before
    assert {path: path.read_bytes() for path in files_before} == files_before

    down = lab(state_dir, "down")
    assert down.returncode == 0, down.stderr
    assert podman("ps", "--all", "--filter", f"name={CONTAINER_PREFIX}-edge", "--format", "{{.Names}}").strip() == ""
    assert [
        port for port in (ssh, ssh + 1, *(ports[name] for name in ports if name.endswith("_port"))) if listening(port)
    ] == []
    for started in (f"lab.cloud --state-dir {state_dir}", f"http.server --bind 127.0.0.1 --directory {state_dir}"):
        leftovers = subprocess.run(["pgrep", "-f", started], capture_output=True, check=False)
        assert leftovers.returncode == 1, leftovers.stdout
    assert not state_dir.exists()


def test_the_runtime_double_installs_from_the_lab_repository_like_the_real_packages(state_dir, podman):
    up = lab(state_dir, "up", "--hosts", "1", "--container-prefix", CONTAINER_PREFIX, *PORTS)
    assert up.returncode == 0, up.stderr
    inventory = state_dir / "inventory"
    apt_uri = yaml.safe_load((inventory / "group_vars/all.yml").read_text())["edgefleet_iotedge_apt_uri"]
    assert apt_uri == f"http://127.0.0.1:{lab_ports(state_dir)['apt_port']}/"
    repository = f"deb [trusted=yes] {apt_uri} ./"
    source = ansible(
        inventory,
        "edge",
        "-m",
        "ansible.builtin.copy",
        "-a",
        f"dest=/etc/apt/sources.list.d/edgefleet-lab.list content='{repository}\n' mode=0644",
    )
    assert source.returncode == 0, source.stdout

    def apt(*packages: str) -> subprocess.CompletedProcess:
        return ansible(
            inventory, "edge", "-m", "ansible.builtin.apt", "-a", f"name={','.join(packages)} update_cache=true"
        )

    # As the real aziot-edge: no container engine, no install.
    refused = apt("aziot-edge")
    assert refused.returncode != 0 and "ERROR: No container runtime detected." in refused.stdout
    # The documented order: the container engine first, then IoT Edge.
    engine = apt("moby-engine")
    assert engine.returncode == 0, engine.stdout
    installed = apt("aziot-edge")
    assert installed.returncode == 0, installed.stdout

    def host(*command: str) -> str:
        return podman("exec", f"{CONTAINER_PREFIX}-edge-01", *command).strip()

    assert host("iotedge", "version") == "iotedge 1.5.44"
    assert host("dpkg-query", "-W", "-f", "${Version}", "aziot-identity-service") == "1.5.6-1"

    def groups(user: str) -> set[str]:
        return set(host("id", "-nG", user).split())

    assert {"aziotcs", "aziotks", "aziottpm"} <= groups("aziotid")
    assert "aziotks" in groups("aziotcs")
    assert {"docker", "systemd-journal", "aziotcs", "aziotks", "aziotid"} <= groups("iotedge")
    assert host("id", "-u", "edgeagentuser") == "13622" and host("id", "-u", "edgehubuser") == "13623"

    def owner_and_mode(path: str) -> str:
        return host("stat", "-c", "%U:%G %a", path)

    assert owner_and_mode("/etc/aziot/config.toml.edge.template") == "root:root 600"
    assert owner_and_mode("/etc/aziot/edged/config.d") == "iotedge:iotedge 700"
    assert owner_and_mode("/etc/aziot/edged/config.toml.default") == "iotedge:iotedge 400"
    assert owner_and_mode("/var/lib/aziot/keyd") == "aziotks:aziotks 700"
    assert owner_and_mode("/etc/aziot/identityd/config.d") == "aziotid:aziotid 700"
    assert owner_and_mode("/etc/aziot/certd/config.toml.default") == "aziotcs:aziotcs 400"

    # The identity service's sockets are enabled and listening; aziot-edged is enabled but not started.
    for socket in ("aziot-keyd", "aziot-certd", "aziot-identityd", "aziot-tpmd"):
        assert host("systemctl", "is-active", f"{socket}.socket") == "active"
    assert host("systemctl", "is-enabled", "aziot-edged.service") == "enabled"
    inactive = podman(
        "exec", f"{CONTAINER_PREFIX}-edge-01", "systemctl", "is-active", "aziot-edged.service", check=False
    )
    assert inactive.strip() == "inactive"

    # iotedge config apply on the host, as root and as another user.
    config = (
        'hostname = "edge-01"\n\n[provisioning]\nsource = "dps"\n'
        f'global_endpoint = "https://127.0.0.1:{lab_ports(state_dir)["device_port"]}/"\n'
        'id_scope = "0ne00C0FFEE"\n\n[provisioning.attestation]\nmethod = "x509"\n'
        'identity_cert = "file:///var/aziot/certs/device-id.pem"\n'
        'identity_pk = "file:///var/aziot/secrets/device-id.key.pem"\n'
    )
    written = ansible(
        inventory,
        "edge",
        "-m",
        "ansible.builtin.copy",
        "-a",
        f"dest=/etc/aziot/config.toml mode=0600 content='{config}'",
    )
    assert written.returncode == 0, written.stdout
    applied = podman("exec", f"{CONTAINER_PREFIX}-edge-01", "iotedge", "config", "apply")
    assert applied.startswith("Warning: the previous identity config file is unreadable\n")
    assert "Azure IoT Edge has been configured successfully!" in applied and applied.endswith("Done.\n")
    for service, owner in (
        ("keyd", "aziotks"),
        ("certd", "aziotcs"),
        ("identityd", "aziotid"),
        ("tpmd", "aziottpm"),
        ("edged", "iotedge"),
    ):
        assert owner_and_mode(f"/etc/aziot/{service}/config.d/00-super.toml") == f"{owner}:{owner} 600"
    as_user = podman(
        "exec",
        "--user",
        "iotedge",
        f"{CONTAINER_PREFIX}-edge-01",
        "sh",
        "-c",
        "iotedge config apply 2>&1; echo rc=$?",
        check=False,
    )
    assert as_user == "Command failed: this command must be run as root\nrc=1\n"


def wait_for_edge_agent(podman, container: str, timeout: float = 90, module: str = "edgeAgent") -> str:
    """`iotedge list` until ``module`` runs (identityd polls DPS every 5 s, as the real one)."""
    deadline = time.monotonic() + timeout
    listing = ""
    while time.monotonic() < deadline:
        listing = podman("exec", container, "sh", "-c", "iotedge list 2>&1 || true", check=False)
        if re.search(rf"^{re.escape(module)}\s+running\s+Up ", listing, re.M):
            return listing
        time.sleep(2)
    raise AssertionError(f"{module} not running after {timeout} s:\n{listing}")


def hub_request(state_dir: Path, method: str, path: str, body: dict | None = None) -> dict:
    """The lab hub's service API with a SAS token from the lab's iothubowner connection string."""
    cloud = json.loads((state_dir / "cloud/cloud.json").read_text())
    hub = parse_connection_string(cloud["iothub"]["connection_string"])
    token = sas_token(hub.host_name, hub.key, hub.key_name, int(time.time()) + 600)
    request = urllib.request.Request(
        f"https://{hub.host_name}{path}?api-version=2021-04-12",
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={"Authorization": token, "Content-Type": "application/json"},
    )
    context = ssl.create_default_context(cafile=cloud["ca_bundle"])
    with urllib.request.urlopen(request, context=context) as answer:
        raw = answer.read()
    return json.loads(raw) if raw else {}


def apply_deployment(state_dir: Path, device_id: str, modules: dict[str, str]) -> None:
    """Configuration_ApplyOnEdgeDevice with edgeHub and ``modules`` (name -> image)."""
    agent = {
        "schemaVersion": "1.1",
        "runtime": {"type": "docker", "settings": {}},
        "systemModules": {
            "edgeAgent": {"type": "docker", "settings": {"image": "mcr.microsoft.com/azureiotedge-agent:1.5"}},
            "edgeHub": {
                "type": "docker",
                "status": "running",
                "restartPolicy": "always",
                "settings": {"image": "mcr.microsoft.com/azureiotedge-hub:1.5"},
            },
        },
        "modules": {
            name: {"type": "docker", "status": "running", "restartPolicy": "always", "settings": {"image": image}}
            for name, image in modules.items()
        },
    }
    hub = {"schemaVersion": "1.1", "routes": {"all": "FROM /messages/* INTO $upstream"}}
    content = {"modulesContent": {"$edgeAgent": {"properties.desired": agent}, "$edgeHub": {"properties.desired": hub}}}
    hub_request(state_dir, "POST", f"/devices/{device_id}/applyConfigurationContent", content)


def hub_twin(state_dir: Path, device_id: str, module_id: str) -> dict:
    return hub_request(state_dir, "GET", f"/twins/{device_id}/modules/{urllib.parse.quote(module_id, safe='')}")


def emulator_state(state_dir: Path) -> dict:
    cloud = json.loads((state_dir / "cloud/cloud.json").read_text())
    context = ssl.create_default_context(cafile=cloud["ca_bundle"])
    with urllib.request.urlopen(f"{cloud['control_url']}/state", context=context) as answer:
        return json.load(answer)


def test_by_hand_hosts_register_with_dps_and_run_edge_agent(state_dir, podman, tmp_path, ansible_playbook):
    """edge-01 through an individual enrollment, edge-02 and edge-03 through the group enrollment of the verified
    fleet CA."""
    up = lab(state_dir, "up", "--hosts", "3", "--container-prefix", CONTAINER_PREFIX, *PORTS)
    assert up.returncode == 0, up.stderr
    run = ansible_playbook(
        "lab/playbooks/provision_by_hand.yml",
        inventory=state_dir / "inventory",
        extra_vars={"pki_dir": str(tmp_path / "pki"), "individual": ["edge-01"], "key_owner": "aziotks"},
    )
    assert run.returncode == 0, run.output

    for host in ("edge-01", "edge-02", "edge-03"):
        lines = wait_for_edge_agent(podman, f"{CONTAINER_PREFIX}-{host}").splitlines()
        assert lines[0] == "NAME             STATUS           DESCRIPTION      Config"
        assert re.fullmatch(
            r"edgeAgent        running          Up \d+ seconds?\s+mcr\.microsoft\.com/azureiotedge-agent:1\.5", lines[1]
        ), lines[1]
        journal = podman(
            "exec",
            f"{CONTAINER_PREFIX}-{host}",
            "journalctl",
            "--no-pager",
            "-o",
            "cat",
            "-u",
            "aziot-identityd",
            "-u",
            "aziot-edged",
        )
        for line in (
            "Provisioning starting. Reason: Startup",
            "Successfully provisioned with DPS.",
            "Provisioning complete.",
            f"Device is {host} on 127.0.0.1:{lab_ports(state_dir)['hub_port']}",
            "Edge runtime is running",
        ):
            assert line in journal, journal

    state = emulator_state(state_dir)
    registrations = {r["registrationId"]: r for r in state["dps"]["registrations"]}
    assert {registrations[host]["status"] for host in ("edge-01", "edge-02", "edge-03")} == {"assigned"}
    assert registrations["edge-02"].get("enrollmentGroupId") == "fleet"
    assert registrations["edge-03"].get("enrollmentGroupId") == "fleet"
    devices = {d["deviceId"]: d for d in state["iothubs"][0]["devices"]}
    assert devices["edge-01"]["capabilities"] == {"iotEdge": True}
    assert devices["edge-01"]["authentication"]["type"] == "selfSigned"
    assert devices["edge-02"]["authentication"]["type"] == "certificateAuthority"

    # iotedge check: no errors on a provisioned host, in JSON and in text.
    checked = podman("exec", f"{CONTAINER_PREFIX}-edge-02", "iotedge", "check", "--output", "json")
    checks = json.loads(checked)["checks"]
    assert not [name for name, check in checks.items() if check["result"]["result"] in ("error", "fatal")], checks
    for name in (
        "identityd-config-well-formed",
        "configs-up-to-date",
        "certs-read",
        "key-pairs-read",
        "certs-match-private-keys",
        "identity-certificate-expiry",
        "host-connect-dps-endpoint",
        "host-connect-iothub-https",
        "connect-management-uri",
    ):
        assert checks[name]["result"] == {"result": "ok"}, (name, checks[name])
    text = podman("exec", f"{CONTAINER_PREFIX}-edge-02", "iotedge", "check")
    header = "Configuration checks (aziot-identity-service)"
    assert text.startswith(f"\n{header}\n{'-' * len(header)}\n√ keyd configuration is well-formed - OK\n"), text
    assert re.search(r"^\d+ check\(s\) succeeded\.$", text, re.M) and "raised errors" not in text

    status = podman("exec", f"{CONTAINER_PREFIX}-edge-02", "iotedge", "system", "status")
    assert status.startswith(
        "System services:\n"
        "    aziot-edged             Running\n"
        "    aziot-identityd         Running\n"
        "    aziot-keyd              Running\n"
        "    aziot-certd             Running\n"
        "    aziot-tpmd              Ready\n"
        "\nUse 'iotedge system logs' to check for non-fatal errors.\n"
    ), status

    # A deployment reaches the host: edgeHub and the deployment's module run, and edgeAgent reports them.
    apply_deployment(
        state_dir,
        "edge-02",
        {"SimulatedTemperatureSensor": "mcr.microsoft.com/azureiotedge-simulated-temperature-sensor:1.5"},
    )
    listing = wait_for_edge_agent(podman, f"{CONTAINER_PREFIX}-edge-02", module="SimulatedTemperatureSensor")
    assert [line.split()[0] for line in listing.splitlines()[1:]] == [
        "SimulatedTemperatureSensor",
        "edgeAgent",
        "edgeHub",
    ]
    agent_twin = hub_twin(state_dir, "edge-02", "$edgeAgent")
    reported = agent_twin["properties"]["reported"]
    assert reported["modules"]["SimulatedTemperatureSensor"]["runtimeStatus"] == "running"
    assert reported["systemModules"]["edgeHub"]["runtimeStatus"] == "running"

    # iotedge system: restart in the real order, reprovision (identityd registers again), logs through journalctl.
    restarted = podman("exec", f"{CONTAINER_PREFIX}-edge-03", "iotedge", "system", "restart")
    assert restarted.startswith("Stopping aziot-edged.service...Stopped!\nStopping aziot-identityd.service...Stopped!")
    assert restarted.endswith("Starting aziot-edged.service...Started!\nDone.\n")
    wait_for_edge_agent(podman, f"{CONTAINER_PREFIX}-edge-03")
    reprovisioned = podman("exec", f"{CONTAINER_PREFIX}-edge-03", "iotedge", "system", "reprovision")
    assert reprovisioned == (
        "Successfully reprovisioned with IoT Hub.\nStopping aziot-edged.service...Stopped!\n"
        "Starting aziot-edged.mgmt.socket...Started!\nStarting aziot-edged.workload.socket...Started!\n"
        "Starting aziot-edged.service...Started!\n"
    )
    wait_for_edge_agent(podman, f"{CONTAINER_PREFIX}-edge-03")
    logs = podman("exec", f"{CONTAINER_PREFIX}-edge-03", "iotedge", "system", "logs", "--", "--no-pager", "-o", "cat")
    assert logs.count("Successfully provisioned with DPS.") >= 3  # first start, restart, reprovision
    stopped = podman("exec", f"{CONTAINER_PREFIX}-edge-03", "iotedge", "system", "stop")
    assert stopped.splitlines()[0] == "Stopping aziot-edged.service...Stopped!"
    after_stop = podman("exec", f"{CONTAINER_PREFIX}-edge-03", "iotedge", "system", "status")
    assert "    aziot-edged             Ready\n" in after_stop, after_stop

    # A key that aziotks cannot read fails as on a real device: keyd refuses it, identityd cannot provision.
    container = f"{CONTAINER_PREFIX}-edge-01"
    podman("exec", container, "chown", "root:root", "/var/aziot/secrets/device-id.key.pem")
    podman("exec", container, "iotedge", "config", "apply")
    deadline = time.monotonic() + 30
    journal = ""
    while time.monotonic() < deadline and "Permission denied" not in journal:
        time.sleep(1)
        journal = podman(
            "exec", container, "journalctl", "--no-pager", "-o", "cat", "-u", "aziot-keyd", "-u", "aziot-identityd"
        )
    assert "could not load key pair 'device-id' from /var/aziot/secrets/device-id.key.pem: Permission denied" in journal
    assert "Failed to provision with IoT Hub" in journal
    report = podman("exec", container, "sh", "-c", "iotedge check; echo rc=$?", check=False)
    assert re.search(
        r"^\u00d7 all preloaded key pairs readable by aziotks - Error\n    /var/aziot/secrets/device-id.key.pem is not readable "
        r"by user aziotks \(uid \d+, gid \d+\), see https://aka.ms/iotedge/cert-permissions$",
        report,
        re.M,
    ), report
    assert report.rstrip().endswith("rc=1")

    # A registration id that is not the certificate's CN: DPS refuses the device (401002), identityd says so.
    container = f"{CONTAINER_PREFIX}-edge-02"
    podman(
        "exec",
        container,
        "sed",
        "-i",
        's/^registration_id = .*/registration_id = "someone-else"/',
        "/etc/aziot/config.toml",
    )
    podman("exec", container, "iotedge", "config", "apply")
    # config apply keeps the registration identityd has (its backup); reprovisioning registers under the new id.
    refused = "DPS: Unauthorized access (error code 401002)"
    reprovision = podman("exec", container, "sh", "-c", "iotedge system reprovision 2>&1; echo rc=$?", check=False)
    assert reprovision.startswith(f"Failed to reprovision: {refused}\n"), reprovision
    assert reprovision.rstrip().endswith("rc=1")
    journal = podman("exec", container, "journalctl", "--no-pager", "-o", "cat", "-u", "aziot-identityd")
    assert "Provisioning starting. Reason: Api" in journal and refused in journal, journal

    # With the runtime down (its mgmt socket stopped; systemd leaves the socket file), iotedge list fails as the
    # real one does.
    podman("exec", container, "systemctl", "stop", "aziot-edged.mgmt.socket", "aziot-edged.service")
    down = podman("exec", container, "sh", "-c", "iotedge list 2>&1; echo rc=$?", check=False)
    assert down == (
        "A module runtime error occurred\n"
        "\tcaused by: A module runtime error occurred\n"
        "\tcaused by: error trying to connect: Connection refused (os error 111)\n"
        "\tcaused by: Connection refused (os error 111)\n"
        "\n"
        "rc=1\n"
    )


def test_by_hand_1_1_hosts_register_and_a_chain_past_2038_is_refused(state_dir, podman, tmp_path, ansible_playbook):
    """IoT Edge 1.1: config.yaml, systemctl restart iotedge, CONFIG header; libiothsm's 2038 limit."""
    up = lab(state_dir, "up", "--hosts", "2", "--container-prefix", CONTAINER_PREFIX, *PORTS)
    assert up.returncode == 0, up.stderr
    run = ansible_playbook(
        "lab/playbooks/provision_by_hand.yml",
        inventory=state_dir / "inventory",
        extra_vars={"pki_dir": str(tmp_path / "pki"), "generation": "1.1", "individual": ["edge-01"]},
    )
    assert run.returncode == 0, run.output
    for host in ("edge-01", "edge-02"):
        container = f"{CONTAINER_PREFIX}-{host}"
        lines = wait_for_edge_agent(podman, container).splitlines()
        assert lines[0] == "NAME             STATUS           DESCRIPTION      CONFIG"
        assert "mcr.microsoft.com/azureiotedge-agent:1.1" in lines[1]
        assert podman("exec", container, "iotedge", "version").strip() == "iotedge 1.1.19"
        assert podman("exec", container, "stat", "-c", "%U %a", "/etc/iotedge/config.yaml").strip() == "iotedge 400"
        journal = podman("exec", container, "journalctl", "--no-pager", "-o", "cat", "-u", "iotedge")
        for line in (
            "Starting Azure IoT Edge Security Daemon",
            "Successful DPS provisioning.",
            "Finished provisioning edge device.",
        ):
            assert line in journal, journal
    registrations = {r["registrationId"]: r for r in emulator_state(state_dir)["dps"]["registrations"]}
    assert registrations["edge-01"]["status"] == "assigned" and registrations["edge-02"]["status"] == "assigned"

    # iotedge check with the 1.1 ids: no errors; the quickstart certificates are the documented warning.
    checks = json.loads(podman("exec", f"{CONTAINER_PREFIX}-edge-02", "iotedge", "check", "--output", "json"))["checks"]
    for name in (
        "config-yaml-well-formed",
        "hostname",
        "connect-management-uri",
        "identity-certificate-expiry",
        "host-connect-dps-endpoint",
        "host-connect-iothub-https",
    ):
        assert checks[name]["result"] == {"result": "ok"}, (name, checks[name])
    quickstart = checks["certificates-quickstart"]["result"]
    assert quickstart["result"] == "warning"
    assert (
        quickstart["details"][0]
        == "The Edge device is using self-signed automatically-generated development certificates."
    )
    text = podman("exec", f"{CONTAINER_PREFIX}-edge-02", "iotedge", "check")
    assert text.startswith("Configuration checks\n--------------------\n\u221a config.yaml is well-formed - OK\n"), text

    # A CA valid past 2038 (issued for 1.2+, where that is allowed) on a 1.1 host: libiothsm refuses the chain.
    rerun = ansible_playbook(
        "lab/playbooks/provision_by_hand.yml",
        "--limit",
        "edge-01:localhost",
        inventory=state_dir / "inventory",
        extra_vars={
            "pki_dir": str(tmp_path / "pki-2040"),
            "generation": "1.1",
            "identity_generation": "1.2+",
            "ca_valid_days": 5000,
        },
    )
    assert rerun.returncode == 0, rerun.output
    refused = "libiothsm cannot use certificates that expire on or after January 1, 2038"
    deadline = time.monotonic() + 30
    journal = ""
    while time.monotonic() < deadline and refused not in journal:
        time.sleep(1)
        journal = podman(
            "exec", f"{CONTAINER_PREFIX}-edge-01", "journalctl", "--no-pager", "-o", "cat", "-u", "iotedge"
        )
    assert refused in journal, journal


def expired_identity(directory: Path, common_name: str) -> tuple[Path, Path]:
    """A self-signed device certificate that expired yesterday, and its key."""
    now = datetime.datetime.now(datetime.UTC)
    certificate, key = self_signed(
        common_name, not_before=now - datetime.timedelta(days=30), not_after=now - datetime.timedelta(days=1)
    )
    cert_path, key_path = directory / "expired.pem", directory / "expired.key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def test_by_hand_negative_cases_show_the_runtimes_documented_behaviour(state_dir, podman, tmp_path, ansible_playbook):
    up = lab(state_dir, "up", "--hosts", "1", "--container-prefix", CONTAINER_PREFIX, *PORTS)
    assert up.returncode == 0, up.stderr
    run = ansible_playbook(
        "lab/playbooks/provision_by_hand.yml",
        inventory=state_dir / "inventory",
        extra_vars={"pki_dir": str(tmp_path / "pki")},
    )
    assert run.returncode == 0, run.output
    container = f"{CONTAINER_PREFIX}-edge-01"
    wait_for_edge_agent(podman, container)
    good = podman("exec", container, "cat", "/etc/aziot/config.toml")

    def apply_config(text: str) -> str:
        (tmp_path / "config.toml").write_text(text)
        podman("cp", str(tmp_path / "config.toml"), f"{container}:/etc/aziot/config.toml")
        return podman("exec", container, "sh", "-c", "iotedge config apply 2>&1; echo rc=$?", check=False)

    # TOML syntax error: the toml crate's layout, nothing written.
    broken = apply_config(good.replace("[provisioning.attestation]", "[provisioning.attestation"))
    assert broken.startswith("Command failed: could not parse config file: TOML parse error at line 6, column 26\n")
    assert "6 | [provisioning.attestation\n" in broken and broken.rstrip().endswith("rc=1")
    # A bare path instead of a file:/// URI.
    bare = apply_config(good.replace('"file:///var/aziot/certs/device-id.pem"', '"/var/aziot/certs/device-id.pem"'))
    assert '9 | identity_cert = "/var/aziot/certs/device-id.pem"\n' in bare, bare
    assert "\nrelative URL without a base\n" in bare and bare.rstrip().endswith("rc=1")

    cloud = json.loads((state_dir / "cloud/cloud.json").read_text())
    dps = DpsServiceClient(parse_connection_string(cloud["dps"]["connection_string"]), ca_bundle=cloud["ca_bundle"])

    def identity_fails_with(cert: Path, key: Path, expected: str) -> str:
        podman("cp", str(cert), f"{container}:/var/aziot/certs/device-id.pem")
        podman("cp", str(key), f"{container}:/var/aziot/secrets/device-id.key.pem")
        podman("exec", container, "chown", "aziotks:aziotks", "/var/aziot/secrets/device-id.key.pem")
        podman("exec", container, "chmod", "0644", "/var/aziot/certs/device-id.pem")
        since = "@" + podman("exec", container, "date", "+%s").strip()
        assert apply_config(good).rstrip().endswith("Done.\nrc=0")
        # config apply keeps the registration identityd has (its backup); reprovisioning registers with the new files.
        # After a refused one identityd has no device left, so its next start goes to DPS (and is refused) too.
        reprovision = podman("exec", container, "sh", "-c", "iotedge system reprovision 2>&1; echo rc=$?", check=False)
        assert reprovision.startswith("Failed to reprovision: "), reprovision
        assert reprovision.rstrip().endswith("rc=1")
        journal = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and expected not in journal:
            time.sleep(1)
            journal = podman(
                "exec", container, "journalctl", "--no-pager", "-o", "cat", "-u", "aziot-identityd", "--since", since
            )
        assert expected in journal, journal
        return journal

    refused = "DPS: Unauthorized access (error code 401002)"

    # An expired certificate (its own individual enrollment, so only its dates are wrong): DPS refuses it and
    # iotedge check says why.
    cert, key = expired_identity(tmp_path, "edge-01")
    dps.put_enrollment(
        {
            "registrationId": "edge-01",
            "attestation": {
                "type": "x509",
                "x509": {"clientCertificates": {"primary": {"certificate": cert.read_text()}}},
            },
            "capabilities": {"iotEdge": True},
        }
    )
    identity_fails_with(cert, key, refused)
    report = podman("exec", container, "sh", "-c", "iotedge check; echo rc=$?", check=False)
    assert re.search(r"^    device identity certificate 'device-id' expired at ", report, re.M), report
    assert report.rstrip().endswith("rc=1")

    # A group whose CA was never verified: a chain from a new CA, its root inline on the group, no proof.
    dps.delete_enrollment("edge-01")
    rogue = FleetPki(tmp_path / "rogue", "rogue", ["edge-01"])
    dps.put_enrollment_group(
        {
            "enrollmentGroupId": "rogue",
            "attestation": {
                "type": "x509",
                "x509": {"signingCertificates": {"primary": {"certificate": rogue.root_pem}}},
            },
            "capabilities": {"iotEdge": True},
        }
    )
    identity = rogue.identities["edge-01"]
    identity_fails_with(Path(identity["chain_path"]), Path(identity["key_path"]), refused)
