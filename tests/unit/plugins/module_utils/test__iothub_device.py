"""iothub_device core and the registry writes, against the in-process IoT Hub emulator with the real SDK."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from azure.iot.hub import IoTHubRegistryManager

from ansible_collections.edgefleet.iotedge.plugins.module_utils._http import (
    ApiError,
    ConfigurationError,
    RetryPolicy,
)
from ansible_collections.edgefleet.iotedge.plugins.module_utils._iothub import (
    IoTHubRegistry,
    if_match_header,
    parse_hub_connection_string,
)
from ansible_collections.edgefleet.iotedge.plugins.module_utils._iothub_device import (
    DISABLED_REASON,
    DeviceStateRequest,
    ensure_device_state,
    with_status,
)

MODULE = Path(__file__).resolve().parents[4] / "plugins" / "modules" / "iothub_device.py"
# What a status change may change in the stored identity; everything else (authentication, capabilities, scopes,
# module identities, the twin apart from the status it mirrors) must stay as it was.
STATUS_FIELDS = ("etag", "status", "statusReason", "statusUpdatedTime")
TWIN_STATUS_FIELDS = ("deviceEtag", "status", "statusReason", "statusUpdateTime")
MODULE_TWIN_STATUS_FIELDS = ("status", "statusReason", "statusUpdateTime")


def no_sleep_policy(**overrides):
    return RetryPolicy(sleep=lambda seconds: None, **overrides)


def lab_registry(cloud, policy="iothubowner", **overrides):
    options = {"ca_bundle": str(cloud.ca_bundle), "retry": no_sleep_policy(), **overrides}
    connection = cloud.hub_connection_strings(policy)[0]
    return IoTHubRegistry(parse_hub_connection_string(connection), **options)


def other_client(cloud):
    """Another client of the hub (a colleague, a portal user): the plain SDK."""
    sdk = IoTHubRegistryManager.from_connection_string(cloud.hub_connection_string)
    sdk.protocol.config.connection.verify = str(cloud.ca_bundle)
    return sdk


def seed_devices(cloud):
    """An X.509 edge gateway, a CA-signed edge gateway and a SAS leaf device under it, all enabled."""
    sdk = other_client(cloud)
    sdk.create_device_with_x509("edge-1", "A" * 40, "B" * 40, "enabled", iot_edge=True)
    sdk.create_device_with_certificate_authority("edge-ca", "enabled", iot_edge=True)
    gateway = sdk.get_device("edge-ca")
    sdk.create_device_with_sas("leaf-1", "", "", "enabled", device_scope=gateway.device_scope)
    cloud.runtime.request_log.clear()  # hub_requests() shows what the code under test sent
    return sdk


def stored(cloud):
    return {device["deviceId"]: device for device in cloud.state()["iothubs"][0]["devices"]}


def without_status(device):
    """A stored device minus what a status change may change."""
    kept = {key: value for key, value in device.items() if key not in STATUS_FIELDS}
    kept["twin"] = {key: value for key, value in device["twin"].items() if key not in TWIN_STATUS_FIELDS}
    kept["modules"] = [
        # A module twin mirrors the device's status too; its deviceEtag is the module identity's and must stay.
        {
            **module,
            "twin": {key: value for key, value in module["twin"].items() if key not in MODULE_TWIN_STATUS_FIELDS},
        }
        for module in device["modules"]
    ]
    return kept


def hub_requests(cloud, *methods):
    """(method, path, status, If-Match) of the requests the hub saw, optionally only these methods."""
    return [
        (entry["method"], entry["path"], entry["status"], entry["ifMatch"])
        for entry in cloud.runtime.request_log
        if entry["service"] == "iothub" and (not methods or entry["method"] in methods)
    ]


def run(cloud, device_ids, check_mode=False, registry=None, **options):
    registry = registry or lab_registry(cloud)
    return ensure_device_state(registry, DeviceStateRequest(device_ids=device_ids, **options), check_mode=check_mode)


# ---- status changes --------------------------------------------------------------------------------------


def test_disabling_keeps_authentication_capabilities_and_scopes(cloud):
    seed_devices(cloud)
    before = stored(cloud)
    result = run(cloud, ["edge-1", "edge-ca", "leaf-1"])
    assert result["changed"] is True
    assert result["devices"] == [
        {"device_id": device_id, "status_before": "enabled", "status": "disabled", "action": "disable"}
        for device_id in ("edge-1", "edge-ca", "leaf-1")
    ]
    after = stored(cloud)
    for device_id in ("edge-1", "edge-ca", "leaf-1"):
        assert after[device_id]["status"] == "disabled"
        assert after[device_id]["statusReason"] == DISABLED_REASON
        assert after[device_id]["etag"] != before[device_id]["etag"]
        assert without_status(after[device_id]) == without_status(before[device_id])
    # Spelled out for the X.509 gateway: thumbprints, type, edge capability, scope and module identities.
    edge = after["edge-1"]
    assert edge["authentication"]["type"] == "selfSigned"
    assert edge["authentication"]["x509Thumbprint"] == {"primaryThumbprint": "A" * 40, "secondaryThumbprint": "B" * 40}
    assert edge["capabilities"] == {"iotEdge": True} and edge["deviceScope"] == before["edge-1"]["deviceScope"]
    assert [module["moduleId"] for module in edge["modules"]] == ["$edgeAgent", "$edgeHub"]
    assert after["edge-ca"]["authentication"]["type"] == "certificateAuthority"
    # The SAS device keeps its keys (an identity PUT without them would get new ones) and its parent.
    assert after["leaf-1"]["authentication"]["symmetricKey"] == before["leaf-1"]["authentication"]["symmetricKey"]
    assert after["leaf-1"]["deviceScope"] == before["edge-ca"]["deviceScope"]
    # One GET and one PUT each, the PUT with the etag that was read; no key reaches the result.
    puts = hub_requests(cloud, "PUT")
    assert [request[:3] for request in puts] == [
        ("PUT", f"/devices/{device_id}", 200) for device_id in ("edge-1", "edge-ca", "leaf-1")
    ]
    assert [request[3] for request in puts] == [f'"{before[d]["etag"]}"' for d in ("edge-1", "edge-ca", "leaf-1")]
    assert before["leaf-1"]["authentication"]["symmetricKey"]["primaryKey"] not in json.dumps(result)
    assert result["diff"] == {
        "before": {device_id: {"status": "enabled"} for device_id in ("edge-1", "edge-ca", "leaf-1")},
        "after": {device_id: {"status": "disabled"} for device_id in ("edge-1", "edge-ca", "leaf-1")},
    }


def test_a_second_run_changes_nothing_and_writes_nothing(cloud):
    seed_devices(cloud)
    run(cloud, ["edge-1", "leaf-1"])
    cloud.runtime.request_log.clear()
    again = run(cloud, ["edge-1", "leaf-1", "edge-1"])
    assert again["changed"] is False
    assert again["devices"] == [
        {"device_id": device_id, "status_before": "disabled", "status": "disabled", "action": "none"}
        for device_id in ("edge-1", "leaf-1")
    ]
    assert again["diff"] == {"before": {}, "after": {}}
    assert [request[0] for request in hub_requests(cloud)] == ["GET", "GET"]


def test_enabling_back_clears_the_reason_and_keeps_the_identity(cloud):
    seed_devices(cloud)
    before = stored(cloud)
    run(cloud, ["edge-1"])
    result = run(cloud, ["edge-1", "edge-ca"], status="enabled")
    assert result["changed"] is True
    assert result["devices"] == [
        {"device_id": "edge-1", "status_before": "disabled", "status": "enabled", "action": "enable"},
        {"device_id": "edge-ca", "status_before": "enabled", "status": "enabled", "action": "none"},
    ]
    after = stored(cloud)
    assert after["edge-1"]["status"] == "enabled" and after["edge-1"]["statusReason"] is None
    assert without_status(after["edge-1"]) == without_status(before["edge-1"])
    assert after["edge-ca"]["etag"] == before["edge-ca"]["etag"]  # not written
    assert result["diff"] == {"before": {"edge-1": {"status": "disabled"}}, "after": {"edge-1": {"status": "enabled"}}}


def test_a_device_disabled_by_someone_else_keeps_its_reason(cloud):
    sdk = seed_devices(cloud)
    device = sdk.get_device("leaf-1")
    device.status, device.status_reason = "disabled", "stolen"
    sdk.protocol.devices.create_or_update_identity("leaf-1", device, if_match=if_match_header(device.etag))
    result = run(cloud, ["leaf-1"])
    assert result["changed"] is False and result["devices"][0]["action"] == "none"
    assert stored(cloud)["leaf-1"]["statusReason"] == "stolen"


def test_unknown_devices_are_reported_missing_and_never_created(cloud):
    seed_devices(cloud)
    result = run(cloud, ["ghost", "edge-1"])
    assert result["devices"] == [
        {"device_id": "ghost", "status_before": None, "status": None, "action": "missing"},
        {"device_id": "edge-1", "status_before": "enabled", "status": "disabled", "action": "disable"},
    ]
    assert "ghost" not in stored(cloud)
    assert [request[1] for request in hub_requests(cloud, "PUT", "DELETE")] == ["/devices/edge-1"]
    absent = run(cloud, ["ghost"], state="absent")
    assert absent["changed"] is False and absent["devices"][0]["action"] == "missing"


# ---- deletes ---------------------------------------------------------------------------------------------


def test_delete_and_delete_again(cloud):
    seed_devices(cloud)
    etag = stored(cloud)["edge-1"]["etag"]
    result = run(cloud, ["edge-1", "leaf-1"], state="absent")
    assert result["changed"] is True
    assert result["devices"] == [
        {"device_id": "edge-1", "status_before": "enabled", "status": None, "action": "delete"},
        {"device_id": "leaf-1", "status_before": "enabled", "status": None, "action": "delete"},
    ]
    assert sorted(stored(cloud)) == ["edge-ca"]
    assert hub_requests(cloud, "DELETE")[0] == ("DELETE", "/devices/edge-1", 204, f'"{etag}"')
    assert result["diff"] == {
        "before": {"edge-1": {"status": "enabled"}, "leaf-1": {"status": "enabled"}},
        "after": {"edge-1": None, "leaf-1": None},
    }
    again = run(cloud, ["edge-1", "leaf-1"], state="absent")
    assert again["changed"] is False
    assert [device["action"] for device in again["devices"]] == ["missing", "missing"]


def test_check_mode_predicts_and_writes_nothing(cloud):
    seed_devices(cloud)
    before = stored(cloud)
    disable = run(cloud, ["edge-1", "ghost"], check_mode=True)
    assert disable["changed"] is True
    assert disable["devices"] == [
        {"device_id": "edge-1", "status_before": "enabled", "status": "disabled", "action": "disable"},
        {"device_id": "ghost", "status_before": None, "status": None, "action": "missing"},
    ]
    assert disable["diff"]["after"] == {"edge-1": {"status": "disabled"}}
    delete = run(cloud, ["edge-1", "leaf-1"], check_mode=True, state="absent")
    assert [device["action"] for device in delete["devices"]] == ["delete", "delete"]
    assert delete["diff"]["after"] == {"edge-1": None, "leaf-1": None}
    assert stored(cloud) == before
    assert {request[0] for request in hub_requests(cloud)} == {"GET"}


def test_invalid_input_is_refused_before_any_request(cloud):
    seed_devices(cloud)
    cloud.runtime.request_log.clear()
    with pytest.raises(ConfigurationError, match="non-empty strings"):
        run(cloud, ["edge-1", ""])
    with pytest.raises(ConfigurationError, match="status"):
        run(cloud, ["edge-1"], status="retired")
    assert hub_requests(cloud) == []
    assert run(cloud, [])["devices"] == []


# ---- races, lost answers and transient failures ----------------------------------------------------------


def racing_registry(cloud, change, times=1):
    """A registry whose first ``times`` device reads are each followed by ``change(other_client)``: a race."""
    registry = lab_registry(cloud)
    sdk = other_client(cloud)
    read = registry.get_device
    left = [times]

    def get_device(device_id):
        record = read(device_id)
        if left[0] > 0 and record is not None:
            left[0] -= 1
            change(sdk, device_id)
        return record

    registry.get_device = get_device
    return registry


def swap_secondary_thumbprint(sdk, device_id):
    device = sdk.get_device(device_id)
    device.authentication.x509_thumbprint.secondary_thumbprint = "C" * 40
    sdk.protocol.devices.create_or_update_identity(device_id, device, if_match=if_match_header(device.etag))


def test_a_device_changed_between_read_and_write_is_read_again(cloud):
    seed_devices(cloud)
    registry = racing_registry(cloud, swap_secondary_thumbprint)
    result = run(cloud, ["edge-1"], registry=registry)
    assert result["devices"] == [
        {"device_id": "edge-1", "status_before": "enabled", "status": "disabled", "action": "disable"}
    ]
    device = stored(cloud)["edge-1"]
    # The other client's change survives: the second PUT started from the identity read again.
    assert device["status"] == "disabled"
    assert device["authentication"]["x509Thumbprint"]["secondaryThumbprint"] == "C" * 40
    # The other client's PUT, ours with the etag read first (412), ours with the etag read again.
    assert [request[2] for request in hub_requests(cloud, "PUT")] == [200, 412, 200]


def test_a_device_that_keeps_changing_fails_clearly_after_the_others(cloud):
    seed_devices(cloud)
    registry = racing_registry(cloud, swap_secondary_thumbprint, times=2)
    with pytest.raises(ApiError) as failure:
        run(cloud, ["edge-1", "edge-ca"], registry=registry)
    message = str(failure.value)
    assert "'edge-1' changed between read and write twice" in message and "412 PreconditionFailed" in message
    assert "Done for the others: edge-ca" in message
    assert failure.value.status == 412 and failure.value.operation == "Devices_CreateOrUpdateIdentity"
    devices = stored(cloud)
    assert devices["edge-1"]["status"] == "enabled" and devices["edge-ca"]["status"] == "disabled"


def test_a_delete_races_with_an_update(cloud):
    seed_devices(cloud)
    registry = racing_registry(cloud, swap_secondary_thumbprint)
    result = run(cloud, ["edge-1"], registry=registry, state="absent")
    assert result["devices"][0]["action"] == "delete" and "edge-1" not in stored(cloud)
    assert [request[2] for request in hub_requests(cloud, "DELETE")] == [412, 204]


def test_a_device_deleted_between_read_and_write_is_missing(cloud):
    seed_devices(cloud)
    registry = racing_registry(cloud, lambda sdk, device_id: sdk.delete_device(device_id))
    result = run(cloud, ["edge-1"], registry=registry)
    assert result["changed"] is False
    assert result["devices"] == [
        {"device_id": "edge-1", "status_before": "enabled", "status": None, "action": "missing"}
    ]
    assert "edge-1" not in stored(cloud)


def test_a_transient_503_on_the_write_is_retried(cloud):
    seed_devices(cloud)
    cloud.faults.add(
        {
            "match": {"service": "iothub", "operation": "Devices_CreateOrUpdateIdentity"},
            "count": 1,
            "action": {"status": 503},
        }
    )
    registry = lab_registry(cloud)
    result = run(cloud, ["edge-1"], registry=registry)
    assert result["devices"][0]["action"] == "disable" and stored(cloud)["edge-1"]["status"] == "disabled"
    assert registry.retry.retries == 1 and cloud.state()["faults"][0]["hits"] == 1
    assert [request[2] for request in hub_requests(cloud, "PUT")][-2:] == [503, 200]


def test_a_write_whose_answer_was_lost_is_found_applied(cloud):
    # The hub applies the PUT and the connection drops: the policy sends it again with the old etag (412), and the
    # re-read shows the device already disabled.
    seed_devices(cloud)
    cloud.faults.add(
        {
            "match": {"service": "iothub", "operation": "Devices_CreateOrUpdateIdentity"},
            "count": 1,
            "action": {"drop": True, "afterProcessing": True},
        }
    )
    registry = lab_registry(cloud)
    result = run(cloud, ["edge-1"], registry=registry)
    assert result["changed"] is True
    assert result["devices"] == [
        {"device_id": "edge-1", "status_before": "enabled", "status": "disabled", "action": "disable"}
    ]
    assert registry.retry.retries == 1
    assert [request[2] for request in hub_requests(cloud, "PUT")][-1] == 412


def test_a_lost_delete_answer_is_found_applied(cloud):
    seed_devices(cloud)
    cloud.faults.add(
        {
            "match": {"service": "iothub", "operation": "Devices_DeleteIdentity"},
            "count": 1,
            "action": {"drop": True, "afterProcessing": True},
        }
    )
    result = run(cloud, ["leaf-1"], state="absent")
    assert result["devices"][0]["action"] == "delete" and "leaf-1" not in stored(cloud)


def test_a_policy_without_registry_write_fails_at_once(cloud):
    seed_devices(cloud)
    registry = lab_registry(cloud, policy="registryRead")
    with pytest.raises(ApiError) as failure:
        run(cloud, ["edge-1"], registry=registry)
    assert failure.value.status == 401 and failure.value.operation == "Devices_CreateOrUpdateIdentity"
    assert registry.retry.retries == 0 and stored(cloud)["edge-1"]["status"] == "enabled"


# ---- registry helpers ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("etag", "header"),
    [("MQ==", '"MQ=="'), ('"MQ=="', '"MQ=="'), (None, "*"), ("*", "*"), ("AAAAAAAAAAE=", '"AAAAAAAAAAE="')],
)
def test_etags_are_sent_quoted(etag, header):
    assert if_match_header(etag) == header


def test_with_status_changes_only_the_status_and_its_reason():
    record = {
        "device_id": "gw",
        "etag": "MQ==",
        "status": "enabled",
        "authentication": {"type": "selfSigned", "x509_thumbprint": {"primary_thumbprint": "A" * 40}},
        "capabilities": {"iot_edge": True},
    }
    disabled = with_status(record, "disabled")
    assert disabled == {**record, "status": "disabled", "status_reason": DISABLED_REASON}
    assert with_status(disabled, "enabled")["status_reason"] is None
    assert record["status"] == "enabled" and "status_reason" not in record  # the record read is left alone


def test_update_device_takes_a_model_or_a_record(cloud):
    sdk = seed_devices(cloud)
    registry = lab_registry(cloud)
    model = sdk.get_device("edge-ca")
    model.status_reason = "from a model"
    updated = registry.update_device("edge-ca", model, model.etag)
    assert updated["status_reason"] == "from a model" and updated["etag"] != model.etag
    record = registry.get_device("edge-ca")
    updated = registry.update_device("edge-ca", {**record, "status_reason": "from a record"}, record["etag"])
    assert updated["status_reason"] == "from a record"
    assert updated["capabilities"] == {"iot_edge": True}
    with pytest.raises(ApiError) as stale:
        registry.update_device("edge-ca", record, record["etag"])
    assert stale.value.status == 412 and stale.value.error_code == "PreconditionFailed"
    with pytest.raises(ApiError) as gone:
        registry.delete_device("nobody", None)
    assert gone.value.status == 404 and gone.value.operation == "Devices_DeleteIdentity"


# ---- the module entry point ------------------------------------------------------------------------------


def run_module(tmp_path, cloud, check_mode=False, diff=False, **args):
    args_file = tmp_path / "args.json"
    module_args = {"ca_bundle": str(cloud.ca_bundle), **args, "_ansible_check_mode": check_mode, "_ansible_diff": diff}
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": module_args}))
    environment = {k: v for k, v in os.environ.items() if not k.startswith("EDGEFLEET_")}
    environment.update(
        PYTHONPATH=os.pathsep.join(sys.path), EDGEFLEET_IOTHUB_CONNECTION_STRING=cloud.hub_connection_string
    )
    completed = subprocess.run(
        [sys.executable, str(MODULE), str(args_file)], env=environment, capture_output=True, text=True, check=False
    )
    return json.loads(completed.stdout)


def test_the_module_in_check_and_diff_mode_then_for_real(cloud, tmp_path):
    seed_devices(cloud)
    predicted = run_module(tmp_path, cloud, check_mode=True, diff=True, device_ids=["edge-1", "ghost"])
    assert predicted["changed"] is True and "failed" not in predicted
    assert predicted["diff"] == {
        "before": {"edge-1": {"status": "enabled"}},
        "after": {"edge-1": {"status": "disabled"}},
    }
    assert stored(cloud)["edge-1"]["status"] == "enabled"
    applied = run_module(tmp_path, cloud, device_ids=["edge-1", "ghost"])
    assert applied["changed"] is True and "diff" not in applied
    assert [device["action"] for device in applied["devices"]] == ["disable", "missing"]
    assert stored(cloud)["edge-1"]["status"] == "disabled"
    again = run_module(tmp_path, cloud, diff=True, device_ids=["edge-1"])
    assert again["changed"] is False and "diff" not in again
    deleted = run_module(tmp_path, cloud, device_ids=["edge-1"], state="absent")
    assert deleted["changed"] is True and "edge-1" not in stored(cloud)


def test_the_module_refuses_a_device_connection_string(cloud, tmp_path):
    device_string = cloud.hub_connection_string.replace("SharedAccessKeyName=iothubowner", "DeviceId=gw")
    result = run_module(tmp_path, cloud, device_ids=["edge-1"], connection_string=device_string)
    assert result["failed"] is True and "device or module connection string" in result["msg"]
    assert result["invocation"]["module_args"]["connection_string"] == "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"
