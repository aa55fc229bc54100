"""The runtime double's CLI output formats: `iotedge list` table and wording, `iotedge check` text and JSON."""

from __future__ import annotations

import datetime
import json

import pytest

from lab.runtime.double.check import (
    AZIOT_CONFIG,
    EDGE_CONFIG,
    error,
    json_report,
    ok,
    skipped,
    text_report,
    warning,
)
from lab.runtime.double.iotedge import describe, humanize, table

NOW = datetime.datetime(2026, 11, 27, 12, 0, tzinfo=datetime.UTC)


@pytest.mark.parametrize(
    ("seconds", "words"),
    [
        (0, "0 seconds"),
        (1, "1 second"),
        (12, "12 seconds"),
        (44, "44 seconds"),
        (60, "a minute"),
        (200, "3 minutes"),
        (50 * 60, "an hour"),
        (5 * 3600, "5 hours"),
        (30 * 3600, "a day"),
        (3 * 86400, "3 days"),
    ],
)
def test_durations_in_chrono_humanize_words(seconds, words):
    assert humanize(seconds) == words


def test_the_list_table_has_the_real_columns_sort_and_header():
    modules = [
        {
            "name": "edgeAgent",
            "config": {"settings": {"image": "mcr.microsoft.com/azureiotedge-agent:1.5"}},
            "status": {"startTime": "2026-11-27T11:57:00Z", "runtimeStatus": {"status": "running"}},
        },
        {
            "name": "SimulatedTemperatureSensor",
            "config": {"settings": {"image": "sensor:1.0"}},
            "status": {"runtimeStatus": {"status": "stopped"}},
        },
    ]
    rows = sorted((describe(module, NOW) for module in modules), key=lambda row: row[0].encode())
    assert table(rows, ("NAME", "STATUS", "DESCRIPTION", "Config")) == (
        "NAME                        STATUS           DESCRIPTION      Config\n"
        "SimulatedTemperatureSensor  stopped          Stopped          sensor:1.0\n"
        "edgeAgent                   running          Up 3 minutes     mcr.microsoft.com/azureiotedge-agent:1.5\n"
    )
    assert table([], ("NAME", "STATUS", "DESCRIPTION", "Config")) == (
        "NAME             STATUS           DESCRIPTION      Config\n"
    )


RESULTS = [
    (AZIOT_CONFIG, "keyd-config-well-formed", "keyd configuration is well-formed", ok()),
    (AZIOT_CONFIG, "configs-up-to-date", "daemon configurations up-to-date with config.toml", warning("stale")),
    (AZIOT_CONFIG, "aziot-version", "aziot-identity-service package is up-to-date", skipped("not here")),
    (EDGE_CONFIG, "key-pairs-read", "all preloaded key pairs readable by aziotks", error("not readable", "because")),
]


def test_the_text_report_has_the_real_sections_marks_and_summary():
    report, status = text_report(RESULTS, verbose=False, warnings_as_errors=False)
    assert report == (
        "\n"
        "Configuration checks (aziot-identity-service)\n"
        "---------------------------------------------\n"
        "\u221a keyd configuration is well-formed - OK\n"
        "\u203c daemon configurations up-to-date with config.toml - Warning\n"
        "    stale\n"
        "\n"
        "Configuration checks\n"
        "--------------------\n"
        "\u00d7 all preloaded key pairs readable by aziotks - Error\n"
        "    not readable\n"
        "    because\n"
        "\n"
        "1 check(s) succeeded.\n"
        "1 check(s) raised warnings. Re-run with --verbose for more details.\n"
        "1 check(s) raised errors. Re-run with --verbose for more details.\n"
    )
    assert status == 1
    assert "not here" in text_report(RESULTS, verbose=True, warnings_as_errors=False)[0]


def test_warnings_fail_only_when_asked():
    only_warning = RESULTS[:3]
    assert text_report(only_warning, verbose=False, warnings_as_errors=False)[1] == 0
    assert text_report(only_warning, verbose=False, warnings_as_errors=True)[1] == 1
    assert json_report(only_warning, warnings_as_errors=True)[1] == 1


def test_the_json_report_nests_results_as_the_real_one():
    report, status = json_report(RESULTS, warnings_as_errors=False)
    body = json.loads(report)
    assert body["checks"]["keyd-config-well-formed"] == {"result": {"result": "ok"}, "additional_info": {}}
    assert body["checks"]["key-pairs-read"]["result"] == {"result": "error", "details": ["not readable", "because"]}
    assert body["checks"]["aziot-version"]["result"] == {"result": "skipped"}
    assert body["additional_info"]["aziot_edged_version"] == "1.5.44"
    assert status == 1 and report.endswith("}\n") and report.count("\n") == 1


def test_a_deployment_brings_edge_hub_and_the_running_modules():
    from lab.runtime.double.edged import desired_modules

    desired = {
        "systemModules": {
            "edgeAgent": {"settings": {"image": "agent:1.5"}},
            "edgeHub": {"settings": {"image": "hub:1.5"}},
        },
        "modules": {
            "sensor": {"status": "running", "settings": {"image": "sensor:1.0"}},
            "paused": {"status": "stopped", "settings": {"image": "paused:1.0"}},
            "implicit": {"settings": {"image": "implicit:1.0"}},
        },
    }
    assert desired_modules(desired) == {"edgeHub": "hub:1.5", "sensor": "sensor:1.0", "implicit": "implicit:1.0"}
    assert desired_modules({}) == {}


def test_1_1_text_layout_has_no_blank_line_before_the_first_section():
    report, _status = text_report(RESULTS, verbose=False, warnings_as_errors=False, generation="1.1")
    assert report.startswith("Configuration checks (aziot-identity-service)\n---")
    assert "\n\nConfiguration checks\n---" in report


def test_1_1_json_names_the_1_1_daemon_version():
    body = json.loads(
        json_report(RESULTS, warnings_as_errors=False, version_key="iotedged_version", version="1.1.19")[0]
    )
    assert body["additional_info"]["iotedged_version"] == "1.1.19"
