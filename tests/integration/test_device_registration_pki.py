"""Acceptance: a fleet PKI built by the collection's own cores gets devices provisioned by DPS over mutual TLS.

root -> intermediate -> leaf (CN = registration id) from ensure_ca / ensure_identities; enrollments written with the
collection's DpsServiceClient; the CA verified on the management API; each device registers like aziot-identityd
(PUT register, then poll the operation) presenting leaf + intermediate. Refusals are the ones lab/README.md
documents: 401 with errorCode 401002 on the register call, or status "disabled" for a disabled enrollment.
"""

from __future__ import annotations

import ssl

import pytest
from lab_devices import MANAGEMENT_API, FleetPki, https_json, register, upload_ca, x509_group, x509_individual

from ansible_collections.edgefleet.iotedge.plugins.module_utils._dps_client import (
    DpsServiceClient,
    parse_connection_string,
)


@pytest.fixture
def dps(cloud) -> DpsServiceClient:
    return DpsServiceClient(
        parse_connection_string(cloud.lab.dps_connection_string), ca_bundle=str(cloud.lab.ca_bundle)
    )


@pytest.fixture(scope="module")
def fleet(tmp_path_factory) -> FleetPki:
    return FleetPki(tmp_path_factory.mktemp("pki"), "fleet", ["gw-solo", "gw-group-1", "gw-off", "gw-cn"])


@pytest.fixture(scope="module")
def stray(tmp_path_factory) -> FleetPki:
    """A second, unrelated PKI: its certificates match no enrollment unless a test enrolls them."""
    return FleetPki(tmp_path_factory.mktemp("pki"), "stray", ["gw-stray"])


def hub_devices(cloud) -> dict:
    return {device["deviceId"]: device for device in cloud.state()["iothubs"][0]["devices"]}


def test_pki_chain_has_the_shape_dps_needs(fleet):
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    leaf = x509.load_pem_x509_certificate(fleet.leaf_pem("gw-solo").encode())
    intermediate = x509.load_pem_x509_certificate(fleet.intermediate_pem.encode())
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "gw-solo"
    assert leaf.issuer == intermediate.subject


def test_individual_enrollment_with_a_ca_signed_leaf_is_assigned(cloud, dps, fleet):
    upload_ca(cloud.lab, "fleet-root", fleet.root_pem, verified=True)
    twin = {"tags": {"site": "plant-1"}, "properties": {"desired": {"logLevel": "info"}}}
    dps.put_enrollment(x509_individual("gw-solo", fleet.leaf_pem("gw-solo"), initialTwin=twin))
    status, body, done = register(cloud.lab, fleet.device_tls("gw-solo", cloud.lab.ca_bundle), "gw-solo")
    assert status == 202 and body["status"] == "assigning" and body["operationId"]
    assert done["status"] == "assigned"
    state = done["registrationState"]
    assert state["deviceId"] == "gw-solo" and state["assignedHub"] == cloud.lab.hub_host_name
    assert state["x509"] == {}  # individual enrollments carry no group in the result
    device = hub_devices(cloud)["gw-solo"]
    assert device["capabilities"] == {"iotEdge": True}
    assert device["authentication"]["type"] == "selfSigned"
    assert (
        device["authentication"]["x509Thumbprint"]["primaryThumbprint"]
        == fleet.identities["gw-solo"]["thumbprint_sha1"]
    )
    assert device["twin"]["tags"] == {"site": "plant-1"}
    assert [m["moduleId"] for m in device["modules"]] == ["$edgeAgent", "$edgeHub"]
    (registration,) = cloud.state()["dps"]["registrations"]
    assert registration["registrationId"] == "gw-solo" and registration["status"] == "assigned"


@pytest.mark.parametrize("signer", ["intermediate", "root"])
def test_group_enrollment_assigns_a_device_of_the_fleet(cloud, dps, fleet, signer):
    upload_ca(cloud.lab, "fleet-root", fleet.root_pem, verified=True)
    signing_pem = fleet.intermediate_pem if signer == "intermediate" else fleet.root_pem
    dps.put_enrollment_group(x509_group("plant-1", signing_pem))
    _status, _body, done = register(cloud.lab, fleet.device_tls("gw-group-1", cloud.lab.ca_bundle), "gw-group-1")
    assert done["status"] == "assigned"
    state = done["registrationState"]
    assert state["deviceId"] == "gw-group-1" and state["assignedHub"] == cloud.lab.hub_host_name
    assert state["x509"]["enrollmentGroupId"] == "plant-1"
    assert state["x509"]["certificateInfo"]["sha1Thumbprint"] == fleet.identities["gw-group-1"]["thumbprint_sha1"]
    device = hub_devices(cloud)["gw-group-1"]
    assert device["authentication"]["type"] == "certificateAuthority"
    assert device["capabilities"] == {"iotEdge": True}
    (registration,) = cloud.state()["dps"]["registrations"]
    assert registration["enrollmentGroupId"] == "plant-1" and registration["status"] == "assigned"


def test_leaf_cn_different_from_the_registration_id_is_refused(cloud, dps, fleet):
    upload_ca(cloud.lab, "fleet-root", fleet.root_pem, verified=True)
    dps.put_enrollment(x509_individual("gw-cn", fleet.leaf_pem("gw-cn")))
    dps.put_enrollment(x509_individual("gw-other", fleet.leaf_pem("gw-solo")))
    status, body, done = register(cloud.lab, fleet.device_tls("gw-cn", cloud.lab.ca_bundle), "gw-cn", url_id="gw-other")
    assert (status, done) == (401, None)
    assert body["errorCode"] == 401002 and "differs from the registration id" in body["info"]["reason"]
    assert cloud.state()["dps"]["registrations"] == [] and hub_devices(cloud) == {}


def test_certificate_of_an_unknown_ca_matches_no_enrollment(cloud, dps, fleet, stray):
    upload_ca(cloud.lab, "fleet-root", fleet.root_pem, verified=True)
    dps.put_enrollment_group(x509_group("plant-1", fleet.intermediate_pem))
    status, body, _done = register(cloud.lab, stray.device_tls("gw-stray", cloud.lab.ca_bundle), "gw-stray")
    assert status == 401 and body["errorCode"] == 401002
    assert body["info"]["reason"] == "no individual enrollment or enrollment group matches the device certificate chain"
    assert hub_devices(cloud) == {}


def test_group_whose_ca_is_not_verified_is_refused(cloud, dps, stray):
    upload_ca(cloud.lab, "stray-root", stray.root_pem, verified=False)
    dps.put_enrollment_group(x509_group("stray-group", stray.intermediate_pem))
    status, body, _done = register(cloud.lab, stray.device_tls("gw-stray", cloud.lab.ca_bundle), "gw-stray")
    assert status == 401 and body["errorCode"] == 401002
    assert "'stray-group' does not reach a verified CA certificate" in body["info"]["reason"]
    assert cloud.state()["dps"]["registrations"] == [] and hub_devices(cloud) == {}
    # Verifying the same CA is all it takes: the refusal was about verification, not the chain.
    upload_ca_update = https_json(
        cloud.lab.dps_port,
        ssl.create_default_context(cafile=str(cloud.lab.ca_bundle)),
        "PUT",
        f"{cloud.lab.management_resource_id}/certificates/stray-root?{MANAGEMENT_API}",
        {"certificate": stray.root_pem, "isVerified": True},
        {"Authorization": f"Bearer {cloud.lab.management_token}", "If-Match": "*"},
    )
    assert upload_ca_update[0] == 200 and upload_ca_update[1]["properties"]["isVerified"] is True
    _status, _body, done = register(cloud.lab, stray.device_tls("gw-stray", cloud.lab.ca_bundle), "gw-stray")
    assert done["status"] == "assigned" and "gw-stray" in hub_devices(cloud)


def test_disabled_enrollment_reports_disabled_and_creates_no_device(cloud, dps, fleet):
    upload_ca(cloud.lab, "fleet-root", fleet.root_pem, verified=True)
    dps.put_enrollment(x509_individual("gw-off", fleet.leaf_pem("gw-off"), provisioningStatus="disabled"))
    status, _body, done = register(cloud.lab, fleet.device_tls("gw-off", cloud.lab.ca_bundle), "gw-off")
    assert status == 202
    assert done["status"] == "disabled" and done["registrationState"]["status"] == "disabled"
    assert "assignedHub" not in done["registrationState"]
    assert hub_devices(cloud) == {}
    (registration,) = cloud.state()["dps"]["registrations"]
    assert registration["registrationId"] == "gw-off" and registration["status"] == "disabled"
