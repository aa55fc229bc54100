"""DPS service API over HTTPS: the independent provisioningserviceclient 1.2.0 SDK, and raw HTTP for error shapes."""

from __future__ import annotations

import time

import pytest
from provisioningserviceclient import (
    BulkEnrollmentOperation,
    ProvisioningServiceClient,
    ProvisioningServiceError,
    QuerySpecification,
)
from provisioningserviceclient.models import (
    AttestationMechanism,
    DeviceCapabilities,
    EnrollmentGroup,
    IndividualEnrollment,
    InitialTwin,
)

from lab.cloud.sas import make_token
from lab.cloud.x509 import sha256_thumbprint

API = "api-version=2021-10-01"


@pytest.fixture
def client(cloud):
    return ProvisioningServiceClient.create_from_connection_string(cloud.dps_connection_string)


def _state(cloud):
    return cloud.state()["dps"]


def test_sdk_individual_enrollment_create_get_delete(cloud, client, pki):
    leaf = pki.leaf("sdk-dev-1")
    enrollment = IndividualEnrollment.create(
        "sdk-dev-1",
        AttestationMechanism.create_with_x509_client_certs(leaf.pem),
        initial_twin=InitialTwin.create(tags={"site": "lab"}, desired_properties={"interval": 5}),
        device_capabilities=DeviceCapabilities.create(iot_edge=True),
    )
    created = client.create_or_update(enrollment)
    assert created.etag and created.capabilities.iot_edge is True
    fetched = client.get_individual_enrollment("sdk-dev-1")
    primary = fetched.attestation.x509.client_certificates.primary
    assert primary.certificate is None and primary.info.sha256_thumbprint == sha256_thumbprint(leaf.certificate)
    assert fetched.initial_twin.tags == {"site": "lab"}
    stored = _state(cloud)["enrollments"][0]
    assert stored["registrationId"] == "sdk-dev-1" and stored["capabilities"] == {"iotEdge": True}
    assert stored["initialTwin"]["properties"]["desired"] == {"interval": 5}
    # The SDK sends the etag it holds as If-Match: an update with a stale etag is refused.
    fetched.provisioning_status = "disabled"
    updated = client.create_or_update(fetched)
    assert updated.provisioning_status == "disabled"
    with pytest.raises(ProvisioningServiceError, match="412"):
        client.create_or_update(fetched)
    client.delete_individual_enrollment_by_param("sdk-dev-1", updated.etag)
    assert _state(cloud)["enrollments"] == []
    with pytest.raises(ProvisioningServiceError, match="404"):
        client.get_individual_enrollment("sdk-dev-1")


def test_sdk_bulk_create_and_query_paging(cloud, client, pki):
    enrollments = [
        IndividualEnrollment.create(
            f"bulk-{i}", AttestationMechanism.create_with_x509_client_certs(pki.leaf(f"bulk-{i}").pem)
        )
        for i in range(5)
    ]
    result = client.run_bulk_operation(BulkEnrollmentOperation("create", enrollments))
    assert result.is_successful is True
    assert [e["registrationId"] for e in _state(cloud)["enrollments"]] == [f"bulk-{i}" for i in range(5)]
    again = client.run_bulk_operation(BulkEnrollmentOperation("create", enrollments[:1]))
    assert again.is_successful is False and again.errors[0].registration_id == "bulk-0"
    query = client.create_individual_enrollment_query(QuerySpecification("*"), page_size=2)
    pages = [[e.registration_id for e in page] for page in query]
    assert pages == [["bulk-0", "bulk-1"], ["bulk-2", "bulk-3"], ["bulk-4"]]
    requests = [r for r in cloud.runtime.request_log if r["operation"] == "IndividualEnrollment_Query"]
    assert len(requests) == 3 and all("2018-09-01-preview" in r["query"] for r in requests)


def test_sdk_group_create_and_registration_query(cloud, client, root, kit):
    group = EnrollmentGroup.create("sdk-group", AttestationMechanism.create_with_x509_signing_certs(root.pem))
    created = client.create_or_update(group)
    assert created.enrollment_group_id == "sdk-group"
    fetched = client.get_enrollment_group("sdk-group")
    assert fetched.attestation.x509.signing_certificates.primary.info.subject_name == "CN=edgefleet test root"
    pages = list(client.create_enrollment_group_query(QuerySpecification("*")))
    assert [[g.enrollment_group_id for g in page] for page in pages] == [["sdk-group"]]
    # The SDK's own registration-state query is broken client-side (TypeError on 'raw'), so use plain HTTP.
    status, headers, items = kit.https(cloud.dps_port).request(
        "POST", f"/registrations/sdk-group/query?{API}", headers=kit.dps_auth()
    )
    assert (status, items, headers["x-ms-item-type"]) == (200, [], "deviceRegistration")
    assert _state(cloud)["enrollmentGroups"][0]["enrollmentGroupId"] == "sdk-group"


def test_error_shape_not_found(kit):
    dps = kit.https(kit.cloud.dps_port)
    status, headers, body = dps.request("GET", f"/enrollments/missing?{API}", headers=kit.dps_auth())
    assert status == 404 and headers["x-ms-error-code"] == "404201"
    assert set(body) == {"errorCode", "trackingId", "message", "info", "timestampUtc"}
    assert body["errorCode"] == 404201 and body["timestampUtc"].endswith("Z")


@pytest.mark.parametrize(
    "authorization",
    ["none", "bad-signature", "expired", "unknown-policy", "other-host"],
)
def test_sas_failures_are_401(kit, authorization):
    cloud = kit.cloud
    key = cloud.runtime.dps_policies["provisioningserviceowner"].key
    later = int(time.time()) + 600
    tokens = {
        "none": None,
        "bad-signature": make_token(cloud.dps_host_name, "AAAA" + key[4:], "provisioningserviceowner", later),
        "expired": make_token(cloud.dps_host_name, key, "provisioningserviceowner", int(time.time()) - 5),
        "unknown-policy": make_token(cloud.dps_host_name, key, "nobody", later),
        "other-host": make_token("other.azure-devices-provisioning.net", key, "provisioningserviceowner", later),
    }
    headers = {"Authorization": tokens[authorization]} if tokens[authorization] else {}
    status, response_headers, body = kit.https(cloud.dps_port).request("GET", f"/enrollments/x?{API}", headers=headers)
    assert status == 401 and body["errorCode"] == 401002 and body["message"] == "Unauthorized access"
    assert response_headers["x-ms-error-code"] == "401002" and body["info"]["reason"]


def test_read_only_policy_cannot_write(kit, pki):
    body = kit.x509_enrollment("ro-1", pki.leaf("ro-1").pem)
    dps = kit.https(kit.cloud.dps_port)
    status, _headers, error = dps.request("PUT", f"/enrollments/ro-1?{API}", body, kit.dps_auth("enrollmentread"))
    assert status == 401 and "EnrollmentWrite" in error["info"]["reason"]
    assert kit.cloud.state()["dps"]["enrollments"] == []


def test_put_without_if_match_on_existing_is_409_and_paging_headers(kit, pki):
    dps, auth = kit.https(kit.cloud.dps_port), kit.dps_auth()
    for i in range(3):
        body = kit.x509_enrollment(f"raw-{i}", pki.leaf(f"raw-{i}").pem)
        assert dps.request("PUT", f"/enrollments/raw-{i}?{API}", body, auth)[0] == 200
    status, _headers, error = dps.request("PUT", f"/enrollments/raw-0?{API}", body | {"registrationId": "raw-0"}, auth)
    assert status == 409 and error["errorCode"] == 409201
    status, headers, items = dps.request(
        "POST", f"/enrollments/query?{API}", {"query": "*"}, auth | {"x-ms-max-item-count": "2"}
    )
    assert status == 200 and len(items) == 2 and headers["x-ms-item-type"] == "enrollment"
    status, headers2, rest = dps.request(
        "POST", f"/enrollments/query?{API}", {"query": "*"}, auth | {"x-ms-continuation": headers["x-ms-continuation"]}
    )
    assert [i["registrationId"] for i in rest] == ["raw-2"] and "x-ms-continuation" not in headers2


def test_bulk_over_ten_and_bad_requests(kit, pki):
    dps, auth = kit.https(kit.cloud.dps_port), kit.dps_auth()
    items = [kit.x509_enrollment(f"b-{i}", pki.leaf(f"b-{i}").pem) for i in range(11)]
    status, _headers, error = dps.request("POST", f"/enrollments?{API}", {"mode": "create", "enrollments": items}, auth)
    assert status == 400 and "at most 10" in error["message"]
    status, _headers, error = dps.request("GET", "/enrollments/x", headers=auth)
    assert status == 400 and "api-version" in error["message"]
    status, _headers, _body = dps.request("PATCH", f"/enrollments/x?{API}", {}, auth)
    assert status == 405
    assert kit.cloud.state()["dps"]["enrollments"] == []
