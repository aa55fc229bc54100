"""The runtime double's edgeAgent (lab/runtime/double/edged.py): it runs what the merged ``$edgeAgent`` desired
properties list, reports lastDesiredVersion/lastDesiredStatus and each module, and fails the lab's unpullable images."""

from __future__ import annotations

import pytest
from azure.iot.hub import IoTHubConfigurationManager, IoTHubRegistryManager
from azure.iot.hub.models import Configuration, ConfigurationContent, Twin

from lab.runtime.double import edged, iotedge

AGENT = edged.module_record("edgeAgent", "mcr.microsoft.com/azureiotedge-agent:1.5", "2025-01-01T00:00:00Z")
LATER = "2025-01-01T00:10:00Z"


def desired(modules: dict[str, str], version: int = 2, **statuses: str) -> dict:
    return {
        "schemaVersion": "1.1",
        "runtime": {"type": "docker", "settings": {}},
        "systemModules": {
            "edgeAgent": {"type": "docker", "settings": {"image": "mcr.microsoft.com/azureiotedge-agent:1.5"}},
            "edgeHub": {"type": "docker", "status": "running", "settings": {"image": "hub:1.5"}},
        },
        "modules": {
            name: {"type": "docker", "status": statuses.get(name, "running"), "settings": {"image": image}}
            for name, image in modules.items()
        },
        "$version": version,
    }


def listing(modules: list[dict]) -> list[tuple[str, str, str]]:
    """``iotedge list`` rows the double would print: name, status, image."""
    rows = [iotedge.describe(module, iotedge.datetime.datetime.now(iotedge.datetime.UTC)) for module in modules]
    return sorted((name, status, image) for name, status, _description, image in rows)


def test_the_lab_convention_for_unpullable_images():
    assert not edged.image_pullable("unpullable.invalid/sensor:2.0")
    assert not edged.image_pullable("registry.example.invalid:5000/team/sensor:2.0")
    assert edged.image_pullable("mcr.microsoft.com/azureiotedge-hub:1.5")
    assert edged.image_pullable("sensor:2.0") and edged.image_pullable("library/invalid:1")


def test_reconcile_runs_exactly_the_desired_modules():
    old = edged.module_record("gone", "gone:1", "2025-01-01T00:00:00Z")
    modules, status = edged.reconcile(desired({"a": "a:1", "b": "b:1"}, b="stopped"), [AGENT, old], AGENT, LATER)
    assert status == {"code": 200, "description": ""}
    assert listing(modules) == [
        ("a", "running", "a:1"),
        ("b", "stopped", "b:1"),
        ("edgeAgent", "running", "mcr.microsoft.com/azureiotedge-agent:1.5"),
        ("edgeHub", "running", "hub:1.5"),
    ]
    again, _status = edged.reconcile(desired({"a": "a:1", "b": "b:1"}, version=3, b="stopped"), modules, AGENT, "x")
    assert again == modules  # nothing changed: nothing restarted


def test_an_unpullable_image_fails_the_deployment_as_edge_agent_reports_it():
    running = edged.module_record("a", "a:1", "2025-01-01T00:00:00Z")
    wanted = desired({"a": "unpullable.invalid/a:2", "new": "unpullable.invalid/new:1", "ok": "ok:1"})
    modules, status = edged.reconcile(wanted, [AGENT, running], AGENT, LATER)
    assert status == {
        "code": 500,
        "description": "One or more errors occurred. "
        '(Error calling prepare update for module a: registry operation error: pull image "unpullable.invalid/a:2") '
        '(Error calling Create module new: registry operation error: pull image "unpullable.invalid/new:1")',
    }
    # The changed module keeps running its previous image; the new one is never created; the others run.
    assert [m["name"] for m in modules] == ["edgeAgent", "a", "edgeHub", "ok"]
    assert modules[1] is running
    reported = edged.reported_properties(modules, 2, status, removed=["old"])
    assert reported["lastDesiredVersion"] == 2 and reported["lastDesiredStatus"]["code"] == 500
    assert reported["modules"] == {
        "a": {
            "runtimeStatus": "running",
            "status": "running",
            "settings": {"image": "a:1"},
            "lastStartTimeUtc": "2025-01-01T00:00:00Z",
            "type": "docker",
        },
        "ok": {
            "runtimeStatus": "running",
            "status": "running",
            "settings": {"image": "ok:1"},
            "lastStartTimeUtc": LATER,
            "type": "docker",
        },
        "old": None,
    }
    assert sorted(reported["systemModules"]) == ["edgeAgent", "edgeHub"]


@pytest.mark.parametrize(
    ("properties", "code", "words"),
    [
        ({"$version": 1}, 417, "empty configuration for the edge agent"),
        ({"schemaVersion": "2.0", "modules": {}, "$version": 4}, 412, "not compatible with the expected version 1.1.0"),
        ({"schemaVersion": "one", "$version": 4}, 412, "Invalid desired properties schema version one"),
    ],
)
def test_deployments_edge_agent_refuses_before_planning(properties, code, words):
    modules, status = edged.reconcile(properties, [AGENT], AGENT, LATER)
    assert modules == [AGENT] and status["code"] == code and words in status["description"]


def test_the_double_follows_a_deployment_on_the_emulator_and_metrics_go_red(cloud, monkeypatch):
    """End to end over HTTPS: a deployment on the lab hub, the double's edgeAgent loop step, the hub's metrics."""
    monkeypatch.setenv("SSL_CERT_FILE", str(cloud.ca_bundle))
    monkeypatch.setattr(edged.ManagementApi, "modules", [AGENT])
    registry = IoTHubRegistryManager.from_connection_string(cloud.hub_connection_string)
    manager = IoTHubConfigurationManager.from_connection_string(cloud.hub_connection_string)
    registry.create_device_with_certificate_authority("edge-d", "enabled", iot_edge=True)
    registry.update_twin("edge-d", Twin(tags={"ring": "canary"}))
    hub_desired = {key: value for key, value in desired({"sensor": "sensor:1"}).items() if key != "$version"}
    content = {
        "$edgeAgent": {"properties.desired": hub_desired},
        "$edgeHub": {"properties.desired": {"schemaVersion": "1.1", "routes": {}}},
    }
    manager.create_configuration(
        Configuration(
            id="v1",
            content=ConfigurationContent(modules_content=content),
            target_condition="tags.ring='canary'",
            priority=1,
        )
    )
    device = {"device_id": "edge-d", "hub": f"127.0.0.1:{cloud.hub_ports[0]}"}
    follower = edged.DeploymentFollower(device, AGENT)

    def step() -> bool:
        twin = edged._hub_call(device, "GET", "$edgeAgent")
        return follower.step(twin["properties"]["desired"])

    assert step() is True
    assert [m["name"] for m in edged.ManagementApi.modules] == ["edgeAgent", "edgeHub", "sensor"]
    assert step() is False  # same $version, success: nothing to do or report
    results = manager.get_configuration("v1").system_metrics.results
    assert results == {"targetedCount": 1, "appliedCount": 1, "reportedSuccessfulCount": 1, "reportedFailedCount": 0}

    failing = {
        **hub_desired,
        "modules": {
            "sensor": {"type": "docker", "status": "running", "settings": {"image": "unpullable.invalid/sensor:2"}}
        },
    }
    content["$edgeAgent"]["properties.desired"] = failing
    manager.create_configuration(
        Configuration(
            id="v2",
            content=ConfigurationContent(modules_content=content),
            target_condition="tags.ring='canary'",
            priority=2,
        )
    )
    assert step() is True
    reported = registry.get_module_twin("edge-d", "$edgeAgent").properties.reported
    assert reported["lastDesiredStatus"]["code"] == 500
    assert reported["modules"]["sensor"]["settings"]["image"] == "sensor:1"  # still the old image
    results = manager.get_configuration("v2").system_metrics.results
    assert results == {"targetedCount": 1, "appliedCount": 1, "reportedSuccessfulCount": 0, "reportedFailedCount": 1}
    assert manager.get_configuration("v1").system_metrics.results["appliedCount"] == 0

    # Rollback: the failing version stops targeting the device, v1 applies again, the module is left as it was.
    v2 = manager.get_configuration("v2")
    v2.target_condition = "tags.ring='nowhere'"
    manager.update_configuration(v2, v2.etag)
    assert step() is True
    results = manager.get_configuration("v1").system_metrics.results
    assert results == {"targetedCount": 1, "appliedCount": 1, "reportedSuccessfulCount": 1, "reportedFailedCount": 0}
    assert listing(edged.ManagementApi.modules)[-1] == ("sensor", "running", "sensor:1")
