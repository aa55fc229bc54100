"""Initial twins are checked against IoT Hub's twin rules, at every depth, before any request."""

from __future__ import annotations

import pytest

from ansible_collections.edgefleet.iotedge.plugins.module_utils._dps_records import (
    TWIN_MAX_DEPTH,
    validate_initial_twin,
)
from ansible_collections.edgefleet.iotedge.plugins.module_utils._http import ConfigurationError


def nested(depth: int) -> dict:
    """A twin collection with ``depth`` objects nested below it, the innermost holding one string."""
    value: dict = {"leaf": "x"}
    for level in range(depth - 1):
        value = {f"level{level}": value}
    return {"top": value}


@pytest.mark.parametrize(
    ("twin", "words"),
    [
        ({"tags": {"$metadata": {}}}, "key '$metadata' has a character"),
        ({"tags": {"site": {"$version": 3}}}, "initial_twin.tags.site: key '$version'"),
        ({"tags": {"site": {"floor.2": "a"}}}, "key 'floor.2'"),
        ({"tags": {"building a": "x"}}, "key 'building a'"),
        ({"tags": {"ring\n": "canary"}}, "key 'ring\\n'"),
        ({"tags": {"": "x"}}, "not a non-empty string"),
        ({"tags": {"k" * 1025: "x"}}, "longer than 1024 bytes"),
        ({"tags": {"big": "x" * 4097}}, "longer than 4096 bytes"),
        ({"tags": {"n": 2**53}}, "outside the integers"),
        ({"tags": {"n": float("nan")}}, "not a number JSON can carry"),
        ({"tags": {"n": None}}, "null is not a value"),
        ({"tags": {"s": {1, 2}}}, "a set is not a twin value"),
        ({"tags": {"list": [{"ok": 1}, {"bad.key": 1}]}}, "initial_twin.tags.list[1]: key 'bad.key'"),
        ({"tags": nested(TWIN_MAX_DEPTH + 1)}, "nest more than 10 levels"),
        ({"desired_properties": nested(TWIN_MAX_DEPTH + 1)}, "nest more than 10 levels"),
        ({"tags": {f"k{i}": "v" * 100 for i in range(80)}}, "more than the 8192 it allows for tags"),
        ({"desired_properties": {f"k{i}": "v" * 4000 for i in range(9)}}, "more than the 32768 it allows"),
        ({"tags": "environment=test"}, "must be a dictionary"),
    ],
)
def test_what_iot_hub_refuses_is_refused_naming_the_place(twin, words):
    with pytest.raises(ConfigurationError) as error:
        validate_initial_twin(twin, "initial_twin")
    assert words in str(error.value)


def test_what_iot_hub_keeps_passes_unchanged():
    twin = {
        "tags": {
            "environment": "test",
            "site": {"city": "Zürich", "floor": 2, "rack": -1.5, "active": True, "zones": ["a", {"b": 1}]},
            "deep": nested(TWIN_MAX_DEPTH - 1),
            "version": 7,
        },
        "desired_properties": {"telemetry": {"interval": 30}},
    }
    assert validate_initial_twin(twin, "initial_twin") == twin


def test_size_is_counted_as_iot_hub_counts_it():
    # Keys and string characters (control characters not counted), numbers 8, booleans 4: exactly 8 KB passes.
    tags = {f"f{i}": "v" * 4094 for i in range(2)}  # 2 * (2 + 4094) = 8192
    assert validate_initial_twin({"tags": tags}, "t")
    assert validate_initial_twin({"tags": {**tags, "f0": "v" * 4093 + "\n"}}, "t")
    with pytest.raises(ConfigurationError, match="8193 bytes"):
        validate_initial_twin({"tags": {**tags, "f0": "v" * 4095}}, "t")
    numbers = {"n": 1, "b": True}  # 1 + 8 + 1 + 4
    assert validate_initial_twin({"tags": {**{f"f{i}": "v" * 4094 for i in range(1)}, **numbers}}, "t")
