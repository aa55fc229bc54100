"""dps_enrollment through real ansible-playbook runs against the lab DPS; state read from the control plane."""

from __future__ import annotations

import json
import subprocess

PLAYBOOK = "tests/integration/playbooks/dps_enrollment_phases.yml"
DEVICES = [f"gw-{n:02d}" for n in range(1, 13)]


def sha256_of(path) -> str:
    der = subprocess.run(
        ["openssl", "x509", "-noout", "-fingerprint", "-sha256", "-in", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return der.strip().split("=", 1)[1].replace(":", "").upper()


def enrollments_in(state: dict) -> dict[str, dict]:
    return {record["registrationId"]: record for record in state["dps"]["enrollments"]}


def run_phase(ansible_playbook, cloud, tmp_path, phase: str, *args: str) -> dict:
    results_file = tmp_path / f"{phase}.json"
    run = ansible_playbook(
        PLAYBOOK,
        "--diff",
        *args,
        extra_vars={"pki_dir": str(tmp_path / "pki"), "phase": phase, "results_file": str(results_file)},
        env=cloud.env,
    )
    assert run.returncode == 0, run.output
    key = cloud.env["EDGEFLEET_DPS_CONNECTION_STRING"].split("SharedAccessKey=", 1)[1]
    assert "SharedAccessKey" not in run.output and key not in run.output
    assert "PRIVATE KEY" not in run.output
    return json.loads(results_file.read_text())[phase]


def test_create_rotate_and_remove(ansible_playbook, cloud, tmp_path):
    steps = run_phase(ansible_playbook, cloud, tmp_path, "create")
    # check mode wrote nothing: the apply step still had all twelve to create
    assert steps[0]["created"] == DEVICES and steps[1]["created"] == DEVICES
    assert steps[3]["created"] == [] and steps[3]["updated"] == []

    state = enrollments_in(cloud.state())
    assert sorted(state) == DEVICES
    for device in DEVICES:
        record = state[device]
        leaf = tmp_path / "pki/identities" / device / "identity.cert.pem"
        certificate = record["attestation"]["x509"]["clientCertificates"]["primary"]
        assert certificate["info"]["sha256Thumbprint"] == sha256_of(leaf)
        assert certificate["info"]["subjectName"] == f"CN={device}"
        assert record["capabilities"] == {"iotEdge": True}
        assert record["provisioningStatus"] == "enabled"
        assert record["initialTwin"]["tags"] == {"site": "berlin", "quote": 'it\'s "quoted"'}

    # Twelve enrollments: two bulk creates of at most ten, reads through the paged query, never one PUT each.
    bulk_writes = [r for r in cloud.requests() if r["operation"] == "IndividualEnrollment_RunBulkOperation"]
    assert len(bulk_writes) == 2
    assert not [r for r in cloud.requests() if r["operation"] == "IndividualEnrollment_CreateOrUpdate"]

    etags_before = {device: record["etag"] for device, record in state.items()}
    steps = run_phase(ansible_playbook, cloud, tmp_path, "rotate", "-vvv")
    assert steps[1]["updated"] == ["gw-01"]
    before, after = steps[1]["diff"]["before"]["gw-01"], steps[1]["diff"]["after"]["gw-01"]
    assert before["primary_thumbprint"] == after["secondary_thumbprint"]
    state = enrollments_in(cloud.state())
    slots = state["gw-01"]["attestation"]["x509"]["clientCertificates"]
    assert slots["primary"]["info"]["sha256Thumbprint"] == sha256_of(tmp_path / "pki/next/gw-01/identity.cert.pem")
    assert slots["secondary"]["info"]["sha256Thumbprint"] == sha256_of(
        tmp_path / "pki/identities/gw-01/identity.cert.pem"
    )
    # the rotation kept what it did not manage and touched no other enrollment
    assert state["gw-01"]["initialTwin"]["tags"]["site"] == "berlin"
    assert state["gw-01"]["etag"] != etags_before["gw-01"]
    assert all(state[d]["etag"] == etags_before[d] for d in DEVICES[1:])
    writes = [r for r in cloud.requests() if r["operation"] == "IndividualEnrollment_RunBulkOperation"]
    assert len(writes) == 3  # two creates before, one update now

    steps = run_phase(ansible_playbook, cloud, tmp_path, "absent")
    assert steps[1]["deleted"] == ["gw-11", "gw-12"]
    assert steps[1]["diff"]["after"] == {"gw-11": None, "gw-12": None}
    assert sorted(enrollments_in(cloud.state())) == DEVICES[:10]
