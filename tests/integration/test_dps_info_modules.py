"""dps_enrollment_info, dps_registration_info and iothub_device_info through ansible-playbook against the lab.

The lab is seeded the way a fleet gets there: enrollments written with the collection's DPS client, devices that
registered over mutual TLS (so DPS holds registration states and the hub holds devices), and $edgeAgent's reported
properties. What the modules return is compared with the emulators' own records (cloud.state()).
"""

from __future__ import annotations

import json

import pytest
from lab_devices import FleetPki, register, upload_ca, x509_group, x509_individual

from ansible_collections.edgefleet.iotedge.plugins.module_utils._dps_client import (
    DpsServiceClient,
    parse_connection_string,
)

AGENT_REPORTED = {
    "lastDesiredStatus": {"code": 200, "description": ""},
    "systemModules": {"edgeAgent": {"runtimeStatus": "running"}, "edgeHub": {"runtimeStatus": "running"}},
}
TWIN = {"tags": {"site": "plant-1"}, "properties": {"desired": {"logLevel": "info"}}}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory) -> FleetPki:
    return FleetPki(tmp_path_factory.mktemp("pki"), "fleet", ["gw-01", "gw-02", "gw-03"])


@pytest.fixture
def seeded(cloud, fleet):
    """gw-01: individual, registered; gw-02: individual, never registered; gw-03: registered through plant-1."""
    lab = cloud.lab
    dps = DpsServiceClient(parse_connection_string(lab.dps_connection_string), ca_bundle=str(lab.ca_bundle))
    upload_ca(lab, "fleet-root", fleet.root_pem, verified=True)
    dps.put_enrollment(x509_individual("gw-01", fleet.leaf_pem("gw-01"), initialTwin=TWIN, allocationPolicy="hashed"))
    dps.put_enrollment(x509_individual("gw-02", fleet.leaf_pem("gw-02"), provisioningStatus="disabled"))
    dps.put_enrollment_group(x509_group("plant-1", fleet.intermediate_pem))
    for device in ("gw-01", "gw-03"):
        _status, _body, done = register(lab, fleet.device_tls(device, lab.ca_bundle), device)
        assert done["status"] == "assigned", done
    cloud.control(
        "PATCH",
        "/iothub/twins/gw-01/modules/$edgeAgent",
        {"reported": AGENT_REPORTED, "connectionState": "Connected"},
    )
    return cloud.state()


def run_playbook(ansible_playbook, cloud, tmp_path, playbook):
    results_file = tmp_path / "results.json"
    run = ansible_playbook(playbook, "-v", extra_vars={"results_file": str(results_file)}, env=cloud.env)
    return run, results_file


def assert_no_secrets(cloud, *texts):
    keys = [
        connection.rsplit("SharedAccessKey=", 1)[1]
        for connection in (cloud.lab.dps_connection_string, cloud.lab.hub_connection_string)
    ]
    for text in texts:
        assert "SharedAccessKey" not in text
        for key in keys:
            assert key not in text


def certificate_info(record, slot_kind):
    return record["attestation"]["x509"][slot_kind]["primary"]["info"]


def test_info_modules_return_the_emulators_state(ansible_playbook, cloud, fleet, seeded, tmp_path):
    run, results_file = run_playbook(
        ansible_playbook, cloud, tmp_path, "tests/integration/playbooks/dps_info_modules.yml"
    )
    assert run.returncode == 0, run.output
    assert run.recap("localhost")["failed"] == 0
    results = json.loads(results_file.read_text())
    # -v prints every module result, so the secret check below covers what users see.
    assert "ghost-01" in run.stdout and "$edgeAgent" in run.stdout
    assert_no_secrets(cloud, run.output, results_file.read_text())
    after = cloud.state()
    # Read-only: no record was touched.
    assert [e["etag"] for e in after["dps"]["enrollments"]] == [e["etag"] for e in seeded["dps"]["enrollments"]]
    assert after["iothubs"][0]["devices"] == seeded["iothubs"][0]["devices"]

    stored_enrollments = {e["registrationId"]: e for e in seeded["dps"]["enrollments"]}
    views = {e["registration_id"]: e for e in results["all_enrollments"]["enrollments"]}
    assert sorted(views) == sorted(stored_enrollments) == ["gw-01", "gw-02"]
    for registration_id, view in views.items():
        stored = stored_enrollments[registration_id]
        info = certificate_info(stored, "clientCertificates")
        assert view["certificates"]["primary"]["thumbprint_sha1"] == info["sha1Thumbprint"]
        assert view["certificates"]["primary"]["thumbprint_sha256"] == info["sha256Thumbprint"]
        assert view["certificates"]["primary"]["not_after"] == info["notAfterUtc"]
        assert info["sha1Thumbprint"] == fleet.identities[registration_id]["thumbprint_sha1"]
        assert view["etag"] == stored["etag"] and view["provisioning_status"] == stored["provisioningStatus"]
        assert view["iot_edge"] is stored["capabilities"]["iotEdge"] is True
        assert view["created"] == stored["createdDateTimeUtc"] and view["attestation_type"] == "x509"
    assert views["gw-01"]["initial_twin"] == {"tags": {"site": "plant-1"}, "desired_properties": {"logLevel": "info"}}
    assert views["gw-01"]["allocation_policy"] == "hashed"
    assert views["gw-01"]["registration_state"]["status"] == "assigned"
    assert views["gw-02"]["registration_state"] is None and views["gw-02"]["provisioning_status"] == "disabled"
    assert [e["registration_id"] for e in results["named_enrollments"]["enrollments"]] == ["gw-01"]
    assert results["named_enrollments"]["enrollments"][0] == views["gw-01"]

    (stored_group,) = seeded["dps"]["enrollmentGroups"]
    (group,) = results["all_groups"]["enrollment_groups"]
    assert group["enrollment_group_id"] == stored_group["enrollmentGroupId"] == "plant-1"
    signing = certificate_info(stored_group, "signingCertificates")
    assert group["certificates"]["primary"]["thumbprint_sha256"] == signing["sha256Thumbprint"]
    assert group["certificates"]["primary"]["subject"] == signing["subjectName"] == "CN=fleet intermediate CA"
    assert group["etag"] == stored_group["etag"] and results["all_groups"]["enrollments"] == []

    stored_registrations = {r["registrationId"]: r for r in seeded["dps"]["registrations"]}
    by_id = results["registrations_by_id"]
    assert by_id["missing"] == ["gw-02"] and by_id["summary"]["assigned"] == by_id["summary"]["total"] == 1
    (gw01,) = by_id["registrations"]
    assert gw01["status"] == stored_registrations["gw-01"]["status"] == "assigned"
    assert gw01["assigned_hub"] == stored_registrations["gw-01"]["assignedHub"] == cloud.lab.hub_host_name
    assert gw01["device_id"] == "gw-01" and gw01["etag"] == stored_registrations["gw-01"]["etag"]
    (gw03,) = results["group_registrations"]["registrations"]
    assert gw03["registration_id"] == "gw-03" and gw03["substatus"] == stored_registrations["gw-03"]["substatus"]
    assert stored_registrations["gw-03"]["enrollmentGroupId"] == "plant-1"

    stored_devices = {d["deviceId"]: d for d in seeded["iothubs"][0]["devices"]}
    devices = {d["device_id"]: d for d in results["all_devices"]["devices"]}
    assert sorted(devices) == sorted(stored_devices) == ["gw-01", "gw-03"]
    for device_id, device in devices.items():
        stored = stored_devices[device_id]
        assert device["authentication_type"] == stored["authentication"]["type"]
        assert device["etag"] == stored["etag"] and device["status"] == stored["status"] == "enabled"
        assert device["module_identities"] == [m["moduleId"] for m in stored["modules"]] == ["$edgeAgent", "$edgeHub"]
        assert device["tags"] == stored["twin"]["tags"]
    assert devices["gw-01"]["authentication_type"] == "selfSigned"
    assert devices["gw-01"]["x509_thumbprints"]["primary"] == fleet.identities["gw-01"]["thumbprint_sha1"]
    assert devices["gw-03"]["authentication_type"] == "certificateAuthority"
    assert devices["gw-01"]["desired_properties"] == {"logLevel": "info"}
    agent = devices["gw-01"]["edge_agent"]
    assert agent["connection_state"] == "Connected" and agent["last_desired_status"] == {"code": 200, "description": ""}
    assert agent["system_modules"] == {"edgeAgent": "running", "edgeHub": "running"}
    assert devices["gw-03"]["edge_agent"]["last_desired_status"] is None
    assert results["named_devices"]["devices"] == [devices["gw-01"]]


def test_failures_are_clean_and_keep_the_service_status(ansible_playbook, cloud, tmp_path):
    run, results_file = run_playbook(
        ansible_playbook, cloud, tmp_path, "tests/integration/playbooks/dps_info_failures.yml"
    )
    assert run.returncode == 0, run.output
    assert run.recap("localhost")["ignored"] == 3
    results = json.loads(results_file.read_text())
    assert_no_secrets(cloud, run.output, results_file.read_text())
    wrong_key = results["dps_wrong_key"]
    assert wrong_key["failed"] is True and wrong_key["status"] == 401 and wrong_key["error_code"] == 401002
    assert wrong_key["operation"] == "IndividualEnrollment_Query"
    assert "d3Jvbmcta2V5LXZhbHVl" not in run.output
    assert results["hub_missing"]["msg"].startswith("connection_string: missing")
    assert "one of the following is required" in results["no_selector"]["msg"]
