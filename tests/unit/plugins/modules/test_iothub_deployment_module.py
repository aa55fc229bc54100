"""iothub_deployment and iothub_deployment_info executed as Ansible executes them: bad input fails before any
request, and a check/diff, apply, idempotent run against the in-process IoT Hub emulator."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from azure.iot.hub import IoTHubRegistryManager
from azure.iot.hub.models import Twin

from lab.cloud import CloudLab

MODULES = Path(__file__).resolve().parents[4] / "plugins" / "modules"
KEY = base64.b64encode(b"a-development-key-that-must-not-leak").decode()
UNREACHABLE = f"HostName=127.0.0.1:9;SharedAccessKeyName=iothubowner;SharedAccessKey={KEY}"
MANIFEST = {
    "modulesContent": {
        "$edgeAgent": {
            "properties.desired": {
                "schemaVersion": "1.1",
                "runtime": {"type": "docker", "settings": {}},
                "systemModules": {"edgeAgent": {"type": "docker"}, "edgeHub": {"type": "docker"}},
                "modules": {"sensor": {"type": "docker", "status": "running", "settings": {"image": "sensor:1"}}},
            }
        },
        "$edgeHub": {"properties.desired": {"schemaVersion": "1.1", "routes": {}}},
    }
}


def run_module(module: str, tmp_path: Path, *, check=False, diff=False, **args) -> dict:
    args_file = tmp_path / f"{module}-args.json"
    args_file.write_text(
        json.dumps({"ANSIBLE_MODULE_ARGS": {**args, "_ansible_check_mode": check, "_ansible_diff": diff}})
    )
    environment = {k: v for k, v in os.environ.items() if not k.startswith("EDGEFLEET_")}
    environment["PYTHONPATH"] = os.pathsep.join(sys.path)
    completed = subprocess.run(
        [sys.executable, str(MODULES / f"{module}.py"), str(args_file)],
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    return json.loads(completed.stdout)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"layered": True}, "manifest: layered is true but no module sets a path below properties.desired"),
        ({"target_tags": {"group": "a"}}, "target_tags: tag name 'group' cannot be written"),
        ({"name": "Sensors"}, "name: 'Sensors' is not usable"),
        ({"target_tags": None}, "state=present needs target_condition or target_tags"),
        (
            {"manifest_path": "/nonexistent/deployment.json", "manifest": None},
            "manifest_path: /nonexistent/deployment.json",
        ),
    ],
)
def test_bad_input_fails_before_any_request(tmp_path, args, message):
    values = {"connection_string": UNREACHABLE, "name": "sensors", "manifest": MANIFEST, "target_tags": {"ring": "a"}}
    values.update(args)
    values = {key: value for key, value in values.items() if value is not None}
    result = run_module("iothub_deployment", tmp_path, max_retries=0, **values)
    assert result["failed"] is True
    assert result["msg"].startswith(message), result["msg"]
    assert KEY not in json.dumps(result)


def test_registry_passwords_in_the_manifest_are_masked_in_the_output(tmp_path):
    password = "registry-password-that-must-not-leak"
    manifest = json.loads(json.dumps(MANIFEST))
    settings = manifest["modulesContent"]["$edgeAgent"]["properties.desired"]["runtime"]["settings"]
    settings["registryCredentials"] = {"acr": {"address": "a.azurecr.io", "username": "a", "password": password}}
    result = run_module(
        "iothub_deployment",
        tmp_path,
        max_retries=0,
        connection_string=UNREACHABLE,
        name="sensors",
        manifest=manifest,
        target_tags={"group": "a"},
    )
    assert result["failed"] is True and "target_tags: tag name 'group'" in result["msg"]
    shown = result["invocation"]["module_args"]["manifest"]["modulesContent"]["$edgeAgent"]["properties.desired"]
    assert (
        shown["runtime"]["settings"]["registryCredentials"]["acr"]["password"] == "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"
    )
    assert shown["runtime"]["settings"]["registryCredentials"]["acr"]["username"] == "a"
    assert password not in json.dumps(result)


def test_manifest_and_manifest_path_are_mutually_exclusive(tmp_path):
    result = run_module(
        "iothub_deployment",
        tmp_path,
        connection_string=UNREACHABLE,
        name="sensors",
        manifest=MANIFEST,
        manifest_path="/x.json",
        target_condition="*",
    )
    assert result["failed"] is True and "mutually exclusive: manifest|manifest_path" in result["msg"]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with CloudLab.start(tmp_path_factory.mktemp("cloud")) as started:
        yield started


def test_check_apply_and_idempotent_runs_against_the_lab_hub(lab, tmp_path):
    lab.reset()
    registry = IoTHubRegistryManager.from_connection_string(lab.hub_connection_string)
    registry.protocol.config.connection.verify = str(lab.ca_bundle)
    registry.create_device_with_certificate_authority("gw-1", "enabled", iot_edge=True)
    registry.update_twin("gw-1", Twin(tags={"ring": "canary"}))
    manifest_path = tmp_path / "deployment.json"
    manifest_path.write_text(json.dumps(MANIFEST))
    args = {
        "connection_string": lab.hub_connection_string,
        "ca_bundle": str(lab.ca_bundle),
        "name": "sensors",
        "manifest_path": str(manifest_path),
        "target_tags": {"ring": "canary"},
        "priority": 10,
    }

    predicted = run_module("iothub_deployment", tmp_path, check=True, diff=True, **args)
    assert predicted["changed"] is True and predicted["created"] == [predicted["id"]]
    assert list(predicted["diff"]["after"]["versions"]) == [predicted["id"]]
    assert lab.state()["iothubs"][0]["configurations"] == []

    applied = run_module("iothub_deployment", tmp_path, diff=True, **args)
    assert applied["changed"] is True and applied["id"] == predicted["id"]
    (record,) = lab.state()["iothubs"][0]["configurations"]
    assert record["id"] == applied["id"] and record["targetCondition"] == "tags.ring='canary'"
    assert applied["configuration"]["systemMetrics"]["results"]["appliedCount"] == 1
    assert "content" not in applied["configuration"] and "content" not in json.dumps(applied["diff"])

    again = run_module("iothub_deployment", tmp_path, diff=True, **args)
    assert again["changed"] is False and "diff" not in again

    info = run_module(
        "iothub_deployment_info",
        tmp_path,
        connection_string=lab.hub_connection_string,
        ca_bundle=str(lab.ca_bundle),
        name="sensors",
        devices=True,
    )
    assert [view["id"] for view in info["deployments"]] == [applied["id"]]
    assert [device["device_id"] for device in info["devices"]] == ["gw-1"]
    assert info["invocation"]["module_args"]["connection_string"] == "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"
