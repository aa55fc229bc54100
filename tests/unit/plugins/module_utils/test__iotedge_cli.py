"""iotedge_module_info / iotedge_check cores on real output: the runtime double's own `iotedge list` table and
`iotedge check --output json` report for both generations, and the literal examples of device-side.md 3.1."""

from __future__ import annotations

import contextlib
import datetime
import io
import json
import types

import pytest

import lab.runtime.double.iotedge as double_cli
from ansible_collections.edgefleet.iotedge.plugins.module_utils import _iotedge_cli as iotedge_cli
from ansible_collections.edgefleet.iotedge.plugins.module_utils._iotedge_cli import (
    CheckRequest,
    ChecksFailedError,
    IotedgeCommandError,
    IotedgeError,
    IotedgeNotFoundError,
    IotedgeOutputError,
    ModuleInfoRequest,
    ModulesNotRunningError,
    module_info,
    parse_check_report,
    parse_module_list,
    resolving_runner,
    run_check,
    summarize_checks,
    wait_until_running,
)
from lab.runtime.double import EDGE_VERSION, IOTEDGE_1_1_VERSION
from lab.runtime.double import iotedge11 as double_cli_1_1
from lab.runtime.double.check import CHECKS, Outcome, error, ok, parse_options, report, skipped, warning
from lab.runtime.double.check11 import CHECKS as CHECKS_1_1
from lab.runtime.double.iotedge import ModuleRuntimeError, describe, table

NOW = datetime.datetime(2026, 11, 27, 12, 0, tzinfo=datetime.UTC)
LONG_IMAGE = (
    "registry.plant-7.example.com:5000/azureiotedge/simulated-temperature-sensor-with-a-long-name:1.5.44-linux-amd64"
)


def mgmt_module(name, image, status, started=None, exit_code=None) -> dict:
    """A module as aziot-edged's management API returns it (what the double's `iotedge list` formats)."""
    module_status = {"runtimeStatus": {"status": status}}
    if started is not None:
        module_status["startTime"] = (NOW - started).isoformat().replace("+00:00", "Z")
    if exit_code is not None:
        module_status["exitStatus"] = {"statusCode": exit_code}
    return {"name": name, "config": {"settings": {"image": image}}, "status": module_status}


MODULES = [
    mgmt_module("edgeAgent", "mcr.microsoft.com/azureiotedge-agent:1.5", "running", datetime.timedelta(minutes=65)),
    mgmt_module("edgeHub", "mcr.microsoft.com/azureiotedge-hub:1.5", "running", datetime.timedelta(seconds=12)),
    mgmt_module("SimulatedTemperatureSensor", LONG_IMAGE, "failed", exit_code=137),
    mgmt_module("opcPublisherForTheWholeNorthernProductionLine", "opc:2.9", "stopped"),
    mgmt_module("x", "", "unknown"),
]
EXPECTED_ROWS = [
    {"name": "SimulatedTemperatureSensor", "status": "failed", "description": "Failed (137)", "config": LONG_IMAGE},
    {
        "name": "edgeAgent",
        "status": "running",
        "description": "Up an hour",
        "config": "mcr.microsoft.com/azureiotedge-agent:1.5",
    },
    {
        "name": "edgeHub",
        "status": "running",
        "description": "Up 12 seconds",
        "config": "mcr.microsoft.com/azureiotedge-hub:1.5",
    },
    {
        "name": "opcPublisherForTheWholeNorthernProductionLine",
        "status": "stopped",
        "description": "Stopped",
        "config": "opc:2.9",
    },
    {"name": "x", "status": "unknown", "description": "Unknown", "config": ""},
]


class FakeRuntime:
    """``run(argv)`` answering from a table of argv tuples; records every call."""

    def __init__(self, answers: dict):
        self.answers = answers
        self.calls = []

    def __call__(self, argv):
        self.calls.append(list(argv))
        answer = self.answers.get(tuple(argv))
        if isinstance(answer, BaseException):
            raise answer
        if answer is None:
            raise AssertionError(f"unexpected command {argv}")
        return answer


def double_list_output(monkeypatch, modules, generation="1.2+") -> str:
    """stdout of the double's `iotedge list` (1.3+ CLI, or the 1.1 CLI) over the given management API answer."""
    monkeypatch.setattr(double_cli, "list_modules", lambda _host: modules)
    monkeypatch.setattr(double_cli, "datetime", types.SimpleNamespace(datetime=_FrozenDatetime, UTC=datetime.UTC))
    main = double_cli_1_1.main if generation == "1.1" else double_cli.main
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert main(["list"]) == 0
    return out.getvalue()


class _FrozenDatetime(datetime.datetime):
    @classmethod
    def now(cls, tz=None):
        return NOW if tz else NOW.replace(tzinfo=None)


def double_list_failure(monkeypatch, capsys, generation="1.2+") -> tuple:
    """(rc, stderr) of the double's `iotedge list` when the management socket is absent (device-side.md 3.1)."""

    def refuse(_host):
        raise ModuleRuntimeError(
            "A module runtime error occurred",
            "error trying to connect: No such file or directory (os error 2)",
            "No such file or directory (os error 2)",
        )

    monkeypatch.setattr(double_cli, "list_modules", refuse)
    main = double_cli_1_1.main if generation == "1.1" else double_cli.main
    rc = main(["list"])
    return rc, capsys.readouterr().err


# ---- iotedge list -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("generation", "header"), [("1.2+", "Config"), ("1.1", "CONFIG")])
def test_the_double_s_list_of_both_generations_parses_into_rows(monkeypatch, generation, header):
    text = double_list_output(monkeypatch, MODULES, generation)
    assert text.splitlines()[0].endswith(f"DESCRIPTION      {header}")
    assert parse_module_list(text) == (header, EXPECTED_ROWS)


@pytest.mark.parametrize("header", ["Config", "CONFIG"])
def test_header_only_output_means_no_modules(monkeypatch, header):
    text = double_list_output(monkeypatch, [], "1.1" if header == "CONFIG" else "1.2+")
    assert text == f"NAME             STATUS           DESCRIPTION      {header}\n"
    assert parse_module_list(text) == (header, [])


def test_cells_are_cut_at_the_header_offsets_not_at_spaces():
    rows = [
        ("edgeAgent", "running", "Up an hour", "agent:1.5"),
        ("noDescription", "running", "", "plain:1"),
        ("spaces", "failed", "Failed (1) 2 hours ago", ""),
        ("A", "dead", "Stopped 3 days ago", "mcr.microsoft.com/azureiotedge-simulated-temperature-sensor:1.5"),
    ]
    for header in ("Config", "CONFIG"):
        text = table(rows, ("NAME", "STATUS", "DESCRIPTION", header))
        parsed = parse_module_list(text)
        assert parsed[0] == header
        assert [tuple(row.values()) for row in parsed[1]] == rows


def test_the_double_s_row_wording_parses_back():
    for module in MODULES:
        row = describe(module, NOW)
        assert parse_module_list(table([row], ("NAME", "STATUS", "DESCRIPTION", "Config")))[1] == [
            dict(zip(("name", "status", "description", "config"), row, strict=True))
        ]


def test_the_observed_outputs_of_device_side_3_1():
    observed = (
        "NAME                        STATUS           DESCRIPTION      CONFIG\n"
        "edgeAgent                   running          Up an hour       mcr.microsoft.com/azureiotedge-agent:1.0\n"
    )
    assert parse_module_list(observed) == (
        "CONFIG",
        [
            {
                "name": "edgeAgent",
                "status": "running",
                "description": "Up an hour",
                "config": "mcr.microsoft.com/azureiotedge-agent:1.0",
            }
        ],
    )
    assert parse_module_list("NAME             STATUS           DESCRIPTION      CONFIG\n") == ("CONFIG", [])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "iotedge list printed no NAME STATUS DESCRIPTION CONFIG header (first line: '')"),
        ("edgeAgent running\n", "iotedge list printed no NAME STATUS DESCRIPTION CONFIG header"),
        (
            "NAME             STATUS           DESCRIPTION      Config\nedgeAgent running Up an hour agent:1.5\n",
            "iotedge list: line 2 does not line up with the header's columns",
        ),
        (
            "NAME             STATUS           DESCRIPTION      Config\n                 running          Up         a\n",
            "iotedge list: line 2 has no module name",
        ),
    ],
)
def test_output_that_is_not_the_table_is_an_error(text, message):
    with pytest.raises(IotedgeOutputError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        parse_module_list(text)


def test_module_info_returns_rows_header_and_status_and_filters_by_name(monkeypatch):
    text = double_list_output(monkeypatch, MODULES)
    run = FakeRuntime({("iotedge", "list"): (0, text, "")})
    assert module_info(run, ModuleInfoRequest()) == {
        "changed": False,
        "modules": EXPECTED_ROWS,
        "runtime_header": "Config",
        "status": {row["name"]: row["status"] for row in EXPECTED_ROWS},
    }
    only = module_info(run, ModuleInfoRequest(names=["edgeAgent", "edgeHub", "notDeployed"]))
    assert [row["name"] for row in only["modules"]] == ["edgeAgent", "edgeHub"]
    assert only["status"] == {"edgeAgent": "running", "edgeHub": "running"}


def test_a_custom_executable_is_what_runs():
    run = FakeRuntime({("/opt/iotedge/bin/iotedge", "list"): (0, "NAME  STATUS  DESCRIPTION  Config\n", "")})
    assert module_info(run, ModuleInfoRequest(executable="/opt/iotedge/bin/iotedge"))["modules"] == []


AZIOT_HINT = "Check the runtime with 'iotedge system status' and 'iotedge system logs'."
LEGACY_HINT = "Check the runtime with 'systemctl status iotedge' and 'journalctl -u iotedge'."


@pytest.mark.parametrize(
    ("generation", "version", "hint"),
    [
        ("1.2+", f"iotedge {EDGE_VERSION}\n", AZIOT_HINT),
        ("1.1", f"iotedge {IOTEDGE_1_1_VERSION}\n", LEGACY_HINT),
        ("1.1", "iotedge 1.0.5 (d76e0316c6f324345d77c48a83ce836d09392699)\n", LEGACY_HINT),
    ],
)
def test_a_runtime_that_does_not_answer_fails_with_its_error_and_where_to_look(
    monkeypatch, capsys, generation, version, hint
):
    rc, stderr = double_list_failure(monkeypatch, capsys, generation)
    run = FakeRuntime({("iotedge", "list"): (rc, "", stderr), ("iotedge", "version"): (0, version, "")})
    with pytest.raises(IotedgeCommandError) as raised:
        module_info(run, ModuleInfoRequest())
    assert str(raised.value) == (
        "iotedge list failed (exit 1): A module runtime error occurred / caused by: A module runtime error occurred / "
        "caused by: error trying to connect: No such file or directory (os error 2) / caused by: No such file or "
        f"directory (os error 2). Is the runtime running? {hint}"
    )
    assert raised.value.to_result() == {"cmd": ["iotedge", "list"], "rc": 1, "stdout": "", "stderr": stderr}


def test_the_observed_1_1_error_gets_both_hints_when_the_version_is_unknown():
    stderr = (
        "A module runtime error occurred\n\tcaused by: Could not list modules\n"
        "\tcaused by: an error occurred trying to connect: Connection refused (os error 111)\n\n"
    )
    run = FakeRuntime({("iotedge", "list"): (1, "", stderr), ("iotedge", "version"): (1, "", "boom")})
    with pytest.raises(
        IotedgeCommandError, match=r"Connection refused \(os error 111\)\. Is the runtime running\?"
    ) as e:
        module_info(run, ModuleInfoRequest())
    assert "'iotedge system status'" in str(e.value) and "'systemctl status iotedge'" in str(e.value)


def test_permission_denied_suggests_become():
    stderr = "A module runtime error occurred\n\tcaused by: Permission denied (os error 13)\n\n"
    run = FakeRuntime({("iotedge", "list"): (1, "", stderr)})
    with pytest.raises(IotedgeCommandError, match="Run the task with become: true"):
        module_info(run, ModuleInfoRequest())
    assert run.calls == [["iotedge", "list"]]


def test_a_missing_executable_points_to_the_install_role():
    run = FakeRuntime({("iotedge", "list"): FileNotFoundError(2, "No such file or directory", "iotedge")})
    with pytest.raises(IotedgeNotFoundError) as raised:
        module_info(run, ModuleInfoRequest())
    assert str(raised.value) == "iotedge not found: install the runtime (role edgefleet.iotedge.iotedge_install)"
    run = FakeRuntime({("/opt/iotedge", "list"): FileNotFoundError(2, "No such file or directory", "/opt/iotedge")})
    with pytest.raises(IotedgeNotFoundError, match=r"^/opt/iotedge not found: .*, or correct the option executable$"):
        module_info(run, ModuleInfoRequest(executable="/opt/iotedge"))


def test_an_executable_that_cannot_run_is_a_command_error():
    run = FakeRuntime({("iotedge", "list"): PermissionError(13, "Permission denied", "iotedge")})
    with pytest.raises(IotedgeCommandError, match=r"^iotedge could not be run: Permission denied$"):
        module_info(run, ModuleInfoRequest())


def test_the_resolving_runner_raises_file_not_found_and_runs_the_resolved_path():
    calls = []

    def run_command(argv):
        calls.append(argv)
        return 0, "out", ""

    run = resolving_runner({"iotedge": "/usr/bin/iotedge"}.get, run_command)
    assert run(["iotedge", "list"]) == (0, "out", "")
    assert calls == [["/usr/bin/iotedge", "list"]]
    with pytest.raises(FileNotFoundError):
        run(["missing", "list"])
    with pytest.raises(IotedgeNotFoundError):
        module_info(run, ModuleInfoRequest(executable="missing"))


# ---- iotedge check ----------------------------------------------------------------------------------------------


def double_check_report(outcomes: dict, generation="1.2+", dont_run=()) -> tuple:
    """(rc, stdout) of the double's `iotedge check --output json` with the given outcome per check id (ok otherwise)."""
    checks = CHECKS_1_1 if generation == "1.1" else CHECKS
    results = [
        (section, check_id, description, Outcome("ignored") if check_id in dont_run else outcomes.get(check_id, ok()))
        for section, check_id, description, _check in checks
    ]
    options = parse_options(["--output", "json"])
    with contextlib.redirect_stdout(io.StringIO()) as out:
        rc = report(results, options, generation=generation)
    return rc, out.getvalue()


STALE = warning("/etc/aziot/keyd/config.d/00-super.toml does not exist.", "Did you run 'aziotctl config apply'?")
UNREADABLE = error(
    "/var/lib/edgefleet/identity.key.pem is not readable by user aziotks (uid 996, gid 993), "
    "see https://aka.ms/iotedge/cert-permissions"
)
ROOT = "Could not open IoT Edge configuration. You might need to run this command as root."


def check_run(rc, stdout, stderr="", extra=None):
    answers = {("iotedge", "check", "--output", "json"): (rc, stdout, stderr)}
    answers.update(extra or {})
    return FakeRuntime(answers)


def test_a_clean_1_2_report_passes_with_ids_descriptions_and_counts():
    rc, stdout = double_check_report({"aziot-version": skipped("not here")}, dont_run={"container-engine-logrotate"})
    assert rc == 0
    result = run_check(check_run(rc, stdout), CheckRequest())
    assert result["error_ids"] == [] and result["warning_ids"] == []
    assert result["counts"] == {
        "ok": len(CHECKS) - 2,
        "warning": 0,
        "error": 0,
        "fatal": 0,
        "skipped": 1,
        "ignored": 1,
        "total": len(CHECKS),
    }
    assert [check["id"] for check in result["checks"]] == [check[1] for check in CHECKS]
    first = result["checks"][0]
    assert first == {
        "id": "keyd-config-well-formed",
        "description": "keyd configuration is well-formed",
        "result": "ok",
        "details": [],
        "additional_info": {},
        "ignored": False,
    }
    assert result["additional_info"]["aziot_edged_version"] == EDGE_VERSION
    assert result["changed"] is False


def test_errors_fail_with_each_id_its_details_and_the_ignore_option():
    rc, stdout = double_check_report({"configs-up-to-date": STALE, "key-pairs-read": UNREADABLE})
    assert rc == 1  # the runtime exits 1 on errors; the report is still on stdout
    with pytest.raises(ChecksFailedError) as raised:
        run_check(check_run(rc, stdout), CheckRequest())
    message = str(raised.value)
    assert message == (
        "iotedge check reported errors in 1 check(s): key-pairs-read - error: /var/lib/edgefleet/identity.key.pem is "
        "not readable by user aziotks (uid 996, gid 993), see https://aka.ms/iotedge/cert-permissions. Fix them, or "
        "list the id of a check you accept in the option ignore."
    )
    failure = raised.value.to_result()
    assert failure["error_ids"] == ["key-pairs-read"]
    assert failure["warning_ids"] == ["configs-up-to-date"]
    assert failure["rc"] == 1 and failure["cmd"] == ["iotedge", "check", "--output", "json"]
    assert "stdout" not in failure  # the report is in checks already


def test_fail_on_warning_names_warnings_too_with_their_descriptions():
    rc, stdout = double_check_report({"configs-up-to-date": STALE})
    assert run_check(check_run(rc, stdout), CheckRequest())["warning_ids"] == ["configs-up-to-date"]
    with pytest.raises(ChecksFailedError) as raised:
        run_check(check_run(rc, stdout), CheckRequest(fail_on="warning"))
    assert str(raised.value).startswith(
        "iotedge check reported errors and warnings in 1 check(s): configs-up-to-date (daemon configurations "
        "up-to-date with config.toml) - warning: /etc/aziot/keyd/config.d/00-super.toml does not exist. / "
        "Did you run 'aziotctl config apply'?."
    )


def test_fail_on_never_only_reports():
    rc, stdout = double_check_report({"key-pairs-read": UNREADABLE, "configs-up-to-date": STALE})
    result = run_check(check_run(rc, stdout), CheckRequest(fail_on="never"))
    assert result["error_ids"] == ["key-pairs-read"]
    assert result["counts"]["error"] == 1 and result["counts"]["warning"] == 1


def test_ignored_ids_are_kept_but_not_counted_and_unknown_ones_are_warned_about():
    rc, stdout = double_check_report({"key-pairs-read": UNREADABLE, "configs-up-to-date": STALE})
    warnings = []
    result = run_check(
        check_run(rc, stdout),
        CheckRequest(ignore=["key-pairs-read", "configs-up-to-date", "config-yaml-well-formed"], fail_on="warning"),
        warn=warnings.append,
    )
    assert result["error_ids"] == [] and result["warning_ids"] == []
    ignored = {check["id"]: check for check in result["checks"] if check["ignored"]}
    assert set(ignored) == {"key-pairs-read", "configs-up-to-date"}
    assert ignored["key-pairs-read"]["result"] == "error"
    assert ignored["key-pairs-read"]["details"] == UNREADABLE.details
    assert result["counts"]["ignored"] == 2 and result["counts"]["error"] == 0
    assert warnings == ["ignore: iotedge check reported no check with id 'config-yaml-well-formed'"]


def test_a_fatal_check_fails_and_suggests_become():
    # What the double prints when not run as root: the first check fatal, the rest skipped.
    outcomes = {check_id: skipped("skipping because of previous failures") for _s, check_id, _d, _c in CHECKS}
    outcomes["keyd-config-well-formed"] = Outcome("fatal", [ROOT])
    rc, stdout = double_check_report(outcomes)
    with pytest.raises(ChecksFailedError) as raised:
        run_check(check_run(rc, stdout), CheckRequest())
    assert "keyd-config-well-formed (keyd configuration is well-formed) - fatal: Could not open" in str(raised.value)
    assert "Run the task with become: true" in str(raised.value)
    counts = raised.value.to_result()["counts"]
    assert counts["fatal"] == 1 and counts["skipped"] == len(CHECKS) - 1


def test_the_1_1_report_uses_the_1_1_ids_and_descriptions():
    rc, stdout = double_check_report(
        {"connection-string": skipped("the device is provisioned through DPS"), "hostname": error("mismatch")},
        generation="1.1",
    )
    assert json.loads(stdout)["additional_info"]["iotedged_version"] == IOTEDGE_1_1_VERSION
    with pytest.raises(ChecksFailedError, match=r"hostname \(config.yaml has correct hostname\) - error: mismatch"):
        run_check(check_run(rc, stdout), CheckRequest())
    result = run_check(check_run(rc, stdout), CheckRequest(ignore=["hostname"]))
    descriptions = {check["id"]: check["description"] for check in result["checks"]}
    assert descriptions["config-yaml-well-formed"] == "config.yaml is well-formed"
    assert descriptions["connect-management-uri"] == "config.yaml has correct URIs for daemon mgmt endpoint"
    assert result["counts"]["skipped"] == 1 and result["counts"]["ignored"] == 1


def test_unknown_check_ids_and_results_are_kept():
    report_text = json.dumps(
        {
            "additional_info": {},
            "checks": {
                "future-check": {"result": {"result": "ok"}, "additional_info": {"x": 1}},
                "odd-check": {"result": {"result": "surprise", "details": "one string"}, "additional_info": None},
            },
        }
    )
    result = summarize_checks(parse_check_report(report_text))
    assert result["checks"][0]["description"] is None
    assert result["checks"][0]["additional_info"] == {"x": 1}
    assert result["checks"][1]["details"] == ["one string"]
    assert result["counts"]["surprise"] == 1 and result["counts"]["total"] == 2


def test_the_pre_1_1_flat_result_shape_is_read_too():
    flat = json.dumps({"additional_info": {}, "checks": {"hostname": {"result": "warning", "details": ["d"]}}})
    check = summarize_checks(parse_check_report(flat))["checks"][0]
    assert (check["result"], check["details"]) == ("warning", ["d"])


def test_a_stray_line_before_the_report_is_tolerated():
    _rc, stdout = double_check_report({})
    assert parse_check_report("some warning from a library\n" + stdout)["checks"]


def test_the_diagnostics_image_is_passed_only_when_set():
    _rc, stdout = double_check_report({})
    argv = ("iotedge", "check", "--output", "json", "--diagnostics-image-name", "mirror.local/diag:1.5")
    run = FakeRuntime({argv: (0, stdout, "")})
    assert run_check(run, CheckRequest(diagnostics_image_name="mirror.local/diag:1.5"))["error_ids"] == []
    assert run.calls == [list(argv)]


def test_a_check_without_report_fails_with_stderr_and_hint():
    # What the double (and clap) print for an argument the runtime does not know.
    run = check_run(
        2,
        "",
        "error: unexpected argument '--diagnostics-image-name' found\n",
        {("iotedge", "version"): (0, f"iotedge {IOTEDGE_1_1_VERSION}\n", "")},
    )
    with pytest.raises(IotedgeCommandError) as raised:
        run_check(run, CheckRequest())
    assert str(raised.value) == (
        "iotedge check failed (exit 2) without a JSON report: error: unexpected argument '--diagnostics-image-name' "
        "found. Check the runtime with 'systemctl status iotedge' and 'journalctl -u iotedge'."
    )
    with pytest.raises(IotedgeOutputError, match="printed no usable JSON report"):
        run_check(check_run(0, "all good\n"), CheckRequest())
    with pytest.raises(IotedgeOutputError, match="no 'checks' mapping"):
        run_check(check_run(0, "{}\n"), CheckRequest())


def test_check_reports_a_missing_executable_and_a_bad_fail_on():
    run = FakeRuntime({("iotedge", "check", "--output", "json"): FileNotFoundError(2, "No such file", "iotedge")})
    with pytest.raises(IotedgeNotFoundError, match=r"^iotedge not found: install the runtime"):
        run_check(run, CheckRequest())
    with pytest.raises(IotedgeError, match="fail_on must be one of error, warning, never"):
        run_check(run, CheckRequest(fail_on="sometimes"))


# ---- waiting for modules before the checks -------------------------------------------------------------------


class SteppedClock:
    """``clock()`` and ``sleep(seconds)`` for the wait, without sleeping; records every sleep."""

    def __init__(self):
        self.now = 0.0
        self.sleeps = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


class ListAnswers:
    """``run(argv)``: `iotedge list` answers one after the other (the last repeats); other commands from a table."""

    def __init__(self, lists, others):
        self.lists = list(lists)
        self.others = others
        self.calls = []

    def __call__(self, argv):
        self.calls.append(list(argv))
        is_list = argv[1:] == ["list"]
        answer = self.others.get(tuple(argv)) if not is_list else self.lists[0]
        if is_list and len(self.lists) > 1:
            self.lists.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer


def list_of(monkeypatch, **statuses) -> str:
    """The double's `iotedge list` over management API records with these runtime statuses."""
    modules = [
        {
            "name": name,
            "status": {"runtimeStatus": {"status": status}, "startTime": "2026-11-27T11:59:57Z"},
            "config": {"settings": {"image": f"{name.lower()}:1.5"}},
        }
        for name, status in statuses.items()
    ]
    return double_list_output(monkeypatch, modules)


def test_the_checks_run_once_every_awaited_module_is_running(monkeypatch):
    rc, report_text = double_check_report({})
    clock = SteppedClock()
    run = ListAnswers(
        [
            (1, "", "A module runtime error occurred\n\tcaused by: No such file or directory (os error 2)\n"),
            (0, list_of(monkeypatch), ""),
            (0, list_of(monkeypatch, edgeAgent="backoff"), ""),
            (0, list_of(monkeypatch, edgeAgent="running", edgeHub="backoff"), ""),
        ],
        {
            ("iotedge", "version"): (0, f"iotedge {EDGE_VERSION}\n", ""),
            ("iotedge", "check", "--output", "json"): (rc, report_text, ""),
        },
    )
    monkeypatch.setattr(iotedge_cli, "time", types.SimpleNamespace(monotonic=clock, sleep=clock.sleep))

    result = run_check(run, CheckRequest(wait_for_modules=["edgeAgent"], wait_timeout=30))

    assert result["modules"] == {"edgeAgent": "running"}
    assert [call[1] for call in run.calls if call[1] != "version"] == ["list", "list", "list", "list", "check"]
    assert clock.sleeps == [1.0, 1.0, 1.0]
    assert result["error_ids"] == []


def test_a_module_that_never_runs_fails_the_wait_with_its_last_status_and_the_runtime_hint(monkeypatch):
    clock = SteppedClock()
    run = ListAnswers(
        [(0, list_of(monkeypatch, edgeAgent="backoff"), "")],
        {("iotedge", "version"): (0, f"iotedge {EDGE_VERSION}\n", "")},
    )
    with pytest.raises(ModulesNotRunningError) as raised:
        wait_until_running(run, "iotedge", ["edgeAgent", "edgeHub"], 2.5, clock=clock, sleep=clock.sleep)

    message = str(raised.value)
    assert "after waiting 2.5 s, not every module is running: edgeAgent backoff, edgeHub not listed." in message
    assert "iotedge system logs" in message
    assert clock.sleeps == [1.0, 1.0, 0.5]
    assert not any(call[1] == "check" for call in run.calls)


def test_a_runtime_that_never_answers_names_the_last_error(monkeypatch):
    clock = SteppedClock()
    down = (1, "", "A module runtime error occurred\n\tcaused by: No such file or directory (os error 2)\n")
    run = ListAnswers([down], {("iotedge", "version"): (0, f"iotedge {IOTEDGE_1_1_VERSION}\n", "")})
    with pytest.raises(ModulesNotRunningError) as raised:
        wait_until_running(run, "iotedge", ["edgeAgent"], 1, clock=clock, sleep=clock.sleep)

    message = str(raised.value)
    assert "edgeAgent not listed. The last iotedge list failed: iotedge list failed (exit 1)" in message
    assert "No such file or directory (os error 2)" in message
    assert "journalctl -u iotedge" in message


def test_a_missing_executable_is_not_waited_for():
    clock = SteppedClock()
    run = ListAnswers([FileNotFoundError(2, "No such file or directory", "iotedge")], {})
    with pytest.raises(IotedgeNotFoundError):
        wait_until_running(run, "iotedge", ["edgeAgent"], 60, clock=clock, sleep=clock.sleep)
    assert clock.sleeps == []


def test_without_modules_to_wait_for_only_the_checks_run():
    rc, report_text = double_check_report({})
    run = check_run(rc, report_text)
    result = run_check(run, CheckRequest())
    assert result["modules"] == {}
    assert run.calls == [["iotedge", "check", "--output", "json"]]
