"""iotedge_module_info and iotedge_check executed as Ansible executes them, against the runtime double's CLI.

`iotedge list` is the double's own CLI talking to a management socket served here; `iotedge check` replays a
report the double's report code printed (its real checks need a configured host).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import hmac
import http.server
import io
import json
import os
import shutil
import socketserver
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from lab.runtime.double.check import CHECKS, error, ok, parse_options, report, warning

COLLECTION = Path(__file__).resolve().parents[4]
MODULES = COLLECTION / "plugins" / "modules"
NOT_FOUND = "iotedge not found: install the runtime (role edgefleet.iotedge.iotedge_install)"


def run_module(module_name: str, tmp_path: Path, env: dict | None = None, **args) -> dict:
    args_file = tmp_path / f"{module_name}-args.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    completed = subprocess.run(
        [sys.executable, str(MODULES / f"{module_name}.py"), str(args_file)],
        env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), **(env or {})),
        capture_output=True,
        text=True,
        check=False,
    )
    return json.loads(completed.stdout)


def executable(path: Path, body: str) -> Path:
    path.write_text(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(COLLECTION)!r})\n{body}")
    path.chmod(0o755)
    return path


def double_cli(tmp_path: Path, generation: str) -> Path:
    """The runtime double's `iotedge` CLI (1.2+ prints the Config header, 1.1 CONFIG)."""
    module = "iotedge11" if generation == "1.1" else "iotedge"
    return executable(tmp_path / "iotedge", f"from lab.runtime.double.{module} import main\nsys.exit(main())\n")


class _ManagementApi(http.server.BaseHTTPRequestHandler):
    modules: list = []

    def do_GET(self):
        body = json.dumps({"modules": self.modules}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def address_string(self):
        return "mgmt.sock"

    def log_message(self, *args):
        pass


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@pytest.fixture
def management_socket():
    """A management API on a unix socket (short path: sun_path is 108 bytes) that lists ``modules``."""
    directory = tempfile.mkdtemp(prefix="iotedge-", dir="/tmp")
    path = os.path.join(directory, "mgmt.sock")
    started = []

    def serve(modules):
        handler = type("Api", (_ManagementApi,), {"modules": modules})
        server = _UnixServer(path, handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started.append(server)
        return f"unix://{path}"

    yield serve
    for server in started:
        server.shutdown()
        server.server_close()
    shutil.rmtree(directory)


def since(**delta) -> str:
    return (datetime.datetime.now(datetime.UTC) - datetime.timedelta(**delta)).isoformat().replace("+00:00", "Z")


def deployed() -> list:
    """The modules, their start times counted from now (not from the import: a long suite would age them)."""
    return [
        {
            "name": "edgeAgent",
            "config": {"settings": {"image": "mcr.microsoft.com/azureiotedge-agent:1.5"}},
            "status": {"startTime": since(minutes=65), "runtimeStatus": {"status": "running"}},
        },
        {
            "name": "edgeHub",
            "config": {"settings": {"image": "mcr.microsoft.com/azureiotedge-hub:1.5"}},
            "status": {"startTime": since(minutes=10), "runtimeStatus": {"status": "running"}},
        },
        {
            "name": "SimulatedTemperatureSensor",
            "config": {"settings": {"image": "mcr.microsoft.com/azureiotedge-simulated-temperature-sensor:1.5"}},
            "status": {"runtimeStatus": {"status": "failed"}, "exitStatus": {"statusCode": 139}},
        },
    ]


@pytest.mark.parametrize(("generation", "header"), [("1.2+", "Config"), ("1.1", "CONFIG")])
def test_module_info_reads_the_double_s_list_in_check_mode_too(tmp_path, management_socket, generation, header):
    host = management_socket(deployed())
    result = run_module(
        "iotedge_module_info",
        tmp_path,
        env={"IOTEDGE_HOST": host},
        executable=str(double_cli(tmp_path, generation)),
        _ansible_check_mode=True,
    )
    assert result["changed"] is False, result
    assert result["runtime_header"] == header
    assert result["modules"] == [
        {
            "name": "SimulatedTemperatureSensor",
            "status": "failed",
            "description": "Failed (139)",
            "config": "mcr.microsoft.com/azureiotedge-simulated-temperature-sensor:1.5",
        },
        {
            "name": "edgeAgent",
            "status": "running",
            "description": "Up an hour",
            "config": "mcr.microsoft.com/azureiotedge-agent:1.5",
        },
        {
            "name": "edgeHub",
            "status": "running",
            "description": "Up 10 minutes",
            "config": "mcr.microsoft.com/azureiotedge-hub:1.5",
        },
    ]
    assert result["status"] == {"SimulatedTemperatureSensor": "failed", "edgeAgent": "running", "edgeHub": "running"}


def test_module_info_filters_by_name(tmp_path, management_socket):
    host = management_socket(deployed())
    result = run_module(
        "iotedge_module_info",
        tmp_path,
        env={"IOTEDGE_HOST": host},
        executable=str(double_cli(tmp_path, "1.2+")),
        name=["edgeAgent", "notYetDeployed"],
    )
    assert [module["name"] for module in result["modules"]] == ["edgeAgent"]
    assert result["status"] == {"edgeAgent": "running"}


@pytest.mark.parametrize(
    ("generation", "hint"),
    [
        ("1.2+", "Check the runtime with 'iotedge system status' and 'iotedge system logs'."),
        ("1.1", "Check the runtime with 'systemctl status iotedge' and 'journalctl -u iotedge'."),
    ],
)
def test_a_runtime_that_is_down_fails_with_its_stderr_and_the_generation_s_hint(tmp_path, generation, hint):
    result = run_module(
        "iotedge_module_info",
        tmp_path,
        env={"IOTEDGE_HOST": f"unix://{tmp_path}/absent.sock"},
        executable=str(double_cli(tmp_path, generation)),
    )
    assert result["failed"] is True
    assert result["msg"].startswith("iotedge list failed (exit 1): A module runtime error occurred / caused by: ")
    assert "No such file or directory (os error 2). Is the runtime running? " in result["msg"]
    assert result["msg"].endswith(hint)
    assert result["rc"] == 1
    assert result["stderr"].startswith("A module runtime error occurred\n\tcaused by: ")
    assert "exception" not in result


@pytest.mark.parametrize("name", ["iotedge_module_info", "iotedge_check"])
def test_a_missing_runtime_points_to_the_install_role(tmp_path, name):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_module(name, tmp_path, env={"PATH": str(empty)})
    assert result["failed"] is True
    assert result["msg"] == NOT_FOUND
    assert result["cmd"][0] == "iotedge"
    missing = run_module(name, tmp_path, executable=str(empty / "iotedge"))
    assert missing["msg"] == f"{empty / 'iotedge'} not found: install the runtime " + (
        "(role edgefleet.iotedge.iotedge_install), or correct the option executable"
    )


def replaying_check(tmp_path: Path, outcomes: dict) -> Path:
    """An `iotedge` that prints the double's JSON report for ``outcomes`` with its exit code, and logs its argv."""
    results = [(section, check_id, text, outcomes.get(check_id, ok())) for section, check_id, text, _c in CHECKS]
    with contextlib.redirect_stdout(io.StringIO()) as out:
        rc = report(results, parse_options(["--output", "json"]))
    (tmp_path / "report.json").write_text(out.getvalue())
    body = (
        "import json\n"
        "from pathlib import Path\n"
        "here = Path(__file__).parent\n"
        "(here / 'argv.json').write_text(json.dumps(sys.argv[1:]))\n"
        "if sys.argv[1:] == ['version']:\n"
        "    print('iotedge 1.5.44')\n"
        "    sys.exit(0)\n"
        "sys.stdout.write((here / 'report.json').read_text())\n"
        f"sys.exit({rc})\n"
    )
    return executable(tmp_path / "iotedge", body)


STALE = warning("/etc/aziot/keyd/config.d/00-super.toml does not exist.", "Did you run 'aziotctl config apply'?")
UNREADABLE = error("/var/lib/edgefleet/identity.key.pem is not readable by user aziotks (uid 996, gid 993)")


def test_check_passes_with_warnings_and_returns_the_report(tmp_path):
    fake = replaying_check(tmp_path, {"configs-up-to-date": STALE})
    result = run_module("iotedge_check", tmp_path, executable=str(fake), _ansible_check_mode=True)
    assert result["changed"] is False, result
    assert result["error_ids"] == []
    assert result["warning_ids"] == ["configs-up-to-date"]
    assert result["counts"]["warning"] == 1 and result["counts"]["total"] == len(CHECKS)
    assert json.loads((tmp_path / "argv.json").read_text()) == ["check", "--output", "json"]
    assert "warnings" not in result  # the ids are in warning_ids; Ansible's own warnings stay Ansible's


def test_check_fails_on_errors_naming_them_and_the_ignore_option(tmp_path):
    fake = replaying_check(tmp_path, {"key-pairs-read": UNREADABLE})
    result = run_module("iotedge_check", tmp_path, executable=str(fake))
    assert result["failed"] is True
    assert result["msg"] == (
        "iotedge check reported errors in 1 check(s): key-pairs-read - error: /var/lib/edgefleet/identity.key.pem is "
        "not readable by user aziotks (uid 996, gid 993). Fix them, or list the id of a check you accept in the "
        "option ignore."
    )
    assert result["error_ids"] == ["key-pairs-read"]
    assert result["rc"] == 1 and len(result["checks"]) == len(CHECKS)


def test_check_accepts_ignored_ids_warns_about_unknown_ones_and_passes_the_diagnostics_image(tmp_path):
    fake = replaying_check(tmp_path, {"key-pairs-read": UNREADABLE, "configs-up-to-date": STALE})
    result = run_module(
        "iotedge_check",
        tmp_path,
        executable=str(fake),
        ignore=["key-pairs-read", "configs-up-to-date", "no-such-check"],
        fail_on="warning",
        diagnostics_image_name="mirror.plant.example/azureiotedge-diagnostics:1.5",
    )
    assert "failed" not in result, result
    assert result["counts"]["ignored"] == 2
    # ansible-core 2.19 reports warnings as structured events, older versions as strings.
    warnings = [item["event"]["msg"] if isinstance(item, dict) else item for item in result["warnings"]]
    assert warnings == ["ignore: iotedge check reported no check with id 'no-such-check'"]
    assert json.loads((tmp_path / "argv.json").read_text()) == [
        "check",
        "--output",
        "json",
        "--diagnostics-image-name",
        "mirror.plant.example/azureiotedge-diagnostics:1.5",
    ]


def test_check_fail_on_warning_and_never(tmp_path):
    fake = replaying_check(tmp_path, {"configs-up-to-date": STALE})
    strict = run_module("iotedge_check", tmp_path, executable=str(fake), fail_on="warning")
    assert strict["failed"] is True and strict["msg"].startswith("iotedge check reported errors and warnings in 1")
    fake = replaying_check(tmp_path, {"key-pairs-read": UNREADABLE})
    lenient = run_module("iotedge_check", tmp_path, executable=str(fake), fail_on="never")
    assert "failed" not in lenient and lenient["error_ids"] == ["key-pairs-read"]


def test_the_host_check_reads_the_state_and_the_runtime_modules_status_in_its_one_run(tmp_path, management_socket):
    host = management_socket(deployed())
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    double_cli(bin_dir, "1.2+")
    identity = tmp_path / "device-id.pem"
    identity.write_text("CERT\n")
    key = "Key-Of-This-Run-7431"
    observe = {
        "files": [str(identity), str(tmp_path / "absent.toml")],
        "modules": ["edgeAgent", "edgeHub"],
        "digest_key": key,
    }
    path = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    result = run_module(
        "iotedge_host_preflight",
        tmp_path,
        env={"IOTEDGE_HOST": host, "PATH": path},
        observe=observe,
        distribution_facts=False,
        _ansible_check_mode=True,
    )
    assert result["changed"] is False and "ansible_facts" not in result, result
    observation = result["observation"]
    assert observation["modules"] == {"edgeAgent": "running", "edgeHub": "running"}
    # Keyed: a reader of the log cannot test guesses of a file's content against it.
    assert (
        observation["paths"][str(identity)]["digest"] == hmac.new(key.encode(), b"CERT\n", hashlib.sha256).hexdigest()
    )
    assert hashlib.sha256(b"CERT\n").hexdigest() not in json.dumps(result)
    assert key not in json.dumps(result)
    assert observation["paths"][str(identity)]["kind"] == "file"
    assert observation["paths"][str(tmp_path / "absent.toml")] is None
    # No runtime on the host: no status, and no failure.
    without = run_module(
        "iotedge_host_preflight", tmp_path, env={"PATH": "/usr/bin:/bin"}, observe=observe, distribution_facts=False
    )
    assert without["observation"]["modules"] == {}, without
