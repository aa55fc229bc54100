"""The iothub_deployment and iothub_deployment_info cores against the in-process IoT Hub emulator, through the real
azure-iot-hub SDK: what the hub stores, what it applies to the edge devices' module twins, and its metrics."""

from __future__ import annotations

import pytest
from azure.iot.hub import IoTHubRegistryManager
from azure.iot.hub.models import Twin

from ansible_collections.edgefleet.iotedge.plugins.module_utils._http import ApiError, ConfigurationError, RetryPolicy
from ansible_collections.edgefleet.iotedge.plugins.module_utils._iothub import parse_hub_connection_string
from ansible_collections.edgefleet.iotedge.plugins.module_utils._iothub_deployment import (
    NAME_LABEL,
    VERSION_LABEL,
    DeploymentInfoRequest,
    DeploymentRequest,
    IoTHubDeployments,
    deployment_info,
    ensure_deployment,
)

AGENT_IMAGE = "mcr.microsoft.com/azureiotedge-agent:1.5"
HUB_IMAGE = "mcr.microsoft.com/azureiotedge-hub:1.5"


def manifest(image: str = "sensor:1") -> dict:
    return {
        "modulesContent": {
            "$edgeAgent": {
                "properties.desired": {
                    "schemaVersion": "1.1",
                    "runtime": {"type": "docker", "settings": {}},
                    "systemModules": {
                        "edgeAgent": {"type": "docker", "settings": {"image": AGENT_IMAGE}},
                        "edgeHub": {"type": "docker", "status": "running", "settings": {"image": HUB_IMAGE}},
                    },
                    "modules": {"sensor": {"type": "docker", "status": "running", "settings": {"image": image}}},
                }
            },
            "$edgeHub": {
                "properties.desired": {"schemaVersion": "1.1", "routes": {}, "storeAndForwardConfiguration": {}}
            },
        }
    }


LAYER = {
    "modulesContent": {
        "$edgeAgent": {
            "properties.desired.modules.gpu": {"type": "docker", "status": "running", "settings": {"image": "gpu:1"}}
        },
        "$edgeHub": {"properties.desired.routes.gpu": "FROM /messages/modules/gpu/* INTO $upstream"},
    }
}


class Recorder:
    def __init__(self):
        self.waits = []

    def __call__(self, seconds):
        self.waits.append(seconds)


@pytest.fixture
def slept():
    return Recorder()


@pytest.fixture
def client(cloud, slept):
    return IoTHubDeployments(
        parse_hub_connection_string(cloud.hub_connection_string),
        ca_bundle=str(cloud.ca_bundle),
        retry=RetryPolicy(sleep=slept, max_retries=3),
    )


@pytest.fixture
def fleet(cloud):
    """Three edge devices (two canary, one main) and a canary device that is not an edge device."""
    registry = IoTHubRegistryManager.from_connection_string(cloud.hub_connection_string)
    for device_id, ring, edge in (("gw-1", "canary", True), ("gw-2", "canary", True), ("gw-3", "main", True)):
        registry.create_device_with_certificate_authority(device_id, "enabled", iot_edge=edge)
        registry.update_twin(device_id, Twin(tags={"ring": ring}))
    registry.create_device_with_certificate_authority("leaf-1", "enabled", iot_edge=False)
    registry.update_twin("leaf-1", Twin(tags={"ring": "canary"}))
    return registry


def hub_state(cloud) -> dict:
    return cloud.state()["iothubs"][0]


def stored(cloud) -> dict:
    return {record["id"]: record for record in hub_state(cloud)["configurations"]}


def agent_twin(cloud, device_id: str) -> dict:
    device = next(d for d in hub_state(cloud)["devices"] if d["deviceId"] == device_id)
    return next(m for m in device["modules"] if m["moduleId"] == "$edgeAgent")["twin"]


def sensor_image(cloud, device_id: str) -> str:
    return agent_twin(cloud, device_id)["properties"]["desired"]["modules"]["sensor"]["settings"]["image"]


def apply(client, check_mode=False, **overrides):
    values = {"name": "sensors", "manifest": manifest(), "target_tags": {"ring": "canary"}, "priority": 10}
    values.update(overrides)
    return ensure_deployment(client, DeploymentRequest(**values), check_mode=check_mode)


def test_create_on_tagged_edge_devices_then_no_change_then_settings_in_place(cloud, fleet, client):
    first = apply(client, labels={"release": "1"})
    record = stored(cloud)[first["id"]]
    assert record["targetCondition"] == "tags.ring='canary'" and record["priority"] == 10
    assert record["labels"] == {"release": "1", NAME_LABEL: "sensors", VERSION_LABEL: first["version"]}
    assert record["content"] == manifest()  # stored as sent, empty objects included
    assert record["systemMetrics"]["results"]["targetedCount"] == 2  # gw-1, gw-2; never the leaf device
    assert sensor_image(cloud, "gw-1") == sensor_image(cloud, "gw-2") == "sensor:1"
    assert "modules" not in agent_twin(cloud, "gw-3")["properties"]["desired"]
    assert first["configuration"]["etag"] == record["etag"] and "content" not in first["configuration"]

    again = apply(client, labels={"release": "1"})
    assert again["changed"] is False and stored(cloud)[first["id"]]["etag"] == record["etag"]

    widened = apply(client, target_tags={"ring": ["canary", "main"]}, priority=20)
    assert widened["updated"] == [first["id"]] and widened["created"] == []
    record = stored(cloud)[first["id"]]
    assert record["targetCondition"] == "tags.ring IN ['canary', 'main']" and record["priority"] == 20
    assert record["labels"] == {NAME_LABEL: "sensors", VERSION_LABEL: first["version"]}
    assert record["systemMetrics"]["results"]["targetedCount"] == 3 and sensor_image(cloud, "gw-3") == "sensor:1"
    assert widened["configuration"]["systemMetrics"]["results"]["appliedCount"] == 3


def test_a_new_version_is_created_and_the_old_one_removed_once_it_has_taken_over(cloud, fleet, client):
    v1 = apply(client)["id"]
    # Lower priority: v1 keeps winning on the canary devices, so it must stay.
    waiting = apply(client, manifest=manifest("sensor:2"), priority=5)
    v2 = waiting["id"]
    assert v2 != v1 and waiting["created"] == [v2] and set(stored(cloud)) == {v1, v2}
    assert waiting["kept"][0]["id"] == v1
    assert "2 device(s) that both versions target do not apply" in waiting["kept"][0]["reason"]
    assert agent_twin(cloud, "gw-1")["configurations"] == {v1: {"status": "Applied"}, v2: {"status": "Targeted"}}
    assert sensor_image(cloud, "gw-1") == "sensor:1"

    # Same priority: the newer version wins the tie, takes over, and v1 goes in the same run.
    taken = apply(client, manifest=manifest("sensor:2"), priority=10)
    assert taken["updated"] == [v2] and taken["removed"] == [v1] and taken["kept"] == []
    assert set(stored(cloud)) == {v2}
    assert agent_twin(cloud, "gw-1")["configurations"] == {v2: {"status": "Applied"}}
    assert sensor_image(cloud, "gw-1") == sensor_image(cloud, "gw-2") == "sensor:2"
    assert apply(client, manifest=manifest("sensor:2"), priority=10)["changed"] is False


def test_a_rollback_raises_the_stored_previous_version_by_its_version_alone(cloud, fleet, client):
    everywhere = {"ring": ["canary", "main"]}
    v1 = apply(client, target_tags=everywhere)
    v2 = apply(client, manifest=manifest("sensor:2"), remove_superseded="never")  # the canary ring only
    assert sensor_image(cloud, "gw-1") == "sensor:2" and sensor_image(cloud, "gw-3") == "sensor:1"

    back = apply(
        client, manifest=None, version=v1["version"], target_tags=everywhere, priority=110, remove_superseded="never"
    )
    assert (back["id"], back["updated"], back["created"]) == (v1["id"], [v1["id"]], [])
    record = stored(cloud)[v1["id"]]
    assert (record["priority"], record["targetCondition"]) == (110, "tags.ring IN ['canary', 'main']")
    assert record["content"] == manifest()  # the content the hub held, sent back unchanged
    assert set(stored(cloud)) == {v1["id"], v2["id"]}
    for device_id in ("gw-1", "gw-2", "gw-3"):
        assert sensor_image(cloud, device_id) == "sensor:1"
        assert agent_twin(cloud, device_id)["configurations"][v1["id"]] == {"status": "Applied"}

    with pytest.raises(
        ConfigurationError, match="version: IoT Hub holds no version 000000000000 of sensors; its stored versions"
    ):
        apply(client, manifest=None, version="000000000000")


def test_layered_adds_a_module_on_top_of_the_standard_deployment(cloud, fleet, client):
    apply(client)
    fleet.update_twin("gw-2", Twin(tags={"gpu": True}))
    layered = apply(client, name="gpu", manifest=LAYER, layered=True, target_tags={"gpu": True}, priority=20)
    assert layered["layered"] is True and layered["modules"] == ["gpu"]
    assert stored(cloud)[layered["id"]]["targetCondition"] == "tags.gpu=true"
    assert set(agent_twin(cloud, "gw-2")["properties"]["desired"]["modules"]) == {"sensor", "gpu"}
    assert set(agent_twin(cloud, "gw-1")["properties"]["desired"]["modules"]) == {"sensor"}
    assert layered["configuration"]["systemMetrics"]["results"]["appliedCount"] == 1


def test_absent_removes_every_version_and_leaves_the_modules(cloud, fleet, client):
    v1 = apply(client)["id"]
    v2 = apply(client, manifest=manifest("sensor:2"), remove_superseded="never")["id"]
    other = apply(client, name="other")["id"]
    assert set(stored(cloud)) == {v1, v2, other}
    gone = apply(client, state="absent", manifest=None, target_tags=None)
    assert sorted(gone["removed"]) == sorted([v1, v2])
    assert [record["labels"][NAME_LABEL] for record in stored(cloud).values()] == ["other"]
    # Deleting a deployment removes no module: the other deployment (same content as v1) applies now.
    assert sensor_image(cloud, "gw-1") == "sensor:1"


def test_check_mode_writes_nothing(cloud, fleet, client):
    apply(client)
    before = hub_state(cloud)
    predictions = [
        apply(client, check_mode=True, manifest=manifest("sensor:2")),
        apply(client, check_mode=True, priority=50),
        apply(client, check_mode=True, state="absent"),
        apply(client, check_mode=True, name="fresh"),
    ]
    assert all(prediction["changed"] for prediction in predictions)
    assert predictions[1]["configuration"]["priority"] == 50
    assert hub_state(cloud) == before


def test_info_reports_metrics_and_what_each_device_applies(cloud, fleet, client):
    version = apply(
        client,
        metrics={
            "running": "SELECT deviceId FROM devices.modules WHERE moduleId = '$edgeAgent' "
            "AND properties.reported.modules.sensor.runtimeStatus = 'running'"
        },
    )
    hub = cloud.hubs[0]
    desired = agent_twin(cloud, "gw-1")["properties"]["desired"]["$version"]
    hub.report(
        "gw-1",
        "$edgeAgent",
        {
            "lastDesiredVersion": desired,
            "lastDesiredStatus": {"code": 200, "description": ""},
            "systemModules": {"edgeAgent": {"runtimeStatus": "running"}, "edgeHub": {"runtimeStatus": "running"}},
            "modules": {"sensor": {"runtimeStatus": "running"}},
        },
        "Connected",
    )
    info = deployment_info(client, DeploymentInfoRequest(name="sensors", devices=True))
    (view,) = info["deployments"]
    assert view["id"] == version["id"] and view["images"] == {"sensor": "sensor:1"} and view["layered"] is False
    assert view["system_metrics"] == {
        "targetedCount": 2,
        "appliedCount": 2,
        "reportedSuccessfulCount": 1,
        "reportedFailedCount": 0,
    }
    assert view["metrics"] == {"running": 1}
    devices = {device["device_id"]: device for device in info["devices"]}
    assert set(devices) == {"gw-1", "gw-2"}
    assert devices["gw-1"]["in_sync"] is True and devices["gw-1"]["modules"] == {"sensor": "running"}
    assert devices["gw-1"]["last_desired_status"] == {"code": 200, "description": ""}
    assert devices["gw-2"]["in_sync"] is False and devices["gw-2"]["applied"] == [version["id"]]
    assert deployment_info(client, DeploymentInfoRequest(ids=["nope"]))["missing"] == ["nope"]


def test_throttling_is_retried_after_the_time_the_hub_asks_for(cloud, fleet, client, slept):
    cloud.faults.add(
        {
            "match": {"operation": "Configuration_CreateOrUpdate"},
            "count": 2,
            "action": {"status": 429, "retryAfter": 2},
        }
    )
    result = apply(client)
    assert result["id"] in stored(cloud)
    assert len(slept.waits) == 2 and all(2 <= wait < 3 for wait in slept.waits)


def test_the_hubs_refusal_names_the_option(cloud, fleet, client):
    with pytest.raises(ApiError) as error:
        apply(client, metrics={"broken": "SELECT FROM nowhere"})
    assert str(error.value).startswith("metrics: IoT Hub refused a custom metric query")
    assert error.value.status == 400 and stored(cloud) == {}


def test_a_tag_value_with_quotes_and_backslashes_targets_exactly_its_devices(cloud, fleet, client):
    fleet.update_twin("gw-3", Twin(tags={"ring": "main", "site": "O'Brien's \\ yard"}), "*")
    fleet.update_twin("gw-2", Twin(tags={"ring": "canary", "site": "O'Brien"}), "*")
    result = apply(client, target_tags={"site": "O'Brien's \\ yard"})
    record = stored(cloud)[result["id"]]
    assert record["targetCondition"] == r"tags.site='O\'Brien\'s \\ yard'"
    assert record["systemMetrics"]["results"]["targetedCount"] == 1
    assert sensor_image(cloud, "gw-3") == "sensor:1"
    assert "modules" not in agent_twin(cloud, "gw-2")["properties"]["desired"]
