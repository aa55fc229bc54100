"""iothub_device_info core and the SDK wrapper: parsing, normalization, error classification, retries, emulator."""

from __future__ import annotations

import json
import ssl
import urllib.request

import pytest
import requests
from azure.iot.hub import IoTHubRegistryManager
from msrest.exceptions import ClientRequestError, HttpOperationError

from ansible_collections.edgefleet.iotedge.plugins.module_utils import _iothub
from ansible_collections.edgefleet.iotedge.plugins.module_utils._http import (
    ApiError,
    ConfigurationError,
    RetriesExhaustedError,
    Retryable,
    RetryPolicy,
    TransportError,
)
from ansible_collections.edgefleet.iotedge.plugins.module_utils._iothub import (
    DeviceInfoRequest,
    IoTHubRegistry,
    classify_sdk_error,
    device_info,
    parse_hub_connection_string,
)
from lab.cloud import CloudLab

KEY = "c2VjcmV0LWtleS12YWx1ZQ=="
GOOD = f"HostName=hub.azure-devices.net;SharedAccessKeyName=registryRead;SharedAccessKey={KEY}"


def no_sleep_policy(**overrides):
    return RetryPolicy(sleep=lambda seconds: None, **overrides)


# ---- connection strings ----------------------------------------------------------------------------------


def test_connection_string_is_parsed_and_never_shown():
    connection = parse_hub_connection_string(GOOD + ";")
    assert (connection.host_name, connection.key_name, connection.key) == ("hub.azure-devices.net", "registryRead", KEY)
    assert KEY not in repr(connection)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "EDGEFLEET_IOTHUB_CONNECTION_STRING"),
        ("", "missing"),
        ("a key pasted alone", "not a connection string"),
        (f"HostName=hub;SharedAccessKey={KEY}", "lacks SharedAccessKeyName"),
        (f"HostName=hub;DeviceId=dev;SharedAccessKey={KEY}", "device or module connection string"),
        ("HostName=hub;SharedAccessKeyName=p;SharedAccessKey=not*base64!", "not base64"),
        (f"HostName=https://hub/;SharedAccessKeyName=p;SharedAccessKey={KEY}", "not a URL"),
    ],
)
def test_bad_connection_strings_say_why_without_the_key(text, message):
    with pytest.raises(ConfigurationError, match=message) as failure:
        parse_hub_connection_string(text)
    assert KEY not in str(failure.value) and "not*base64!" not in str(failure.value)


def test_missing_sdk_gives_an_install_hint(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def refuse_azure(name, *args, **kwargs):
        if name.startswith("azure.iot.hub"):
            raise ImportError("No module named 'azure.iot.hub'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", refuse_azure)
    with pytest.raises(_iothub.MissingLibraryError, match=r"pip install 'azure-iot-hub==2\.7\.\*' six"):
        IoTHubRegistry(parse_hub_connection_string(GOOD))


# ---- error classification --------------------------------------------------------------------------------


def http_error(status, body=None, headers=None):
    response = requests.Response()
    response.status_code = status
    response.headers.update(headers or {})
    response._content = json.dumps(body).encode() if body is not None else b""
    response.url = "https://hub/devices/x"
    return HttpOperationError(None, response)


def test_hub_error_keeps_status_error_name_and_tracking_id():
    body = {
        "Message": "ErrorCode:DeviceNotFound;Device gw-9 not registered",
        "ExceptionMessage": "Tracking ID:3e54abc-G:0-TimeStamp:11/27/2026 11:33:05",
    }
    error = classify_sdk_error(
        http_error(404, body, {"iothub-errorcode": "DeviceNotFound"}), "Devices_GetIdentity", "h"
    )
    assert isinstance(error, ApiError) and not isinstance(error, Retryable)
    assert error.status == 404 and error.error_code == "DeviceNotFound" and error.tracking_id == "3e54abc"
    assert str(error) == "IoT Hub answered 404 DeviceNotFound: Device gw-9 not registered"
    assert error.to_result()["operation"] == "Devices_GetIdentity"


def test_json_in_message_body_shape_is_understood():
    inner = {"errorCode": 401003, "trackingId": "t-1", "message": "Token expired"}
    error = classify_sdk_error(http_error(401, {"Message": json.dumps(inner), "ExceptionMessage": ""}), "op", "h")
    assert error.status == 401 and error.error_code == 401003 and error.tracking_id == "t-1"
    assert "Token expired" in str(error) and "connection string" in str(error)


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_throttling_and_server_errors_are_retryable(status):
    headers = {"Retry-After": "4", "iothub-errorcode": "ThrottlingException"} if status == 429 else {}
    verdict = classify_sdk_error(http_error(status, {"Message": "busy"}, headers), "op", "h")
    assert isinstance(verdict, Retryable) and verdict.error.status == status
    assert verdict.retry_after == (4.0 if status == 429 else None)


def test_connection_failures_are_retryable_but_untrusted_tls_is_not():
    refused = ClientRequestError("Error occurred in request.", requests.exceptions.ConnectionError("refused"))
    verdict = classify_sdk_error(refused, "op", "hub:443")
    assert isinstance(verdict, Retryable) and isinstance(verdict.error, TransportError)
    untrusted = ClientRequestError(
        "Error occurred in request.", requests.exceptions.SSLError("CERTIFICATE_VERIFY_FAILED")
    )
    verdict = classify_sdk_error(untrusted, "op", "hub:443")
    assert isinstance(verdict, TransportError) and "ca_bundle" in str(verdict)


# ---- the registry wrapper and the core over a fake SDK ---------------------------------------------------


class Model:
    """Stands in for an msrest model: only as_dict() is used."""

    def __init__(self, **values):
        self.values = values

    def as_dict(self):
        return json.loads(json.dumps(self.values))


class Page:
    def __init__(self, items, continuation_token=None):
        self.items = items
        self.continuation_token = continuation_token


def twin(device_id, tags=None, desired=None, reported=None, **extra):
    bookkeeping = {"$metadata": {"$lastUpdated": "2026-01-01T00:00:00Z"}, "$version": 3}
    return {
        "device_id": device_id,
        "tags": tags or {},
        "properties": {"desired": {**(desired or {}), **bookkeeping}, "reported": {**(reported or {}), **bookkeeping}},
        "version": 4,
        **extra,
    }


class FakeRegistryManager:
    """IoTHubRegistryManager's read calls over dicts; ``failures`` are raised first, one per call."""

    def __init__(self, devices, twins, modules=None, module_twins=None, failures=None, page_size=None):
        self.devices, self.twins = devices, twins
        self.modules = modules or {}
        self.module_twins = module_twins or {}
        self.failures = list(failures or [])
        self.calls = []

    def _maybe_fail(self):
        if self.failures:
            raise self.failures.pop(0)

    def _lookup(self, table, key):
        if key not in table:
            raise http_error(404, {"Message": "ErrorCode:DeviceNotFound;gone"}, {"iothub-errorcode": "DeviceNotFound"})
        return Model(**table[key])

    def get_device(self, device_id):
        self.calls.append(("get_device", device_id))
        self._maybe_fail()
        return self._lookup(self.devices, device_id)

    def get_twin(self, device_id):
        self.calls.append(("get_twin", device_id))
        return self._lookup(self.twins, device_id)

    def get_modules(self, device_id):
        self.calls.append(("get_modules", device_id))
        return [Model(**module) for module in self.modules.get(device_id, [])]

    def get_module_twin(self, device_id, module_id):
        self.calls.append(("get_module_twin", device_id, module_id))
        return self._lookup(self.module_twins, (device_id, module_id))

    def query_iot_hub(self, query, continuation_token=None, max_item_count=None):
        self.calls.append(("query_iot_hub", query.query, continuation_token, max_item_count))
        self._maybe_fail()
        ids = sorted(self.twins)
        start = int(continuation_token or 0)
        end = start + max_item_count
        token = str(end) if end < len(ids) else None
        return Page([Model(**self.twins[i]) for i in ids[start:end]], token)


EDGE = {
    "device_id": "gw-01",
    "status": "enabled",
    "status_reason": None,
    "etag": "MQ==",
    "connection_state": "Connected",
    "last_activity_time": "2026-03-01T00:00:00Z",
    "device_scope": "ms-azure-iot-edge://gw-01-1",
    "authentication": {"type": "certificateAuthority", "x509_thumbprint": {}, "symmetric_key": {}},
    "capabilities": {"iot_edge": True},
}
SAS = {
    "device_id": "sensor-1",
    "status": "disabled",
    "status_reason": "retired",
    "etag": "Mg==",
    "connection_state": "Disconnected",
    "authentication": {"type": "sas", "symmetric_key": {"primary_key": KEY, "secondary_key": KEY}},
    "capabilities": {"iot_edge": False},
}
AGENT_REPORTED = {
    "lastDesiredStatus": {"code": 200, "description": ""},
    "systemModules": {"edgeAgent": {"runtimeStatus": "running"}, "edgeHub": {"runtimeStatus": "running"}},
    "modules": {"sensor": {"runtimeStatus": "backoff", "exitCode": 1}},
}


def fake_hub(**extra):
    return FakeRegistryManager(
        devices={"gw-01": EDGE, "sensor-1": SAS},
        twins={
            "gw-01": twin("gw-01", {"site": "plant-1"}, {"logLevel": "info"}, {"uptime": 5}),
            "sensor-1": twin("sensor-1"),
        },
        modules={"gw-01": [{"module_id": "$edgeHub"}, {"module_id": "$edgeAgent"}]},
        module_twins={("gw-01", "$edgeAgent"): twin("gw-01", reported=AGENT_REPORTED, connection_state="Connected")},
        **extra,
    )


def registry_over(manager, **retry):
    return IoTHubRegistry(parse_hub_connection_string(GOOD), retry=no_sleep_policy(**retry), registry_manager=manager)


def test_edge_device_is_normalized_with_modules_and_edge_agent_status():
    result = device_info(registry_over(fake_hub()), DeviceInfoRequest(device_ids=["gw-01"]))
    assert result == {
        "changed": False,
        "missing": [],
        "devices": [
            {
                "device_id": "gw-01",
                "status": "enabled",
                "status_reason": None,
                "authentication_type": "certificateAuthority",
                "x509_thumbprints": {"primary": None, "secondary": None},
                "iot_edge": True,
                "connection_state": "Connected",
                "last_activity_time": "2026-03-01T00:00:00Z",
                "device_scope": "ms-azure-iot-edge://gw-01-1",
                "etag": "MQ==",
                "tags": {"site": "plant-1"},
                "desired_properties": {"logLevel": "info"},
                "reported_properties": {"uptime": 5},
                "twin_version": 4,
                "module_identities": ["$edgeAgent", "$edgeHub"],
                "edge_agent": {
                    "connection_state": "Connected",
                    "last_desired_status": {"code": 200, "description": ""},
                    "system_modules": {"edgeAgent": "running", "edgeHub": "running"},
                    "modules": {"sensor": "backoff"},
                    "reported_properties": AGENT_REPORTED,
                },
            }
        ],
    }


def test_sas_device_keys_never_leave_and_missing_ids_are_listed():
    manager = fake_hub()
    result = device_info(registry_over(manager), DeviceInfoRequest(device_ids=["sensor-1", "ghost", "sensor-1"]))
    (device,) = result["devices"]
    assert device["authentication_type"] == "sas" and device["status_reason"] == "retired"
    assert device["module_identities"] is None and device["edge_agent"] is None
    assert result["missing"] == ["ghost"]
    assert KEY not in repr(result)
    # Non-edge devices need no module reads; a duplicate id is read once.
    assert [c for c in manager.calls if c[1] == "sensor-1"] == [("get_device", "sensor-1"), ("get_twin", "sensor-1")]


def test_no_ids_pages_through_the_twin_query():
    manager = fake_hub()
    result = device_info(registry_over(manager), DeviceInfoRequest(page_size=1))
    assert [d["device_id"] for d in result["devices"]] == ["gw-01", "sensor-1"]
    queries = [c for c in manager.calls if c[0] == "query_iot_hub"]
    assert queries == [
        ("query_iot_hub", "SELECT * FROM devices", None, 1),
        ("query_iot_hub", "SELECT * FROM devices", "1", 1),
    ]
    assert ("get_twin", "gw-01") not in manager.calls  # the query already returned the twins


def test_transient_sdk_failures_are_retried_by_the_policy():
    throttled = http_error(
        429, {"Message": "slow down"}, {"Retry-After": "2", "iothub-errorcode": "ThrottlingException"}
    )
    reset = ClientRequestError("Error occurred in request.", requests.exceptions.ConnectionError("reset"))
    registry = registry_over(fake_hub(failures=[throttled, reset]))
    result = device_info(registry, DeviceInfoRequest(device_ids=["sensor-1"]))
    assert [d["device_id"] for d in result["devices"]] == ["sensor-1"]
    assert registry.retry.retries == 2 and registry.retry.slept >= 2.0


def test_non_retryable_errors_fail_at_once_and_retries_run_out():
    forbidden = http_error(
        403, {"Message": "ErrorCode:IotHubUnauthorizedAccess;no"}, {"iothub-errorcode": "IotHubUnauthorizedAccess"}
    )
    registry = registry_over(fake_hub(failures=[forbidden]))
    with pytest.raises(ApiError) as failure:
        device_info(registry, DeviceInfoRequest(device_ids=["gw-01"]))
    assert failure.value.status == 403 and failure.value.error_code == "IotHubUnauthorizedAccess"
    assert registry.retry.retries == 0
    busy = [http_error(503, {"Message": "down"}) for _attempt in range(4)]
    registry = registry_over(fake_hub(failures=busy), max_retries=2)
    with pytest.raises(RetriesExhaustedError) as exhausted:
        device_info(registry, DeviceInfoRequest())
    assert exhausted.value.to_result()["status"] == 503 and registry.retry.retries == 2


# ---- the real SDK against the in-process emulator --------------------------------------------------------


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with CloudLab.start(tmp_path_factory.mktemp("cloud")) as cloud:
        yield cloud


@pytest.fixture
def cloud(lab, monkeypatch):
    lab.reset()
    # Trust must come from ca_bundle, not from the environment.
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    return lab


def lab_registry(cloud, **overrides):
    options = {"ca_bundle": str(cloud.ca_bundle), "retry": no_sleep_policy(), **overrides}
    return IoTHubRegistry(parse_hub_connection_string(cloud.hub_connection_string), **options)


def report_edge_agent(cloud, device_id, reported):
    """The lab's control route stands in for edgeAgent's MQTT reported properties."""
    context = ssl.create_default_context(cafile=str(cloud.ca_bundle))
    request = urllib.request.Request(
        f"https://127.0.0.1:{cloud.hub_ports[0]}/_emulator/iothub/twins/{device_id}/modules/$edgeAgent",
        data=json.dumps({"reported": reported, "connectionState": "Connected"}).encode(),
        method="PATCH",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, context=context, timeout=10) as response:
        assert response.status == 200


def seed_devices(cloud):
    sdk = IoTHubRegistryManager.from_connection_string(cloud.hub_connection_string)
    sdk.protocol.config.connection.verify = str(cloud.ca_bundle)
    sdk.create_device_with_x509("edge-1", "A" * 40, "B" * 40, "enabled", iot_edge=True)
    sdk.create_device_with_sas("leaf-1", "", "", "enabled")
    from azure.iot.hub.models import Twin, TwinProperties

    sdk.update_twin("edge-1", Twin(tags={"site": "lab"}, properties=TwinProperties(desired={"interval": 5})))
    report_edge_agent(cloud, "edge-1", AGENT_REPORTED)


def test_device_info_against_the_emulator_matches_its_state(cloud):
    seed_devices(cloud)
    result = device_info(lab_registry(cloud), DeviceInfoRequest())
    stored = {d["deviceId"]: d for d in cloud.state()["iothubs"][0]["devices"]}
    views = {d["device_id"]: d for d in result["devices"]}
    assert sorted(views) == sorted(stored) == ["edge-1", "leaf-1"]
    edge = views["edge-1"]
    assert edge["x509_thumbprints"] == {"primary": "A" * 40, "secondary": "B" * 40}
    assert edge["authentication_type"] == stored["edge-1"]["authentication"]["type"] == "selfSigned"
    assert edge["tags"] == stored["edge-1"]["twin"]["tags"] == {"site": "lab"}
    assert edge["desired_properties"] == {"interval": 5}
    assert edge["module_identities"] == [m["moduleId"] for m in stored["edge-1"]["modules"]]
    assert edge["edge_agent"]["connection_state"] == "Connected"
    assert edge["edge_agent"]["last_desired_status"] == {"code": 200, "description": ""}
    assert edge["edge_agent"]["modules"] == {"sensor": "backoff"}
    assert edge["etag"] == stored["edge-1"]["etag"]
    leaf_keys = stored["leaf-1"]["authentication"]["symmetricKey"]
    assert views["leaf-1"]["authentication_type"] == "sas" and leaf_keys["primaryKey"]
    assert leaf_keys["primaryKey"] not in repr(result) and leaf_keys["secondaryKey"] not in repr(result)


def test_a_503_from_the_emulator_is_retried_once(cloud):
    seed_devices(cloud)
    cloud.faults.add(
        {"match": {"service": "iothub", "operation": "Devices_GetIdentity"}, "count": 1, "action": {"status": 503}}
    )
    registry = lab_registry(cloud)
    result = device_info(registry, DeviceInfoRequest(device_ids=["leaf-1", "nobody"]))
    assert [d["device_id"] for d in result["devices"]] == ["leaf-1"] and result["missing"] == ["nobody"]
    assert registry.retry.retries == 1
    assert cloud.state()["faults"][0]["hits"] == 1


@pytest.mark.filterwarnings("ignore:Unverified HTTPS request")
def test_untrusted_emulator_certificate_is_a_clear_non_retried_error(cloud):
    registry = lab_registry(cloud, ca_bundle=None)
    with pytest.raises(TransportError, match="ca_bundle"):
        device_info(registry, DeviceInfoRequest(device_ids=["edge-1"]))
    assert registry.retry.retries == 0
    insecure = lab_registry(cloud, ca_bundle=None, validate_certs=False)
    assert device_info(insecure, DeviceInfoRequest(device_ids=["edge-1"]))["missing"] == ["edge-1"]


def test_wrong_key_is_a_401_api_error(cloud):
    wrong = cloud.hub_connection_string.rsplit("SharedAccessKey=", 1)[0] + "SharedAccessKey=" + KEY
    registry = IoTHubRegistry(
        parse_hub_connection_string(wrong), ca_bundle=str(cloud.ca_bundle), retry=no_sleep_policy()
    )
    with pytest.raises(ApiError) as failure:
        device_info(registry, DeviceInfoRequest(device_ids=["edge-1"]))
    assert failure.value.status == 401 and KEY not in str(failure.value)
