"""dps_enrollment_info / dps_registration_info cores: normalization, missing ids, paging; then the real client."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes

from ansible_collections.edgefleet.iotedge.plugins.module_utils._dps_client import (
    DpsServiceClient,
    parse_connection_string,
)
from ansible_collections.edgefleet.iotedge.plugins.module_utils._dps_info import (
    EnrollmentInfoRequest,
    RegistrationInfoRequest,
    enrollment_info,
    registration_info,
)
from ansible_collections.edgefleet.iotedge.plugins.module_utils._http import (
    ConfigurationError,
    RetriesExhaustedError,
    RetryPolicy,
)
from ansible_collections.edgefleet.iotedge.tests.unit.pki_factories import self_signed_device

INFO = {
    "subjectName": "CN=gw-01",
    "sha1Thumbprint": "A" * 40,
    "sha256Thumbprint": "B" * 64,
    "issuerName": "CN=Fleet Intermediate",
    "notBeforeUtc": "2026-01-01T00:00:00.0000000Z",
    "notAfterUtc": "2027-01-01T00:00:00.0000000Z",
    "serialNumber": "5F3A",
    "version": 3,
}
ENROLLMENT = {
    "registrationId": "gw-01",
    "deviceId": "gateway-one",
    "attestation": {"type": "x509", "x509": {"clientCertificates": {"primary": {"info": INFO}}}},
    "capabilities": {"iotEdge": True},
    "initialTwin": {"tags": {"site": "plant-1"}, "properties": {"desired": {"logLevel": "info"}}},
    "etag": "ImV0YWcxIg==",
    "provisioningStatus": "enabled",
    "reprovisionPolicy": {"updateHubAssignment": True, "migrateDeviceData": False},
    "createdDateTimeUtc": "2026-02-01T00:00:00.0000000Z",
    "lastUpdatedDateTimeUtc": "2026-02-02T00:00:00.0000000Z",
    "allocationPolicy": "static",
    "iotHubs": ["hub-a.azure-devices.net"],
    "registrationState": {
        "registrationId": "gw-01",
        "deviceId": "gateway-one",
        "assignedHub": "hub-a.azure-devices.net",
        "status": "assigned",
        "substatus": "initialAssignment",
        "etag": "InJlZyI=",
        "createdDateTimeUtc": "2026-02-03T00:00:00.0000000Z",
        "lastUpdatedDateTimeUtc": "2026-02-03T00:00:00.0000000Z",
    },
}
SYMMETRIC_ENROLLMENT = {
    "registrationId": "sensor-7",
    "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": "c2VjcmV0LWtleQ==", "secondaryKey": "eA=="}},
    "capabilities": {"iotEdge": False},
    "etag": "e2",
    "provisioningStatus": "disabled",
}
GROUP = {
    "enrollmentGroupId": "plant-1",
    "attestation": {"type": "x509", "x509": {"caReferences": {"primary": "fleet-root"}}},
    "capabilities": {"iotEdge": True},
    "etag": "g1",
    "provisioningStatus": "enabled",
}


class FakeDps:
    """DpsServiceClient's read surface over dicts, recording every call."""

    def __init__(self, enrollments=(), groups=(), registrations=(), group_registrations=None):
        self.enrollments = {e["registrationId"].lower(): e for e in enrollments}
        self.groups = {g["enrollmentGroupId"].lower(): g for g in groups}
        self.registrations = {r["registrationId"].lower(): r for r in registrations}
        self.group_registrations = group_registrations or {}
        self.calls = []

    def get_enrollment(self, registration_id):
        self.calls.append(("get_enrollment", registration_id))
        return self.enrollments.get(registration_id.lower())

    def get_enrollment_group(self, group_id):
        self.calls.append(("get_enrollment_group", group_id))
        return self.groups.get(group_id.lower())

    def query_enrollments(self, page_size=100):
        self.calls.append(("query_enrollments", page_size))
        return list(self.enrollments.values())

    def query_enrollment_groups(self, page_size=100):
        self.calls.append(("query_enrollment_groups", page_size))
        return list(self.groups.values())

    def get_registration(self, registration_id):
        self.calls.append(("get_registration", registration_id))
        return self.registrations.get(registration_id.lower())

    def query_registrations(self, group_id, page_size=100):
        self.calls.append(("query_registrations", group_id, page_size))
        return list(self.group_registrations.get(group_id, []))


def test_individual_enrollment_is_normalized_to_snake_case():
    result = enrollment_info(FakeDps([ENROLLMENT]), EnrollmentInfoRequest(registration_ids=["gw-01"]))
    assert result["changed"] is False and result["kind"] == "individual" and result["missing"] == []
    assert result["enrollment_groups"] == []
    assert result["enrollments"] == [
        {
            "registration_id": "gw-01",
            "device_id": "gateway-one",
            "certificates": {
                "primary": {
                    "subject": "CN=gw-01",
                    "issuer": "CN=Fleet Intermediate",
                    "thumbprint_sha1": "A" * 40,
                    "thumbprint_sha256": "B" * 64,
                    "serial_number": "5F3A",
                    "not_before": "2026-01-01T00:00:00.0000000Z",
                    "not_after": "2027-01-01T00:00:00.0000000Z",
                },
                "secondary": None,
            },
            "registration_state": {
                "registration_id": "gw-01",
                "device_id": "gateway-one",
                "status": "assigned",
                "substatus": "initialAssignment",
                "assigned_hub": "hub-a.azure-devices.net",
                "error_code": None,
                "error_message": None,
                "etag": "InJlZyI=",
                "created": "2026-02-03T00:00:00.0000000Z",
                "updated": "2026-02-03T00:00:00.0000000Z",
            },
            "provisioning_status": "enabled",
            "iot_edge": True,
            "attestation_type": "x509",
            "allocation_policy": "static",
            "iot_hubs": ["hub-a.azure-devices.net"],
            "iot_hub_host_name": None,
            "initial_twin": {"tags": {"site": "plant-1"}, "desired_properties": {"logLevel": "info"}},
            "reprovision_policy": {"update_hub_assignment": True, "migrate_device_data": False},
            "etag": "ImV0YWcxIg==",
            "created": "2026-02-01T00:00:00.0000000Z",
            "updated": "2026-02-02T00:00:00.0000000Z",
        }
    ]


def test_symmetric_keys_are_never_returned():
    result = enrollment_info(FakeDps([SYMMETRIC_ENROLLMENT]), EnrollmentInfoRequest())
    (view,) = result["enrollments"]
    assert view["attestation_type"] == "symmetricKey" and view["provisioning_status"] == "disabled"
    assert view["certificates"] == {"primary": None, "secondary": None}
    assert view["initial_twin"] is None and view["registration_state"] is None
    assert "c2VjcmV0LWtleQ==" not in repr(result)


def test_unknown_ids_are_listed_as_missing_not_errors():
    dps = FakeDps([ENROLLMENT])
    result = enrollment_info(dps, EnrollmentInfoRequest(registration_ids=["nope", "gw-01", "GW-01"]))
    assert [e["registration_id"] for e in result["enrollments"]] == ["gw-01"]
    assert result["missing"] == ["nope"]
    # Case-insensitive duplicates are read once; no query when ids are given.
    assert dps.calls == [("get_enrollment", "nope"), ("get_enrollment", "gw-01")]


def test_no_ids_reads_everything_through_the_paged_query():
    dps = FakeDps([ENROLLMENT, SYMMETRIC_ENROLLMENT])
    result = enrollment_info(dps, EnrollmentInfoRequest(page_size=7))
    assert dps.calls == [("query_enrollments", 7)]
    assert [e["registration_id"] for e in result["enrollments"]] == ["gw-01", "sensor-7"]


def test_groups_by_id_or_all():
    dps = FakeDps(groups=[GROUP])
    by_id = enrollment_info(dps, EnrollmentInfoRequest(enrollment_group_ids=["plant-1", "plant-9"]))
    assert by_id["kind"] == "group" and by_id["enrollments"] == [] and by_id["missing"] == ["plant-9"]
    (group,) = by_id["enrollment_groups"]
    assert group["enrollment_group_id"] == "plant-1"
    assert group["ca_references"] == {"primary": "fleet-root", "secondary": None}
    assert "registration_id" not in group and "device_id" not in group
    everything = enrollment_info(dps, EnrollmentInfoRequest(kind="group"))
    assert [g["enrollment_group_id"] for g in everything["enrollment_groups"]] == ["plant-1"]
    assert dps.calls[-1] == ("query_enrollment_groups", 100)


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (EnrollmentInfoRequest(kind="individual", enrollment_group_ids=["g"]), "kind=group"),
        (EnrollmentInfoRequest(kind="group", registration_ids=["r"]), "kind=individual"),
        (EnrollmentInfoRequest(registration_ids=[""]), "non-empty"),
        (EnrollmentInfoRequest(kind="both"), "kind must be"),
    ],
)
def test_contradictory_requests_fail_before_any_call(request_, message):
    dps = FakeDps()
    with pytest.raises(ConfigurationError, match=message):
        enrollment_info(dps, request_)
    assert dps.calls == []


REGISTERED = {"registrationId": "gw-01", "deviceId": "gw-01", "status": "assigned", "assignedHub": "h:1", "etag": "r1"}
FAILED = {
    "registrationId": "gw-02",
    "status": "failed",
    "errorCode": 400209,
    "errorMessage": "Custom allocation failed",
}


def test_registrations_by_id_with_summary_and_missing():
    dps = FakeDps(registrations=[REGISTERED, FAILED])
    result = registration_info(dps, RegistrationInfoRequest(registration_ids=["gw-01", "gw-02", "gw-03"]))
    assert result["changed"] is False and result["missing"] == ["gw-03"]
    assert result["summary"] == {
        "unassigned": 0,
        "assigning": 0,
        "assigned": 1,
        "failed": 1,
        "disabled": 0,
        "total": 2,
    }
    failed = result["registrations"][1]
    assert failed["error_code"] == 400209 and failed["error_message"] == "Custom allocation failed"
    assert failed["assigned_hub"] is None and failed["device_id"] is None
    assert result["registrations"][0]["assigned_hub"] == "h:1"


def test_registrations_of_a_group_use_the_query():
    dps = FakeDps(group_registrations={"plant-1": [REGISTERED]})
    result = registration_info(dps, RegistrationInfoRequest(enrollment_group_id="plant-1", page_size=5))
    assert dps.calls == [("query_registrations", "plant-1", 5)]
    assert [r["registration_id"] for r in result["registrations"]] == ["gw-01"] and result["summary"]["total"] == 1


def test_registration_request_needs_exactly_one_selector():
    with pytest.raises(ConfigurationError, match="name the registrations"):
        registration_info(FakeDps(), RegistrationInfoRequest())
    with pytest.raises(ConfigurationError, match="mutually exclusive"):
        registration_info(FakeDps(), RegistrationInfoRequest(registration_ids=["a"], enrollment_group_id="g"))


# ---- against the in-process emulator ---------------------------------------------------------------------


def _client(cloud, **retry):
    return DpsServiceClient(
        parse_connection_string(cloud.dps_connection_string),
        ca_bundle=str(cloud.ca_bundle),
        retry=RetryPolicy(sleep=lambda seconds: None, **retry),
    )


def test_paged_query_against_the_emulator_returns_every_enrollment(cloud):
    client = _client(cloud)
    thumbprints = {}
    for index in range(5):
        certificate, pem = self_signed_device(f"dev-{index}")
        thumbprints[f"dev-{index}"] = certificate.fingerprint(hashes.SHA256()).hex().upper()
        client.put_enrollment(
            {
                "registrationId": f"dev-{index}",
                "attestation": {"type": "x509", "x509": {"clientCertificates": {"primary": {"certificate": pem}}}},
                "capabilities": {"iotEdge": True},
            }
        )
    sent_before = client.requests_sent
    result = enrollment_info(client, EnrollmentInfoRequest(page_size=2))
    assert client.requests_sent - sent_before == 3  # pages of 2, 2 and 1
    views = {e["registration_id"]: e for e in result["enrollments"]}
    stored = {e["registrationId"]: e for e in cloud.state()["dps"]["enrollments"]}
    assert sorted(views) == sorted(stored) == sorted(thumbprints)
    for registration_id, view in views.items():
        assert view["certificates"]["primary"]["thumbprint_sha256"] == thumbprints[registration_id]
        assert view["etag"] == stored[registration_id]["etag"] and view["iot_edge"] is True
        assert view["provisioning_status"] == "enabled"


def test_a_503_is_retried_inside_the_policy(cloud):
    client = _client(cloud)
    _certificate, pem = self_signed_device("dev-x")
    client.put_enrollment(
        {
            "registrationId": "dev-x",
            "attestation": {"type": "x509", "x509": {"clientCertificates": {"primary": {"certificate": pem}}}},
        }
    )
    cloud.faults.add({"match": {"operation": "IndividualEnrollment_Get"}, "count": 1, "action": {"status": 503}})
    result = enrollment_info(client, EnrollmentInfoRequest(registration_ids=["dev-x", "ghost"]))
    assert [e["registration_id"] for e in result["enrollments"]] == ["dev-x"] and result["missing"] == ["ghost"]
    assert client.http.retry.retries == 1
    assert cloud.state()["faults"][0]["hits"] == 1


def test_persistent_503_exhausts_the_budget_with_the_service_error(cloud):
    client = _client(cloud, max_retries=2)
    cloud.faults.add({"match": {"operation": "DeviceRegistrationState_Get"}, "count": 5, "action": {"status": 503}})
    with pytest.raises(RetriesExhaustedError) as failure:
        registration_info(client, RegistrationInfoRequest(registration_ids=["dev-x"]))
    assert failure.value.to_result()["status"] == 503 and client.http.retry.retries == 2


def test_unknown_registrations_and_empty_group_against_the_emulator(cloud):
    client = _client(cloud)
    result = registration_info(client, RegistrationInfoRequest(registration_ids=["never-registered"]))
    assert result["registrations"] == [] and result["missing"] == ["never-registered"]
    group = registration_info(client, RegistrationInfoRequest(enrollment_group_id="no-such-group"))
    assert group["registrations"] == [] and group["summary"]["total"] == 0
