"""iothub_deployment cores without a hub: manifests, versions and ids, target_tags quoting, planning against a fake
hub (create, update in place, no change, supersede, check mode, absent) and the translation of the hub's refusals."""

from __future__ import annotations

import copy
import hashlib
import json
from re import escape as re_escape

import pytest

from ansible_collections.edgefleet.iotedge.plugins.module_utils._deployment_manifest import (
    MAX_ID_LENGTH,
    MAX_NAME_LENGTH,
    SECRET_ITERATIONS,
    SECRET_SALT,
    canonical_content,
    check_modules_content,
    check_name,
    content_version,
    deployment_id,
    manifest_secrets,
    modules_content_of,
    read_manifest_file,
    target_condition_from_tags,
)
from ansible_collections.edgefleet.iotedge.plugins.module_utils._http import ApiError, ConfigurationError
from ansible_collections.edgefleet.iotedge.plugins.module_utils._iothub_deployment import (
    NAME_LABEL,
    VERSION_LABEL,
    DeploymentInfoRequest,
    DeploymentRequest,
    Takeover,
    applied_query,
    deployment_info,
    ensure_deployment,
    explain,
    prepare,
    supersede_reason,
    targeted_query,
)


def standard(image: str = "sensor:1", **extra_agent) -> dict:
    agent = {
        "schemaVersion": "1.1",
        "runtime": {"type": "docker", "settings": {}},
        "systemModules": {"edgeAgent": {"type": "docker"}, "edgeHub": {"type": "docker"}},
        "modules": {"sensor": {"type": "docker", "status": "running", "settings": {"image": image}}},
        **extra_agent,
    }
    return {
        "modulesContent": {
            "$edgeAgent": {"properties.desired": agent},
            "$edgeHub": {"properties.desired": {"schemaVersion": "1.1", "routes": {}}},
        }
    }


def layer(module: str = "gpu", image: str = "gpu:1") -> dict:
    return {
        "modulesContent": {
            "$edgeAgent": {"properties.desired.modules." + module: {"type": "docker", "settings": {"image": image}}},
            "$edgeHub": {"properties.desired.routes." + module: f"FROM /messages/modules/{module}/* INTO $upstream"},
        }
    }


# ---- manifests and versions --------------------------------------------------------------------------------


def test_both_manifest_forms_and_any_key_order_give_the_same_version():
    manifest = standard()
    reordered = json.loads(json.dumps(manifest["modulesContent"], sort_keys=True))
    reordered = dict(reversed(list(reordered.items())))
    versions = {
        content_version(modules_content_of(manifest), "sensors"),
        content_version(modules_content_of({"content": manifest}), "sensors"),
        content_version(modules_content_of({"modulesContent": reordered}), "sensors"),
    }
    assert len(versions) == 1
    assert len(versions.pop()) == 12


def test_every_value_counts_in_the_version_empty_objects_included():
    base = content_version(modules_content_of(standard()), "sensors")
    assert content_version(modules_content_of(standard("sensor:2")), "sensors") != base
    assert content_version(modules_content_of(standard(extra={})), "sensors") != base


def with_registry(password: str) -> dict:
    return standard(runtime={"type": "docker", "settings": {"registryCredentials": {"acr": credentials(password)}}})


def credentials(password) -> dict:
    return {"address": "contoso.azurecr.io", "username": "contoso", "password": password}


def test_registry_passwords_are_found_in_standard_and_layered_manifests():
    assert manifest_secrets(with_registry("s3cret")) == ["s3cret"]
    assert manifest_secrets({"content": with_registry("s3cret")}) == ["s3cret"]
    layered = layer()
    agent = layered["modulesContent"]["$edgeAgent"]
    agent["properties.desired.runtime.settings.registryCredentials.acr"] = credentials("one")
    agent["properties.desired.runtime.settings.registryCredentials"] = {"b": credentials("two")}
    agent["properties.desired.runtime.settings"] = {"registryCredentials": {"c": credentials("three")}}
    agent["properties.desired.runtime"] = {"settings": {"registryCredentials": {"d": credentials(None)}}}
    assert manifest_secrets(layered) == ["one", "two", "three"]
    # Anything else called password is a module's own setting, not a registry's.
    assert manifest_secrets(standard(modules={"m": {"settings": {"password": "x"}}})) == []
    assert manifest_secrets("not a manifest") == manifest_secrets({"content": []}) == []


def test_a_registry_password_enters_the_version_only_stretched():
    content = modules_content_of(with_registry("s3cret"))
    version = content_version(content, "sensors")
    assert version != content_version(modules_content_of(with_registry("other")), "sensors")
    # The plain digest, which would let a guess be checked at SHA-256 speed, is not the version.
    plain = hashlib.sha256(canonical_content(content)).hexdigest()[:12]
    assert version != plain
    stretched = copy.deepcopy(content)
    acr = stretched["$edgeAgent"]["properties.desired"]["runtime"]["settings"]["registryCredentials"]["acr"]
    acr["password"] = hashlib.pbkdf2_hmac(
        "sha256", b"s3cret", f"{SECRET_SALT}/sensors".encode(), SECRET_ITERATIONS
    ).hex()
    assert version == hashlib.sha256(canonical_content(stretched)).hexdigest()[:12]
    # Salted with the name: one password gives unrelated versions in two deployments; content without secrets
    # does not depend on the name.
    assert content_version(content, "other") != version
    assert content_version(standard()["modulesContent"], "a") == content_version(standard()["modulesContent"], "b")
    assert content == modules_content_of(with_registry("s3cret"))  # the content sent is left as it is


def test_a_json_file_and_a_yaml_file_of_one_manifest_give_one_version(tmp_path):
    (tmp_path / "d.json").write_text(json.dumps(standard(), indent=2))
    yaml_text = (
        "modulesContent:\n"
        "  $edgeHub:\n"
        "    properties.desired: {schemaVersion: '1.1', routes: {}}\n"
        "  $edgeAgent:\n"
        "    properties.desired:\n"
        "      schemaVersion: '1.1'\n"
        "      runtime: {type: docker, settings: {}}\n"
        "      systemModules: {edgeAgent: {type: docker}, edgeHub: {type: docker}}\n"
        "      modules: {sensor: {type: docker, status: running, settings: {image: 'sensor:1'}}}\n"
    )
    (tmp_path / "d.yml").write_text(yaml_text)
    from_json = modules_content_of(read_manifest_file(str(tmp_path / "d.json")))
    from_yaml = modules_content_of(read_manifest_file(str(tmp_path / "d.yml")))
    assert (
        content_version(from_json, "sensors")
        == content_version(from_yaml, "sensors")
        == content_version(standard()["modulesContent"], "sensors")
    )


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        ({"content": {"deviceContent": {"properties.desired.x": 1}}}, "manifest: has deviceContent"),
        ({**standard(), "targetCondition": "tags.a='b'"}, "manifest: has targetCondition; a deployment's"),
        ({"modulesContent": {}}, "manifest: modulesContent must be a non-empty mapping"),
        ({"something": 1}, "manifest: has no modulesContent"),
        ([1, 2], "manifest: must be a mapping"),
    ],
)
def test_manifests_that_are_no_edge_deployment_are_refused(manifest, message):
    with pytest.raises(ConfigurationError) as error:
        modules_content_of(manifest)
    assert str(error.value).startswith(message)


def test_values_that_are_not_json_are_refused_with_a_hint():
    import datetime

    manifest = standard(released=datetime.date(2024, 6, 1))
    with pytest.raises(ConfigurationError, match=r"must be plain JSON .* quote dates"):
        modules_content_of(manifest)


@pytest.mark.parametrize(
    ("content", "layered", "message"),
    [
        (standard(), True, "layered is true but no module sets a path below properties.desired"),
        (layer(), False, "uses paths below properties.desired ($edgeAgent.properties.desired.modules.gpu"),
        (
            {"$edgeAgent": {"properties.desired": {}}, "x": {"properties.desired.a": 1}},
            True,
            "a layered deployment cannot set $edgeAgent 'properties.desired'",
        ),
        (
            {"$edgeAgent": {"properties.desired.systemModules.edgeHub": {}}},
            True,
            "a layered deployment cannot set $edgeAgent 'properties.desired.systemModules.edgeHub'",
        ),
        (
            {"$edgeAgent": standard()["modulesContent"]["$edgeAgent"]},
            False,
            "a standard deployment needs modulesContent.$edgeHub.properties.desired",
        ),
        ({"sensor": {"desired": {}}}, False, "modulesContent.sensor key 'desired' must be 'properties.desired'"),
    ],
)
def test_the_manifest_is_checked_against_layered(content, layered, message):
    content = content.get("modulesContent", content)
    with pytest.raises(ConfigurationError) as error:
        check_modules_content(content, layered=layered)
    assert message in str(error.value)
    assert str(error.value).startswith("manifest: ")


def test_more_than_fifty_modules_are_refused_before_sending():
    content = standard()["modulesContent"]
    content["$edgeAgent"]["properties.desired"]["modules"] = {f"m{i}": {"type": "docker"} for i in range(51)}
    with pytest.raises(ConfigurationError, match="declares 51 modules; IoT Hub allows at most 50"):
        check_modules_content(content, layered=False)
    del content["$edgeAgent"]["properties.desired"]["modules"]["m50"]
    check_modules_content(content, layered=False)


@pytest.mark.parametrize("name", ["Sensors", "a/b", "-a", "a-", "a b", "", "x" * (MAX_NAME_LENGTH + 1), None])
def test_names_that_cannot_make_an_id_are_refused(name):
    with pytest.raises(ConfigurationError, match=r"^name: "):
        check_name(name)


def test_the_longest_name_makes_an_id_of_at_most_128_characters():
    name = check_name("a" * MAX_NAME_LENGTH)
    assert len(deployment_id(name, "0" * 12)) == MAX_ID_LENGTH


# ---- target_tags -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tags", "condition"),
    [
        ({"ring": "canary"}, "tags.ring='canary'"),
        ({"site": "O'Brien's"}, r"tags.site='O\'Brien\'s'"),
        ({"path": "C:\\edge\\"}, r"tags.path='C:\\edge\\'"),
        ({"note": 'a\nb"c'}, "tags.note='a\\u000ab\"c'"),
        ({"ring": ["canary", "main", "canary"]}, "tags.ring IN ['canary', 'main']"),
        ({"ring": ["canary"]}, "tags.ring='canary'"),
        ({"floor": 3, "gpu": True, "ratio": 0.5}, "tags.floor=3 AND tags.gpu=true AND tags.ratio=0.5"),
        ({"site": "plant-1", "env": "prod"}, "tags.env='prod' AND tags.site='plant-1'"),
        ({"location.site": ["a", 7]}, "tags.location.site IN ['a', 7]"),
    ],
)
def test_target_tags_become_a_quoted_condition(tags, condition):
    assert target_condition_from_tags(tags) == condition


@pytest.mark.parametrize(
    ("tags", "message"),
    [
        ({"group": "a"}, "tag name 'group' cannot be written"),
        ({"my-tag": "a"}, "tag name 'my-tag' cannot be written"),
        ({"a..b": "a"}, "tag name 'a..b' cannot be written"),
        ({"ring": []}, "target_tags.ring: an empty list matches no device"),
        ({"ring": None}, "target_tags.ring: None cannot be matched"),
        ({"ring": {"a": 1}}, "target_tags.ring: {'a': 1} cannot be matched"),
        ({}, "target_tags: must be a non-empty mapping"),
    ],
)
def test_target_tags_that_cannot_be_written_safely_are_refused(tags, message):
    with pytest.raises(ConfigurationError) as error:
        target_condition_from_tags(tags)
    assert message in str(error.value)


def test_a_tag_value_cannot_end_its_literal_early():
    condition = target_condition_from_tags({"ring": "x' OR tags.ring != '"})
    assert condition == r"tags.ring='x\' OR tags.ring != \''"


# ---- request checks ----------------------------------------------------------------------------------------


def request(**overrides) -> DeploymentRequest:
    values = {"name": "app", "manifest": standard(), "target_tags": {"ring": "canary"}, "priority": 10}
    values.update(overrides)
    return DeploymentRequest(**values)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"target_tags": None}, "state=present needs target_condition or target_tags"),
        ({"target_condition": "tags.a='b'"}, "target_condition and target_tags are mutually exclusive"),
        ({"manifest": None}, "state=present needs manifest or manifest_path"),
        ({"priority": -1}, "priority: must be a whole number of 0 or more"),
        ({"labels": {NAME_LABEL: "x"}}, "labels: edgefleet_deployment is set by the module"),
        ({"labels": {"flag": True}}, "labels.flag: must be text"),
        ({"metrics": {"ok": ""}}, "metrics.ok: must be a query text"),
        ({"remove_superseded": "sometimes"}, "remove_superseded: must be one of"),
        ({"layered": True}, "manifest: layered is true"),
    ],
)
def test_bad_requests_name_the_option(overrides, message):
    with pytest.raises(ConfigurationError) as error:
        prepare(request(**overrides))
    assert message in str(error.value)


def test_labels_record_name_and_version_and_numbers_become_text():
    desired = prepare(request(labels={"release": 2024}))
    assert desired.configuration_id == f"app-{desired.version}"
    assert desired.labels == {"release": "2024", NAME_LABEL: "app", VERSION_LABEL: desired.version}


# ---- a fake hub --------------------------------------------------------------------------------------------


class FakeHub:
    """Configurations as the hub keeps them; twin queries answered from the device sets a test sets up."""

    def __init__(self):
        self.configurations = {}
        self.writes = []
        self.targets = {}  # target condition -> device ids
        self.applied = {}  # configuration id -> device ids
        self.failures = {}  # operation -> list of ApiError to raise first
        self.clock = 0

    def _fail(self, operation):
        queue = self.failures.get(operation) or []
        if queue:
            raise queue.pop(0)

    def _stamp(self):
        self.clock += 1
        return f"2025-01-01T00:00:{self.clock:02d}Z"

    def list_configurations(self):
        return copy.deepcopy(list(self.configurations.values()))

    def get_configuration(self, configuration_id):
        return copy.deepcopy(self.configurations.get(configuration_id))

    def create_configuration(self, body):
        self.writes.append(("create", body["id"]))
        self._fail("create")
        if body["id"] in self.configurations:
            raise ApiError("exists", status=409, error_code="ConfigurationAlreadyExists")
        stamp = self._stamp()
        record = {**copy.deepcopy(body), "etag": f"e{self.clock}", "createdTimeUtc": stamp, "lastUpdatedTimeUtc": stamp}
        self.configurations[body["id"]] = record
        return copy.deepcopy(record)

    def update_configuration(self, body, etag):
        self.writes.append(("update", body["id"], etag))
        self._fail("update")
        record = self.configurations[body["id"]]
        if etag != record["etag"]:
            raise ApiError("etag", status=412, error_code="PreconditionFailed")
        assert body["content"] == record["content"], "content never changes"
        record.update(copy.deepcopy({key: body[key] for key in ("labels", "targetCondition", "priority", "metrics")}))
        record["etag"] = f"e{self._stamp()}"
        return copy.deepcopy(record)

    def delete_configuration(self, configuration_id, etag):
        self.writes.append(("delete", configuration_id, etag))
        record = self.configurations.get(configuration_id)
        if record is None:
            raise ApiError("gone", status=404)
        if etag not in (None, "*", record["etag"]):
            raise ApiError("etag", status=412)
        del self.configurations[configuration_id]

    def query_rows(self, query, page_size=100):
        for condition, device_ids in self.targets.items():
            if query == targeted_query(condition):
                return [{"deviceId": device_id} for device_id in sorted(device_ids)]
        for configuration_id, device_ids in self.applied.items():
            if query == applied_query(configuration_id):
                return [{"deviceId": device_id} for device_id in sorted(device_ids)]
        return []


CANARY = "tags.ring='canary'"


def run(hub, check_mode=False, **overrides):
    return ensure_deployment(hub, request(**overrides), check_mode=check_mode)


def test_create_then_no_change():
    hub = FakeHub()
    first = run(hub, metrics={"ok": "SELECT deviceId FROM devices"}, labels={"release": "1"})
    stored = hub.configurations[first["id"]]
    assert first["changed"] and first["created"] == [first["id"]]
    assert stored["targetCondition"] == CANARY and stored["priority"] == 10
    assert stored["labels"] == {"release": "1", NAME_LABEL: "app", VERSION_LABEL: first["version"]}
    assert stored["metrics"] == {"queries": {"ok": "SELECT deviceId FROM devices"}}
    assert stored["content"] == standard()
    assert "content" not in first["configuration"]
    writes = len(hub.writes)
    again = run(hub, metrics={"ok": "SELECT deviceId FROM devices"}, labels={"release": "1"})
    assert not again["changed"] and len(hub.writes) == writes
    assert again["diff"]["before"] == again["diff"]["after"]


def test_settings_change_in_place_with_the_etag_and_the_stored_content():
    hub = FakeHub()
    first = run(hub, labels={"release": "1"})
    etag = hub.configurations[first["id"]]["etag"]
    second = run(hub, target_tags={"ring": ["canary", "main"]}, priority=20)
    assert second["id"] == first["id"] and second["updated"] == [first["id"]] and second["created"] == []
    assert hub.writes[-1] == ("update", first["id"], etag)
    stored = hub.configurations[first["id"]]
    assert stored["targetCondition"] == "tags.ring IN ['canary', 'main']" and stored["priority"] == 20
    assert "release" not in stored["labels"]  # labels not listed are removed
    diff = second["diff"]
    assert diff["before"]["versions"][first["id"]]["priority"] == 10
    assert diff["after"]["versions"][first["id"]]["priority"] == 20


def test_a_concurrent_change_is_read_again_and_written_once_more():
    hub = FakeHub()
    first = run(hub)
    hub.failures["update"] = [ApiError("etag", status=412)]
    second = run(hub, priority=30)
    assert second["updated"] == [first["id"]] and hub.configurations[first["id"]]["priority"] == 30
    hub.failures["update"] = [ApiError("etag", status=412), ApiError("etag", status=412)]
    with pytest.raises(ApiError, match="changed between read and write twice"):
        run(hub, priority=40)


def new_version(hub, *, priority=10, **overrides):
    """v1 on canary, then v2 content; returns (v1 id, v2 result)."""
    v1 = run(hub)["id"]
    hub.targets[CANARY] = {"e1", "e2"}
    hub.applied[v1] = {"e1", "e2"}
    return v1, run(hub, manifest=standard("sensor:2"), priority=priority, **overrides)


def test_new_content_is_a_new_version_and_the_old_one_waits_for_the_takeover():
    hub = FakeHub()
    v1, result = new_version(hub, priority=5)
    v2 = result["id"]
    assert v2 != v1 and result["created"] == [v2] and result["removed"] == []
    assert set(hub.configurations) == {v1, v2}
    (kept,) = result["kept"]
    assert kept["id"] == v1 and kept["action"] == "kept"
    assert "2 device(s) that both versions target do not apply" in kept["reason"] and "(e1, e2)" in kept["reason"]
    assert "outranks it (priority 10 vs 5" in kept["reason"]
    # The hub applies v2 on one device: still waiting for the other.
    hub.applied[v2] = {"e1"}
    assert "1 device(s)" in run(hub, manifest=standard("sensor:2"), priority=5)["kept"][0]["reason"]
    # v2 applies everywhere: v1 goes, with the etag it was read with.
    hub.applied[v2], hub.applied[v1] = {"e1", "e2"}, set()
    etag = hub.configurations[v1]["etag"]
    done = run(hub, manifest=standard("sensor:2"), priority=5)
    assert done["removed"] == [v1] and set(hub.configurations) == {v2}
    assert ("delete", v1, etag) in hub.writes
    assert done["superseded"][0]["reason"] == f"removed: {v2} has taken over every device both target"


def test_devices_outside_the_new_target_do_not_hold_the_old_version_but_are_named():
    hub = FakeHub()
    v1 = run(hub)["id"]
    hub.targets[CANARY] = {"e1", "e2"}
    hub.targets["tags.ring='main'"] = {"e3"}
    hub.applied[v1] = {"e1", "e2"}
    result = run(hub, manifest=standard("sensor:2"), target_tags={"ring": "main"})
    assert result["removed"] == [v1]
    reason = result["superseded"][0]["reason"]
    assert reason.startswith(f"removed: no device that {result['id']} targets depends on it")
    assert "still applied to 2 device(s) outside the new target (e1, e2)" in reason


@pytest.mark.parametrize(("policy", "removed"), [("always", True), ("never", False)])
def test_remove_superseded_always_and_never(policy, removed):
    hub = FakeHub()
    v1, result = new_version(hub, remove_superseded=policy)
    assert (result["removed"] == [v1]) is removed
    assert (v1 in hub.configurations) is not removed


def test_check_mode_predicts_and_writes_nothing():
    hub = FakeHub()
    predicted = run(hub, check_mode=True)
    assert predicted["changed"] and predicted["created"] == [predicted["id"]] and hub.writes == []
    v1 = run(hub)["id"]
    writes = list(hub.writes)
    hub.targets[CANARY] = {"e1"}
    hub.applied[v1] = {"e1"}
    changed = run(hub, check_mode=True, manifest=standard("sensor:2"))
    assert (
        changed["created"] and changed["kept"][0]["id"] == v1 and "does not exist yet" in changed["kept"][0]["reason"]
    )
    assert run(hub, check_mode=True, priority=99)["updated"] == [v1]
    assert run(hub, check_mode=True, state="absent")["removed"] == [v1]
    assert hub.writes == writes and set(hub.configurations) == {v1}


def test_absent_removes_every_version_of_the_name_and_nothing_else():
    hub = FakeHub()
    v1, result = new_version(hub, priority=5)
    other = run(hub, name="app-other")["id"]
    # An id that looks like a version of "app" but was not made for it.
    hub.configurations["app-0123456789ab"] = {"id": "app-0123456789ab", "content": standard(), "labels": {}}
    gone = run(hub, state="absent", manifest=None, target_tags=None)
    assert sorted(gone["removed"]) == sorted([v1, result["id"]])
    assert set(hub.configurations) == {other, "app-0123456789ab"}
    assert run(hub, state="absent")["changed"] is False


def test_an_id_that_the_module_did_not_make_is_never_taken_over():
    hub = FakeHub()
    desired = prepare(request())
    hub.configurations[desired.configuration_id] = {"id": desired.configuration_id, "content": standard()}
    with pytest.raises(ConfigurationError, match="that this module did not make"):
        run(hub)
    assert hub.writes == []


def test_a_lost_create_answer_found_as_wanted_counts_as_done():
    hub = FakeHub()
    desired = prepare(request())
    hub.configurations[desired.configuration_id] = {**desired.body(), "etag": "x", "createdTimeUtc": "t"}
    # A create that meets its own earlier (answer lost) write: the 409 is settled by reading it back.
    result = ensure_deployment(RacingHub(hub), request(), check_mode=False)
    assert result["created"] == [desired.configuration_id]


class RacingHub(FakeHub):
    """The list was read before another writer (or our own lost attempt) created the version."""

    def __init__(self, inner):
        super().__init__()
        self.configurations = inner.configurations

    def list_configurations(self):
        return []


@pytest.mark.parametrize(
    ("code", "status", "start"),
    [
        ("InvalidConfigurationContent", 400, "manifest: IoT Hub refused the deployment's content"),
        ("InvalidConfigurationTargetCondition", 400, "target_condition: IoT Hub refused the target condition"),
        ("InvalidConfigurationCustomMetricsQuery", 400, "metrics: IoT Hub refused a custom metric query"),
        ("ConfigurationCountLimitExceeded", 413, "IoT Hub holds as many deployments as it allows"),
        ("ConfigurationAlreadyExists", 409, "app-"),
    ],
)
def test_the_hubs_refusals_lead_with_the_option_to_fix(code, status, start):
    hub = FakeHub()
    hub.failures["create"] = [
        ApiError(f"IoT Hub answered {status} {code}: details", status=status, error_code=code, tracking_id="t-1")
    ]
    with pytest.raises(ApiError) as error:
        run(hub)
    assert str(error.value).startswith(start)
    assert "details" in str(error.value)
    assert error.value.tracking_id == "t-1" and error.value.status == status


def test_other_errors_pass_unchanged():
    error = ApiError("IoT Hub answered 401: no", status=401, error_code="IotHubUnauthorizedAccess")
    assert explain(error, None) is error


def test_supersede_reason_without_shared_devices():
    takeover = Takeover(targeted_by_old={"a"}, targeted_by_new=set(), applied_new=set(), applied_old=set())
    remove, reason = supersede_reason(takeover, {"id": "app-1"}, {"id": "app-2"})
    assert remove and reason == "removed: no device that app-2 targets depends on it"


def test_queries_keep_an_or_inside_the_target():
    assert targeted_query("tags.a='x' OR tags.b='y'") == (
        "SELECT deviceId FROM devices WHERE capabilities.iotEdge = true AND (tags.a='x' OR tags.b='y')"
    )
    assert targeted_query("") is None
    assert targeted_query("*") == "SELECT deviceId FROM devices WHERE capabilities.iotEdge = true"


def test_info_by_name_by_id_and_missing():
    hub = FakeHub()
    v1, result = new_version(hub, priority=5)
    by_name = deployment_info(hub, DeploymentInfoRequest(name="app"))
    assert [view["id"] for view in by_name["deployments"]] == [v1, result["id"]]
    assert by_name["deployments"][0]["images"] == {"sensor": "sensor:1"}
    by_id = deployment_info(hub, DeploymentInfoRequest(ids=[result["id"], "nope"]))
    assert [view["version"] for view in by_id["deployments"]] == [result["version"]] and by_id["missing"] == ["nope"]
    with pytest.raises(ConfigurationError, match="mutually exclusive"):
        deployment_info(hub, DeploymentInfoRequest(name="app", ids=["x"]))


# ---- version: a stored version instead of a manifest ---------------------------------------------------------


def test_a_stored_version_is_retargeted_and_raised_without_its_manifest():
    hub = FakeHub()
    old = ensure_deployment(hub, request(manifest=standard("sensor:1")), check_mode=False)
    new = ensure_deployment(hub, request(manifest=standard("sensor:2"), remove_superseded="never"), check_mode=False)
    hub.writes.clear()

    back = ensure_deployment(
        hub,
        request(
            manifest=None,
            version=old["version"],
            target_tags={"ring": ["canary", "main"]},
            priority=110,
            remove_superseded="never",
        ),
        check_mode=False,
    )
    assert (back["id"], back["created"], back["updated"]) == (old["id"], [], [old["id"]])
    assert [write[:2] for write in hub.writes] == [("update", old["id"])]
    stored = hub.configurations[old["id"]]
    assert (stored["priority"], stored["targetCondition"]) == (110, "tags.ring IN ['canary', 'main']")
    assert stored["content"] == standard("sensor:1")  # the hub's content, unchanged
    assert back["modules"] == ["sensor"] and back["layered"] is False
    assert new["id"] in hub.configurations and back["kept"][0]["id"] == new["id"]

    again = ensure_deployment(
        hub,
        request(
            manifest=None,
            version=old["version"],
            target_tags={"ring": ["canary", "main"]},
            priority=110,
            remove_superseded="never",
        ),
        check_mode=False,
    )
    assert again["changed"] is False


def test_a_version_the_hub_does_not_hold_is_refused_naming_the_stored_ones():
    hub = FakeHub()
    first = ensure_deployment(hub, request(manifest=standard("sensor:1")), check_mode=False)
    second = ensure_deployment(hub, request(manifest=standard("sensor:2"), remove_superseded="never"), check_mode=False)
    hub.writes.clear()
    with pytest.raises(ConfigurationError) as error:
        ensure_deployment(hub, request(manifest=None, version="0123456789ab"), check_mode=False)
    assert str(error.value) == (
        f"version: IoT Hub holds no version 0123456789ab of app; its stored versions, newest first: "
        f"{second['version']}, {first['version']}. Give one of them, or the manifest"
    )
    assert hub.writes == []


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"manifest": None, "version": "v1"}, "version: 'v1' is not a version; give the 12 hexadecimal digits"),
        ({"version": "0123456789ab"}, "manifest and version are mutually exclusive"),
        ({"manifest": None, "manifest_path": "/x.json", "version": "0123456789ab"}, "manifest_path and version are"),
    ],
)
def test_version_options_are_checked_before_the_hub_is_read(overrides, message):
    hub = FakeHub()
    with pytest.raises(ConfigurationError, match=re_escape(message)):
        ensure_deployment(hub, request(**overrides), check_mode=False)
    assert hub.writes == []


def test_a_layered_version_keeps_its_kind_and_layered_must_agree():
    hub = FakeHub()
    made = ensure_deployment(hub, request(name="gpu", manifest=layer(), layered=True), check_mode=False)
    found = ensure_deployment(hub, request(name="gpu", manifest=None, version=made["version"]), check_mode=True)
    assert found["layered"] is True and found["changed"] is False
    with pytest.raises(ConfigurationError, match=r"layered: version .* of gpu is a layered deployment"):
        ensure_deployment(
            hub, request(name="gpu", manifest=None, version=made["version"], layered=False), check_mode=False
        )
