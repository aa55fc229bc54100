"""IoT Hub emulator driven by the unchanged azure-iot-hub 2.7 SDK (HostName=127.0.0.1:<port>, REQUESTS_CA_BUNDLE)."""

from __future__ import annotations

import pytest
from azure.iot.hub import IoTHubConfigurationManager, IoTHubRegistryManager
from azure.iot.hub.models import (
    AuthenticationMechanism,
    Configuration,
    ConfigurationContent,
    Device,
    QuerySpecification,
    Twin,
    TwinProperties,
)
from msrest.exceptions import HttpOperationError

THUMBPRINT = "A" * 40
EDGE_AGENT = {
    "properties.desired": {
        "schemaVersion": "1.1",
        "runtime": {"type": "docker", "settings": {}},
        "systemModules": {"edgeAgent": {"type": "docker"}, "edgeHub": {"type": "docker"}},
        "modules": {"sensor": {"type": "docker", "status": "running"}},
    }
}
EDGE_HUB = {"properties.desired": {"schemaVersion": "1.1", "routes": {"all": "FROM /messages/* INTO $upstream"}}}


@pytest.fixture
def registry(cloud):
    return IoTHubRegistryManager.from_connection_string(cloud.hub_connection_string)


@pytest.fixture
def configurations(cloud):
    return IoTHubConfigurationManager.from_connection_string(cloud.hub_connection_string)


def _hub_state(cloud):
    return cloud.state()["iothubs"][0]


def test_device_lifecycle_with_etags(cloud, registry):
    device = registry.create_device_with_x509("edge-1", THUMBPRINT, None, "enabled", iot_edge=True)
    assert device.capabilities.iot_edge is True and device.authentication.type == "selfSigned"
    assert device.device_scope.startswith("ms-azure-iot-edge://edge-1-")
    with pytest.raises(HttpOperationError) as conflict:
        registry.create_device_with_x509("edge-1", THUMBPRINT, None, "enabled", iot_edge=True)
    assert conflict.value.response.status_code == 409
    assert conflict.value.response.headers["iothub-errorcode"] == "DeviceAlreadyExists"
    assert conflict.value.response.json()["Message"].startswith("ErrorCode:DeviceAlreadyExists;")
    updated = registry.update_device_with_certificate_authority("edge-1", device.etag, "disabled", iot_edge=True)
    assert updated.status == "disabled" and updated.etag != device.etag
    with pytest.raises(HttpOperationError) as stale:
        registry.update_device_with_certificate_authority("edge-1", device.etag, "enabled", iot_edge=True)
    assert stale.value.response.status_code == 412
    stored = _hub_state(cloud)["devices"][0]
    assert stored["deviceId"] == "edge-1" and stored["authentication"]["type"] == "certificateAuthority"
    assert [m["moduleId"] for m in stored["modules"]] == ["$edgeAgent", "$edgeHub"]
    registry.delete_device("edge-1")
    assert _hub_state(cloud)["devices"] == []
    with pytest.raises(HttpOperationError) as missing:
        registry.get_device("edge-1")
    assert missing.value.response.status_code == 404


def test_twins_merge_and_query(cloud, registry):
    registry.create_device_with_certificate_authority("dev-a", "enabled", iot_edge=False)
    registry.create_device_with_certificate_authority("dev-b", "enabled", iot_edge=False)
    twin = registry.get_twin("dev-a")
    patch = Twin(tags={"site": "lab", "rack": 1}, properties=TwinProperties(desired={"interval": 5}))
    merged = registry.update_twin("dev-a", patch, twin.etag)
    assert merged.tags == {"site": "lab", "rack": 1} and merged.properties.desired["interval"] == 5
    merged = registry.update_twin("dev-a", Twin(tags={"rack": None}))
    assert merged.tags == {"site": "lab"} and merged.version == twin.version + 2
    with pytest.raises(HttpOperationError) as stale:
        registry.update_twin("dev-a", patch, twin.etag)
    assert stale.value.response.status_code == 412
    result = registry.query_iot_hub(QuerySpecification(query="SELECT * FROM devices WHERE tags.site = 'lab'"))
    assert [item.device_id for item in result.items] == ["dev-a"]
    first = registry.query_iot_hub(QuerySpecification(query="SELECT * FROM devices"), None, 1)
    assert len(first.items) == 1 and first.continuation_token
    second = registry.query_iot_hub(QuerySpecification(query="SELECT * FROM devices"), first.continuation_token, 1)
    assert [i.device_id for i in second.items] == ["dev-b"] and second.continuation_token is None
    assert _hub_state(cloud)["devices"][0]["twin"]["tags"] == {"site": "lab"}


def test_modules_and_module_twins(cloud, registry):
    registry.create_device_with_certificate_authority("edge-m", "enabled", iot_edge=True)
    agent_twin = registry.get_module_twin("edge-m", "$edgeAgent")  # the SDK percent-encodes the '$'
    assert agent_twin.module_id == "$edgeAgent"
    module = registry.create_module_with_sas("edge-m", "sensor", None, "", "")
    assert module.authentication.symmetric_key.primary_key  # keys generated as the hub does
    assert sorted(m.module_id for m in registry.get_modules("edge-m")) == ["$edgeAgent", "$edgeHub", "sensor"]
    registry.update_module_twin("edge-m", "sensor", Twin(properties=TwinProperties(desired={"rate": 2})))
    assert registry.get_module_twin("edge-m", "sensor").properties.desired["rate"] == 2
    registry.delete_module("edge-m", "sensor")
    modules = _hub_state(cloud)["devices"][0]["modules"]
    assert [m["moduleId"] for m in modules] == ["$edgeAgent", "$edgeHub"]


def test_queried_twins_carry_the_identity_fields_and_match_get(cloud, registry):
    registry.create_device_with_x509("edge-q", THUMBPRINT, None, "enabled", iot_edge=True)
    retired = Device(device_id="leaf-q", status="disabled", status_reason="retired")
    retired.authentication = AuthenticationMechanism(type="sas")
    registry.protocol.devices.create_or_update_identity("leaf-q", retired)
    registry.create_device_with_sas("other", "", "", "enabled")
    query = "SELECT * FROM devices WHERE deviceId IN ['edge-q', 'leaf-q', 'nobody']"
    twins = {t.device_id: t for t in registry.query_iot_hub(QuerySpecification(query=query)).items}
    assert sorted(twins) == ["edge-q", "leaf-q"]
    for device_id, twin in twins.items():
        device = registry.get_device(device_id)
        assert twin.as_dict() == registry.get_twin(device_id).as_dict()
        assert twin.device_etag == device.etag and twin.etag != device.etag
        assert (twin.status, twin.status_reason) == (device.status, device.status_reason)
        assert (twin.connection_state, twin.last_activity_time) == (device.connection_state, device.last_activity_time)
        assert twin.authentication_type == device.authentication.type
        assert twin.x509_thumbprint.as_dict() == device.authentication.x509_thumbprint.as_dict()
        assert twin.capabilities.iot_edge == device.capabilities.iot_edge
        assert twin.device_scope == device.device_scope
    assert twins["leaf-q"].status_reason == "retired" and twins["edge-q"].status_reason is None
    query = "SELECT * FROM devices.modules WHERE deviceId IN ['edge-q', 'leaf-q']"
    modules = registry.query_iot_hub(QuerySpecification(query=query)).items
    assert sorted((m.device_id, m.module_id) for m in modules) == [("edge-q", "$edgeAgent"), ("edge-q", "$edgeHub")]
    for module in modules:
        assert module.as_dict() == registry.get_module_twin("edge-q", module.module_id).as_dict()


def test_deployments_target_apply_and_stay_immutable(cloud, registry, configurations):
    registry.create_device_with_certificate_authority("edge-d", "enabled", iot_edge=True)
    registry.update_twin("edge-d", Twin(tags={"environment": "test"}))
    deployment = Configuration(
        id="base-1",
        content=ConfigurationContent(modules_content={"$edgeAgent": EDGE_AGENT, "$edgeHub": EDGE_HUB}),
        target_condition="tags.environment='test'",
        priority=10,
        labels={"owner": "lab"},
    )
    created = configurations.create_configuration(deployment)
    # Nothing reported yet: targeted and applied, neither successful nor failed.
    assert created.etag and created.system_metrics.results == {
        "targetedCount": 1,
        "appliedCount": 1,
        "reportedSuccessfulCount": 0,
        "reportedFailedCount": 0,
    }
    agent = registry.get_module_twin("edge-d", "$edgeAgent")
    assert agent.properties.desired["modules"]["sensor"]["status"] == "running"
    fetched = configurations.get_configuration("base-1")
    fetched.priority = 20
    assert configurations.update_configuration(fetched, fetched.etag).priority == 20
    changed = configurations.get_configuration("base-1")
    changed.content.modules_content["$edgeHub"]["properties.desired"]["routes"] = {}
    with pytest.raises(HttpOperationError) as immutable:
        configurations.update_configuration(changed, changed.etag)
    assert immutable.value.response.status_code == 400
    assert "cannot be updated" in immutable.value.response.json()["Message"]
    assert [c.id for c in configurations.get_configurations(10)] == ["base-1"]
    stored = _hub_state(cloud)["configurations"][0]
    assert stored["priority"] == 20 and stored["content"]["modulesContent"]["$edgeHub"] == EDGE_HUB
    configurations.delete_configuration("base-1")
    assert _hub_state(cloud)["configurations"] == []


def test_wrong_key_is_unauthorized(cloud):
    bad = cloud.hub_connection_string.rsplit("=", 2)[0] + "=" + "QUFBQQ=="
    manager = IoTHubRegistryManager.from_connection_string(bad)
    with pytest.raises(HttpOperationError) as error:
        manager.get_device("anything")
    assert error.value.response.status_code == 401
    assert error.value.response.headers["iothub-errorcode"] == "IotHubUnauthorizedAccess"
