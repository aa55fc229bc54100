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
from lab.cloud.iothub.query import compile_select

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
    assert no_sleep_policy().server_delay(verdict) == (4.0 if status == 429 else None)


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after": "Mon, 30 Nov 2026 08:00:09 GMT"}, 9.0),
        ({"X-MS-Retry-After-MS": "1500"}, 1.5),
        ({"Retry-After-Ms": "250", "x-ms-retry-after-ms": "9000"}, 0.25),
        ({"Retry-After": "soon"}, None),
    ],
)
def test_the_hubs_answer_headers_reach_the_retry_policy(headers, seconds):
    # The same reading as for DPS (_http.retry_after_seconds): every form, any case, a date counted from the clock.
    now = 1796025600.0  # Mon, 30 Nov 2026 08:00:00 GMT
    verdict = classify_sdk_error(http_error(429, {"Message": "busy"}, headers), "op", "h")
    assert no_sleep_policy(clock=lambda: now).server_delay(verdict) == seconds


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


def hub_twin(device, stored_twin):
    """A device twin as IoT Hub returns it (GET or query): the twin plus the identity fields it carries."""
    authentication = device.get("authentication") or {}
    carried = {
        "etag": "AAAAAAAAAAE=",  # the twin's own etag, not the identity's
        "device_etag": device.get("etag"),
        "status": device.get("status"),
        "status_reason": device.get("status_reason"),
        "connection_state": device.get("connection_state"),
        "last_activity_time": device.get("last_activity_time"),
        "authentication_type": authentication.get("type"),
        "x509_thumbprint": authentication.get("x509_thumbprint") or {},
        "capabilities": device.get("capabilities") or {},
        "device_scope": device.get("device_scope"),
    }
    return {**{key: value for key, value in carried.items() if value is not None}, **stored_twin}


class FakeRegistryManager:
    """IoTHubRegistryManager's read calls over dicts; ``failures`` are raised first, one per call.

    Queries are parsed with the lab's query language (so a query this collection sends must be valid there) and
    evaluated on the deviceId only. ``case_insensitive`` makes the deviceId comparison ignore case; ``lagging`` ids
    are left out of query results, as a twin query that lags behind the registry would.
    """

    def __init__(
        self, devices, twins, modules=None, module_twins=None, failures=None, case_insensitive=False, lagging=()
    ):
        self.devices, self.twins = devices, twins
        self.modules = modules or {}
        self.module_twins = module_twins or {}
        self.failures = list(failures or [])
        self.case_insensitive = case_insensitive
        self.lagging = set(lagging)
        self.calls = []

    def _maybe_fail(self):
        if self.failures:
            raise self.failures.pop(0)

    def _lookup(self, table, key):
        if key not in table:
            raise http_error(404, {"Message": "ErrorCode:DeviceNotFound;gone"}, {"iothub-errorcode": "DeviceNotFound"})
        return Model(**table[key])

    def _twin(self, device_id):
        return hub_twin(self.devices[device_id], self.twins.get(device_id) or twin(device_id))

    def get_device(self, device_id):
        self.calls.append(("get_device", device_id))
        self._maybe_fail()
        return self._lookup(self.devices, device_id)

    def get_twin(self, device_id):
        self.calls.append(("get_twin", device_id))
        self._lookup(self.devices, device_id)
        return Model(**self._twin(device_id))

    def get_modules(self, device_id):
        self.calls.append(("get_modules", device_id))
        return [Model(**module) for module in self.modules.get(device_id, [])]

    def get_module_twin(self, device_id, module_id):
        self.calls.append(("get_module_twin", device_id, module_id))
        return self._lookup(self.module_twins, (device_id, module_id))

    def _rows(self, text):
        collection, predicate = compile_select(text.lower() if self.case_insensitive else text)
        rows = []
        for device_id in sorted(self.devices):
            key = device_id.lower() if self.case_insensitive else device_id
            if device_id in self.lagging or not predicate({"deviceid" if self.case_insensitive else "deviceId": key}):
                continue
            if collection == "devices":
                rows.append(self._twin(device_id))
            else:
                for module in self.modules.get(device_id, []):
                    module_id = module["module_id"]
                    module_twin = self.module_twins.get((device_id, module_id)) or twin(device_id)
                    rows.append({**module_twin, "device_id": device_id, "module_id": module_id})
        return rows

    def query_iot_hub(self, query, continuation_token=None, max_item_count=None):
        self.calls.append(("query_iot_hub", query.query, continuation_token, max_item_count))
        self._maybe_fail()
        rows = self._rows(query.query)
        start = int(continuation_token or 0)
        end = start + max_item_count
        token = str(end) if end < len(rows) else None
        return Page([Model(**row) for row in rows[start:end]], token)

    def queries(self):
        return [call[1] for call in self.calls if call[0] == "query_iot_hub"]

    def rest_calls(self):
        return [call for call in self.calls if call[0] != "query_iot_hub"]


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
    # One query for both ids (a duplicate is asked once); non-edge devices need no module query. The id the query
    # did not return is looked up directly, and that read decides that it is missing.
    assert manager.queries() == ["SELECT * FROM devices WHERE deviceId IN ['sensor-1', 'ghost']"]
    assert manager.rest_calls() == [("get_device", "ghost")]


def test_no_ids_pages_through_the_twin_query():
    manager = fake_hub()
    result = device_info(registry_over(manager), DeviceInfoRequest(page_size=1))
    assert [d["device_id"] for d in result["devices"]] == ["gw-01", "sensor-1"]
    modules_query = "SELECT * FROM devices.modules WHERE deviceId IN ['gw-01']"
    assert manager.calls == [
        ("query_iot_hub", "SELECT * FROM devices", None, 1),
        ("query_iot_hub", "SELECT * FROM devices", "1", 1),
        ("query_iot_hub", modules_query, None, 1),
        ("query_iot_hub", modules_query, "1", 1),
    ]
    assert result["devices"][0]["module_identities"] == ["$edgeAgent", "$edgeHub"]
    assert result["devices"][0]["edge_agent"]["modules"] == {"sensor": "backoff"}


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


# ---- twin queries instead of per-device reads -------------------------------------------------------------


def edge_device(device_id, **overrides):
    return {
        **EDGE,
        "device_id": device_id,
        "etag": f"etag-{device_id}",
        "device_scope": f"scope-{device_id}",
        **overrides,
    }


def edge_modules(device_id, *extra):
    return [{"module_id": module_id} for module_id in ("$edgeAgent", "$edgeHub", *extra)]


def varied_hub(**extra):
    """Edge and leaf devices with every field the view reads set differently; gw-b has no $edgeAgent twin."""
    self_signed = {
        "type": "selfSigned",
        "x509_thumbprint": {"primary_thumbprint": "A" * 40, "secondary_thumbprint": "B" * 40},
    }
    devices = {
        "gw-a": edge_device("gw-a"),
        "gw-b": edge_device("gw-b", status="disabled", status_reason="maintenance", connection_state="Disconnected"),
        "sensor-1": SAS,
        "leaf-x509": {
            "device_id": "leaf-x509",
            "status": "enabled",
            "etag": "NA==",
            "connection_state": "Connected",
            "last_activity_time": "2026-04-01T10:00:00.000Z",
            "device_scope": "scope-gw-a",
            "authentication": self_signed,
            "capabilities": {"iot_edge": False},
        },
    }
    return FakeRegistryManager(
        devices=devices,
        twins={
            "gw-a": twin("gw-a", {"site": "a"}, {"logLevel": "debug"}, {"uptime": 1}),
            "gw-b": twin("gw-b", {"site": "b"}),
            "sensor-1": twin("sensor-1", reported={"battery": 80}),
        },
        modules={"gw-a": edge_modules("gw-a", "sensor"), "gw-b": [{"module_id": "$edgeHub"}], "leaf-x509": []},
        module_twins={("gw-a", "$edgeAgent"): twin("gw-a", reported=AGENT_REPORTED, connection_state="Connected")},
        **extra,
    )


def test_views_from_queries_equal_the_views_from_per_device_reads():
    ids = ["leaf-x509", "gw-b", "sensor-1", "gw-a"]
    manager = varied_hub()
    registry = registry_over(manager)
    old_way = [_iothub._describe(registry, device_id) for device_id in ids]
    manager.calls.clear()
    result = device_info(registry, DeviceInfoRequest(device_ids=ids))
    assert result["devices"] == old_way and result["missing"] == []
    assert manager.rest_calls() == []
    assert manager.queries() == [
        "SELECT * FROM devices WHERE deviceId IN ['leaf-x509', 'gw-b', 'sensor-1', 'gw-a']",
        "SELECT * FROM devices.modules WHERE deviceId IN ['gw-b', 'gw-a']",
    ]
    by_id = {view["device_id"]: view for view in result["devices"]}
    assert by_id["gw-a"]["etag"] == "etag-gw-a"  # the identity's etag (deviceEtag), not the twin's
    assert by_id["gw-b"]["edge_agent"] is None and by_id["gw-b"]["module_identities"] == ["$edgeHub"]
    assert by_id["leaf-x509"]["x509_thumbprints"] == {"primary": "A" * 40, "secondary": "B" * 40}
    # Every device of the hub, without ids: the same views, in the query's order.
    manager.calls.clear()
    everything = device_info(registry, DeviceInfoRequest())
    assert everything["devices"] == sorted(old_way, key=lambda view: view["device_id"])
    assert manager.rest_calls() == [] and len(manager.queries()) == 2


def test_twenty_devices_take_two_queries():
    devices = {f"gw-{n:02}": edge_device(f"gw-{n:02}") for n in range(20)}
    manager = FakeRegistryManager(
        devices=devices,
        twins={},
        modules={device_id: edge_modules(device_id, "sensor") for device_id in devices},
        module_twins={(device_id, "$edgeAgent"): twin(device_id, reported=AGENT_REPORTED) for device_id in devices},
    )
    result = device_info(registry_over(manager), DeviceInfoRequest(device_ids=list(devices)))
    assert [view["device_id"] for view in result["devices"]] == list(devices)
    assert all(view["edge_agent"]["modules"] == {"sensor": "backoff"} for view in result["devices"])
    assert len(manager.calls) == 2 and manager.rest_calls() == []
    manager.calls.clear()
    assert len(device_info(registry_over(manager), DeviceInfoRequest())["devices"]) == 20
    assert len(manager.calls) == 2


def in_list(query):
    """The ids of a generated ``... WHERE deviceId IN ['a', 'b']`` query (they contain no quote)."""
    return query.split(" IN [", 1)[1].rstrip("]").replace("'", "").split(", ")


def test_long_id_lists_are_split_into_queries_under_the_size_limit():
    ids = [f"{n:03}-" + "x" * 124 for n in range(100)]  # 128 characters, the longest device id
    queries = _iothub._in_queries("devices.modules", ids)
    assert len(queries) > 1
    assert all(len(query) <= _iothub.QUERY_BUDGET < _iothub.QUERY_MAX_LENGTH for query in queries)
    assert [device_id for query in queries for device_id in in_list(query)] == ids
    assert all(compile_select(query)[0] == "devices.modules" for query in queries)
    # A chunk is as full as the budget allows: one more id would not fit.
    first = queries[0]
    assert len(first) + len(f", '{ids[len(in_list(first))]}'") > _iothub.QUERY_BUDGET

    manager = FakeRegistryManager(devices={device_id: dict(SAS, device_id=device_id) for device_id in ids}, twins={})
    result = device_info(registry_over(manager), DeviceInfoRequest(device_ids=ids))
    assert [view["device_id"] for view in result["devices"]] == ids and result["missing"] == []
    assert manager.queries() == _iothub._in_queries("devices", ids) and manager.rest_calls() == []


def test_ids_that_cannot_be_queried_unchanged_are_read_one_by_one():
    quoted, injection = "o'brien", "x' OR deviceId != '"
    manager = fake_hub()
    manager.devices[quoted] = dict(SAS, device_id=quoted)
    result = device_info(registry_over(manager), DeviceInfoRequest(device_ids=[quoted, "gw-01", injection, "y" * 129]))
    assert [view["device_id"] for view in result["devices"]] == [quoted, "gw-01"]
    assert result["missing"] == [injection, "y" * 129]
    assert [in_list(query) for query in manager.queries()] == [["gw-01"], ["gw-01"]]
    assert manager.rest_calls() == [
        ("get_device", quoted),
        ("get_twin", quoted),
        ("get_device", injection),
        ("get_device", "y" * 129),
    ]
    with pytest.raises(ValueError, match="cannot be put into a query"):
        _iothub._in_queries("devices", ["ok", quoted])


def test_every_device_reads_modules_per_device_only_for_unqueryable_edge_ids():
    manager = fake_hub()
    manager.devices["edge'1"] = edge_device("edge'1")
    manager.modules["edge'1"] = edge_modules("edge'1")
    manager.module_twins[("edge'1", "$edgeAgent")] = twin("edge'1", reported=AGENT_REPORTED)
    result = device_info(registry_over(manager), DeviceInfoRequest())
    views = {view["device_id"]: view for view in result["devices"]}
    assert views["edge'1"]["module_identities"] == ["$edgeAgent", "$edgeHub"]
    assert views["edge'1"]["edge_agent"]["modules"] == {"sensor": "backoff"}
    assert manager.queries() == ["SELECT * FROM devices", "SELECT * FROM devices.modules WHERE deviceId IN ['gw-01']"]
    assert manager.rest_calls() == [("get_modules", "edge'1"), ("get_module_twin", "edge'1", "$edgeAgent")]


def test_rows_for_other_ids_are_never_taken_for_the_asked_one():
    # A hub that compared ids ignoring case would answer 'gw-01' with GW-01's twin; that row is not gw-01.
    manager = FakeRegistryManager(
        devices={"GW-01": edge_device("GW-01")},
        twins={},
        modules={"GW-01": edge_modules("GW-01")},
        case_insensitive=True,
    )
    result = device_info(registry_over(manager), DeviceInfoRequest(device_ids=["gw-01"]))
    assert result["devices"] == [] and result["missing"] == ["gw-01"]
    assert manager.rest_calls() == [("get_device", "gw-01")]
    manager.devices["gw-01"] = edge_device("gw-01", status="disabled")
    manager.modules["gw-01"] = edge_modules("gw-01", "sensor")
    result = device_info(registry_over(manager), DeviceInfoRequest(device_ids=["gw-01", "GW-01"]))
    lower, upper = result["devices"]
    assert (lower["device_id"], lower["status"], lower["module_identities"]) == (
        "gw-01",
        "disabled",
        ["$edgeAgent", "$edgeHub", "sensor"],
    )
    assert (upper["device_id"], upper["status"], upper["module_identities"]) == (
        "GW-01",
        "enabled",
        ["$edgeAgent", "$edgeHub"],
    )


def test_a_device_the_query_does_not_show_yet_is_read_directly():
    manager = varied_hub(lagging={"gw-a"})
    registry = registry_over(manager)
    result = device_info(registry, DeviceInfoRequest(device_ids=["gw-a", "sensor-1"]))
    assert result["missing"] == [] and result["devices"][0] == _iothub._describe(registry, "gw-a")
    assert manager.rest_calls()[:4] == [
        ("get_device", "gw-a"),
        ("get_twin", "gw-a"),
        ("get_modules", "gw-a"),
        ("get_module_twin", "gw-a", "$edgeAgent"),
    ]


def test_an_edge_device_without_module_rows_reads_its_modules_directly():
    manager = varied_hub()
    real_rows = manager._rows
    manager._rows = lambda text: [] if "devices.modules" in text else real_rows(text)
    registry = registry_over(manager)
    result = device_info(registry, DeviceInfoRequest(device_ids=["gw-a"]))
    assert result["devices"] == [_iothub._describe(registry, "gw-a")]
    assert result["devices"][0]["edge_agent"]["modules"] == {"sensor": "backoff"}


def test_queries_and_their_pages_follow_the_continuation_token():
    manager = varied_hub()
    ids = ["gw-a", "gw-b", "sensor-1"]
    result = device_info(registry_over(manager), DeviceInfoRequest(device_ids=ids, page_size=2))
    assert [view["device_id"] for view in result["devices"]] == ids
    devices_query = "SELECT * FROM devices WHERE deviceId IN ['gw-a', 'gw-b', 'sensor-1']"
    modules_query = "SELECT * FROM devices.modules WHERE deviceId IN ['gw-a', 'gw-b']"
    assert manager.calls == [
        ("query_iot_hub", devices_query, None, 2),
        ("query_iot_hub", devices_query, "2", 2),
        ("query_iot_hub", modules_query, None, 2),
        ("query_iot_hub", modules_query, "2", 2),
    ]
    assert result["devices"][0]["module_identities"] == ["$edgeAgent", "$edgeHub", "sensor"]


def test_invalid_ids_are_refused_before_any_request():
    manager = fake_hub()
    with pytest.raises(ConfigurationError, match="non-empty strings"):
        device_info(registry_over(manager), DeviceInfoRequest(device_ids=["gw-01", " "]))
    assert manager.calls == []


# ---- the real SDK against the in-process emulator --------------------------------------------------------


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


def test_query_views_equal_per_device_views_on_the_emulator(cloud):
    seed_devices(cloud)
    from azure.iot.hub.models import AuthenticationMechanism, Device

    sdk = IoTHubRegistryManager.from_connection_string(cloud.hub_connection_string)
    sdk.protocol.config.connection.verify = str(cloud.ca_bundle)
    retired = Device(device_id="old-1", status="disabled", status_reason="retired")
    retired.authentication = AuthenticationMechanism(type="sas")
    sdk.protocol.devices.create_or_update_identity("old-1", retired)
    registry = lab_registry(cloud)
    ids = ["old-1", "edge-1", "leaf-1"]
    old_way = [_iothub._describe(registry, device_id) for device_id in ids]
    result = device_info(registry, DeviceInfoRequest(device_ids=[*ids, "nobody"]))
    assert result["devices"] == old_way and result["missing"] == ["nobody"]
    assert old_way[0]["status_reason"] == "retired" and old_way[1]["edge_agent"]["modules"] == {"sensor": "backoff"}
    everything = device_info(registry, DeviceInfoRequest())["devices"]
    assert everything == sorted(old_way, key=lambda view: view["device_id"])


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
