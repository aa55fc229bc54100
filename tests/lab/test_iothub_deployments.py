"""The hub emulator's automatic configurations: targeting, standard and layered edge deployments, device
configurations, metrics, limits and stored content (lab/cloud/iothub/deployments.py and backend.py)."""

from __future__ import annotations

import datetime as dt

import pytest
from azure.iot.hub import IoTHubConfigurationManager, IoTHubRegistryManager
from azure.iot.hub.models import Configuration, ConfigurationContent, ConfigurationMetrics, Twin
from msrest.exceptions import HttpOperationError

from lab.cloud.clock import IdGenerator, ManualClock
from lab.cloud.iothub.backend import IotHubBackend
from lab.cloud.iothub.errors import IotHubError
from lab.cloud.iothub.query import QueryError, compile_condition, parse_query

NOW = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
AGENT_IMAGE = "mcr.microsoft.com/azureiotedge-agent:1.5"
HUB_IMAGE = "mcr.microsoft.com/azureiotedge-hub:1.5"


def standard(modules: dict[str, str], routes: dict[str, str] | None = None, marker: str = "") -> dict:
    """A standard deployment's modulesContent: edgeAgent with ``modules`` (name -> image), edgeHub with routes."""
    agent = {
        "schemaVersion": "1.1",
        "runtime": {"type": "docker", "settings": {}},
        "systemModules": {
            "edgeAgent": {"type": "docker", "settings": {"image": AGENT_IMAGE}},
            "edgeHub": {"type": "docker", "status": "running", "settings": {"image": HUB_IMAGE}},
        },
        "modules": {
            name: {"type": "docker", "status": "running", "settings": {"image": image}}
            for name, image in modules.items()
        },
    }
    if marker:
        agent["marker"] = marker
    hub = {"schemaVersion": "1.1", "routes": dict(routes or {}), "storeAndForwardConfiguration": {}}
    return {"$edgeAgent": {"properties.desired": agent}, "$edgeHub": {"properties.desired": hub}}


def layer(module: str, image: str, route: str | None = None) -> dict:
    content = {
        "$edgeAgent": {
            f"properties.desired.modules.{module}": {
                "type": "docker",
                "status": "running",
                "settings": {"image": image},
            }
        }
    }
    if route:
        content["$edgeHub"] = {f"properties.desired.routes.{module}": route}
    return content


def body(modules_content: dict, condition: str, priority: int, **extra) -> dict:
    return {"content": {"modulesContent": modules_content}, "targetCondition": condition, "priority": priority, **extra}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW)


@pytest.fixture
def hub(clock: ManualClock) -> IotHubBackend:
    return IotHubBackend(clock, IdGenerator(0), "hub")


def edge_device(hub: IotHubBackend, device_id: str, **tags) -> None:
    hub.put_device(device_id, {"capabilities": {"iotEdge": True}}, None)
    if tags:
        hub.update_twin(device_id, None, {"tags": tags}, None, replace=False)


def agent_desired(hub: IotHubBackend, device_id: str) -> dict:
    return hub.module(device_id, "$edgeAgent").twin.desired


def agent_twin(hub: IotHubBackend, device_id: str) -> dict:
    device = hub.device(device_id)
    return device.module_twin_wire(device.modules["$edgeAgent"])


def report_agent(hub: IotHubBackend, device_id: str, code: int, version: int | None = None) -> None:
    """What edgeAgent reports after a reconcile: the desired $version it acted on and the outcome."""
    desired_version = agent_twin(hub, device_id)["properties"]["desired"]["$version"]
    reported = {"lastDesiredVersion": version or desired_version, "lastDesiredStatus": {"code": code}}
    hub.report(device_id, "$edgeAgent", reported, "Connected")


def metrics(hub: IotHubBackend, configuration_id: str) -> dict:
    return hub.configuration_wire(hub.configuration(configuration_id))["systemMetrics"]["results"]


# ---- standard deployments --------------------------------------------------------------------------------------


def test_the_highest_priority_standard_deployment_applies_and_a_tie_goes_to_the_newest(hub, clock):
    edge_device(hub, "edge-1", ring="canary")
    hub.put_configuration("low", body(standard({"a": "a:1"}), "tags.ring='canary'", 5), None)
    clock.advance(1)
    hub.put_configuration("high", body(standard({"b": "b:1"}), "tags.ring='canary'", 10), None)
    assert sorted(agent_desired(hub, "edge-1")["modules"]) == ["b"]
    clock.advance(1)
    hub.put_configuration("tie", body(standard({"c": "c:1"}), "tags.ring='canary'", 10), None)
    assert sorted(agent_desired(hub, "edge-1")["modules"]) == ["c"]
    assert agent_twin(hub, "edge-1")["configurations"] == {
        "high": {"status": "Targeted"},
        "low": {"status": "Targeted"},
        "tie": {"status": "Applied"},
    }
    # The same instant: creation order still decides.
    hub.put_configuration("tie-2", body(standard({"d": "d:1"}), "tags.ring='canary'", 10), None)
    assert sorted(agent_desired(hub, "edge-1")["modules"]) == ["d"]
    assert metrics(hub, "high") == {
        "targetedCount": 1,
        "appliedCount": 0,
        "reportedSuccessfulCount": 0,
        "reportedFailedCount": 0,
    }


def test_an_empty_target_condition_targets_nothing_and_star_targets_every_edge_device(hub):
    edge_device(hub, "edge-1")
    hub.put_device("leaf", {}, None)
    hub.put_configuration("none", body(standard({"a": "a:1"}), "", 1), None)
    assert agent_desired(hub, "edge-1") == {} and metrics(hub, "none")["targetedCount"] == 0
    hub.put_configuration("all", body(standard({"a": "a:1"}), "*", 1), None)
    assert metrics(hub, "all")["targetedCount"] == 1  # the leaf device is no edge device
    queries = hub.configuration_wire(hub.configuration("all"))["systemMetrics"]["queries"]
    assert queries["targetedCount"] == "select deviceId from devices where capabilities.iotEdge = true"
    assert hub.configuration_wire(hub.configuration("none"))["systemMetrics"]["queries"]["targetedCount"] == ""


def test_retargeting_by_tags_and_deleting_keep_the_last_modules(hub):
    edge_device(hub, "edge-1", ring="canary")
    hub.put_configuration("v1", body(standard({"a": "a:1"}), "tags.ring='canary'", 1), None)
    version = agent_twin(hub, "edge-1")["properties"]["desired"]["$version"]
    hub.update_twin("edge-1", None, {"tags": {"ring": "main"}}, None, replace=False)
    # No longer targeted by anything: the hub does not remove the modules (module-deployment-monitoring.md).
    assert sorted(agent_desired(hub, "edge-1")["modules"]) == ["a"]
    assert "configurations" not in agent_twin(hub, "edge-1")
    assert agent_twin(hub, "edge-1")["properties"]["desired"]["$version"] == version
    hub.put_configuration("main", body(standard({"m": "m:1"}), "tags.ring='main'", 1), None)
    assert sorted(agent_desired(hub, "edge-1")["modules"]) == ["m"]
    hub.delete_configuration("main", None)
    assert sorted(agent_desired(hub, "edge-1")["modules"]) == ["m"]
    assert hub.devices["edge-1"].applied_configuration is None


def test_reported_properties_on_the_device_twin_retarget(hub):
    edge_device(hub, "edge-1")
    hub.put_configuration("gpu", body(standard({"gpu": "gpu:1"}), "properties.reported.hardware = 'gpu'", 1), None)
    assert agent_desired(hub, "edge-1") == {}
    hub.report("edge-1", None, {"hardware": "gpu"})
    assert sorted(agent_desired(hub, "edge-1")["modules"]) == ["gpu"]


# ---- layered deployments ---------------------------------------------------------------------------------------


def test_layers_merge_above_the_base_by_priority_and_leave_the_system_modules(hub, clock):
    edge_device(hub, "edge-1", ring="main", camera=True)
    hub.put_configuration(
        "base", body(standard({"a": "a:1"}, {"up": "FROM /* INTO $upstream"}), "tags.ring='main'", 10), None
    )
    hub.put_configuration(
        "cam", body(layer("camera", "cam:1", "FROM /cam INTO $upstream"), "tags.camera=true", 20), None
    )
    clock.advance(1)
    hub.put_configuration(
        "cam-v2", body(layer("camera", "cam:2", "FROM /cam2 INTO $upstream"), "tags.camera=true", 30), None
    )
    hub.put_configuration("too-low", body(layer("low", "low:1"), "tags.camera=true", 10), None)
    desired = agent_desired(hub, "edge-1")
    assert desired["modules"]["camera"]["settings"]["image"] == "cam:2"  # the higher layer wins the duplicate
    assert sorted(desired["modules"]) == ["a", "camera"]  # a layer needs a higher priority than the base
    assert desired["systemModules"]["edgeHub"]["settings"]["image"] == HUB_IMAGE
    routes = hub.module("edge-1", "$edgeHub").twin.desired["routes"]
    assert routes == {"up": "FROM /* INTO $upstream", "camera": "FROM /cam2 INTO $upstream"}
    assert agent_twin(hub, "edge-1")["configurations"] == {
        "base": {"status": "Applied"},
        "cam": {"status": "Applied"},
        "cam-v2": {"status": "Applied"},
        "too-low": {"status": "Targeted"},
    }
    assert hub.to_state()["devices"][0]["appliedLayers"] == ["cam", "cam-v2"]
    # The tag goes: the layers stop applying and their module leaves the merged desired properties.
    hub.update_twin("edge-1", None, {"tags": {"camera": None}}, None, replace=False)
    assert sorted(agent_desired(hub, "edge-1")["modules"]) == ["a"]
    assert hub.module("edge-1", "$edgeHub").twin.desired["routes"] == {"up": "FROM /* INTO $upstream"}


def test_a_layer_without_a_standard_deployment_does_not_apply(hub):
    edge_device(hub, "edge-1", camera=True)
    hub.put_configuration("cam", body(layer("camera", "cam:1"), "tags.camera=true", 20), None)
    assert agent_desired(hub, "edge-1") == {}
    assert agent_twin(hub, "edge-1")["configurations"] == {"cam": {"status": "Targeted"}}
    assert metrics(hub, "cam")["appliedCount"] == 0 and metrics(hub, "cam")["targetedCount"] == 1


def test_layered_module_twin_properties_replace_or_add_a_section(hub):
    edge_device(hub, "edge-1", ring="main")
    hub.put_module("edge-1", "sensor", {}, None)
    base = standard({"sensor": "sensor:1"})
    base["sensor"] = {"properties.desired": {"SendData": True, "SendInterval": 5}}
    hub.put_configuration("base", body(base, "tags.ring='main'", 1), None)
    extra = layer("extra", "extra:1")
    extra["sensor"] = {"properties.desired.layeredProperties": {"StopAfterCount": 1000}}
    hub.put_configuration("extra", body(extra, "tags.ring='main'", 2), None)
    assert hub.module("edge-1", "sensor").twin.desired == {
        "SendData": True,
        "SendInterval": 5,
        "layeredProperties": {"StopAfterCount": 1000},
    }
    whole = layer("other", "other:1")
    whole["sensor"] = {"properties.desired": {"SendInterval": 60}}
    hub.put_configuration("whole", body(whole, "tags.ring='main'", 3), None)
    assert hub.module("edge-1", "sensor").twin.desired == {"SendInterval": 60}


@pytest.mark.parametrize(
    "content",
    [
        {"$edgeAgent": {"properties.desired.systemModules.edgeHub.settings.image": "hub:2"}},
        {"$edgeHub": {"properties.desired": {"routes": {}}}, "$edgeAgent": {"properties.desired.modules.x": {}}},
    ],
)
def test_a_layer_may_not_configure_edge_agent_or_edge_hub_themselves(hub, content):
    with pytest.raises(IotHubError) as refused:
        hub.put_configuration("bad", body(content, "*", 5), None)
    assert (refused.value.status, refused.value.code, refused.value.numeric_code) == (
        400,
        "InvalidConfigurationContent",
        400402,
    )
    assert hub.configurations == {}


# ---- metrics ---------------------------------------------------------------------------------------------------


def test_system_metrics_follow_what_edge_agent_reports(hub):
    for name in ("edge-1", "edge-2", "edge-3"):
        edge_device(hub, name, ring="main")
    hub.put_configuration("v1", body(standard({"a": "a:1"}), "tags.ring='main'", 1), None)
    assert metrics(hub, "v1") == {
        "targetedCount": 3,
        "appliedCount": 3,
        "reportedSuccessfulCount": 0,
        "reportedFailedCount": 0,
    }
    report_agent(hub, "edge-1", 200)
    report_agent(hub, "edge-2", 500)
    report_agent(hub, "edge-3", 200, version=1)  # acted on an older desired state: counted as neither
    assert metrics(hub, "v1") == {
        "targetedCount": 3,
        "appliedCount": 3,
        "reportedSuccessfulCount": 1,
        "reportedFailedCount": 1,
    }
    queries = hub.configuration_wire(hub.configuration("v1"))["systemMetrics"]["queries"]
    applied = "select deviceId from devices.modules where moduleId = '$edgeAgent' and configurations.[[v1]].status = 'Applied'"
    assert queries == {
        "targetedCount": "select deviceId from devices where capabilities.iotEdge = true and tags.ring='main'",
        "appliedCount": applied,
        "reportedSuccessfulCount": f"{applied} and properties.desired.$version = properties.reported.lastDesiredVersion"
        " and properties.reported.lastDesiredStatus.code = 200",
        "reportedFailedCount": f"{applied} and properties.desired.$version = properties.reported.lastDesiredVersion"
        " and properties.reported.lastDesiredStatus.code != 200",
    }
    # The hub's own query text counts the same rows through the query endpoint.
    rows, _token = hub.query({"query": queries["reportedFailedCount"]}, None, None)
    assert rows == [{"deviceId": "edge-2"}]
    # A new deployment bumps the desired $version: the old reports no longer count for it.
    hub.put_configuration("v2", body(standard({"b": "b:1"}), "tags.ring='main'", 2), None)
    assert metrics(hub, "v2")["reportedSuccessfulCount"] == 0 and metrics(hub, "v1")["appliedCount"] == 0


def test_custom_metrics_count_the_rows_of_their_queries(hub):
    edge_device(hub, "edge-1", ring="main")
    edge_device(hub, "edge-2", ring="main")
    queries = {
        "running": "SELECT deviceId FROM devices.modules WHERE moduleId = '$edgeAgent' "
        "AND properties.reported.modules.a.runtimeStatus = 'running'",
        "all": "SELECT * FROM devices WHERE tags.ring = 'main'",
    }
    hub.put_configuration("v1", body(standard({"a": "a:1"}), "tags.ring='main'", 1, metrics={"queries": queries}), None)
    hub.report("edge-1", "$edgeAgent", {"modules": {"a": {"runtimeStatus": "running"}}})
    wire = hub.configuration_wire(hub.configuration("v1"))
    assert wire["metrics"] == {"results": {"running": 1, "all": 2}, "queries": queries}
    with pytest.raises(IotHubError) as refused:
        hub.put_configuration("v2", body(standard({}), "*", 1, metrics={"queries": {"x": "SELECT FROM"}}), None)
    assert (refused.value.code, refused.value.numeric_code) == ("InvalidConfigurationCustomMetricsQuery", 400404)


# ---- device configurations (deviceContent) ---------------------------------------------------------------------


def device_configuration(paths: dict, condition: str, priority: int) -> dict:
    return {"content": {"deviceContent": paths}, "targetCondition": condition, "priority": priority}


def test_device_configurations_write_device_twins_by_priority_and_take_their_settings_away(hub):
    hub.put_device("sensor-1", {}, None)
    hub.update_twin("sensor-1", None, {"tags": {"site": "a"}, "properties": {"desired": {"own": 1}}}, None, False)
    hub.put_configuration(
        "fw-1", device_configuration({"properties.desired.firmware": {"v": "1"}}, "tags.site='a'", 1), None
    )
    hub.put_configuration(
        "fw-2",
        device_configuration({"properties.desired.firmware.v": "2", "properties.desired.x.y": {}}, "tags.site='a'", 2),
        None,
    )
    twin = hub.device("sensor-1").twin_wire()
    assert {k: v for k, v in twin["properties"]["desired"].items() if not k.startswith("$")} == {
        "own": 1,
        "firmware": {"v": "2"},
        "x": {"y": {}},
    }
    assert twin["configurations"] == {"fw-1": {"status": "Targeted"}, "fw-2": {"status": "Applied"}}
    wire = hub.configuration_wire(hub.configuration("fw-2"))
    assert wire["systemMetrics"] == {
        "results": {"targetedCount": 1, "appliedCount": 1},
        "queries": {
            "targetedCount": "select deviceId from devices where tags.site='a'",
            "appliedCount": "select deviceId from devices where configurations.[[fw-2]].status = 'Applied'",
        },
    }
    hub.delete_configuration("fw-2", None)
    assert hub.device("sensor-1").twin.desired == {"own": 1, "firmware": {"v": "1"}}
    hub.update_twin("sensor-1", None, {"tags": {"site": "b"}}, None, replace=False)
    assert hub.device("sensor-1").twin.desired == {"own": 1}
    assert "configurations" not in hub.device("sensor-1").twin_wire()


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ({"deviceContent": {"firmware": {}}}, "below properties.desired"),
        ({"deviceContent": {"properties.desired": {"a": 1}}}, "below properties.desired"),
        ({"moduleContent": {"properties.desired.a": 1}}, "not implemented"),
        ({"deviceContent": {"properties.desired.a": 1}, "modulesContent": standard({})}, "exactly one"),
        ({"deviceContent": {}}, "exactly one"),
        ({"somethingElse": {}}, "unknown sections"),
    ],
)
def test_content_the_lab_cannot_apply_is_refused_not_stored(hub, content, words):
    with pytest.raises(IotHubError) as refused:
        hub.put_configuration("c", {"content": content, "targetCondition": "*"}, None)
    assert refused.value.status == 400 and refused.value.code == "InvalidConfigurationContent"
    assert words in refused.value.message and hub.configurations == {}


# ---- stored content, immutability, limits ----------------------------------------------------------------------


def test_content_is_kept_with_its_empty_objects_and_stays_immutable(hub):
    modules_content = standard({"a": "a:1"})
    modules_content["$edgeAgent"]["properties.desired"]["runtime"]["settings"] = {"registryCredentials": {}}
    hub.put_configuration("v1", body(modules_content, "*", 1), None)
    stored = hub.configuration_wire(hub.configuration("v1"))["content"]
    assert stored == {"modulesContent": modules_content}
    assert stored["modulesContent"]["$edgeHub"]["properties.desired"]["routes"] == {}
    etag = hub.configuration("v1").etag
    # The same content with an empty section added is the same content; priority and labels may change.
    same = body(modules_content, "tags.x='y'", 7, labels={"v": "1"})
    same["content"]["deviceContent"] = {}
    record, created = hub.put_configuration("v1", same, etag)
    assert not created and (record.priority, record.target_condition, record.labels) == (7, "tags.x='y'", {"v": "1"})
    # An empty object dropped is a change of content.
    changed = standard({"a": "a:1"})
    changed["$edgeHub"]["properties.desired"].pop("storeAndForwardConfiguration")
    with pytest.raises(IotHubError) as refused:
        hub.put_configuration("v1", body(changed, "*", 1), record.etag)
    assert (refused.value.code, refused.value.numeric_code) == ("CannotModifyImmutableConfigurationContent", 400403)
    with pytest.raises(IotHubError) as exists:
        hub.put_configuration("v1", body(modules_content, "*", 1), None)
    assert (exists.value.status, exists.value.numeric_code) == (409, 409401)


def test_the_hub_limits_configurations_and_modules_per_deployment(hub):
    for index in range(100):
        hub.put_configuration(f"d-{index:03}", body(standard({}), "", 1), None)
    with pytest.raises(IotHubError) as refused:
        hub.put_configuration("d-100", body(standard({}), "", 1), None)
    assert (refused.value.status, refused.value.code, refused.value.numeric_code) == (
        413,
        "ConfigurationCountLimitExceeded",
        413101,
    )
    hub.put_configuration("fw", device_configuration({"properties.desired.a": 1}, "", 1), None)  # counted apart
    hub.delete_configuration("d-000", None)
    with pytest.raises(IotHubError) as too_many:
        hub.put_configuration("big", body(standard({f"m{n}": "img:1" for n in range(51)}), "", 1), None)
    assert too_many.value.code == "InvalidConfigurationContent" and "at most 50 modules" in too_many.value.message
    hub.put_configuration("fifty", body(standard({f"m{n}": "img:1" for n in range(50)}), "", 1), None)


# ---- the query language ----------------------------------------------------------------------------------------


def test_the_query_language_compares_paths_and_reads_configuration_statuses():
    document = {
        "deviceId": "edge-1",
        "moduleId": "$edgeAgent",
        "tags": {"ring": "canary", "rack": 4, "flag": True},
        "configurations": {"v1.0:a": {"status": "Applied"}},
        "properties": {"desired": {"$version": 7}, "reported": {"lastDesiredVersion": 7, "nothing": None}},
    }
    cases = {
        "configurations.[[v1.0:a]].status = 'Applied'": True,
        "properties.desired.$version = properties.reported.lastDesiredVersion": True,
        "properties.desired.$version = properties.reported.missing": False,
        "tags.missing = tags.other": False,  # two undefined paths are not equal
        "tags.missing != 'x'": False,
        "tags.ring != 'main'": True,
        "tags.rack = '4'": False,  # no type coercion
        "tags.flag = 1": False,
        "properties.reported.nothing = null": True,
        "IS_DEFINED(tags.ring) AND NOT IS_DEFINED(tags.zone)": True,
        "tags.ring IN ['main', 'canary'] and tags.rack >= 4": True,
    }
    assert {text: compile_condition(text)(document) for text in cases} == cases
    query = parse_query("SELECT deviceId, moduleId, properties.reported.lastDesiredVersion FROM devices.modules")
    assert query.collection == "devices.modules"
    assert query.project(document) == {"deviceId": "edge-1", "moduleId": "$edgeAgent", "lastDesiredVersion": 7}
    with pytest.raises(QueryError):
        parse_query("SELECT COUNT() FROM devices")


# ---- over the wire, with the unchanged SDK ---------------------------------------------------------------------


def test_sdk_reads_metrics_and_content_as_stored(cloud):
    registry = IoTHubRegistryManager.from_connection_string(cloud.hub_connection_string)
    manager = IoTHubConfigurationManager.from_connection_string(cloud.hub_connection_string)
    registry.create_device_with_certificate_authority("edge-w", "enabled", iot_edge=True)
    registry.update_twin("edge-w", Twin(tags={"ring": "canary"}))
    modules_content = standard({"a": "a:1"})
    deployment = Configuration(
        id="wire-1",
        content=ConfigurationContent(modules_content=modules_content),
        target_condition="tags.ring='canary'",
        priority=3,
        metrics=ConfigurationMetrics(
            queries={"agents": "SELECT deviceId FROM devices.modules WHERE moduleId = '$edgeAgent'"}
        ),
    )
    manager.create_configuration(deployment)
    fetched = manager.get_configuration("wire-1")
    assert fetched.content.modules_content == modules_content
    assert fetched.system_metrics.results == {
        "targetedCount": 1,
        "appliedCount": 1,
        "reportedSuccessfulCount": 0,
        "reportedFailedCount": 0,
    }
    assert fetched.metrics.results == {"agents": 1}
    assert [c.system_metrics.results["appliedCount"] for c in manager.get_configurations(10)] == [1]
    twin = cloud.state()["iothubs"][0]["devices"][0]["modules"][0]["twin"]
    assert twin["configurations"] == {"wire-1": {"status": "Applied"}}
    fetched.content.modules_content["$edgeHub"]["properties.desired"]["routes"] = {"r": "FROM /* INTO $upstream"}
    with pytest.raises(HttpOperationError) as immutable:
        manager.update_configuration(fetched, fetched.etag)
    assert immutable.value.response.status_code == 400
    assert immutable.value.response.headers["iothub-errorcode"] == "CannotModifyImmutableConfigurationContent"
