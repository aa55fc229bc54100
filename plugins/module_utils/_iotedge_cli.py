# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# PRIVATE to the edgefleet.iotedge collection. Do not use this from other collections:
# it may change at any time.

"""``iotedge list`` and ``iotedge check --output json`` on an edge host: run, parse, summarize.

These cores run on the managed host (Python 3.8+, standard library only) and never import AnsibleModule: they take a
``run(argv) -> (rc, stdout, stderr)`` callable and raise `IotedgeError` subclasses that the modules turn into
``fail_json``. Output formats follow device-side.md 3.1 and 3.3 for both runtime generations (1.1 and 1.2+).
"""

from __future__ import annotations

import errno
import json
import os
import re
import time
from dataclasses import dataclass, field

DEFAULT_EXECUTABLE = "iotedge"
INSTALL_HINT = "install the runtime (role edgefleet.iotedge.iotedge_install)"

# `iotedge list`: 1.1 and 1.2 print CONFIG, 1.3 and later Config; tabwriter pads every column but the last.
LIST_HEADER = re.compile(r"^(NAME +)(STATUS +)(DESCRIPTION +)(CONFIG|Config)\s*$")
LIST_COLUMN_PADDING = 2

AZIOT = "1.2+"
LEGACY = "1.1"
RUNTIME_HINTS = {
    AZIOT: "Check the runtime with 'iotedge system status' and 'iotedge system logs'.",
    LEGACY: "Check the runtime with 'systemctl status iotedge' and 'journalctl -u iotedge'.",
    None: (
        "Check the runtime with 'iotedge system status' and 'iotedge system logs' (IoT Edge 1.2 and later) or "
        "'systemctl status iotedge' and 'journalctl -u iotedge' (IoT Edge 1.1)."
    ),
}
PERMISSION_HINT = "Run the task with become: true (the runtime's sockets and configuration need root)."

FAIL_ON = ("error", "warning", "never")
# Results in `iotedge check --output json`; `fatal` stopped the run, `ignored` means not applicable or --dont-run.
CHECK_RESULTS = ("ok", "warning", "error", "fatal", "skipped", "ignored")
FAILING_RESULTS = ("error", "fatal")

# The JSON report has no descriptions: these are the runtime's own (device-side.md 3.3), for messages and
# RV(checks[].description). Ids missing here get None; 1.1 overrides the ids whose wording changed in 1.2.
CHECK_DESCRIPTIONS = {
    "keyd-config-well-formed": "keyd configuration is well-formed",
    "certd-config-well-formed": "certd configuration is well-formed",
    "tpmd-config-well-formed": "tpmd configuration is well-formed",
    "identityd-config-well-formed": "identityd configuration is well-formed",
    "configs-up-to-date": "daemon configurations up-to-date with config.toml",
    "hostname": "identityd config toml file specifies a valid hostname",
    "aziot-version": "aziot-identity-service package is up-to-date",
    "host-local-time": "host time is close to reference time",
    "identity-certificate-expiry": "production readiness: identity certificates expiry",
    "certs-preloaded": "preloaded certificates are valid",
    "keyd-running": "keyd is running",
    "certd-running": "certd is running",
    "tpmd-running": "tpmd is running",
    "identityd-running": "identityd is running",
    "certs-read": "read all preloaded certificates from the Certificates Service",
    "host-connect-dps-endpoint": "host can connect to and perform TLS handshake with DPS endpoint",
    "host-connect-iothub-amqp": "host can connect to and perform TLS handshake with iothub AMQP port",
    "host-connect-iothub-https": "host can connect to and perform TLS handshake with iothub HTTPS / WebSockets port",
    "host-connect-iothub-mqtt": "host can connect to and perform TLS handshake with iothub MQTT port",
    "aziot-edged-config-well-formed": "aziot-edged configuration is well-formed",
    "config-up-to-date": "configuration up-to-date with config.toml",
    "container-engine-uri": "container engine is installed and functional",
    "connect-management-uri": "configuration has correct URIs for daemon mgmt endpoint",
    "aziot-edge-version": "aziot-edge package is up-to-date",
    "container-engine-dns": "DNS server",
    "container-engine-logrotate": "production readiness: logs policy",
}
LEGACY_CHECK_DESCRIPTIONS = {
    **CHECK_DESCRIPTIONS,
    "config-yaml-well-formed": "config.yaml is well-formed",
    "connection-string": "config.yaml has well-formed connection string",
    "windows-host-version": "Windows host version is supported",
    "hostname": "config.yaml has correct hostname",
    "connect-management-uri": "config.yaml has correct URIs for daemon mgmt endpoint",
    "iotedged-version": "latest security daemon",
    "host-local-time": "host time is close to real time",
    "container-local-time": "container time is close to host time",
    "certificates-quickstart": "production readiness: certificates",
    "container-engine-is-moby": "production readiness: container engine",
}


class IotedgeError(Exception):
    """Base of the errors of these cores; the message says what went wrong and what to do."""

    def __init__(self, message, *, cmd=None, rc=None, stdout=None, stderr=None):
        super().__init__(message)
        self.cmd = cmd
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr

    def to_result(self) -> dict:
        """What a module adds to fail_json: the command and what it printed, when there was one."""
        fields = {"cmd": self.cmd, "rc": self.rc, "stdout": self.stdout, "stderr": self.stderr}
        return {key: value for key, value in fields.items() if value is not None}


class IotedgeNotFoundError(IotedgeError):
    """The ``iotedge`` executable is not installed (or not where the option executable says)."""


class IotedgeCommandError(IotedgeError):
    """The command failed without output these cores can use: the runtime is down, or permissions."""


class IotedgeOutputError(IotedgeError):
    """The command printed something these cores do not understand."""


class ModulesNotRunningError(IotedgeError):
    """The modules a check waits for were not all ``running`` when the wait ended."""


class ChecksFailedError(IotedgeError):
    """``iotedge check`` reported failing checks that fail_on does not accept; ``result`` is the full summary."""

    def __init__(self, message, result: dict, **command):
        super().__init__(message, **command)
        self.result = result

    def to_result(self) -> dict:
        return {**super().to_result(), **self.result}


@dataclass
class ModuleInfoRequest:
    """``names`` empty means every module."""

    executable: str = DEFAULT_EXECUTABLE
    names: list = field(default_factory=list)


@dataclass
class CheckRequest:
    executable: str = DEFAULT_EXECUTABLE
    ignore: list = field(default_factory=list)
    fail_on: str = "error"
    diagnostics_image_name: str | None = None
    # Modules that must be running before the checks run, polled with `iotedge list` for up to wait_timeout seconds.
    wait_for_modules: list = field(default_factory=list)
    wait_timeout: float = 300


def resolving_runner(find_executable, run_command):
    """A ``run(argv)`` for the cores from ``find_executable(name) -> path or None`` and ``run_command(argv)``.

    With AnsibleModule: ``resolving_runner(module.get_bin_path, partial(module.run_command, handle_exceptions=False))``.
    An executable that cannot be found raises FileNotFoundError, as exec would.
    """

    def run(argv):
        path = find_executable(argv[0])
        if path is None:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), argv[0])
        return run_command([path, *argv[1:]])

    return run


def _run(run, argv: list) -> tuple:
    try:
        return run(argv)
    except FileNotFoundError:
        hint = INSTALL_HINT if argv[0] == DEFAULT_EXECUTABLE else f"{INSTALL_HINT}, or correct the option executable"
        raise IotedgeNotFoundError(f"{argv[0]} not found: {hint}", cmd=argv) from None
    except OSError as exc:
        raise IotedgeCommandError(f"{argv[0]} could not be run: {exc.strerror or exc}", cmd=argv) from None


def _one_line(text: str) -> str:
    """The runtime's multi-line error chain (``error`` then ``\\tcaused by: ...`` lines) on one line."""
    return " / ".join(line.strip() for line in (text or "").splitlines() if line.strip())


def runtime_generation(run, executable: str) -> str | None:
    """AZIOT or LEGACY from ``iotedge version`` (which needs no daemon); None when it cannot tell."""
    try:
        rc, stdout, _stderr = run([executable, "version"])
    except OSError:
        return None
    match = re.search(r"\biotedge (\d+)\.(\d+)\.", stdout or "")
    if rc != 0 or match is None:
        return None
    return LEGACY if (int(match.group(1)), int(match.group(2))) < (1, 2) else AZIOT


def _failure_hint(run, executable: str, stderr: str) -> str:
    if "Permission denied" in (stderr or "") or "run this command as root" in (stderr or ""):
        return PERMISSION_HINT
    return RUNTIME_HINTS[runtime_generation(run, executable)]


# ---- iotedge list ---------------------------------------------------------------------------------------------


def parse_module_list(text: str) -> tuple:
    """(header word of the last column: ``CONFIG`` or ``Config``, rows as {name, status, description, config}).

    Cells are cut at the header's column offsets, never at whitespace: descriptions have spaces ("Up an hour") and
    any cell may be empty.
    """
    lines = [line for line in (text or "").splitlines() if line.strip()]
    header = LIST_HEADER.match(lines[0]) if lines else None
    if header is None:
        first = lines[0] if lines else ""
        raise IotedgeOutputError(
            f"iotedge list printed no NAME STATUS DESCRIPTION CONFIG header (first line: {first!r})"
        )
    starts = [header.start(group) for group in (2, 3, 4)]
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        for start in starts:
            # tabwriter ends each padded cell with at least LIST_COLUMN_PADDING spaces.
            if line[start - LIST_COLUMN_PADDING : start].strip():
                raise IotedgeOutputError(
                    f"iotedge list: line {number} does not line up with the header's columns: {line!r}"
                )
        bounds = zip([0, *starts], [*starts, None])
        name, status, description, config = (line[begin:end].strip() for begin, end in bounds)
        if not name:
            raise IotedgeOutputError(f"iotedge list: line {number} has no module name: {line!r}")
        rows.append({"name": name, "status": status, "description": description, "config": config})
    return header.group(4), rows


def module_info(run, request: ModuleInfoRequest) -> dict:
    """Run ``iotedge list``; the rows of the requested modules (all when none are named), in the runtime's order."""
    argv = [request.executable, "list"]
    rc, stdout, stderr = _run(run, argv)
    if rc != 0:
        hint = _failure_hint(run, request.executable, stderr)
        details = _one_line(stderr) or _one_line(stdout) or "no output"
        raise IotedgeCommandError(
            f"iotedge list failed (exit {rc}): {details}. Is the runtime running? {hint}",
            cmd=argv,
            rc=rc,
            stdout=stdout,
            stderr=stderr,
        )
    try:
        header, rows = parse_module_list(stdout)
    except IotedgeOutputError as exc:
        raise IotedgeOutputError(str(exc), cmd=argv, rc=rc, stdout=stdout, stderr=stderr) from None
    wanted = set(request.names or [])
    modules = [row for row in rows if not wanted or row["name"] in wanted]
    return {
        "changed": False,
        "modules": modules,
        "runtime_header": header,
        "status": {row["name"]: row["status"] for row in modules},
    }


WAIT_INTERVAL = 1.0


def wait_until_running(run, executable: str, names, timeout: float, clock=None, sleep=None) -> dict:
    """Poll ``iotedge list`` until every named module is ``running``; their statuses.

    While the runtime starts, ``iotedge list`` fails or lists no module yet: both mean "not yet" until the deadline.
    A missing executable is never "not yet".
    """
    clock, sleep = clock or time.monotonic, sleep or time.sleep
    names = list(names)
    deadline = clock() + timeout
    while True:
        try:
            status, problem = module_info(run, ModuleInfoRequest(executable=executable, names=names))["status"], None
        except IotedgeNotFoundError:
            raise
        except IotedgeError as exc:
            status, problem = {}, str(exc)
        if all(status.get(name) == "running" for name in names):
            return {name: status[name] for name in names}
        remaining = deadline - clock()
        if remaining <= 0:
            states = ", ".join(f"{name} {status.get(name) or 'not listed'}" for name in names)
            last = f" The last iotedge list failed: {problem}" if problem else ""
            raise ModulesNotRunningError(
                f"after waiting {timeout:g} s, not every module is running: {states}.{last} "
                f"{RUNTIME_HINTS[runtime_generation(run, executable)]}",
                cmd=[executable, "list"],
            )
        sleep(min(WAIT_INTERVAL, remaining))


# ---- iotedge check --------------------------------------------------------------------------------------------


def parse_check_report(text: str) -> dict:
    """The JSON object ``iotedge check --output json`` prints; ValueError when there is none."""
    text = (text or "").strip()
    try:
        report = json.loads(text)
    except ValueError:
        # Be lenient with a stray line before the report; the report itself is one line.
        candidates = [line for line in text.splitlines() if line.startswith("{")]
        if not candidates:
            raise ValueError("no JSON object in the output") from None
        report = json.loads(candidates[-1])
    if not isinstance(report, dict) or not isinstance(report.get("checks"), dict):
        raise ValueError("the JSON object has no 'checks' mapping")
    return report


def _generation_of_report(report: dict) -> str:
    info = report.get("additional_info") or {}
    if "iotedged_version" in info or "config-yaml-well-formed" in report["checks"]:
        return LEGACY
    return AZIOT


def _check_view(check_id: str, entry, descriptions: dict, ignored: bool) -> dict:
    entry = entry if isinstance(entry, dict) else {}
    outcome = entry.get("result")
    if isinstance(outcome, str):
        # Pre-1.1 runtimes printed the result object itself, without the additional_info wrapper.
        outcome, additional_info = entry, {}
    else:
        outcome = outcome if isinstance(outcome, dict) else {}
        additional_info = entry.get("additional_info")
    details = outcome.get("details") or []
    return {
        "id": check_id,
        "description": descriptions.get(check_id),
        "result": str(outcome.get("result", "unknown")),
        "details": [str(detail) for detail in details] if isinstance(details, list) else [str(details)],
        "additional_info": additional_info if isinstance(additional_info, dict) else {},
        "ignored": ignored,
    }


def summarize_checks(report: dict, ignore=()) -> dict:
    """Checks, failing ids and counts; checks named in ``ignore`` are kept in ``checks`` but counted as ignored."""
    ignore = set(ignore or ())
    descriptions = LEGACY_CHECK_DESCRIPTIONS if _generation_of_report(report) == LEGACY else CHECK_DESCRIPTIONS
    checks = [
        _check_view(check_id, entry, descriptions, check_id in ignore) for check_id, entry in report["checks"].items()
    ]
    counts = dict.fromkeys(CHECK_RESULTS, 0)
    for check in checks:
        bucket = "ignored" if check["ignored"] else check["result"]
        counts[bucket] = counts.get(bucket, 0) + 1
    counts["total"] = len(checks)
    counted = [check for check in checks if not check["ignored"]]
    return {
        "changed": False,
        "checks": checks,
        "error_ids": [check["id"] for check in counted if check["result"] in FAILING_RESULTS],
        "warning_ids": [check["id"] for check in counted if check["result"] == "warning"],
        "counts": counts,
        "additional_info": report.get("additional_info") if isinstance(report.get("additional_info"), dict) else {},
    }


def _describe_failure(check: dict) -> str:
    label = f"{check['id']} ({check['description']})" if check["description"] else check["id"]
    details = " / ".join(check["details"]) or "no details"
    return f"{label} - {check['result']}: {details}"


def failing_checks(result: dict, fail_on: str) -> list:
    """The counted checks that make the module fail under ``fail_on``."""
    if fail_on == "never":
        return []
    failing = set(result["error_ids"])
    if fail_on == "warning":
        failing.update(result["warning_ids"])
    return [check for check in result["checks"] if check["id"] in failing and not check["ignored"]]


def check_command(request: CheckRequest) -> list:
    argv = [request.executable, "check", "--output", "json"]
    if request.diagnostics_image_name:
        argv += ["--diagnostics-image-name", request.diagnostics_image_name]
    return argv


def run_check(run, request: CheckRequest, warn=None) -> dict:
    """Run ``iotedge check --output json`` and summarize it; ChecksFailedError when fail_on says so.

    The command exits 1 whenever a check fails, so its exit code only matters when it printed no report.
    ``warn(message)`` receives notes for the user (ids in ``ignore`` that the runtime did not report).
    """
    if request.fail_on not in FAIL_ON:
        raise IotedgeError(f"fail_on must be one of {', '.join(FAIL_ON)}, got {request.fail_on!r}")
    modules = {}
    if request.wait_for_modules:
        modules = wait_until_running(run, request.executable, request.wait_for_modules, request.wait_timeout)
    argv = check_command(request)
    rc, stdout, stderr = _run(run, argv)
    command = {"cmd": argv, "rc": rc, "stdout": stdout, "stderr": stderr}
    try:
        report = parse_check_report(stdout)
    except ValueError as exc:
        details = _one_line(stderr) or _one_line(stdout) or "no output"
        if rc != 0:
            hint = _failure_hint(run, request.executable, stderr)
            raise IotedgeCommandError(
                f"iotedge check failed (exit {rc}) without a JSON report: {details}. {hint}", **command
            ) from None
        raise IotedgeOutputError(f"iotedge check printed no usable JSON report ({exc}): {details}", **command) from None
    result = {**summarize_checks(report, request.ignore), "modules": modules}
    reported = {check["id"] for check in result["checks"]}
    for check_id in request.ignore or ():
        if check_id not in reported and warn is not None:
            warn(f"ignore: iotedge check reported no check with id {check_id!r}")
    failing = failing_checks(result, request.fail_on)
    if failing:
        what = "errors and warnings" if request.fail_on == "warning" else "errors"
        listed = "; ".join(_describe_failure(check) for check in failing)
        hint = ""
        if any("run this command as root" in detail for check in failing for detail in check["details"]):
            hint = f" {PERMISSION_HINT}"
        # The report is in `result` already: leave the raw JSON out of the failure.
        raise ChecksFailedError(
            f"iotedge check reported {what} in {len(failing)} check(s): {listed}.{hint} Fix them, or list the id of "
            "a check you accept in the option ignore.",
            result,
            cmd=argv,
            rc=rc,
            stderr=stderr,
        )
    return result


__all__ = (
    "CheckRequest",
    "ChecksFailedError",
    "IotedgeCommandError",
    "IotedgeError",
    "IotedgeNotFoundError",
    "IotedgeOutputError",
    "ModuleInfoRequest",
    "ModulesNotRunningError",
    "module_info",
    "parse_check_report",
    "parse_module_list",
    "resolving_runner",
    "run_check",
    "summarize_checks",
    "wait_until_running",
)
