"""iothub_device_tags against the in-process IoT Hub emulator with the real SDK: the twins' tags afterwards, what was
sent, and the deployments that follow the tags."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from azure.iot.hub import IoTHubConfigurationManager, IoTHubRegistryManager
from azure.iot.hub.models import Configuration, ConfigurationContent, Twin

from ansible_collections.edgefleet.iotedge.plugins.module_utils._http import (
    ApiError,
    ConfigurationError,
    RetryPolicy,
)
from ansible_collections.edgefleet.iotedge.plugins.module_utils._iothub import (
    IoTHubRegistry,
    parse_hub_connection_string,
)
from ansible_collections.edgefleet.iotedge.plugins.module_utils._iothub_device_tags import (
    DeviceTagsRequest,
    ensure_device_tags,
)

MODULE = Path(__file__).resolve().parents[2] / "plugins" / "modules" / "iothub_device_tags.py"
AGENT_IMAGE = "mcr.microsoft.com/azureiotedge-agent:1.5"
HUB_IMAGE = "mcr.microsoft.com/azureiotedge-hub:1.5"


def lab_registry(cloud, policy="iothubowner"):
    connection = cloud.hub_connection_strings(policy)[0]
    return IoTHubRegistry(
        parse_hub_connection_string(connection),
        ca_bundle=str(cloud.ca_bundle),
        retry=RetryPolicy(sleep=lambda seconds: None),
    )


def other_client(cloud):
    """Another client of the hub (the enrollment's initial twin, a colleague, the portal): the plain SDK."""
    sdk = IoTHubRegistryManager.from_connection_string(cloud.hub_connection_string)
    sdk.protocol.config.connection.verify = str(cloud.ca_bundle)
    return sdk


def seed(cloud, tags_by_device: dict):
    """Edge devices with these tags, as their enrollments' initial twins left them."""
    sdk = other_client(cloud)
    for device_id, tags in tags_by_device.items():
        sdk.create_device_with_certificate_authority(device_id, "enabled", iot_edge=True)
        if tags:
            sdk.update_twin(device_id, Twin(tags=tags), sdk.get_twin(device_id).etag)
    cloud.runtime.request_log.clear()  # hub_requests() shows what the code under test sent
    return sdk


def hub_devices(cloud):
    return {device["deviceId"]: device for device in cloud.state()["iothubs"][0]["devices"]}


def stored_tags(cloud):
    return {device_id: device["twin"]["tags"] for device_id, device in hub_devices(cloud).items()}


def agent_twin(cloud, device_id):
    return next(m["twin"] for m in hub_devices(cloud)[device_id]["modules"] if m["moduleId"] == "$edgeAgent")


def hub_requests(cloud, *methods):
    """(method, path, status, If-Match) of the requests the hub saw, optionally only these methods."""
    return [
        (entry["method"], entry["path"], entry["status"], entry["ifMatch"])
        for entry in cloud.runtime.request_log
        if entry["service"] == "iothub" and (not methods or entry["method"] in methods)
    ]


def run(cloud, devices, check_mode=False, registry=None, **options):
    registry = registry or lab_registry(cloud)
    return ensure_device_tags(registry, DeviceTagsRequest(devices=devices, **options), check_mode=check_mode)


FLEET = {
    "gw-1": {"ring": "canary", "site": {"name": "plant-1", "floor": 2}, "deviceType": "gateway"},
    "gw-2": {"ring": "main", "site": {"name": "plant-1"}},
    "gw-3": {"ring": "main", "wave": 1},
}


# ---- tags in step with inventory -----------------------------------------------------------------------------


def test_a_host_moved_to_main_gets_its_new_tags_in_one_query_and_one_patch(cloud):
    seed(cloud, FLEET)
    etags = {device_id: device["twin"]["etag"] for device_id, device in hub_devices(cloud).items()}
    wanted = {
        "gw-1": {"ring": "main", "site": {"name": "plant-1"}, "deviceType": "gateway"},
        "gw-2": {"ring": "main", "site": {"name": "plant-1"}},
        "gw-3": {"ring": "main", "wave": 1},
    }
    result = run(cloud, wanted)
    assert result["changed"] is True
    assert result["summary"] == {"none": 2, "update": 1, "missing": 0}
    assert result["devices"][0] == {
        "device_id": "gw-1",
        "action": "update",
        "tags_before": FLEET["gw-1"],
        "tags": wanted["gw-1"],
    }
    # The hub's state: the nested "floor" is gone (a plain merge would have kept it), the others untouched.
    assert stored_tags(cloud) == wanted
    assert hub_devices(cloud)["gw-2"]["twin"]["etag"] == etags["gw-2"]
    # One query for the three twins, then one PATCH with the etag the query returned.
    assert hub_requests(cloud) == [
        ("POST", "/devices/query", 200, None),
        ("PATCH", "/twins/gw-1", 200, f'"{etags["gw-1"]}"'),
    ]
    assert result["diff"] == {
        "before": {"gw-1": {"tags": FLEET["gw-1"]}},
        "after": {"gw-1": {"tags": wanted["gw-1"]}},
    }


def test_a_second_run_changes_nothing_and_only_reads(cloud):
    seed(cloud, FLEET)
    wanted = {"gw-1": {"ring": "main"}, "gw-2": {"ring": "main"}, "gw-3": {"ring": "main"}}
    run(cloud, wanted)
    cloud.runtime.request_log.clear()
    again = run(cloud, wanted)
    assert again["changed"] is False
    assert [device["action"] for device in again["devices"]] == ["none", "none", "none"]
    assert again["diff"] == {"before": {}, "after": {}}
    assert hub_requests(cloud) == [("POST", "/devices/query", 200, None)]


def test_check_mode_predicts_and_writes_nothing(cloud):
    seed(cloud, FLEET)
    before = hub_devices(cloud)
    wanted = {"gw-1": {"ring": "main"}, "gw-2": {"ring": "main"}, "ghost": {"ring": "main"}}
    predicted = run(cloud, wanted, check_mode=True)
    assert hub_devices(cloud) == before
    assert {request[0] for request in hub_requests(cloud)} <= {"GET", "POST"}
    assert [device["action"] for device in predicted["devices"]] == ["update", "none", "missing"]
    # purge=managed owns ring, so only ring changes; site and deviceType are not listed anywhere and stay.
    assert predicted["devices"][0]["tags"] == {
        "ring": "main",
        "site": {"name": "plant-1", "floor": 2},
        "deviceType": "gateway",
    }
    applied = run(cloud, wanted)
    assert applied["devices"] == predicted["devices"]
    assert stored_tags(cloud)["gw-1"] == predicted["devices"][0]["tags"]


def test_a_managed_key_is_removed_and_foreign_tags_are_kept(cloud):
    seed(cloud, FLEET)
    # "site" is listed for gw-2, so it is managed and goes from gw-1; "wave" is no longer in inventory but named.
    result = run(
        cloud,
        {"gw-1": {"ring": "canary"}, "gw-2": {"ring": "main", "site": {"name": "plant-1"}}, "gw-3": {"ring": "main"}},
        managed_keys=["wave"],
    )
    assert stored_tags(cloud) == {
        "gw-1": {"ring": "canary", "deviceType": "gateway"},
        "gw-2": {"ring": "main", "site": {"name": "plant-1"}},
        "gw-3": {"ring": "main"},
    }
    assert [device["action"] for device in result["devices"]] == ["update", "none", "update"]


def test_purge_none_and_purge_all(cloud):
    seed(cloud, FLEET)
    run(cloud, {"gw-1": {"site": {"name": "plant-2"}}}, purge="none")
    assert stored_tags(cloud)["gw-1"] == {"ring": "canary", "site": {"name": "plant-2"}, "deviceType": "gateway"}
    run(cloud, {"gw-1": {"ring": "main"}, "gw-3": {}}, purge="all")
    assert stored_tags(cloud)["gw-1"] == {"ring": "main"}
    assert stored_tags(cloud)["gw-3"] == {}


def test_unregistered_devices_are_missing_and_odd_ids_are_read_directly(cloud):
    seed(cloud, {"o'brien": {"ring": "canary"}})
    result = run(cloud, {"o'brien": {"ring": "main"}, "gw-9": {"ring": "main"}})
    assert [(device["device_id"], device["action"]) for device in result["devices"]] == [
        ("o'brien", "update"),
        ("gw-9", "missing"),
    ]
    assert result["devices"][1] == {"device_id": "gw-9", "action": "missing", "tags_before": None, "tags": None}
    assert stored_tags(cloud) == {"o'brien": {"ring": "main"}}  # nothing created
    # The quote keeps o'brien out of the IN query: one GET for it, and one for gw-9 that the query did not return.
    assert [request[:3] for request in hub_requests(cloud, "GET")] == [
        ("GET", "/twins/o'brien", 200),
        ("GET", "/twins/gw-9", 404),
    ]


def test_desired_properties_are_never_touched(cloud):
    sdk = seed(cloud, {"gw-1": {"ring": "canary"}})
    sdk.update_twin("gw-1", Twin(properties={"desired": {"interval": 5}}), sdk.get_twin("gw-1").etag)
    desired_before = hub_devices(cloud)["gw-1"]["twin"]["properties"]["desired"]
    run(cloud, {"gw-1": {"ring": "main"}}, purge="all")
    twin = hub_devices(cloud)["gw-1"]["twin"]
    assert twin["tags"] == {"ring": "main"} and twin["properties"]["desired"] == desired_before


# ---- deployments follow the tags ------------------------------------------------------------------------------


def deployment(configuration_id: str, module: str, condition: str) -> Configuration:
    agent = {
        "schemaVersion": "1.1",
        "runtime": {"type": "docker", "settings": {}},
        "systemModules": {
            "edgeAgent": {"type": "docker", "settings": {"image": AGENT_IMAGE}},
            "edgeHub": {"type": "docker", "status": "running", "settings": {"image": HUB_IMAGE}},
        },
        "modules": {module: {"type": "docker", "status": "running", "settings": {"image": f"{module}:1"}}},
    }
    hub = {"schemaVersion": "1.1", "routes": {}, "storeAndForwardConfiguration": {}}
    content = {"$edgeAgent": {"properties.desired": agent}, "$edgeHub": {"properties.desired": hub}}
    return Configuration(
        id=configuration_id,
        content=ConfigurationContent(modules_content=content),
        target_condition=condition,
        priority=10,
    )


def test_the_canary_deployment_stops_applying_to_a_device_moved_to_main(cloud):
    seed(cloud, {"gw-1": {"ring": "canary"}, "gw-2": {"ring": "canary"}, "gw-3": {"ring": "main"}})
    configurations = IoTHubConfigurationManager.from_connection_string(cloud.hub_connection_string)
    configurations.protocol.config.connection.verify = str(cloud.ca_bundle)
    configurations.create_configuration(deployment("canary-v2", "sensor-v2", "tags.ring='canary'"))
    configurations.create_configuration(deployment("main-v1", "sensor-v1", "tags.ring='main'"))
    assert set(agent_twin(cloud, "gw-1")["configurations"]) == {"canary-v2"}
    assert sorted(agent_twin(cloud, "gw-1")["properties"]["desired"]["modules"]) == ["sensor-v2"]

    run(cloud, {"gw-1": {"ring": "main"}, "gw-2": {"ring": "canary"}, "gw-3": {"ring": "main"}})

    assert stored_tags(cloud)["gw-1"] == {"ring": "main"}
    # The hub re-evaluates the target conditions: gw-1 now runs main's modules and canary targets gw-2 only.
    assert set(agent_twin(cloud, "gw-1")["configurations"]) == {"main-v1"}
    assert sorted(agent_twin(cloud, "gw-1")["properties"]["desired"]["modules"]) == ["sensor-v1"]
    assert set(agent_twin(cloud, "gw-2")["configurations"]) == {"canary-v2"}
    assert configurations.get_configuration("canary-v2").system_metrics.results["targetedCount"] == 1
    assert configurations.get_configuration("main-v1").system_metrics.results["targetedCount"] == 2


# ---- races, throttling, rights --------------------------------------------------------------------------------


def racing_registry(cloud, change, times=1):
    """A registry whose first ``times`` twin writes are each preceded by ``change(other_client, device_id)``."""
    registry = lab_registry(cloud)
    sdk = other_client(cloud)
    write = registry.update_twin_tags
    left = [times]

    def update_twin_tags(device_id, tags_patch, etag):
        if left[0] > 0:
            left[0] -= 1
            change(sdk, device_id)
        return write(device_id, tags_patch, etag)

    registry.update_twin_tags = update_twin_tags
    return registry


def set_owner(sdk, device_id):
    twin = sdk.get_twin(device_id)
    sdk.update_twin(device_id, Twin(tags={"owner": f"team-{twin.version}"}), twin.etag)


def test_a_twin_changed_between_read_and_write_is_read_again_and_written(cloud):
    seed(cloud, FLEET)
    registry = racing_registry(cloud, set_owner)
    result = run(cloud, {"gw-1": {"ring": "main"}}, registry=registry)
    assert result["devices"][0]["action"] == "update"
    tags = stored_tags(cloud)["gw-1"]
    assert tags["ring"] == "main" and tags["owner"].startswith("team-")  # the other client's tag survives
    assert [request[2] for request in hub_requests(cloud, "PATCH")] == [200, 412, 200]
    assert [request[1] for request in hub_requests(cloud, "GET")] == ["/twins/gw-1", "/twins/gw-1"]


def test_a_twin_that_keeps_changing_fails_naming_it_after_the_others(cloud):
    seed(cloud, FLEET)
    registry = racing_registry(cloud, set_owner, times=2)
    with pytest.raises(ApiError) as failure:
        run(cloud, {"gw-1": {"ring": "main"}, "gw-2": {"ring": "canary"}}, registry=registry)
    message = str(failure.value)
    assert "'gw-1' changed between read and write twice" in message and "412 PreconditionFailed" in message
    assert "Tags written for the others: gw-2" in message
    assert failure.value.status == 412 and failure.value.operation == "Devices_UpdateTwin"
    tags = stored_tags(cloud)
    assert tags["gw-1"]["ring"] == "canary" and tags["gw-2"]["ring"] == "canary"


def test_throttling_is_retried_as_the_hub_asks(cloud):
    seed(cloud, FLEET)
    for operation in ("Query_GetTwins", "Devices_UpdateTwin"):
        cloud.faults.add(
            {
                "match": {"service": "iothub", "operation": operation},
                "count": 1,
                "action": {"status": 429, "retryAfter": 1},
            }
        )
    registry = lab_registry(cloud)
    result = run(cloud, {"gw-1": {"ring": "main"}}, registry=registry)
    assert result["devices"][0]["action"] == "update" and stored_tags(cloud)["gw-1"]["ring"] == "main"
    assert registry.retry.retries == 2
    assert [request[2] for request in hub_requests(cloud, "POST", "PATCH")] == [429, 200, 429, 200]


def test_a_lost_patch_answer_is_found_applied(cloud):
    # The hub applies the PATCH and the connection drops: the policy sends it again with the old etag (412), and the
    # twin read again already has the wanted tags.
    seed(cloud, FLEET)
    cloud.faults.add(
        {
            "match": {"service": "iothub", "operation": "Devices_UpdateTwin"},
            "count": 1,
            "action": {"drop": True, "afterProcessing": True},
        }
    )
    registry = lab_registry(cloud)
    result = run(cloud, {"gw-1": {"ring": "main"}}, registry=registry)
    assert result["changed"] is True and result["devices"][0]["action"] == "update"
    assert stored_tags(cloud)["gw-1"]["ring"] == "main"
    assert registry.retry.retries == 1


def test_a_policy_without_service_connect_fails_at_the_write(cloud):
    seed(cloud, FLEET)
    registry = lab_registry(cloud, policy="registryRead")
    with pytest.raises(ApiError) as failure:
        run(cloud, {"gw-1": {"ring": "main"}}, registry=registry)
    assert failure.value.status == 401 and failure.value.operation == "Devices_UpdateTwin"
    assert registry.retry.retries == 0 and stored_tags(cloud)["gw-1"]["ring"] == "canary"


def test_bad_tags_are_refused_before_any_request(cloud):
    seed(cloud, FLEET)
    with pytest.raises(ConfigurationError, match=r"devices\['gw-2'\]\.site: key 'floor\.2'"):
        run(cloud, {"gw-1": {"ring": "main"}, "gw-2": {"site": {"floor.2": 1}}})
    assert hub_requests(cloud) == []


# ---- the module entry point ------------------------------------------------------------------------------------


def run_module(tmp_path, cloud, check_mode=False, diff=False, **args):
    args_file = tmp_path / "args.json"
    module_args = {"ca_bundle": str(cloud.ca_bundle), **args, "_ansible_check_mode": check_mode, "_ansible_diff": diff}
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": module_args}))
    environment = {k: v for k, v in os.environ.items() if not k.startswith("EDGEFLEET_")}
    environment.update(
        PYTHONPATH=os.pathsep.join(sys.path), EDGEFLEET_IOTHUB_CONNECTION_STRING=cloud.hub_connection_string
    )
    completed = subprocess.run(
        [sys.executable, str(MODULE), str(args_file)], env=environment, capture_output=True, text=True, check=False
    )
    return json.loads(completed.stdout)


def test_the_module_in_check_and_diff_mode_then_for_real(cloud, tmp_path):
    seed(cloud, FLEET)
    devices = {"gw-1": {"ring": "main"}, "ghost": {"ring": "main"}}
    predicted = run_module(tmp_path, cloud, check_mode=True, diff=True, devices=devices)
    assert predicted["changed"] is True and "failed" not in predicted
    after = {"ring": "main", "site": {"name": "plant-1", "floor": 2}, "deviceType": "gateway"}
    assert predicted["diff"] == {"before": {"gw-1": {"tags": FLEET["gw-1"]}}, "after": {"gw-1": {"tags": after}}}
    assert predicted["summary"] == {"none": 0, "update": 1, "missing": 1}
    assert stored_tags(cloud)["gw-1"] == FLEET["gw-1"]
    applied = run_module(tmp_path, cloud, devices=devices)
    assert applied["changed"] is True and "diff" not in applied
    assert stored_tags(cloud)["gw-1"] == after
    again = run_module(tmp_path, cloud, diff=True, devices=devices)
    assert again["changed"] is False and "diff" not in again


def test_the_module_names_the_option_to_fix(cloud, tmp_path):
    seed(cloud, FLEET)
    refused = run_module(tmp_path, cloud, devices={"gw-1": {}}, purge="all", managed_keys=["ring"])
    assert refused["failed"] is True and refused["msg"].startswith("managed_keys: only used with purge=managed")
    device_string = cloud.hub_connection_string.replace("SharedAccessKeyName=iothubowner", "DeviceId=gw")
    result = run_module(tmp_path, cloud, devices={"gw-1": {}}, connection_string=device_string)
    assert result["failed"] is True and "device or module connection string" in result["msg"]
    assert result["invocation"]["module_args"]["connection_string"] == "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"
    assert stored_tags(cloud) == FLEET
