"""Run real ansible-playbook processes from this checkout (collection resolved through ansible.cfg).

Cloud modules run against the lab emulators (one in-process lab per session, reset before each test); their
state is read back through the control plane's JSON dump, as a user of the lab would.
"""

from __future__ import annotations

import json
import os
import re
import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from lab_hosts import Fleet, lab

from lab.cloud import CloudLab
from lab.fleet.podman import CONTAINERS_CONF

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


class PlaybookRun:
    def __init__(self, completed: subprocess.CompletedProcess):
        self.returncode = completed.returncode
        self.stdout = completed.stdout
        self.stderr = completed.stderr

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def recap(self, host: str) -> dict[str, int]:
        """The PLAY RECAP counters of one host."""
        match = re.search(rf"^{re.escape(host)}\s+:\s+(.*)$", self.stdout, re.M)
        if match is None:
            raise KeyError(f"{host} is not in the recap:\n{self.stdout}")
        return {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", match.group(1))}


def _playbook_command(playbook, args, inventory, extra_vars, env) -> tuple[list[str], dict[str, str]]:
    """ansible-playbook from this checkout, with its ansible.cfg and plain, colourless output."""
    command = [str(BIN / "ansible-playbook"), str(REPO / playbook)]
    if inventory:
        command += ["-i", str(inventory)]
    if extra_vars:
        command += ["-e", json.dumps(extra_vars)]
    command += list(args)
    environment = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    environment.pop("ANSIBLE_STDOUT_CALLBACK", None)
    environment.update(env or {})
    return command, environment


@pytest.fixture
def ansible_playbook():
    def run(playbook, *args, inventory=None, extra_vars=None, env=None) -> PlaybookRun:
        command, environment = _playbook_command(playbook, args, inventory, extra_vars, env)
        completed = subprocess.run(
            command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=600, check=False
        )
        return PlaybookRun(completed)

    return run


class BackgroundPlaybook:
    """An ansible-playbook run going on while the test acts on the hosts; its output goes to ``log``."""

    def __init__(self, process: subprocess.Popen, log: Path):
        self.process = process
        self.log = log

    def output(self) -> str:
        return self.log.read_text()

    def wait(self, timeout: float) -> PlaybookRun:
        self.process.wait(timeout=timeout)
        return PlaybookRun(subprocess.CompletedProcess(self.process.args, self.process.returncode, self.output(), ""))

    def stop(self) -> None:
        """Kill the run if it is still going (a test that failed half-way)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def ansible_playbook_started():
    def start(log: Path, playbook, *args, inventory=None, extra_vars=None, env=None) -> BackgroundPlaybook:
        command, environment = _playbook_command(playbook, args, inventory, extra_vars, env)
        with log.open("w") as handle:
            process = subprocess.Popen(command, cwd=REPO, env=environment, stdout=handle, stderr=subprocess.STDOUT)
        return BackgroundPlaybook(process, log)

    return start


@pytest.fixture(scope="session")
def cloud_session(tmp_path_factory):
    with CloudLab.start(tmp_path_factory.mktemp("cloud")) as lab:
        yield lab


class Cloud:
    """The lab as an integration test sees it: environment for ansible-playbook, control-plane calls."""

    def __init__(self, lab: CloudLab):
        self.lab = lab
        self._context = ssl.create_default_context(cafile=str(lab.ca_bundle))

    @property
    def env(self) -> dict[str, str]:
        """What a user exports to point the modules at the lab (the modules read these as fallbacks)."""
        return {
            "EDGEFLEET_DPS_CONNECTION_STRING": self.lab.dps_connection_string,
            "EDGEFLEET_IOTHUB_CONNECTION_STRING": self.lab.hub_connection_string,
            "EDGEFLEET_CA_BUNDLE": str(self.lab.ca_bundle),
        }

    def control(self, method: str, path: str, body=None):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.lab.control_url}{path}", data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, context=self._context, timeout=30) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def state(self) -> dict:
        """GET /_emulator/state: the emulators' real records."""
        return self.control("GET", "/state")

    def requests(self) -> list[dict]:
        return self.control("GET", "/requests")

    def add_fault(self, match: dict, action: dict, count: int = 1, **extra) -> dict:
        return self.control("POST", "/faults", {"match": match, "action": action, "count": count, **extra})


@pytest.fixture
def cloud(cloud_session) -> Cloud:
    cloud_session.reset()
    return Cloud(cloud_session)


@pytest.fixture
def podman(tmp_path):
    """podman with the lab's engine settings (runc, cgroupfs), to look at the hosts from outside."""
    conf = tmp_path / "containers.conf"
    conf.write_text(CONTAINERS_CONF)

    def run(*args: str, check: bool = True) -> str:
        env = dict(os.environ, CONTAINERS_CONF=str(conf))
        return subprocess.run(["podman", *args], capture_output=True, text=True, check=check, env=env).stdout

    return run


@pytest.fixture
def fleet_factory(tmp_path, podman):
    """Start labs of N hosts (the lab command, the tests' ports); each is removed when the test ends."""
    fleets = []

    def start(hosts: int) -> Fleet:
        fleet = Fleet(tmp_path / f"lab{len(fleets)}", hosts, podman)
        fleets.append(fleet)
        fleet.up()
        return fleet

    yield start
    for fleet in fleets:
        lab(fleet.state_dir, "down")
