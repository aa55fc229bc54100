"""Primitives: registration-id rules, expiry limits, atomic multi-file writes."""

from __future__ import annotations

import datetime
import os

import pytest

from ansible_collections.edgefleet.iotedge.plugins.module_utils import _pki
from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki import (
    PkiError,
    check_expiry_limits,
    validate_registration_id,
    write_files_atomically,
)

UTC = datetime.UTC


@pytest.mark.parametrize(
    "registration_id",
    ["gw-01", "plant.a:line_3-gw", "a", "x" * 64, "edge-", "0"],
)
def test_valid_registration_ids_pass(registration_id):
    assert validate_registration_id(registration_id, field="devices[0]") == registration_id


@pytest.mark.parametrize(
    ("registration_id", "message"),
    [
        ("GW-01", "devices[0]: registration id 'GW-01' has uppercase letters; use 'gw-01'"),
        ("gw 01", "is not valid for DPS; use lowercase letters, digits and '-', '.', '_', ':' only"),
        ('gw"01', "is not valid for DPS"),
        ("gw-01\n[provisioning]", "is not valid for DPS"),
        ("gw/01", "is not valid for DPS"),
        ("gw-01.", "ending with a letter, a digit or '-'"),
        ("gw-01_", "ending with a letter, a digit or '-'"),
        ("x" * 65, "has 65 characters; the certificate CN that carries it allows at most 64"),
        ("", "a registration id must be a non-empty string"),
        (None, "a registration id must be a non-empty string"),
        (12, "a registration id must be a non-empty string"),
    ],
    ids=[
        "uppercase",
        "space",
        "quote",
        "newline-injection",
        "slash",
        "trailing-dot",
        "trailing-underscore",
        "too-long",
        "empty",
        "none",
        "number",
    ],
)
def test_invalid_registration_ids_name_the_field_and_the_fix(registration_id, message):
    with pytest.raises(PkiError) as error:
        validate_registration_id(registration_id, field="devices[0]")
    assert message in str(error.value)
    assert str(error.value).startswith("devices[0]: ")


@pytest.mark.parametrize(
    ("not_after", "generation", "message"),
    [
        (datetime.datetime(2038, 1, 1, tzinfo=UTC), "1.1", "on or after 2038-01-01, which IoT Edge 1.1"),
        (datetime.datetime(2040, 6, 1, tzinfo=UTC), "1.1", "on or after 2038-01-01"),
        (datetime.datetime(2050, 1, 1, tzinfo=UTC), "1.2+", "after 2049-12-31"),
        (datetime.datetime(2050, 1, 1, tzinfo=UTC), "1.1", "after 2049-12-31"),
    ],
)
def test_expiry_limits_refuse(not_after, generation, message):
    with pytest.raises(PkiError) as error:
        check_expiry_limits(not_after, generation=generation, what="the thing", fix="do this")
    assert message in str(error.value)
    assert str(error.value).endswith("; do this")


@pytest.mark.parametrize(
    ("not_after", "generation"),
    [
        (datetime.datetime(2037, 12, 31, 23, 59, 59, tzinfo=UTC), "1.1"),
        (datetime.datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC), "1.2+"),
    ],
)
def test_expiry_limits_accept_the_last_valid_second(not_after, generation):
    check_expiry_limits(not_after, generation=generation, what="x", fix="y")


def test_atomic_write_replaces_all_files(tmp_path):
    targets = [tmp_path / "a", tmp_path / "b"]
    write_files_atomically([(str(targets[0]), b"A", 0o600), (str(targets[1]), b"B", 0o644)])
    assert targets[0].read_bytes() == b"A"
    assert targets[1].read_bytes() == b"B"
    assert os.stat(targets[0]).st_mode & 0o777 == 0o600
    assert os.stat(targets[1]).st_mode & 0o777 == 0o644


def test_atomic_write_failing_while_staging_leaves_previous_files_and_no_temp(tmp_path, monkeypatch):
    first, second = tmp_path / "a", tmp_path / "b"
    first.write_bytes(b"old-a")
    second.write_bytes(b"old-b")
    real_stage = _pki.stage_file
    calls = []

    def failing_stage(path, data, mode):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device", path)
        return real_stage(path, data, mode)

    monkeypatch.setattr(_pki, "stage_file", failing_stage)
    with pytest.raises(OSError):
        write_files_atomically([(str(first), b"new-a", 0o600), (str(second), b"new-b", 0o600)])
    assert first.read_bytes() == b"old-a"
    assert second.read_bytes() == b"old-b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2037-12-31", datetime.datetime(2037, 12, 31, tzinfo=UTC)),
        ("2037-12-31T23:00:00Z", datetime.datetime(2037, 12, 31, 23, tzinfo=UTC)),
        ("2037-12-31T23:00:00+01:00", datetime.datetime(2037, 12, 31, 22, tzinfo=UTC)),
    ],
)
def test_parse_time(text, expected):
    assert _pki.parse_time(text, field="not_after") == expected


def test_parse_time_names_the_field():
    with pytest.raises(PkiError, match=r"^not_after: 'next year' is not a date; use YYYY-MM-DD"):
        _pki.parse_time("next year", field="not_after")


def test_directory_appears_complete_with_modes(tmp_path):
    target = tmp_path / "gw-01"
    _pki.write_directory_atomically(str(target), [("key", b"K", 0o600), ("cert", b"C", 0o644)], mode=0o700)
    assert (target / "key").read_bytes() == b"K" and (target / "cert").read_bytes() == b"C"
    assert os.stat(target).st_mode & 0o777 == 0o700
    assert os.stat(target / "key").st_mode & 0o777 == 0o600
    assert os.stat(target / "cert").st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["gw-01"]


def test_directory_failing_half_way_leaves_nothing(tmp_path, monkeypatch):
    real_open = os.open
    calls = []

    def failing_open(path, flags, mode=0o777, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device", path)
        return real_open(path, flags, mode, **kwargs)

    monkeypatch.setattr(_pki.os, "open", failing_open)
    with pytest.raises(OSError):
        _pki.write_directory_atomically(str(tmp_path / "gw-01"), [("key", b"K", 0o600), ("cert", b"C", 0o644)])
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []
