"""The filters that build the roles' fleet facts and the closing table in one Python pass: accepted_hosts, by_host,
enrollments_by_host, individual_enrollments, registrations_by_host and fleet_summary give what the Jinja loops they
replace gave."""

from __future__ import annotations

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.edgefleet.iotedge.plugins.filter.accepted_hosts import accepted_hosts
from ansible_collections.edgefleet.iotedge.plugins.filter.by_host import by_host
from ansible_collections.edgefleet.iotedge.plugins.filter.enrollments_by_host import enrollments_by_host
from ansible_collections.edgefleet.iotedge.plugins.filter.fleet_summary import HEADER, fleet_summary
from ansible_collections.edgefleet.iotedge.plugins.filter.individual_enrollments import individual_enrollments
from ansible_collections.edgefleet.iotedge.plugins.filter.registrations_by_host import registrations_by_host

PREFLIGHT = {
    "edge-02": {"registration_id": "plant-2.gw"},
    "edge-01": {"registration_id": "edge-01"},
    "edge-03": {"registration_id": "edge-03"},
}


def test_accepted_hosts_keeps_the_hosts_order_and_leaves_out_hosts_the_preflight_refused():
    preflight = {
        "edge-02": {"registration_id": "plant-2.gw", "rotate": True, "edge_ca": False},
        "edge-01": {"registration_id": "edge-01", "rotate": False, "edge_ca": True},
        "edge-03": {"registration_id": "edge-03", "rotate": True, "edge_ca": True},
    }
    # edge-03 left the play (it failed); refused-04 was refused by the preflight.
    play = ["edge-01", "refused-04", "edge-02"]
    assert accepted_hosts(preflight, play) == ["edge-01", "edge-02"]
    assert accepted_hosts(preflight, play, attribute="registration_id") == ["edge-01", "plant-2.gw"]
    assert accepted_hosts(preflight, play, where="rotate") == ["edge-02"]
    assert accepted_hosts(preflight, play, attribute="registration_id", where="edge_ca") == ["edge-01"]
    assert accepted_hosts(preflight, play, where="retired") == []
    assert accepted_hosts({}, play) == []


def test_accepted_hosts_refuses_input_of_the_wrong_shape_and_an_unknown_setting():
    with pytest.raises(AnsibleFilterError, match="a dictionary by host"):
        accepted_hosts(["edge-01"], ["edge-01"])
    with pytest.raises(AnsibleFilterError, match="settings of edge-01 have no certificate"):
        accepted_hosts(PREFLIGHT, ["edge-01"], attribute="certificate")


def test_by_host_rekeys_in_the_hosts_order_and_leaves_out_hosts_the_preflight_refused():
    values = {"edge-01": {"cert_path": "/pki/edge-01"}, "plant-2.gw": {"cert_path": "/pki/plant-2.gw"}}
    published = by_host(values, PREFLIGHT, ["edge-01", "edge-02", "edge-03", "refused-04"])
    assert list(published) == ["edge-01", "edge-02", "edge-03"]
    assert published["edge-02"] == {"cert_path": "/pki/plant-2.gw"}
    assert published["edge-03"] is None
    assert by_host(values, PREFLIGHT, ["edge-03"], default={}) == {"edge-03": {}}


def test_by_host_refuses_input_of_the_wrong_shape():
    with pytest.raises(AnsibleFilterError, match="dictionary by registration id"):
        by_host(["edge-01"], PREFLIGHT, ["edge-01"])


def enrollment_settings(tmp_path, registration_id, *, rotating=False):
    current = tmp_path / registration_id / "identity.cert.pem"
    waiting = tmp_path / registration_id / "next" / "identity.cert.pem"
    if rotating:
        waiting.parent.mkdir(parents=True)
        waiting.write_text("new leaf")
    twin = {"tags": {"environment": "test"}, "desired_properties": {}}
    return {
        "registration_id": registration_id,
        "certificate_path": str(current),
        "next_certificate_path": str(waiting),
        "twin": twin,
    }


def test_individual_enrollments_put_a_waiting_new_certificate_first_and_keep_the_current_one(tmp_path):
    preflight = {
        "edge-01": enrollment_settings(tmp_path, "edge-01"),
        "edge-02": enrollment_settings(tmp_path, "edge-02", rotating=True),
    }
    enrollments = individual_enrollments(preflight, ["edge-02", "refused-03", "edge-01"])
    assert enrollments == [
        {
            "registration_id": "edge-02",
            "primary_certificate_path": preflight["edge-02"]["next_certificate_path"],
            "secondary_certificate_path": preflight["edge-02"]["certificate_path"],
            "initial_twin": {"tags": {"environment": "test"}, "desired_properties": {}},
        },
        {
            "registration_id": "edge-01",
            "primary_certificate_path": preflight["edge-01"]["certificate_path"],
            "initial_twin": {"tags": {"environment": "test"}, "desired_properties": {}},
        },
    ]


def test_fleet_summary_rows_sorted_with_failed_retired_and_unchecked_hosts():
    table = fleet_summary(
        ["edge-03", "edge-01", "edge-02", "edge-04"],
        ["edge-01", "edge-03", "edge-04"],
        PREFLIGHT,
        {
            "edge-01": {"status": "assigned", "assigned_hub": "hub-1.azure-devices.net"},
            "edge-02": {"status": "assigned", "assigned_hub": ""},
        },
        runtimes={"edge-01": {"edge_agent": "running"}},
        retired=["edge-04"],
    )
    lines = table.splitlines()
    assert lines[0] == HEADER
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert list(rows) == ["edge-01", "edge-02", "edge-03", "edge-04"]
    assert rows["edge-01"][1:] == ["edge-01", "assigned", "hub-1.azure-devices.net", "running"]
    assert rows["edge-02"][1:] == ["plant-2.gw", "assigned", "-", "FAILED"]
    assert rows["edge-03"][1:] == ["edge-03", "not", "checked", "-", "not", "checked"]
    assert rows["edge-04"][1:] == ["-", "retired", "-", "retired"]


def test_fleet_summary_refuses_input_of_the_wrong_shape():
    with pytest.raises(AnsibleFilterError, match="registrations must be a dictionary by host"):
        fleet_summary(["edge-01"], ["edge-01"], PREFLIGHT, ["edge-01"])


def test_enrollments_by_host_name_each_host_s_action_status_and_refusal():
    written = {
        "enrollments": [
            {"registration_id": "edge-01", "action": "create", "registration_status": None},
            {"registration_id": "plant-2.gw", "action": "none", "registration_status": "assigned"},
            {"registration_id": "edge-03", "action": "update", "registration_status": "assigned"},
        ],
        "failures": [{"registration_id": "edge-03", "action": "update", "error_code": 400, "error": "bad twin"}],
    }
    published = enrollments_by_host(written, PREFLIGHT, ["edge-02", "edge-01", "edge-03", "refused-04"])
    assert list(published) == ["edge-02", "edge-01", "edge-03"]
    assert published["edge-02"] == {
        "kind": "individual",
        "registration_id": "plant-2.gw",
        "action": "none",
        "registration_status": "assigned",
        "error": "",
    }
    assert published["edge-01"]["action"] == "create" and published["edge-01"]["registration_status"] is None
    assert published["edge-03"]["error"] == "bad twin"
    # A skipped write (check mode of an earlier failure) publishes every host as untouched.
    skipped = enrollments_by_host({"skipped": True}, PREFLIGHT, ["edge-01"])
    assert skipped["edge-01"]["action"] == "none" and skipped["edge-01"]["error"] == ""


REGISTRATIONS = {
    "registrations": [
        {"registration_id": "edge-01", "device_id": "edge-01", "status": "assigned", "assigned_hub": "hub.example"},
        {"registration_id": "plant-2.gw", "status": "failed", "error_message": "certificate not trusted"},
    ]
}


def test_registrations_by_host_give_each_host_s_state_and_hub_device():
    devices = [{"device_id": "edge-01"}, {"device_id": "someone-else"}]
    published = registrations_by_host(
        REGISTRATIONS, PREFLIGHT, ["edge-03", "refused-04", "edge-02", "edge-01"], devices
    )
    assert list(published) == ["edge-03", "edge-02", "edge-01"]
    assert published["edge-01"] == {
        "registration_id": "edge-01",
        "status": "assigned",
        "device_id": "edge-01",
        "assigned_hub": "hub.example",
        "error": "",
        "hub_device": True,
    }
    assert published["edge-02"] == {
        "registration_id": "plant-2.gw",
        "status": "failed",
        "device_id": "",
        "assigned_hub": "",
        "error": "certificate not trusted",
        "hub_device": False,
    }
    # No registration state in DPS: not registered, and the hub has no such device.
    assert published["edge-03"]["status"] == "not registered" and published["edge-03"]["hub_device"] is False


def test_registrations_by_host_without_a_hub_read_or_a_registration_read():
    unchecked = registrations_by_host(REGISTRATIONS, PREFLIGHT, ["edge-01"])
    assert unchecked["edge-01"]["hub_device"] == "not checked"
    # A result without registrations (a skipped read) leaves every host not registered rather than failing.
    skipped = registrations_by_host({"skipped": True}, PREFLIGHT, ["edge-01"], [])
    assert skipped["edge-01"]["status"] == "not registered" and skipped["edge-01"]["hub_device"] is False


def test_registrations_by_host_refuses_input_of_the_wrong_shape():
    with pytest.raises(AnsibleFilterError, match="dps_registration_info"):
        registrations_by_host(["edge-01"], PREFLIGHT, ["edge-01"])
    with pytest.raises(AnsibleFilterError, match="iothub_device_info or null"):
        registrations_by_host(REGISTRATIONS, PREFLIGHT, ["edge-01"], {"devices": []})
