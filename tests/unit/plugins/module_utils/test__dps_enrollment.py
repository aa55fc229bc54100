"""The dps_enrollment core against a fake DPS: plan, check mode, bulk chunks, lost writes, bad input."""

from __future__ import annotations

import copy

import pytest

from ansible_collections.edgefleet.iotedge.plugins.module_utils._dps_enrollment import (
    GET_READ_LIMIT,
    ensure_enrollments,
)
from ansible_collections.edgefleet.iotedge.plugins.module_utils._http import ApiError, ConfigurationError
from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki import fingerprints
from ansible_collections.edgefleet.iotedge.tests.unit.pki_factories import self_signed_device

DEFAULTS = {"state": "present", "provisioning_status": "enabled", "iot_edge": True}


class FakeDps:
    """Keeps enrollments as DPS returns them (certificate info, not PEM) and records every call."""

    requests_sent = 0

    def __init__(self):
        self.records: dict[str, dict] = {}
        self.calls: list[tuple] = []
        self.etag = 0
        self.lose_answer_of_next_bulk = False

    def _store(self, body: dict) -> None:
        record = copy.deepcopy(body)
        slots = record["attestation"]["x509"]["clientCertificates"]
        old = self.records.get(body["registrationId"], {})
        old_slots = old.get("attestation", {}).get("x509", {}).get("clientCertificates", {})
        for slot, value in slots.items():
            if "certificate" in value:
                slots[slot] = {"info": {"sha256Thumbprint": PEMS[value["certificate"]]["sha256"]}}
            else:
                slots[slot] = old_slots[slot]
        self.etag += 1
        record["etag"] = f"etag-{self.etag}"
        record.setdefault("reprovisionPolicy", {"updateHubAssignment": True, "migrateDeviceData": True})
        self.records[body["registrationId"]] = record

    def get_enrollment(self, registration_id):
        self.calls.append(("get", registration_id))
        return copy.deepcopy(self.records.get(registration_id))

    def query_enrollments(self):
        self.calls.append(("query",))
        return [copy.deepcopy(r) for r in self.records.values()]

    def bulk_enrollments(self, mode, items):
        assert 0 < len(items) <= 10
        self.calls.append(("bulk", mode, [i["registrationId"] for i in items]))
        errors = []
        for item in items:
            current = self.records.get(item["registrationId"])
            if mode == "create" and current:
                errors.append({"registrationId": item["registrationId"], "errorCode": 409201, "errorStatus": "exists"})
            elif mode == "updateIfMatchETag" and (current is None or current["etag"] != item.get("etag")):
                errors.append({"registrationId": item["registrationId"], "errorCode": 412201, "errorStatus": "etag"})
            elif mode == "delete":
                self.records.pop(item["registrationId"], None)
            else:
                self._store(item)
        if self.lose_answer_of_next_bulk:
            # The write happened, the answer was lost, the client retried: the retry reports conflicts.
            self.lose_answer_of_next_bulk = False
            return self.bulk_enrollments(mode, items)
        return {"isSuccessful": not errors, "errors": errors}

    def writes(self):
        return [call for call in self.calls if call[0] == "bulk"]


PEMS: dict[str, dict] = {}


@pytest.fixture(scope="module")
def certs():
    made = {}
    for name in [f"gw-{n:02d}" for n in range(1, 26)] + ["gw-01-next"]:
        common_name = name.removesuffix("-next")
        certificate, pem = self_signed_device(common_name)
        prints = fingerprints(certificate)
        PEMS[pem] = prints
        made[name] = pem
    return made


def items(certs, count, **extra):
    return [
        {"registration_id": f"gw-{n:02d}", "primary_certificate": certs[f"gw-{n:02d}"], **extra}
        for n in range(1, count + 1)
    ]


def test_check_mode_reads_only_and_predicts_creation(certs):
    dps = FakeDps()
    result = ensure_enrollments(dps, items(certs, 3), DEFAULTS, check_mode=True)
    assert result["changed"] and result["created"] == ["gw-01", "gw-02", "gw-03"]
    assert dps.writes() == [] and dps.records == {}
    assert result["diff"]["before"] == {"gw-01": None, "gw-02": None, "gw-03": None}
    assert result["diff"]["after"]["gw-01"]["primary_thumbprint"] == PEMS[certs["gw-01"]]["sha256"]


def test_few_are_read_one_get_each_many_through_the_query(certs):
    dps = FakeDps()
    ensure_enrollments(dps, items(certs, GET_READ_LIMIT), DEFAULTS, check_mode=True)
    assert [c[0] for c in dps.calls] == ["get"] * GET_READ_LIMIT
    dps = FakeDps()
    ensure_enrollments(dps, items(certs, GET_READ_LIMIT + 1), DEFAULTS, check_mode=True)
    assert dps.calls == [("query",)]


def test_creation_goes_in_bulk_chunks_of_ten_and_a_second_run_changes_nothing(certs):
    dps = FakeDps()
    result = ensure_enrollments(dps, items(certs, 25), DEFAULTS, check_mode=False)
    assert [(c[1], len(c[2])) for c in dps.writes()] == [("create", 10), ("create", 10), ("create", 5)]
    assert len(result["created"]) == 25 and sorted(dps.records) == sorted(result["created"])
    record = dps.records["gw-07"]
    assert record["capabilities"] == {"iotEdge": True} and record["provisioningStatus"] == "enabled"

    again = ensure_enrollments(dps, items(certs, 25), DEFAULTS, check_mode=False)
    assert not again["changed"] and len(dps.writes()) == 3
    assert {e["action"] for e in again["enrollments"]} == {"none"}


def test_a_changed_field_updates_with_the_etag_that_was_read_and_keeps_unmanaged_fields(certs):
    dps = FakeDps()
    ensure_enrollments(dps, items(certs, 2), DEFAULTS, check_mode=False)
    dps.records["gw-02"]["optionalDeviceInformation"] = {"site": "kept"}
    etag = dps.records["gw-02"]["etag"]
    twin = {"tags": {"ring": "canary"}}
    result = ensure_enrollments(
        dps, items(certs, 2, provisioning_status="disabled", initial_twin=twin), DEFAULTS, check_mode=False
    )
    assert result["updated"] == ["gw-01", "gw-02"]
    update = dps.writes()[-1]
    assert update[1] == "updateIfMatchETag"
    stored = dps.records["gw-02"]
    assert stored["provisioningStatus"] == "disabled" and stored["etag"] != etag
    assert stored["initialTwin"] == {"tags": {"ring": "canary"}, "properties": {"desired": {}}}
    assert stored["optionalDeviceInformation"] == {"site": "kept"}
    assert result["diff"]["before"]["gw-02"]["provisioning_status"] == "enabled"
    assert result["diff"]["after"]["gw-02"]["provisioning_status"] == "disabled"


def test_twin_bookkeeping_is_ignored_but_a_tag_named_like_it_is_managed(certs):
    dps = FakeDps()
    twin = {"tags": {"version": "2.1", "site": "berlin"}}
    ensure_enrollments(dps, items(certs, 1, initial_twin=twin), DEFAULTS, check_mode=False)
    stored = dps.records["gw-01"]["initialTwin"]
    stored["tags"]["$metadata"] = {"lastUpdated": "2026-11-27T00:00:00Z"}
    stored["properties"]["desired"].update({"$version": 4, "$metadata": {}})
    again = ensure_enrollments(dps, items(certs, 1, initial_twin=twin), DEFAULTS, check_mode=False)
    assert not again["changed"]
    changed = ensure_enrollments(
        dps, items(certs, 1, initial_twin={"tags": {"version": "2.2", "site": "berlin"}}), DEFAULTS, check_mode=False
    )
    assert changed["updated"] == ["gw-01"] and dps.records["gw-01"]["initialTwin"]["tags"]["version"] == "2.2"


def test_rotation_sends_the_new_primary_and_keeps_the_old_one_as_secondary(certs):
    dps = FakeDps()
    ensure_enrollments(dps, items(certs, 1), DEFAULTS, check_mode=False)
    rotated = [
        {
            "registration_id": "gw-01",
            "primary_certificate": certs["gw-01-next"],
            "secondary_certificate": certs["gw-01"],
        }
    ]
    result = ensure_enrollments(dps, rotated, DEFAULTS, check_mode=False)
    slots = dps.records["gw-01"]["attestation"]["x509"]["clientCertificates"]
    assert slots["primary"]["info"]["sha256Thumbprint"] == PEMS[certs["gw-01-next"]]["sha256"]
    assert slots["secondary"]["info"]["sha256Thumbprint"] == PEMS[certs["gw-01"]]["sha256"]
    assert result["updated"] == ["gw-01"]

    # the end of the rotation: listed with the new primary only, the old certificate goes
    finished = ensure_enrollments(dps, [{**rotated[0], "secondary_certificate": None}], DEFAULTS, check_mode=False)
    assert finished["updated"] == ["gw-01"]
    assert set(dps.records["gw-01"]["attestation"]["x509"]["clientCertificates"]) == {"primary"}
    assert finished["diff"]["after"]["gw-01"]["secondary_thumbprint"] is None


def test_absent_deletes_what_exists_and_ignores_what_does_not(certs):
    dps = FakeDps()
    ensure_enrollments(dps, items(certs, 2), DEFAULTS, check_mode=False)
    gone = [{"registration_id": "gw-02"}, {"registration_id": "gw-09"}]
    result = ensure_enrollments(dps, gone, {**DEFAULTS, "state": "absent"}, check_mode=False)
    assert result["deleted"] == ["gw-02"] and sorted(dps.records) == ["gw-01"]
    assert [e["action"] for e in result["enrollments"]] == ["delete", "none"]
    again = ensure_enrollments(dps, gone, {**DEFAULTS, "state": "absent"}, check_mode=False)
    assert not again["changed"]


def test_a_write_whose_answer_was_lost_is_recognised_not_reported_as_failed(certs):
    dps = FakeDps()
    dps.lose_answer_of_next_bulk = True
    result = ensure_enrollments(dps, items(certs, 3), DEFAULTS, check_mode=False)
    assert result["created"] == ["gw-01", "gw-02", "gw-03"]
    assert sorted(dps.records) == ["gw-01", "gw-02", "gw-03"]


def test_a_concurrent_change_is_refused_and_reported_not_overwritten(certs):
    dps = FakeDps()
    ensure_enrollments(dps, items(certs, 2), DEFAULTS, check_mode=False)
    original_update = dps.bulk_enrollments

    def someone_else_writes_first(mode, batch):
        dps.records["gw-01"]["provisioningStatus"] = "enabled"
        dps.records["gw-01"]["etag"] = "changed-by-someone-else"
        dps.records["gw-01"]["initialTwin"] = {"tags": {"owner": "other"}}
        return original_update(mode, batch)

    dps.bulk_enrollments = someone_else_writes_first
    with pytest.raises(ApiError) as failure:
        ensure_enrollments(dps, items(certs, 2, provisioning_status="disabled"), DEFAULTS, check_mode=False)
    assert "DPS refused 1 of 2 enrollment writes: gw-01 (update: 412201 etag)" in str(failure.value)
    assert dps.records["gw-01"]["initialTwin"] == {"tags": {"owner": "other"}}
    assert dps.records["gw-02"]["provisioningStatus"] == "disabled"


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ({"registration_id": "GW-01"}, r"enrollments\[0\]\.registration_id: registration id 'GW-01' has uppercase"),
        ({"registration_id": 'gw"01'}, r"enrollments\[0\]\.registration_id: .* is not valid for DPS"),
        ({"registration_id": "gw-01\n[x]"}, r"enrollments\[0\]\.registration_id: .* is not valid for DPS"),
        ({"registration_id": "gw-01"}, r"enrollments\[0\]: state=present needs primary_certificate"),
        (
            {"registration_id": "gw-01", "primary_certificate": "not a pem"},
            r"enrollments\[0\]\.primary_certificate: not a PEM certificate",
        ),
        (
            {"registration_id": "gw-01", "primary_certificate_path": "/nonexistent/cert.pem"},
            r"enrollments\[0\]\.primary_certificate_path: cannot read /nonexistent/cert.pem",
        ),
        ({"registration_id": "gw-01", "provisioning_status": "on"}, r"enrollments\[0\]\.provisioning_status: 'on'"),
        ({"registration_id": "gw-01", "iot_hubs": "hub"}, r"enrollments\[0\]\.iot_hubs: must be a list"),
        (
            {"registration_id": "gw-01", "initial_twin": {"tags": {"$metadata": {}}}},
            r"enrollments\[0\]\.initial_twin\.tags: key '\$metadata' has a character IoT Hub refuses",
        ),
        (
            {"registration_id": "gw-01", "reprovision_policy": {"update_hub_assignment": "false"}},
            r"enrollments\[0\]\.reprovision_policy: update_hub_assignment and migrate_device_data are booleans",
        ),
        (
            {"registration_id": "gw-01", "initial_twin": {"tag": {}}},
            r"enrollments\[0\]\.initial_twin: unknown key\(s\) tag; use a dictionary",
        ),
    ],
)
def test_bad_input_names_the_field_before_any_request(certs, item, message):
    dps = FakeDps()
    with pytest.raises(ConfigurationError, match=message):
        ensure_enrollments(dps, [item], DEFAULTS, check_mode=False)
    assert dps.calls == []


def test_a_certificate_for_another_device_is_refused(certs):
    dps = FakeDps()
    wrong = [{"registration_id": "gw-01", "primary_certificate": certs["gw-02"]}]
    with pytest.raises(ConfigurationError, match="the certificate's CN is 'gw-02' but the registration id is 'gw-01'"):
        ensure_enrollments(dps, wrong, DEFAULTS, check_mode=False)
    assert dps.calls == []


def test_duplicates_are_refused(certs):
    with pytest.raises(ConfigurationError, match=r"enrollments\[1\]\.registration_id: 'gw-01' is listed twice"):
        ensure_enrollments(FakeDps(), items(certs, 1) * 2, DEFAULTS, check_mode=False)


def test_check_mode_accepts_a_certificate_file_that_pki_identity_has_not_written_yet(tmp_path):
    dps = FakeDps()
    pending = [{"registration_id": "gw-01", "primary_certificate_path": str(tmp_path / "gw-01/identity.cert.pem")}]
    result = ensure_enrollments(dps, pending, DEFAULTS, check_mode=True)
    assert result["created"] == ["gw-01"] and dps.writes() == []
    with pytest.raises(ConfigurationError, match="cannot read"):
        ensure_enrollments(dps, pending, DEFAULTS, check_mode=False)
