"""DPS device registration over real mutual TLS (leaf + intermediate sent from a fullchain file), as aziot does it."""

from __future__ import annotations

import pytest

API = "api-version=2021-06-01"


@pytest.fixture
def service(kit):
    dps = kit.https(kit.cloud.dps_port)

    def put(path, body):
        status, _headers, answer = dps.request("PUT", f"{path}?api-version=2021-10-01", body, kit.dps_auth())
        assert status == 200, answer
        return answer

    return put


def _register(device, scope, registration_id):
    return device.request(
        "PUT", f"/{scope}/registrations/{registration_id}/register?{API}", {"registrationId": registration_id}
    )


def test_group_registration_with_intermediate_chain_creates_edge_device(
    kit, cloud, service, device_client, pki, root, intermediate
):
    cloud.dps.settings.assigning_polls = 1
    # Proof of possession done out of band: the root is verified.
    cloud.dps.put_certificate("lab-root", {"certificate": root.pem, "isVerified": True}, None)
    twin = {"tags": {"fleet": "lab"}, "properties": {"desired": {"logLevel": "info"}}}
    service(
        "/enrollmentGroups/fleet",
        kit.group_enrollment("fleet", ca_name="lab-root", capabilities={"iotEdge": True}, initialTwin=twin),
    )
    leaf = pki.leaf("edge-node-1", intermediate)
    device = device_client(leaf)
    status, headers, body = _register(device, cloud.id_scope, "edge-node-1")
    assert status == 202 and body["status"] == "assigning" and headers["retry-after"] == "3"
    assert headers["location"].endswith(f"/{cloud.id_scope}/registrations/edge-node-1/register")
    operation = f"/{cloud.id_scope}/registrations/edge-node-1/operations/{body['operationId']}?{API}"
    status, _headers, polled = device.request("GET", operation)
    assert status == 202 and polled["registrationState"] == {"registrationId": "edge-node-1", "status": "assigning"}
    status, _headers, done = device.request("GET", operation)
    assert status == 200 and done["status"] == "assigned"
    state = done["registrationState"]
    assert state["assignedHub"] == cloud.hub_host_name and state["deviceId"] == "edge-node-1"
    assert state["x509"]["enrollmentGroupId"] == "fleet" and state["substatus"] == "initialAssignment"
    # Real state: the hub device exists with the group's twin and edge modules; DPS recorded the registration.
    snapshot = cloud.state()
    hub_device = snapshot["iothubs"][0]["devices"][0]
    assert hub_device["deviceId"] == "edge-node-1" and hub_device["capabilities"] == {"iotEdge": True}
    assert hub_device["authentication"]["type"] == "certificateAuthority"
    assert hub_device["twin"]["tags"] == {"fleet": "lab"}
    assert hub_device["twin"]["properties"]["desired"]["logLevel"] == "info"
    assert [m["moduleId"] for m in hub_device["modules"]] == ["$edgeAgent", "$edgeHub"]
    assert snapshot["dps"]["registrations"][0]["status"] == "assigned"
    status, _headers, lookup = device.request(
        "POST", f"/{cloud.id_scope}/registrations/edge-node-1?{API}", {"registrationId": "edge-node-1"}
    )
    assert status == 200 and lookup["assignedHub"] == cloud.hub_host_name


def test_group_refuses_chain_that_does_not_reach_verified_ca(
    kit, cloud, service, device_client, pki, root, intermediate
):
    service("/enrollmentGroups/fleet", kit.group_enrollment("fleet", root.pem))
    status, _headers, body = _register(
        device_client(pki.leaf("edge-node-2", intermediate)), cloud.id_scope, "edge-node-2"
    )
    assert status == 401 and body["errorCode"] == 401002 and "verified" in body["info"]["reason"]
    assert cloud.state()["iothubs"][0]["devices"] == []


def test_individual_self_signed_by_thumbprint(kit, cloud, service, device_client, pki):
    leaf = pki.leaf("solo-1")
    service("/enrollments/solo-1", kit.x509_enrollment("solo-1", leaf.pem, capabilities={"iotEdge": True}))
    status, _headers, body = _register(device_client(leaf), cloud.id_scope, "solo-1")
    assert status == 202
    status, _headers, done = device_client(leaf).request(
        "GET", f"/{cloud.id_scope}/registrations/solo-1/operations/{body['operationId']}?{API}"
    )
    assert status == 200 and done["status"] == "assigned" and done["registrationState"]["x509"] == {}
    device = cloud.state()["iothubs"][0]["devices"][0]
    assert device["authentication"]["type"] == "selfSigned"
    status, _headers, impostor = _register(device_client(pki.leaf("solo-1")), cloud.id_scope, "solo-1")
    assert status == 401 and "thumbprint" in impostor["info"]["reason"]


def test_disabled_enrollment_reports_disabled(kit, cloud, service, device_client, pki):
    leaf = pki.leaf("off-1")
    service("/enrollments/off-1", kit.x509_enrollment("off-1", leaf.pem, provisioningStatus="disabled"))
    _status, _headers, body = _register(device_client(leaf), cloud.id_scope, "off-1")
    _status, _headers, done = device_client(leaf).request(
        "GET", f"/{cloud.id_scope}/registrations/off-1/operations/{body['operationId']}?{API}"
    )
    assert done["status"] == "disabled" and done["registrationState"]["status"] == "disabled"
    assert cloud.state()["iothubs"][0]["devices"] == []


def test_no_client_certificate_or_mismatched_ids(cloud, device_client, pki):
    status, headers, body = _register(device_client(None), cloud.id_scope, "nobody")
    assert status == 401 and body["errorCode"] == 401002 and "strict-transport-security" in headers
    leaf = pki.leaf("dev-cn")
    status, _headers, body = device_client(leaf).request(
        "PUT", f"/{cloud.id_scope}/registrations/dev-cn/register?{API}", {"registrationId": "other"}
    )
    assert status == 400


def test_edge_runtime_manages_modules_with_its_x509_identity(kit, cloud, service, device_client, pki):
    """protocols.md 4.5: aziot-identityd calls the hub with the device certificate and no Authorization header."""
    leaf = pki.leaf("edge-rt")
    service("/enrollments/edge-rt", kit.x509_enrollment("edge-rt", leaf.pem, capabilities={"iotEdge": True}))
    device = device_client(leaf)
    _status, _headers, body = _register(device, cloud.id_scope, "edge-rt")
    device.request("GET", f"/{cloud.id_scope}/registrations/edge-rt/operations/{body['operationId']}?{API}")
    hub = device_client(leaf)
    hub.port = cloud.hub_ports[0]
    status, _headers, module = hub.request(
        "PUT",
        "/devices/edge-rt/modules/sensor?api-version=2017-11-08-preview",
        {"moduleId": "sensor", "deviceId": "edge-rt"},
    )
    assert status == 200 and module["moduleId"] == "sensor" and module["deviceId"] == "edge-rt"
    status, _headers, modules = hub.request("GET", "/devices/edge-rt/modules?api-version=2017-11-08-preview")
    assert sorted(m["moduleId"] for m in modules) == ["$edgeAgent", "$edgeHub", "sensor"]
    status, _headers, _body = hub.request(
        "DELETE", "/devices/edge-rt/modules/sensor?api-version=2017-11-08-preview", headers={"If-Match": "*"}
    )
    assert status == 204
    stranger = device_client(pki.leaf("edge-rt"))
    stranger.port = cloud.hub_ports[0]
    assert stranger.request("GET", "/devices/edge-rt/modules?api-version=2017-11-08-preview")[0] == 401
    # The lab-only control route stands in for edgeAgent's reported properties over MQTT.
    control = kit.https(cloud.hub_ports[0])
    status, _headers, twin = control.request(
        "PATCH",
        "/_emulator/iothub/twins/edge-rt/modules/$edgeAgent",
        {"reported": {"lastDesiredStatus": {"code": 200}}, "connectionState": "Connected"},
    )
    assert status == 200 and twin["properties"]["reported"]["lastDesiredStatus"] == {"code": 200}
    agent = cloud.state()["iothubs"][0]["devices"][0]["modules"][0]
    assert agent["connectionState"] == "Connected"
