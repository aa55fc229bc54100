"""playbooks/provision_edge.yml on real lab hosts: bad inventories fail early, --check, the rollout, a lost host.

Each test starts its own lab (the lab command, on the test ports) and reads the real state afterwards: files, owners
and modes on the hosts through podman, and what the DPS and IoT Hub emulators recorded through their control plane.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import ansible_mitogen
from lab_hosts import CONTAINER_PREFIX, HOST_PATHS, PORTS, Fleet, lab, secrets_of, summary_rows

PLAYBOOK = "playbooks/provision_edge.yml"


EST = {"edgefleet_iotedge_identity_cert_method": "est", "edgefleet_iotedge_est_url": "https://est.example.com/est"}
EST_AUTH = {"edgefleet_iotedge_est_username": "edge-01", "edgefleet_iotedge_est_password": "est-pa55word-never-shown"}
EST_BOOTSTRAP = {"edgefleet_iotedge_est_bootstrap_key_path": "/etc/est/boot.key.pem"}
PKCS11 = {
    "edgefleet_iotedge_identity_key_method": "pkcs11",
    "edgefleet_iotedge_identity_key_pkcs11_uri": "pkcs11:token=edge;object=id?pin-value=1234",
    "edgefleet_iotedge_pkcs11_base_slot": "pkcs11:slot-id=0?pin-value=1234",
}
DEEP_TWIN: dict = {"leaf": 1}
for _level in range(11):
    DEEP_TWIN = {f"l{_level}": DEEP_TWIN}

# Each: (case id, extra vars, text the failure must contain: the variable and the fix).
BAD_INVENTORIES = [
    ("registration-id-uppercase", {"edgefleet_registration_id": "Edge-01"}, ["edgefleet_registration_id", "'edge-01'"]),
    ("registration-id-quote", {"edgefleet_registration_id": 'edge"01'}, ["edgefleet_registration_id"]),
    (
        "registration-id-newline",
        {"edgefleet_registration_id": "edge-01\nsource = 'manual'"},
        ["edgefleet_registration_id"],
    ),
    (
        "registration-id-injected-section",
        {"edgefleet_registration_id": 'edge-01"\n[provisioning]\nsource = "manual'},
        ["edgefleet_registration_id"],
    ),
    ("id-scope-missing", {"edgefleet_dps_id_scope": ""}, ["edgefleet_dps_id_scope", "idScope"]),
    ("id-scope-injected", {"edgefleet_dps_id_scope": '0ne"\nhostname = "x'}, ["edgefleet_dps_id_scope"]),
    ("generation-unknown", {"edgefleet_generation": "1.3"}, ["edgefleet_generation", "1.2+"]),
    (
        "endpoint-not-https",
        {"edgefleet_dps_global_endpoint": "http://127.0.0.1:19544/"},
        ["edgefleet_dps_global_endpoint", "https"],
    ),
    ("hostname-with-space", {"edgefleet_iotedge_hostname": "edge 01"}, ["edgefleet_iotedge_hostname"]),
    (
        "reprovisioning-mode-unknown",
        {"edgefleet_iotedge_auto_reprovisioning_mode": "Always"},
        ["edgefleet_iotedge_auto_reprovisioning_mode", "OnErrorOnly"],
    ),
    (
        "pkcs11-on-1.1",
        {"edgefleet_generation": "1.1", "edgefleet_iotedge_identity_key_method": "pkcs11"},
        ["edgefleet_iotedge_identity_key_method", "1.2+"],
    ),
    ("est-without-url", {"edgefleet_iotedge_identity_cert_method": "est"}, ["edgefleet_iotedge_est_url"]),
    # EST issues the certificate on the device: an individual enrollment cannot name it beforehand.
    (
        "est-with-individual-enrollment",
        {**EST, **EST_AUTH},
        ["edgefleet_dps_enrollment_type: is individual, and edgefleet_iotedge_identity_cert_method is 'est'"],
    ),
    (
        "secrets-dir-relative",
        {"edgefleet_iotedge_secrets_dir": "var/secrets"},
        ["edgefleet_iotedge_secrets_dir", "absolute"],
    ),
    (
        "key-unreachable-by-its-owner",
        {"edgefleet_iotedge_secrets_dir": "/root/edgefleet-secrets"},
        ["edgefleet_iotedge_secrets_dir", "/root", "aziotks", "chmod o+x"],
    ),
    (
        "apt-uri-injected",
        {"edgefleet_iotedge_apt_uri": "http://127.0.0.1:19580/ ./\ndeb http://example.com/"},
        ["edgefleet_iotedge_apt_uri"],
    ),
    ("version-pinned-alone", {"edgefleet_iotedge_version": "1.5.44-1"}, ["edgefleet_iotedge_identity_service_version"]),
    (
        "connection-string-missing",
        {"edgefleet_dps_connection_string": ""},
        ["edgefleet_dps_connection_string", "shared access policy"],
    ),
    ("sas-key-wrong", "wrong-key", ["edgefleet_dps_connection_string", "401"]),
    ("dps-unreachable", "unreachable", ["edgefleet_dps_connection_string", "reachable"]),
    (
        "group-ca-not-verified",
        {"edgefleet_dps_enrollment_type": "group", "edgefleet_dps_ca_proof_of_possession": False},
        ["edgefleet_dps_ca_proof_of_possession", "verif"],
    ),
    (
        "legacy-ca-past-2038",
        {"edgefleet_generation": "1.1", "edgefleet_pki_ca_valid_days": 5000},
        ["edgefleet_pki_ca_not_after", "2038", "edgefleet_pki_ca_valid_days"],
    ),
    # A value ending in a line break, for every string variable that reaches a file, a command line or DPS: '$'
    # matched before a trailing newline, so each of these used to pass its check.
    *(
        (f"trailing-newline-{name[len('edgefleet_') :]}", {**context, name: value + "\n"}, [name])
        for name, value, context in [
            ("edgefleet_registration_id", "edge-01", {}),
            ("edgefleet_dps_id_scope", "0ne00C0FFEE", {}),
            ("edgefleet_dps_global_endpoint", "https://127.0.0.1:19544/", {}),
            ("edgefleet_iotedge_hostname", "edge-01", {}),
            ("edgefleet_iotedge_agent_image", "mcr.microsoft.com/azureiotedge-agent:1.5", {}),
            ("edgefleet_iotedge_trust_bundle_cert_path", "/etc/aziot/trust-bundle.pem", {}),
            ("edgefleet_iotedge_cert_dir", "/var/aziot/certs", {}),
            ("edgefleet_iotedge_secrets_dir", "/var/aziot/secrets", {}),
            ("edgefleet_iotedge_est_url", "https://est.example.com/.well-known/est", EST),
            ("edgefleet_iotedge_est_bootstrap_cert_path", "/etc/est/boot.pem", {**EST, **EST_BOOTSTRAP}),
            ("edgefleet_iotedge_pkcs11_lib_path", "/usr/lib/softhsm/libsofthsm2.so", PKCS11),
            ("edgefleet_iotedge_apt_uri", "http://127.0.0.1:19580/", {}),
            ("edgefleet_iotedge_apt_suite", "./", {}),
            ("edgefleet_iotedge_apt_signing_key_url", "https://packages.microsoft.com/keys/microsoft.asc", {}),
            ("edgefleet_iotedge_version", "1.5.44-1", {"edgefleet_iotedge_identity_service_version": "1.5.6-1"}),
            ("edgefleet_iotedge_identity_service_version", "1.5.6-1", {"edgefleet_iotedge_version": "1.5.44-1"}),
            ("edgefleet_iotedge_container_engine_package", "moby-engine", {}),
            ("edgefleet_dps_enrollment_group_id", "edgefleet", {"edgefleet_dps_enrollment_type": "group"}),
            ("edgefleet_dps_ca_certificate_name", "edgefleet-root", {}),
            ("edgefleet_pki_root_common_name", "edgefleet Root CA", {}),
            ("edgefleet_pki_ca_not_after", "2036-12-31", {}),
        ]
    ),
    (
        "apt-component-injected",
        {"edgefleet_iotedge_apt_components": ["main\ndeb http://x"]},
        ["edgefleet_iotedge_apt_components"],
    ),
    (
        "twin-tag-key-with-dollar",
        {"edgefleet_dps_twin_tags": {"site": {"$ring": "canary"}}},
        ["edgefleet_dps_twin_tags.site", "'$ring'"],
    ),
    ("twin-tag-key-with-dot", {"edgefleet_dps_twin_tags": {"floor.2": 1}}, ["edgefleet_dps_twin_tags", "'floor.2'"]),
    ("twin-tags-too-deep", {"edgefleet_dps_twin_tags": DEEP_TWIN}, ["edgefleet_dps_twin_tags", "10 levels"]),
    # Wrong types: errors, never conversions (a list would become the CA passphrase "['...']").
    ("passphrase-a-list", {"edgefleet_pki_passphrase": ["s3cret-pass"]}, ["edgefleet_pki_passphrase", "got a list"]),
    ("wait-timeout-not-a-number", {"edgefleet_iotedge_wait_timeout": "soon"}, ["edgefleet_iotedge_wait_timeout"]),
    (
        "check-ignore-not-a-list",
        {"edgefleet_iotedge_check_ignore": "aziot-edge-version"},
        ["edgefleet_iotedge_check_ignore", "list"],
    ),
    ("version-a-number", {"edgefleet_iotedge_version": 1.5}, ["edgefleet_iotedge_version", "Quote"]),
    ("twin-tags-a-string", {"edgefleet_dps_twin_tags": "environment=test"}, ["edgefleet_dps_twin_tags", "dictionary"]),
    # A connection string pasted into the ID scope is named by its kind, never echoed (secrets_of checks the key).
    ("connection-string-as-id-scope", "scope-is-connection-string", ["edgefleet_dps_id_scope", "looks like a secret"]),
    # Errors stay readable when the configuration holds credentials (the EST password is never printed).
    (
        "est-credentials-and-bad-hostname",
        {**EST, **EST_AUTH, "edgefleet_iotedge_hostname": "edge 01"},
        ["edgefleet_iotedge_hostname", "DNS host name"],
    ),
    # A key in a token with the controller's chain (a certificate for another key), and one generated on the device
    # whose URI finds the token by a slot id.
    (
        "pkcs11-with-the-controllers-chain",
        {**PKCS11, "edgefleet_iotedge_pkcs11_lib_path": "/usr/lib/softhsm/libsofthsm2.so"},
        ["edgefleet_iotedge_identity_key_method", "edgefleet_identity_key_origin: device"],
    ),
    (
        "pkcs11-device-key-by-slot-id",
        {
            **PKCS11,
            "edgefleet_iotedge_pkcs11_lib_path": "/usr/lib/softhsm/libsofthsm2.so",
            "edgefleet_identity_key_origin": "device",
            "edgefleet_iotedge_identity_key_pkcs11_uri": "pkcs11:slot-id=0;object=id?pin-value=1234",
        },
        ["edgefleet_iotedge_identity_key_pkcs11_uri", "pkcs11:token=<token label>"],
    ),
    (
        "unknown-variable-with-fail",
        {"edgefleet_iotedge_auto_reprovision_mode": "OnErrorOnly", "edgefleet_unknown_variables": "fail"},
        ["edgefleet_iotedge_auto_reprovision_mode", "did you mean edgefleet_iotedge_auto_reprovisioning_mode"],
    ),
]


def bad_vars(fleet: Fleet, spec) -> dict:
    connection = fleet.group_vars["edgefleet_dps_connection_string"]
    if spec == "wrong-key":
        return {
            "edgefleet_dps_connection_string": re.sub(
                r"SharedAccessKey=[^;]+", "SharedAccessKey=" + "A" * 43 + "=", connection
            )
        }
    if spec == "unreachable":
        return {"edgefleet_dps_connection_string": re.sub(r"HostName=[^;]+", "HostName=127.0.0.1:9", connection)}
    if spec == "scope-is-connection-string":
        return {"edgefleet_dps_id_scope": connection}
    return spec


def test_bad_inventories_fail_early_naming_the_variable_and_change_nothing(fleet_factory, ansible_playbook, tmp_path):
    fleet = fleet_factory(2)
    fresh = fleet.state()
    assert fresh["dps"]["enrollments"] == [] and fresh["iothubs"][0]["devices"] == []
    failures = {}
    for case, spec, expected in BAD_INVENTORIES:
        extra = {**bad_vars(fleet, spec), "edgefleet_pki_dir": str(tmp_path / "pki" / case)}
        run = ansible_playbook(PLAYBOOK, inventory=fleet.inventory, extra_vars=extra)
        missing = [text for text in expected if text not in run.output]
        leaked = [secret for secret in [*secrets_of(fleet), "est-pa55word", "s3cret-pass"] if secret in run.output]
        if run.returncode == 0 or missing or leaked:
            failures[case] = {"rc": run.returncode, "missing": missing, "leaked": leaked, "output": run.output[-3000:]}
            continue
        # Early: nothing reached DPS, IoT Hub, the controller's PKI or the hosts.
        assert fleet.state() == fresh, case
        assert not (tmp_path / "pki" / case).exists(), case
        for host in fleet.hosts:
            assert fleet.existing(host, HOST_PATHS) == [], (case, host)
    assert failures == {}, json.dumps(failures, indent=1)
    assert len(BAD_INVENTORIES) >= 50


def test_check_then_rollout_then_no_change_then_a_config_change(fleet_factory, ansible_playbook):
    fleet = fleet_factory(3)
    fresh = fleet.state()
    for host in fleet.hosts:
        fleet.sh(host, "touch /run/edgefleet-test-rollout-start")

    predicted = ansible_playbook(PLAYBOOK, "--check", "--diff", inventory=fleet.inventory)
    assert predicted.returncode == 0, predicted.output
    assert fleet.state() == fresh
    for host in fleet.hosts:
        assert fleet.existing(host, HOST_PATHS) == [], host
    assert (
        "Would add the repository, update the apt cache and install: aziot-edge, aziot-identity-service"
        in predicted.stdout
    )
    assert "Would write /etc/aziot/config.toml and run iotedge config apply:" in predicted.stdout
    assert 'registration_id = "edge-02"' in predicted.stdout  # --diff shows what would be written
    assert [s for s in secrets_of(fleet) if s in predicted.output] == []

    run = ansible_playbook(PLAYBOOK, "-vvv", "--diff", inventory=fleet.inventory)
    assert run.returncode == 0, run.output
    assert [s for s in secrets_of(fleet) if s in run.output] == []
    hub = fleet.group_vars["lab_iothub_hostname"]
    assert summary_rows(run.stdout) == {host: [host, "assigned", hub, "running"] for host in fleet.hosts}

    state = fleet.state()
    enrollments = {e["registrationId"]: e for e in state["dps"]["enrollments"]}
    assert sorted(enrollments) == fleet.hosts
    assert all(e["capabilities"]["iotEdge"] and e["attestation"]["type"] == "x509" for e in enrollments.values())
    assert [(c["name"], c["isVerified"]) for c in state["dps"]["certificates"]] == [("edgefleet-root", True)]
    registrations = {r["registrationId"]: r for r in state["dps"]["registrations"]}
    assert {r: (v["status"], v["deviceId"]) for r, v in registrations.items()} == {
        h: ("assigned", h) for h in fleet.hosts
    }
    assert sorted(d["deviceId"] for d in state["iothubs"][0]["devices"]) == fleet.hosts

    for host in fleet.hosts:
        assert fleet.stat(host, "/var/aziot") == "root:root 755"
        assert fleet.stat(host, "/var/aziot/certs") == "aziotcs:aziotcs 755"
        assert fleet.stat(host, "/var/aziot/certs/device-id.pem") == "aziotcs:aziotcs 644"
        assert fleet.stat(host, "/var/aziot/secrets") == "aziotks:aziotks 700"
        assert fleet.stat(host, "/var/aziot/secrets/device-id.key.pem") == "aziotks:aziotks 600"
        assert fleet.stat(host, "/etc/aziot/config.toml") == "root:root 600"
        # The chain pushed is the one DPS knows: leaf, intermediate, root, and the leaf's CN is the registration id.
        subjects = fleet.sh(
            host,
            "openssl crl2pkcs7 -nocrl -certfile /var/aziot/certs/device-id.pem | openssl pkcs7 -print_certs -noout | grep subject",
        )
        assert [line.split("CN")[-1].strip(" =") for line in subjects.splitlines()] == [
            host,
            "edgefleet Intermediate CA",
            "edgefleet Root CA",
        ]
        assert re.search(r"^edgeAgent\s+running\s+Up", fleet.sh(host, "iotedge list"), re.M)
        assert_only_the_lab_repository_was_fetched(fleet, host)

    second = ansible_playbook(PLAYBOOK, "-v", inventory=fleet.inventory)
    assert second.returncode == 0, second.output
    assert {host: second.recap(host)["changed"] for host in fleet.hosts} == dict.fromkeys(fleet.hosts, 0)
    # The host check's read was the only module run on a host: the install and provision comparisons were decided
    # from it on the controller, and edgeAgent, running then, was not waited for again.
    assert second.stdout.count("from_observation: true") == 2 * len(fleet.hosts), second.stdout
    assert "from_observation: false" not in second.stdout
    wait_task = "Wait until edgeAgent is running, then run iotedge check]"
    waited = second.stdout.partition(wait_task)[2].partition("TASK [")[0]
    assert sorted(re.findall(r"^(\w+): \[(edge-0\d)\]", waited, re.M)) == [("skipping", h) for h in fleet.hosts]
    assert summary_rows(second.stdout) == {host: [host, "assigned", hub, "running"] for host in fleet.hosts}

    # Drift on a host since the last run: its state is read again and repaired; the other hosts stay unchanged.
    fleet.sh(
        "edge-03", "chmod 0644 /var/aziot/secrets/device-id.key.pem; rm /etc/apt/sources.list.d/edgefleet-iotedge.list"
    )
    repaired = ansible_playbook(PLAYBOOK, inventory=fleet.inventory)
    assert repaired.returncode == 0, repaired.output
    assert {host: repaired.recap(host)["changed"] > 0 for host in fleet.hosts} == {
        "edge-01": False,
        "edge-02": False,
        "edge-03": True,
    }
    assert fleet.stat("edge-03", "/var/aziot/secrets/device-id.key.pem") == "aziotks:aziotks 600"
    assert "edgefleet-iotedge.list" in fleet.sh("edge-03", "ls /etc/apt/sources.list.d/")
    assert summary_rows(repaired.stdout) == {host: [host, "assigned", hub, "running"] for host in fleet.hosts}

    change = {"edgefleet_iotedge_auto_reprovisioning_mode": "OnErrorOnly"}
    preview = ansible_playbook(
        PLAYBOOK, "--check", "--diff", "--limit", "edge-02", inventory=fleet.inventory, extra_vars=change
    )
    assert preview.returncode == 0, preview.output
    assert '-auto_reprovisioning_mode = "Dynamic"' in preview.stdout
    assert '+auto_reprovisioning_mode = "OnErrorOnly"' in preview.stdout
    assert 'auto_reprovisioning_mode = "Dynamic"' in fleet.sh("edge-02", "cat /etc/aziot/config.toml")

    applied = ansible_playbook(PLAYBOOK, "--limit", "edge-02", inventory=fleet.inventory, extra_vars=change)
    assert applied.returncode == 0, applied.output
    assert "RUNNING HANDLER [edgefleet.iotedge.iotedge_provision : Apply the IoT Edge configuration]" in applied.stdout
    assert re.search(r"Reprovision with DPS\] \*+\nchanged: \[edge-02\]", applied.stdout), applied.stdout
    backups = fleet.sh("edge-02", "ls /etc/aziot/ | grep '^config.toml\\..*~$'").split()
    assert len(backups) == 1
    assert "Dynamic" in fleet.sh("edge-02", f"cat /etc/aziot/{backups[0]}")
    assert 'auto_reprovisioning_mode = "OnErrorOnly"' in fleet.sh(
        "edge-02", "cat /etc/aziot/edged/config.d/00-super.toml"
    )
    assert summary_rows(applied.stdout) == {"edge-02": ["edge-02", "assigned", hub, "running"]}


def test_the_first_rollout_and_its_re_run_under_mitogen(fleet_factory, ansible_playbook):
    # mitogen runs the modules in its own interpreters; ansible.builtin.apt's python3-apt respawn broke it. An unknown
    # strategy fails the run, so a passing run ran under mitogen_linear.
    strategy = {
        "ANSIBLE_STRATEGY_PLUGINS": str(Path(ansible_mitogen.__file__).parent / "plugins" / "strategy"),
        "ANSIBLE_STRATEGY": "mitogen_linear",
    }
    fleet = fleet_factory(2)
    for host in fleet.hosts:
        fleet.sh(host, "touch /run/edgefleet-test-rollout-start")
    run = ansible_playbook(PLAYBOOK, inventory=fleet.inventory, env=strategy)
    assert run.returncode == 0, run.output
    hub = fleet.group_vars["lab_iothub_hostname"]
    assert summary_rows(run.stdout) == {host: [host, "assigned", hub, "running"] for host in fleet.hosts}
    for host in fleet.hosts:
        assert_only_the_lab_repository_was_fetched(fleet, host)
        assert fleet.sh(host, "dpkg-query -W -f '${db:Status-Abbrev}' python3-apt 2>/dev/null || true").strip() != "ii"
    again = ansible_playbook(PLAYBOOK, inventory=fleet.inventory, env=strategy)
    assert again.returncode == 0, again.output
    assert {host: again.recap(host)["changed"] for host in fleet.hosts} == dict.fromkeys(fleet.hosts, 0)


def assert_only_the_lab_repository_was_fetched(fleet: Fleet, host: str) -> None:
    """The first rollout (edgefleet_iotedge_apt_update_scope: repository) refreshed the lab repository's lists and
    none of the image's deb.debian.org lists, and apt installed the runtime from it."""
    assert fleet.group_vars["edgefleet_iotedge_apt_update_scope"] == "repository"
    lists = "/var/lib/apt/lists"
    # -cnewer: when apt wrote the file (apt gives a downloaded list the server's Last-Modified as its mtime).
    written = fleet.sh(host, f"find {lists} -maxdepth 1 -type f -cnewer /run/edgefleet-test-rollout-start").split()
    fetched = [path for path in written if path != f"{lists}/lock"]
    repository = fleet.group_vars["edgefleet_iotedge_apt_uri"].split("://", 1)[1].rstrip("/") + "_._"
    assert f"{lists}/{repository}Packages" in fetched, (host, fetched)
    assert [path for path in fetched if "deb.debian.org" in path] == [], (host, fetched)
    assert [path for path in fetched if not path.startswith(f"{lists}/{repository}")] == [], (host, fetched)
    # The image's Debian lists are still those of its build: kept, not refreshed, not removed.
    assert fleet.sh(host, f"ls {lists} | grep -c '^deb.debian.org_' || true").strip() != "0", host
    history = fleet.sh(host, "cat /var/log/apt/history.log")
    installs = re.findall(r"^Install: (.*)$", history, re.M)
    assert any("moby-engine:" in line for line in installs), (host, history)
    assert any("aziot-edge:" in line and "aziot-identity-service:" in line for line in installs), (host, history)


def test_a_host_lost_mid_run_does_not_stop_the_others_and_a_rerun_completes_it(
    fleet_factory, ansible_playbook, ansible_playbook_started, tmp_path
):
    fleet = fleet_factory(3)
    run = ansible_playbook_started(tmp_path / "run.log", PLAYBOOK, inventory=fleet.inventory)
    try:
        # Lose edge-02 once the hosts play has started installing.
        wait_for(lambda: "TASK [edgefleet.iotedge.iotedge_install : Install the container engine" in run.output(), 300)
        fleet.podman("kill", fleet.container("edge-02"))
        finished = run.wait(timeout=600)
    finally:
        run.stop()
    assert finished.returncode != 0
    lost = finished.recap("edge-02")
    assert lost["unreachable"] or lost["failed"]
    hub = fleet.group_vars["lab_iothub_hostname"]
    rows = summary_rows(finished.stdout)
    assert rows["edge-01"] == ["edge-01", "assigned", hub, "running"]
    assert rows["edge-03"] == ["edge-03", "assigned", hub, "running"]
    assert rows["edge-02"][3] == "FAILED"

    restarted = lab(fleet.state_dir, "up", "--hosts", "3", "--container-prefix", CONTAINER_PREFIX, *PORTS)
    assert restarted.returncode == 0, restarted.stderr
    rerun = ansible_playbook(PLAYBOOK, inventory=fleet.inventory)
    assert rerun.returncode == 0, rerun.output
    assert summary_rows(rerun.stdout) == {host: [host, "assigned", hub, "running"] for host in fleet.hosts}
    assert rerun.recap("edge-01")["changed"] == 0 and rerun.recap("edge-03")["changed"] == 0


def wait_for(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.5)
