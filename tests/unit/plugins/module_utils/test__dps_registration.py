"""dps_registration's core against the in-process DPS emulator: records deleted with their etag, check mode, input."""

from __future__ import annotations

import pytest

from ansible_collections.edgefleet.iotedge.plugins.module_utils._dps_client import (
    DpsServiceClient,
    parse_connection_string,
)
from ansible_collections.edgefleet.iotedge.plugins.module_utils._dps_registration import (
    RegistrationRequest,
    ensure_registrations,
)
from ansible_collections.edgefleet.iotedge.plugins.module_utils._http import ConfigurationError, RetryPolicy
from ansible_collections.edgefleet.iotedge.tests.unit.pki_factories import self_signed_device


def client_for(cloud) -> DpsServiceClient:
    return DpsServiceClient(
        parse_connection_string(cloud.dps_connection_string),
        ca_bundle=str(cloud.ca_bundle),
        retry=RetryPolicy(sleep=lambda seconds: None),
    )


def registered(cloud, client, registration_id: str) -> None:
    """An enrolled device that registered: DPS keeps its registration record."""
    certificate, pem = self_signed_device(registration_id)
    client.put_enrollment(
        {
            "registrationId": registration_id,
            "attestation": {"type": "x509", "x509": {"clientCertificates": {"primary": {"certificate": pem}}}},
            "capabilities": {"iotEdge": True},
        }
    )
    cloud.runtime.dps.register(cloud.id_scope, registration_id, {"registrationId": registration_id}, [certificate])


def recorded(cloud) -> list[str]:
    return sorted(r["registrationId"] for r in cloud.state()["dps"]["registrations"])


def test_records_are_deleted_once_and_a_missing_one_is_no_change(cloud):
    client = client_for(cloud)
    for registration_id in ("gw-01", "gw-02"):
        registered(cloud, client, registration_id)
    result = ensure_registrations(client, RegistrationRequest(["gw-01", "gw-09"]), check_mode=False)
    assert result["changed"] is True and result["summary"] == {"deleted": 1, "absent": 1}
    assert [(r["registration_id"], r["action"]) for r in result["registrations"]] == [
        ("gw-01", "delete"),
        ("gw-09", "none"),
    ]
    assert result["registrations"][0]["before"]["status"] == "assigned"
    assert result["diff"]["before"]["registrations"]["gw-01"]["device_id"] == "gw-01"
    assert recorded(cloud) == ["gw-02"]
    deletes = [r for r in cloud.runtime.request_log if r["operation"] == "DeviceRegistrationState_Delete"]
    assert [r["ifMatch"] for r in deletes] == [result["registrations"][0]["before"]["etag"]]  # not a blind "*"
    again = ensure_registrations(client, RegistrationRequest(["gw-01"]), check_mode=False)
    assert again["changed"] is False and again["registrations"][0]["action"] == "none"


def test_check_mode_reports_and_deletes_nothing(cloud):
    client = client_for(cloud)
    registered(cloud, client, "gw-03")
    result = ensure_registrations(client, RegistrationRequest(["gw-03"]), check_mode=True)
    assert result["changed"] is True and result["registrations"][0]["action"] == "delete"
    assert recorded(cloud) == ["gw-03"]


@pytest.mark.parametrize(
    ("request_value", "message"),
    [
        (RegistrationRequest([]), "registration_ids: list at least one"),
        (RegistrationRequest(["gw-01"], state="present"), "state: 'present' is not supported"),
        (RegistrationRequest([""]), "non-empty strings"),
    ],
)
def test_bad_input_is_refused_before_any_request(cloud, request_value, message):
    client = client_for(cloud)
    with pytest.raises(ConfigurationError, match=message):
        ensure_registrations(client, request_value, check_mode=False)
    assert client.requests_sent == 0
