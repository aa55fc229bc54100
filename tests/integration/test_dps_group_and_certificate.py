"""dps_enrollment_group and dps_certificate through real ansible-playbook runs against the lab emulators.

Every test checks the emulator's real records (GET /_emulator/state), not only what the modules report.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

GROUP = "plant1-edge"


def sha(path: Path, digest: str) -> str:
    out = subprocess.run(
        ["openssl", "x509", "-noout", "-fingerprint", f"-{digest}", "-in", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.split("=", 1)[1].strip().replace(":", "")


def groups(cloud) -> dict:
    return {g["enrollmentGroupId"]: g for g in cloud.state()["dps"]["enrollmentGroups"]}


def certificates(cloud) -> dict:
    return {c["name"]: c for c in cloud.state()["dps"]["certificates"]}


def management_vars(cloud, pki_dir: Path) -> dict:
    return {
        "pki_dir": str(pki_dir),
        "management_url": cloud.lab.dps_url,
        "resource_id": cloud.lab.management_resource_id,
    }


def management_env(cloud) -> dict:
    return {**cloud.env, "EDGEFLEET_DPS_MANAGEMENT_TOKEN": cloud.lab.management_token}


def test_group_four_steps_and_state_in_dps(cloud, ansible_playbook, tmp_path):
    run = ansible_playbook(
        "tests/integration/playbooks/dps_group_four_steps.yml", extra_vars={"pki_dir": str(tmp_path)}, env=cloud.env
    )
    assert run.returncode == 0, run.output
    group = groups(cloud)[GROUP]
    primary = group["attestation"]["x509"]["signingCertificates"]["primary"]
    assert primary["info"]["sha256Thumbprint"] == sha(tmp_path / "ca/intermediate.cert.pem", "sha256")
    assert primary["info"]["sha1Thumbprint"] == sha(tmp_path / "ca/intermediate.cert.pem", "sha1")
    assert "secondary" not in group["attestation"]["x509"]["signingCertificates"]
    assert group["capabilities"] == {"iotEdge": True}
    assert group["provisioningStatus"] == "enabled"
    assert group["initialTwin"]["tags"] == {"site": "plant1", "ring": "canary"}
    assert group["initialTwin"]["properties"]["desired"] == {"telemetryInterval": 30}
    # Exactly one write: check mode and the idempotent runs sent none.
    writes = [r for r in cloud.requests() if r.get("operation") == "EnrollmentGroup_CreateOrUpdate"]
    assert [(w["status"], w.get("ifMatch")) for w in writes] == [(200, None)], writes


def test_certificate_proof_of_possession_and_a_group_that_references_it(cloud, ansible_playbook, tmp_path):
    run = ansible_playbook(
        "tests/integration/playbooks/dps_certificate_four_steps.yml",
        extra_vars=management_vars(cloud, tmp_path),
        env=management_env(cloud),
    )
    assert run.returncode == 0, run.output
    certificate = certificates(cloud)["fleet-root"]
    assert certificate["isVerified"] is True
    assert certificate["verificationCode"] is None  # the code was used up by a successful verify
    assert certificate["info"]["sha1Thumbprint"] == sha(tmp_path / "ca/root.cert.pem", "sha1")
    operations = [r["operation"] for r in cloud.requests() if r["service"] == "dps-management"]
    assert operations.count("DpsCertificate_GenerateVerificationCode") == 1
    assert operations.count("DpsCertificate_VerifyCertificate") == 1
    group = groups(cloud)["plant2-edge"]
    assert group["attestation"]["x509"] == {"caReferences": {"primary": "fleet-root"}}
    assert group["provisioningStatus"] == "disabled"
    assert group["capabilities"] == {"iotEdge": True}
    assert not (tmp_path / "verification.cert.pem").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ca"]


def test_signing_certificate_rotation_then_removal(cloud, ansible_playbook, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    setup = ansible_playbook(
        "tests/integration/playbooks/dps_group_four_steps.yml", extra_vars={"pki_dir": str(first)}, env=cloud.env
    )
    assert setup.returncode == 0, setup.output
    old_etag = groups(cloud)[GROUP]["etag"]

    result_file = tmp_path / "result.json"
    rotate = ansible_playbook(
        "tests/integration/playbooks/dps_group_apply.yml",
        extra_vars={
            "ca_dir": str(second / "ca"),
            "signing_certificate_path": str(second / "ca/intermediate.cert.pem"),
            "result_file": str(result_file),
        },
        env=cloud.env,
    )
    assert rotate.returncode == 0, rotate.output
    result = json.loads(result_file.read_text())
    assert result["changed"] is True and "primary signing certificate" in result["reasons"]
    group = groups(cloud)[GROUP]
    primary = group["attestation"]["x509"]["signingCertificates"]["primary"]["info"]
    assert primary["sha256Thumbprint"] == sha(second / "ca/intermediate.cert.pem", "sha256")
    assert primary["sha256Thumbprint"] != sha(first / "ca/intermediate.cert.pem", "sha256")
    assert group["etag"] != old_etag
    puts = [r for r in cloud.requests() if r.get("operation") == "EnrollmentGroup_CreateOrUpdate"]
    assert puts[-1]["ifMatch"] == old_etag  # the update carried the etag it read
    assert group["initialTwin"]["tags"] == {"site": "plant1"}

    remove = ansible_playbook(
        "tests/integration/playbooks/dps_group_apply.yml",
        extra_vars={"group_state": "absent", "result_file": str(result_file)},
        env=cloud.env,
    )
    assert remove.returncode == 0, remove.output
    assert json.loads(result_file.read_text())["changed"] is True
    assert GROUP not in groups(cloud)
    again = ansible_playbook(
        "tests/integration/playbooks/dps_group_apply.yml",
        extra_vars={"group_state": "absent", "result_file": str(result_file)},
        env=cloud.env,
    )
    assert again.returncode == 0, again.output
    assert json.loads(result_file.read_text())["changed"] is False


def test_diff_shows_thumbprints_and_no_secrets(cloud, ansible_playbook, tmp_path):
    runs = [
        ansible_playbook(
            "tests/integration/playbooks/dps_certificate_four_steps.yml",
            "--diff",
            "-vvv",
            extra_vars=management_vars(cloud, tmp_path),
            env=management_env(cloud),
        ),
        ansible_playbook(
            "tests/integration/playbooks/dps_group_four_steps.yml",
            "--diff",
            "-v",
            extra_vars={"pki_dir": str(tmp_path / "group")},
            env=cloud.env,
        ),
    ]
    for run in runs:
        assert run.returncode == 0, run.output
        assert "PRIVATE KEY" not in run.output
        assert "SharedAccessKey" not in run.output
        assert cloud.lab.dps_connection_string not in run.output
        assert cloud.lab.management_token not in run.output
    assert "sha256_thumbprint" in runs[1].stdout
    assert sha(tmp_path / "ca/root.cert.pem", "sha1") in runs[0].stdout


def test_bad_connection_string_fails_naming_it_and_changes_nothing(cloud, ansible_playbook, tmp_path):
    setup = ansible_playbook(
        "tests/integration/playbooks/dps_group_four_steps.yml", extra_vars={"pki_dir": str(tmp_path)}, env=cloud.env
    )
    assert setup.returncode == 0, setup.output
    before = cloud.state()["dps"]
    requests_before = len(cloud.requests())
    bad = "HostName=127.0.0.1;SharedAccessKeyName=provisioningserviceowner;SharedAccessKey=not base64!"
    run = ansible_playbook(
        "tests/integration/playbooks/dps_group_apply.yml",
        extra_vars={"group_state": "absent", "connection_string": bad},
        env=cloud.env,
    )
    assert run.returncode != 0
    assert "connection_string: SharedAccessKey is not base64" in run.output
    assert "not base64!" not in run.output.replace("is not base64", "")
    assert cloud.state()["dps"] == before
    assert len(cloud.requests()) == requests_before
