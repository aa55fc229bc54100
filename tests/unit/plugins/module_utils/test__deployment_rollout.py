"""A ring rollout's progress and summary from iothub_deployment_info's device views (role iotedge_deployment)."""

from __future__ import annotations

import pytest

from ansible_collections.edgefleet.iotedge.plugins.module_utils._deployment_rollout import (
    RolloutError,
    failure_allowance,
    progress,
    summary,
)

V1, V2 = "sensors-0b9e51c2aa10", "sensors-3f2a9c41d07b"


def device(device_id, applied, desired=3, reported=3, code=200, description="", modules=None):
    return {
        "device_id": device_id,
        "deployments": {item: "Applied" for item in applied},
        "applied": sorted(applied),
        "desired_version": desired,
        "last_desired_version": reported,
        "last_desired_status": None if code is None else {"code": code, "description": description},
        "in_sync": reported == desired,
        "system_modules": {"edgeAgent": "running", "edgeHub": "running"},
        "modules": modules if modules is not None else {"sensor": "running"},
    }


@pytest.mark.parametrize(
    ("value", "total", "allowed"),
    [(0, 10, 0), (2, 10, 2), ("3", 10, 3), ("10%", 25, 2), ("50%", 3, 1), ("100%", 4, 4), ("0%", 9, 0)],
)
def test_failures_allowed_as_a_count_or_a_percentage_rounded_down(value, total, allowed):
    assert failure_allowance(value, total) == allowed


@pytest.mark.parametrize("value", [-1, True, "ten", "150%", "5 %", None, 1.5])
def test_a_threshold_that_is_no_count_or_percentage_is_refused_naming_the_variable(value):
    with pytest.raises(RolloutError, match=r"^edgefleet_deployment_max_failures: "):
        failure_allowance(value, 10)


def test_devices_are_ok_failed_or_waiting_with_the_reason():
    devices = [
        device("gw-1", [V2]),
        device("gw-2", [V2], code=500, description="pull image failed"),
        device("gw-3", [V2], desired=4, reported=3),
        device("gw-4", [V1]),
    ]
    expected = {"gw-1": "host-1", "gw-2": "host-2", "gw-3": "host-3", "gw-4": "host-4", "gw-5": "host-5"}
    result = progress(devices, expected, V2, max_failures=1)
    assert result["ok"] == ["host-1"]
    assert result["failed"] == [
        {"host": "host-2", "device_id": "gw-2", "reason": "lastDesiredStatus 500: pull image failed"}
    ]
    assert [entry["host"] for entry in result["waiting"]] == ["host-3", "host-4", "host-5"]
    reasons = [entry["reason"] for entry in result["waiting"]]
    assert reasons[0] == "edgeAgent has not reported desired version 4 yet (last reported 3)"
    assert reasons[1] == f"does not apply {V2} yet (applies {V1})"
    assert reasons[2].startswith("no deployment of the hub targets it yet")
    assert (result["total"], result["allowed"], result["settled"], result["over_threshold"]) == (5, 1, False, False)
    assert result["failed_text"] == "host-2 (gw-2): lastDesiredStatus 500: pull image failed"


def test_one_failure_more_than_allowed_is_over_the_threshold_even_while_others_wait():
    devices = [device("gw-1", [V2], code=500), device("gw-2", [V2], desired=4, reported=3)]
    result = progress(devices, {"gw-1": "a", "gw-2": "b"}, V2, max_failures=0)
    assert result["over_threshold"] and not result["settled"]


def test_settled_with_failures_within_the_threshold_and_any_deployment_for_layers():
    devices = [device("gw-1", [V2, "gpu-111111111111"]), device("gw-2", [V2], code=500)]
    result = progress(devices, {"gw-1": "a", "gw-2": "b"}, None, max_failures="50%")
    assert result["settled"] and not result["over_threshold"] and result["allowed"] == 1


def test_the_summary_orders_rows_by_ring_and_counts_each_ring():
    devices = [
        device("gw-1", [V2], code=500, description="One or more errors occurred. " + "x" * 80),
        device("gw-2", [V1, "gpu-111111111111"], modules={"sensor": "running", "gpu": "running", "old": None}),
        device("gw-3", [V1], desired=5, reported=4),
    ]
    hosts = {
        "main-b": {"device_id": "gw-3", "ring": "main"},
        "main-a": {"device_id": "gw-2", "ring": "main"},
        "canary": {"device_id": "gw-1", "ring": "canary"},
    }
    result = summary(devices, hosts, ["canary", "main"], "sensors")
    assert list(result["hosts"]) == ["canary", "main-a", "main-b"]
    assert result["hosts"]["main-a"]["version"] == "0b9e51c2aa10"
    assert result["hosts"]["main-a"]["layers"] == ["gpu-111111111111"]
    assert result["hosts"]["main-a"]["modules"] == {"edgeHub": "running", "gpu": "running", "sensor": "running"}
    assert result["rings"]["canary"] == {
        "hosts": 1,
        "ok": 0,
        "failed": 1,
        "waiting": 0,
        "versions": {"3f2a9c41d07b": 1},
    }
    assert result["rings"]["main"]["ok"] == 1 and result["rings"]["main"]["waiting"] == 1
    lines = result["table"].splitlines()
    assert lines[0] == "ring canary: 1 host(s), 0 ok, 1 failed, 0 waiting; versions 3f2a9c41d07b x1"
    assert lines[3].split()[:4] == ["RING", "HOST", "VERSION", "LAYERS"]
    assert lines[4].startswith("canary  canary  3f2a9c41d07b  -")
    assert lines[4].endswith("500 One or more errors occurred. " + "x" * 28 + "...")


def test_a_host_whose_device_no_deployment_targets_shows_no_version():
    result = summary([], {"h": {"device_id": "gw-9", "ring": "main"}}, ["main"], "sensors")
    assert result["hosts"]["h"]["version"] == "" and result["rings"]["main"]["waiting"] == 1
