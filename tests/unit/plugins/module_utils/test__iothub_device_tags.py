"""iothub_device_tags core over a fake registry: patches, purge modes, batching, 412 handling, validation."""

from __future__ import annotations

import copy
import json

import pytest
import requests
from msrest.exceptions import HttpOperationError

from ansible_collections.edgefleet.iotedge.plugins.module_utils._http import (
    ApiError,
    ConfigurationError,
    RetryPolicy,
)
from ansible_collections.edgefleet.iotedge.plugins.module_utils._iothub import (
    QUERY_BUDGET,
    IoTHubRegistry,
    parse_hub_connection_string,
)
from ansible_collections.edgefleet.iotedge.plugins.module_utils._iothub_device_tags import (
    DeviceTagsRequest,
    apply_merge_patch,
    ensure_device_tags,
    managed_tag_keys,
    same_json,
    tags_patch,
)
from lab.cloud.iothub.models import merge_patch as lab_merge_patch
from lab.cloud.iothub.query import compile_select

KEY = "c2VjcmV0LWtleS12YWx1ZQ=="
CONNECTION = f"HostName=hub.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey={KEY}"


class FakeHub:
    """What the core calls on IoTHubRegistry (query_twins, get_twin, update_twin_tags), over dicts.

    Queries are parsed with the lab's query language, so what the core sends must be valid there. A PATCH applies the
    lab's own merge patch (an implementation independent of the core's) and checks If-Match as the hub does.
    ``lagging`` ids are left out of query results, as a query that lags behind the registry would.
    ``before_write[device_id]`` holds changes another client makes just before our next write(s) of that twin.
    """

    def __init__(self, tags_by_device: dict, lagging=()):
        self.twins = {
            device_id: {"tags": copy.deepcopy(tags), "version": 1} for device_id, tags in tags_by_device.items()
        }
        self.lagging = set(lagging)
        self.before_write: dict = {}
        self.calls: list = []

    @staticmethod
    def etag(version: int) -> str:
        return f"etag-{version}"

    def view(self, device_id: str) -> dict:
        twin = self.twins[device_id]
        return {"device_id": device_id, "etag": self.etag(twin["version"]), "tags": copy.deepcopy(twin["tags"])}

    def other_client_patch(self, device_id: str, patch: dict) -> None:
        twin = self.twins[device_id]
        lab_merge_patch(twin["tags"], copy.deepcopy(patch))
        twin["version"] += 1

    def query_twins(self, query, page_size=100):
        self.calls.append(("query", query))
        collection, predicate = compile_select(query)
        assert collection == "devices"
        return [
            self.view(device_id)
            for device_id in sorted(self.twins)
            if device_id not in self.lagging and predicate({"deviceId": device_id})
        ]

    def get_twin(self, device_id):
        self.calls.append(("get_twin", device_id))
        return self.view(device_id) if device_id in self.twins else None

    def update_twin_tags(self, device_id, tags_patch, etag):
        self.calls.append(("update", device_id, copy.deepcopy(tags_patch), etag))
        changes = self.before_write.get(device_id) or []
        if changes:
            change = changes.pop(0)
            change(self, device_id)
        if device_id not in self.twins:
            raise ApiError("IoT Hub answered 404 DeviceNotFound", status=404, operation="Devices_UpdateTwin")
        twin = self.twins[device_id]
        if etag != self.etag(twin["version"]):
            raise ApiError(
                "IoT Hub answered 412 PreconditionFailed: Precondition failed",
                status=412,
                error_code="PreconditionFailed",
                operation="Devices_UpdateTwin",
            )
        lab_merge_patch(twin["tags"], copy.deepcopy(tags_patch))
        twin["version"] += 1
        return self.view(device_id)

    def tags(self, device_id):
        return self.twins[device_id]["tags"]

    def writes(self):
        return [call for call in self.calls if call[0] == "update"]

    def kinds(self):
        return [call[0] for call in self.calls]


def run(hub, devices, check_mode=False, **options):
    return ensure_device_tags(hub, DeviceTagsRequest(devices=devices, **options), check_mode=check_mode)


# ---- the patch ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "wanted", "removable", "patch"),
    [
        # Nested keys that the wanted object lacks are nulled; a merge patch would keep them otherwise.
        (
            {"site": {"name": "p1", "floor": 2, "room": {"no": 7, "wing": "w"}}},
            {"site": {"name": "p1", "room": {"no": 7}}},
            [],
            {"site": {"floor": None, "room": {"wing": None}}},
        ),
        ({"ring": "canary"}, {"ring": "main"}, [], {"ring": "main"}),
        ({"ring": "main"}, {"ring": "main"}, ["ring"], {}),
        # Arrays are values: replaced whole.
        ({"zones": ["a", "b"]}, {"zones": ["a"]}, [], {"zones": ["a"]}),
        # A scalar where an object was, and an object where a scalar was.
        ({"site": {"name": "p1"}}, {"site": "p1"}, [], {"site": "p1"}),
        ({"site": "p1"}, {"site": {"name": "p1"}}, [], {"site": {"name": "p1"}}),
        # An empty object empties the one that is there.
        ({"site": {"name": "p1"}}, {"site": {}}, [], {"site": {"name": None}}),
        ({}, {"site": {}}, [], {"site": {}}),
        # true is not 1, but 2 and 2.0 are the same JSON number.
        ({"flag": 1}, {"flag": True}, [], {"flag": True}),
        ({"rack": 2.0}, {"rack": 2}, [], {}),
        # Only removable top-level keys go.
        ({"ring": "canary", "owner": "ops"}, {}, ["ring"], {"ring": None}),
        ({"ring": "canary", "owner": "ops"}, {}, [], {}),
        ({"ring": "canary"}, {}, ["ring", "wave"], {"ring": None}),
    ],
)
def test_the_patch_leaves_exactly_the_wanted_values(current, wanted, removable, patch):
    assert tags_patch(current, wanted, removable) == patch
    after = copy.deepcopy(current)
    lab_merge_patch(after, copy.deepcopy(patch))  # the hub's merge, as the lab implements it
    assert after == apply_merge_patch(current, patch)
    for key, value in wanted.items():
        assert same_json(after[key], value)
    assert not any(key in after for key in removable if key not in wanted)


def test_same_json_compares_as_json_does():
    assert same_json({"a": [1, {"b": True}]}, {"a": [1.0, {"b": True}]})
    assert not same_json(True, 1) and not same_json(0, False) and not same_json("1", 1)
    assert not same_json({"a": 1}, {"a": 1, "b": 2}) and not same_json([1], [1, 1])
    assert same_json(None, None) and not same_json(None, {})


def test_managed_keys_are_the_union_of_the_listed_tags_and_the_named_ones():
    wanted = {"gw-1": {"ring": "main"}, "gw-2": {"site": {"name": "p"}}, "gw-3": {}}
    assert managed_tag_keys(wanted, ["wave"]) == {"ring", "site", "wave"}


# ---- purge modes -------------------------------------------------------------------------------------------


def fleet():
    return FakeHub(
        {
            "gw-1": {"ring": "canary", "site": {"name": "p1", "floor": 2}, "owner": "ops"},
            "gw-2": {"ring": "main", "wave": 1, "owner": "ops"},
        }
    )


def test_purge_managed_removes_keys_other_listed_devices_have_and_keeps_foreign_ones():
    hub = fleet()
    result = run(hub, {"gw-1": {"ring": "main"}, "gw-2": {"ring": "main", "site": {"name": "p2"}}}, managed_keys=[])
    # "site" is managed (gw-2 lists it), so gw-1 loses it; "owner" and "wave" belong to someone else.
    assert hub.tags("gw-1") == {"ring": "main", "owner": "ops"}
    assert hub.tags("gw-2") == {"ring": "main", "wave": 1, "owner": "ops", "site": {"name": "p2"}}
    assert [call[2] for call in hub.writes()] == [
        {"ring": "main", "site": None},
        {"site": {"name": "p2"}},
    ]
    assert result["changed"] is True
    assert result["summary"] == {"none": 0, "update": 2, "missing": 0}


def test_purge_managed_with_managed_keys_removes_a_key_nobody_lists_any_more():
    hub = fleet()
    run(
        hub,
        {"gw-1": {"ring": "canary", "site": {"name": "p1", "floor": 2}}, "gw-2": {"ring": "main"}},
        managed_keys=["wave"],
    )
    assert hub.tags("gw-2") == {"ring": "main", "owner": "ops"}
    assert [call[1:3] for call in hub.writes()] == [("gw-2", {"wave": None})]


def test_purge_none_only_sets_what_is_listed_but_nested_values_exactly():
    hub = fleet()
    run(hub, {"gw-1": {"site": {"name": "p1"}}, "gw-2": {}}, purge="none")
    assert hub.tags("gw-1") == {"ring": "canary", "site": {"name": "p1"}, "owner": "ops"}
    assert hub.tags("gw-2") == {"ring": "main", "wave": 1, "owner": "ops"}
    assert [call[1] for call in hub.writes()] == ["gw-1"]


def test_purge_all_makes_the_tags_exactly_the_wanted_ones():
    hub = fleet()
    run(hub, {"gw-1": {"ring": "main", "site": {"name": "p1"}}, "gw-2": {}}, purge="all")
    assert hub.tags("gw-1") == {"ring": "main", "site": {"name": "p1"}}
    assert hub.tags("gw-2") == {}


# ---- reads, results, check mode ------------------------------------------------------------------------------


def test_one_query_reads_the_fleet_and_only_differing_twins_are_written_with_their_etag():
    hub = FakeHub({f"gw-{n}": {"ring": "canary"} for n in range(1, 6)})
    hub.other_client_patch("gw-3", {"ring": "main"})  # etag-2 now
    result = run(hub, {f"gw-{n}": {"ring": "main"} for n in range(1, 6)})
    assert hub.kinds() == ["query", "update", "update", "update", "update"]
    assert hub.calls[0][1] == "SELECT * FROM devices WHERE deviceId IN ['gw-1', 'gw-2', 'gw-3', 'gw-4', 'gw-5']"
    assert [(call[1], call[3]) for call in hub.writes()] == [
        ("gw-1", "etag-1"),
        ("gw-2", "etag-1"),
        ("gw-4", "etag-1"),
        ("gw-5", "etag-1"),
    ]
    assert [device["action"] for device in result["devices"]] == ["update", "update", "none", "update", "update"]
    assert result["devices"][0] == {
        "device_id": "gw-1",
        "action": "update",
        "tags_before": {"ring": "canary"},
        "tags": {"ring": "main"},
    }
    assert result["diff"]["before"]["gw-1"] == {"tags": {"ring": "canary"}}
    assert result["diff"]["after"]["gw-1"] == {"tags": {"ring": "main"}}
    assert "gw-3" not in result["diff"]["after"]


def test_a_large_fleet_is_read_in_few_queries_within_the_length_budget():
    ids = [f"plant-{n:04d}-gateway-{'x' * 40}" for n in range(400)]
    hub = FakeHub({device_id: {"ring": "main"} for device_id in ids})
    result = run(hub, {device_id: {"ring": "main"} for device_id in ids})
    queries = [call[1] for call in hub.calls if call[0] == "query"]
    assert hub.kinds() == ["query"] * len(queries)  # no per-device read, no write
    assert 1 < len(queries) <= 10 and all(len(query) <= QUERY_BUDGET for query in queries)
    assert result["summary"] == {"none": 400, "update": 0, "missing": 0} and result["changed"] is False


def test_unqueryable_lagging_and_unknown_ids_are_read_one_by_one():
    hub = FakeHub({"o'brien": {}, "fresh": {}, "gw-1": {}})
    hub.lagging.add("fresh")
    result = run(
        hub,
        {"gw-1": {"ring": "main"}, "o'brien": {"ring": "main"}, "fresh": {"ring": "main"}, "ghost": {"ring": "main"}},
    )
    assert hub.calls[0] == ("query", "SELECT * FROM devices WHERE deviceId IN ['gw-1', 'fresh', 'ghost']")
    assert [call for call in hub.calls if call[0] == "get_twin"] == [
        ("get_twin", "o'brien"),
        ("get_twin", "fresh"),
        ("get_twin", "ghost"),
    ]
    assert [(device["device_id"], device["action"]) for device in result["devices"]] == [
        ("gw-1", "update"),
        ("o'brien", "update"),
        ("fresh", "update"),
        ("ghost", "missing"),
    ]
    assert result["devices"][3] == {"device_id": "ghost", "action": "missing", "tags_before": None, "tags": None}
    assert hub.tags("o'brien") == {"ring": "main"} and "ghost" not in hub.twins
    assert result["summary"] == {"none": 0, "update": 3, "missing": 1}


def test_check_mode_predicts_and_writes_nothing():
    hub = fleet()
    before = copy.deepcopy(hub.twins)
    wanted = {"gw-1": {"ring": "main", "site": {"name": "p1"}}, "gw-2": {"ring": "main"}}
    predicted = run(hub, wanted, check_mode=True)
    assert hub.twins == before and hub.writes() == []
    assert predicted["changed"] is True
    assert predicted["devices"][0]["tags"] == {"ring": "main", "site": {"name": "p1"}, "owner": "ops"}
    assert predicted["devices"][1]["action"] == "none"
    applied = run(hub, wanted)
    assert applied["devices"] == predicted["devices"]
    again = run(hub, wanted)
    assert again["changed"] is False and again["diff"] == {"before": {}, "after": {}}


def test_an_empty_devices_dict_does_nothing():
    hub = fleet()
    assert run(hub, {}) == {
        "changed": False,
        "devices": [],
        "summary": {"none": 0, "update": 0, "missing": 0},
        "diff": {"before": {}, "after": {}},
    }
    assert hub.calls == []


# ---- 412: read again, write once more -------------------------------------------------------------------------


def owner_changes(hub, device_id):
    """Another client sets a tag of its own between our read and our write."""
    hub.other_client_patch(device_id, {"owner": f"team-{hub.twins[device_id]['version']}"})


def test_a_twin_changed_between_read_and_write_is_read_again_and_written():
    hub = fleet()
    hub.before_write["gw-1"] = [owner_changes]
    result = run(hub, {"gw-1": {"ring": "main"}})
    assert [(call[1], call[3]) for call in hub.writes()] == [("gw-1", "etag-1"), ("gw-1", "etag-2")]
    assert hub.calls[2] == ("get_twin", "gw-1")
    # The other client's tag survives; ours is written on top of it.
    assert hub.tags("gw-1") == {"ring": "main", "site": {"name": "p1", "floor": 2}, "owner": "team-1"}
    assert result["devices"][0]["tags_before"]["owner"] == "ops" and result["devices"][0]["tags"]["owner"] == "team-1"


def test_a_twin_that_keeps_changing_fails_naming_it_after_the_others_are_written():
    hub = fleet()
    hub.before_write["gw-1"] = [owner_changes, owner_changes]
    with pytest.raises(ApiError) as failure:
        run(hub, {"gw-1": {"ring": "main"}, "gw-2": {"ring": "canary"}})
    message = str(failure.value)
    assert "'gw-1' changed between read and write twice (last answer: 412 PreconditionFailed)" in message
    assert "Tags written for the others: gw-2" in message
    assert failure.value.status == 412 and failure.value.operation == "Devices_UpdateTwin"
    assert hub.tags("gw-1")["ring"] == "canary" and hub.tags("gw-2")["ring"] == "canary"


def test_a_write_already_applied_when_read_again_counts_as_done():
    # Our PATCH was applied but its answer was lost; the retry policy sent it again with the old etag (412).
    hub = fleet()
    hub.before_write["gw-1"] = [lambda hub, device_id: hub.other_client_patch(device_id, {"ring": "main"})]
    result = run(hub, {"gw-1": {"ring": "main"}}, purge="none")
    assert len(hub.writes()) == 1
    assert result["devices"][0]["action"] == "update" and result["changed"] is True


def test_a_device_deleted_between_read_and_write_is_missing():
    hub = fleet()
    hub.before_write["gw-1"] = [lambda hub, device_id: hub.twins.pop(device_id)]
    result = run(hub, {"gw-1": {"ring": "main"}, "gw-2": {"ring": "canary"}})
    assert [device["action"] for device in result["devices"]] == ["missing", "update"]
    assert result["devices"][0]["tags_before"]["ring"] == "canary"


def test_other_service_errors_are_raised():
    hub = fleet()

    def refuse(hub, device_id):
        raise ApiError("IoT Hub answered 400 ArgumentInvalid", status=400, operation="Devices_UpdateTwin")

    hub.before_write["gw-1"] = [refuse]
    with pytest.raises(ApiError, match="400 ArgumentInvalid"):
        run(hub, {"gw-1": {"ring": "main"}})


# ---- bad input: refused before any request ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"purge": "some"}, ["purge", "managed, none, all"]),
        ({"purge": "none", "managed_keys": ["ring"]}, ["managed_keys", "only used with purge=managed"]),
        ({"managed_keys": ["a.b"]}, ["managed_keys", "'a.b'"]),
        ({"devices": {"gw 1": {}}}, ["devices", "'gw 1'", "not an IoT Hub device id"]),
        ({"devices": {"x" * 129: {}}}, ["devices", "not an IoT Hub device id"]),
        ({"devices": {"gw-1": "ring=main"}}, ["devices['gw-1']", "must be a dictionary of tags"]),
        ({"devices": {"gw-1": None}}, ["devices['gw-1']", "use {}"]),
        ({"devices": {"gw-1": {"floor.2": 1}}}, ["devices['gw-1']", "'floor.2'", "'.', '$'"]),
        ({"devices": {"gw-1": {"site": {"$ring": "x"}}}}, ["devices['gw-1'].site", "'$ring'"]),
        ({"devices": {"gw-1": {"my tag": 1}}}, ["devices['gw-1']", "'my tag'"]),
        ({"devices": {"gw-1": {"k" * 1025: 1}}}, ["devices['gw-1']", "longer than 1024 bytes"]),
        ({"devices": {"gw-1": {"ring": None}}}, ["devices['gw-1'].ring", "null"]),
        ({"devices": {"gw-1": {"note": "n" * 4097}}}, ["devices['gw-1'].note", "4096 bytes"]),
        ({"devices": {"gw-1": {"big": 2**53}}}, ["devices['gw-1'].big", "outside the integers"]),
        ({"devices": {"gw-1": {"x": float("nan")}}}, ["devices['gw-1'].x", "not a number"]),
        ({"devices": {"gw-1": {"at": {1, 2}}}}, ["devices['gw-1'].at", "not a twin value"]),
        ({"devices": {"gw-1": {f"k{n}": "v" * 1000 for n in range(9)}}}, ["devices['gw-1']", "8192"]),
    ],
)
def test_bad_input_is_refused_naming_the_option_device_and_key(options, words):
    hub = fleet()
    request = {"devices": {"gw-1": {"ring": "main"}}, **options}
    with pytest.raises(ConfigurationError) as failure:
        run(hub, **request)
    for word in words:
        assert word in str(failure.value)
    assert hub.calls == []


def deep(levels: int) -> dict:
    value: dict = {"leaf": 1}
    for level in range(levels - 1):
        value = {f"l{level}": value}
    return value


def test_ten_levels_of_objects_are_allowed_and_eleven_refused():
    # Microsoft's device twin guide shows tags -> one -> two ... -> ten -> {"property": "value"} as the deepest
    # valid twin: ten objects below tags.
    hub = fleet()
    run(hub, {"gw-1": {"one": deep(10)}}, purge="none")
    assert hub.writes()
    with pytest.raises(ConfigurationError, match=r"devices\['gw-1'\].*nest more than 10 levels"):
        run(hub, {"gw-1": {"one": deep(11)}}, purge="none")


def test_tags_that_would_pass_8_kb_with_the_kept_ones_are_refused_before_any_write():
    hub = FakeHub({"gw-1": {}, "gw-2": {"notes": {f"k{n}": "v" * 1000 for n in range(8)}}})
    with pytest.raises(ConfigurationError) as failure:
        run(hub, {"gw-1": {"ring": "main"}, "gw-2": {"ring": "main", "site": "s" * 200}}, purge="none")
    assert "devices['gw-2'] (with the tags the twin keeps)" in str(failure.value) and "8192" in str(failure.value)
    assert hub.writes() == [] and hub.tags("gw-1") == {}


# ---- the registry's twin write ----------------------------------------------------------------------------------


def http_error(status, headers=None):
    response = requests.Response()
    response.status_code = status
    response.headers.update(headers or {})
    response._content = json.dumps({"Message": f"ErrorCode:Status{status};busy"}).encode()
    response.url = "https://hub/twins/gw-1"
    return HttpOperationError(None, response)


class FakeDevicesOperations:
    """``registry_manager.protocol.devices``: records the PATCH and answers like the hub, after ``failures``."""

    def __init__(self, failures):
        self.failures = list(failures)
        self.sent = []

    def update_twin(self, device_id, device_twin_info, if_match=None):
        from azure.iot.hub.protocol import models
        from msrest import Serializer

        body = Serializer({k: v for k, v in vars(models).items() if isinstance(v, type)}).body(device_twin_info, "Twin")
        self.sent.append((device_id, body, if_match))
        if self.failures:
            raise self.failures.pop(0)
        return models.Twin(device_id=device_id, etag="etag-2", tags={"ring": "main"})


class FakeRegistryManager:
    def __init__(self, failures=()):
        self.protocol = type("Protocol", (), {})()
        self.protocol.devices = FakeDevicesOperations(failures)


def test_update_twin_tags_sends_only_tags_with_nulls_and_the_quoted_etag_and_retries_429():
    manager = FakeRegistryManager(failures=[http_error(429, {"Retry-After": "2"})])
    slept = []
    registry = IoTHubRegistry(
        parse_hub_connection_string(CONNECTION), registry_manager=manager, retry=RetryPolicy(sleep=slept.append)
    )
    answer = registry.update_twin_tags("gw-1", {"ring": "main", "site": {"floor": None}, "wave": None}, "etag-1")
    assert answer["tags"] == {"ring": "main"} and answer["etag"] == "etag-2"
    body = {"tags": {"ring": "main", "site": {"floor": None}, "wave": None}}
    assert manager.protocol.devices.sent == [("gw-1", body, '"etag-1"'), ("gw-1", body, '"etag-1"')]
    assert registry.retry.retries == 1 and 2 <= slept[0] <= 2.5


def test_update_twin_tags_raises_412_as_an_api_error_without_retrying():
    manager = FakeRegistryManager(failures=[http_error(412, {"iothub-errorcode": "PreconditionFailed"})])
    registry = IoTHubRegistry(
        parse_hub_connection_string(CONNECTION), registry_manager=manager, retry=RetryPolicy(sleep=lambda s: None)
    )
    with pytest.raises(ApiError) as stale:
        registry.update_twin_tags("gw-1", {"ring": "main"}, "etag-1")
    assert stale.value.status == 412 and stale.value.error_code == "PreconditionFailed"
    assert stale.value.operation == "Devices_UpdateTwin" and registry.retry.retries == 0


def test_a_twin_grown_past_8_kb_by_another_client_is_not_written_and_named_after_the_others():
    hub = fleet()

    def fill(hub, device_id):
        hub.other_client_patch(device_id, {"notes": {f"k{n}": "v" * 1000 for n in range(8)}})

    hub.before_write["gw-1"] = [fill]
    with pytest.raises(ConfigurationError) as failure:
        run(hub, {"gw-1": {"ring": "main", "site": "s" * 200}, "gw-2": {"ring": "canary"}}, purge="none")
    message = str(failure.value)
    assert "Not written: devices['gw-1'] (with the tags the twin keeps)" in message and "8192" in message
    assert "Tags written for the others: gw-2" in message
    assert len(hub.writes()) == 2 and hub.tags("gw-1")["ring"] == "canary" and hub.tags("gw-2")["ring"] == "canary"
