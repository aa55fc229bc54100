"""The dps_enrollment entry point, executed as Ansible executes it: connection errors become clean failures."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

MODULE = Path(__file__).resolve().parents[4] / "plugins" / "modules" / "dps_enrollment.py"
KEY = base64.b64encode(b"a-development-key-that-must-not-leak").decode()


def run_module(tmp_path: Path, env: dict[str, str] | None = None, **args) -> dict:
    args_file = tmp_path / "args.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    environment = {k: v for k, v in os.environ.items() if not k.startswith("EDGEFLEET_")}
    environment.update(PYTHONPATH=os.pathsep.join(sys.path), **(env or {}))
    completed = subprocess.run(
        [sys.executable, str(MODULE), str(args_file)], env=environment, capture_output=True, text=True, check=False
    )
    return json.loads(completed.stdout)


def test_a_missing_connection_string_names_the_option_and_the_environment_variable(tmp_path):
    result = run_module(tmp_path, enrollments=[{"registration_id": "gw-01"}], state="absent")
    assert result["failed"] is True
    assert result["msg"].startswith("connection_string: missing;")
    assert "EDGEFLEET_DPS_CONNECTION_STRING" in result["msg"]


def test_a_malformed_connection_string_fails_without_echoing_the_key(tmp_path):
    result = run_module(
        tmp_path,
        env={"EDGEFLEET_DPS_CONNECTION_STRING": f"HostName=dps.example;SharedAccessKey={KEY}"},
        enrollments=[{"registration_id": "gw-01"}],
        state="absent",
    )
    assert result["failed"] is True
    assert result["msg"].startswith("connection_string: lacks SharedAccessKeyName;")
    assert KEY not in json.dumps(result)


def test_the_connection_string_is_masked_in_the_invocation(tmp_path):
    # An unreachable port on loopback: the module fails after its retry budget, but never shows the string.
    connection_string = f"HostName=127.0.0.1:9;SharedAccessKeyName=provisioningserviceowner;SharedAccessKey={KEY}"
    result = run_module(
        tmp_path,
        connection_string=connection_string,
        enrollments=[{"registration_id": "gw-01"}],
        state="absent",
        max_retries=1,
        retry_budget_seconds=2,
        timeout=2,
    )
    assert result["failed"] is True
    assert "IndividualEnrollment_Get: still failing after 2 attempts" in result["msg"]
    assert result["invocation"]["module_args"]["connection_string"] == "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"
    assert KEY not in json.dumps(result)


def test_bad_items_fail_before_any_request(tmp_path):
    connection_string = f"HostName=127.0.0.1:9;SharedAccessKeyName=provisioningserviceowner;SharedAccessKey={KEY}"
    result = run_module(
        tmp_path, connection_string=connection_string, enrollments=[{"registration_id": "gw-01"}], max_retries=0
    )
    assert result["msg"] == (
        "enrollments[0]: state=present needs primary_certificate or primary_certificate_path (the device's X.509 "
        "certificate)"
    )
