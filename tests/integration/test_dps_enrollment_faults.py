"""dps_enrollment under injected faults: transient failures are absorbed, an exhausted budget fails clearly."""

from __future__ import annotations

import json
from collections import Counter

PLAYBOOK = "tests/integration/playbooks/dps_enrollment_fleet.yml"
FLEET = 200


def enroll(ansible_playbook, cloud, tmp_path, **extra_vars):
    results_file = tmp_path / "result.json"
    results_file.unlink(missing_ok=True)
    run = ansible_playbook(
        PLAYBOOK,
        extra_vars={
            "pki_dir": str(tmp_path / "pki"),
            "device_count": FLEET,
            "results_file": str(results_file),
            **extra_vars,
        },
        env=cloud.env,
    )
    return run, (json.loads(results_file.read_text()) if results_file.exists() else None)


def enrolled_ids(cloud) -> list[str]:
    return sorted(record["registrationId"] for record in cloud.state()["dps"]["enrollments"])


def test_thirty_percent_faults_end_with_exactly_the_intended_enrollments(ansible_playbook, cloud, tmp_path):
    # 10% each of 429 (Retry-After 1), 503 and dropped connections, half of the drops after DPS acted. A rule
    # sees only the requests the rules before it let through, hence the rates: each hits 10% (5%) of all.
    dps = {"service": "dps"}
    cloud.add_fault(dps, {"status": 429, "retryAfter": 1}, count=1000, rate=0.10)
    cloud.add_fault(dps, {"status": 503}, count=1000, rate=0.10 / 0.90)
    cloud.add_fault(dps, {"drop": True}, count=1000, rate=0.05 / 0.80)
    cloud.add_fault(dps, {"drop": True, "afterProcessing": True}, count=1000, rate=0.05 / 0.75)

    run, result = enroll(ansible_playbook, cloud, tmp_path)

    assert run.returncode == 0, run.output
    expected = [f"dev-{n:04d}" for n in range(1, FLEET + 1)]
    assert enrolled_ids(cloud) == expected
    assert sorted(result["created"]) == expected
    service_requests = [r for r in cloud.requests() if r["service"] == "dps"]
    outcomes = Counter("dropped" if r["status"] is None else r["status"] for r in service_requests)
    failed = outcomes[429] + outcomes[503] + outcomes["dropped"]
    assert outcomes[429] and outcomes[503] and outcomes["dropped"], outcomes
    assert 0.15 <= failed / len(service_requests) <= 0.45, outcomes
    # every certificate is the device's own
    for record in cloud.state()["dps"]["enrollments"]:
        info = record["attestation"]["x509"]["clientCertificates"]["primary"]["info"]
        assert info["subjectName"] == f"CN={record['registrationId']}"


def test_faults_beyond_the_retry_budget_fail_clearly_and_a_rerun_completes(ansible_playbook, cloud, tmp_path):
    # The first bulk call fails three times: one more than max_retries=2 allows. The re-run sees no fault.
    cloud.add_fault({"service": "dps", "operation": "IndividualEnrollment_RunBulkOperation"}, {"status": 503}, count=3)

    run = enroll(ansible_playbook, cloud, tmp_path, max_retries=2)[0]

    assert run.returncode != 0
    assert "IndividualEnrollment_RunBulkOperation: still failing after 3 attempts" in run.output
    assert "A re-run continues where this one stopped" in run.output
    assert "SharedAccessKey" not in run.output
    assert "error_code: 503001" in run.output  # DPS's own code, for a support ticket
    assert enrolled_ids(cloud) == []  # the first bulk call never got through; nothing half-done

    run, result = enroll(ansible_playbook, cloud, tmp_path, max_retries=2)

    assert run.returncode == 0, run.output
    assert enrolled_ids(cloud) == [f"dev-{n:04d}" for n in range(1, FLEET + 1)]
    assert len(result["created"]) == FLEET
