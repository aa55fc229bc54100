"""Start and stop lab fleets from tests: the lab command on ports of the tests' own."""

from __future__ import annotations

import itertools
import json
import os
import re
import shlex
import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
# Free ports, taken by the lab command and kept in the lab's state directory, and container names of this test run:
# two suites on one machine (or a developer's lab beside them) never meet.
PORTS = ["--free-ports"]
CONTAINER_PREFIX = f"edgefleet-t{os.getpid()}"


def lab_ports(state_dir: Path) -> dict[str, int]:
    """The ports `lab up --free-ports` took for the lab in ``state_dir``."""
    return json.loads((state_dir / "ports.json").read_text())


def lab(state_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lab", "--state-dir", str(state_dir), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


# What a run must leave alone when it refuses an inventory.
HOST_PATHS = [
    "/etc/apt/sources.list.d/edgefleet-iotedge.list",
    "/etc/aziot/config.toml",
    "/etc/iotedge/config.yaml",
    "/var/aziot",
    "/var/iotedge",
    "/usr/bin/iotedge",
]


class Fleet:
    """A lab of N hosts started by the lab command, as the tests see it."""

    def __init__(self, state_dir: Path, hosts: int, podman):
        self.state_dir = state_dir
        self.hosts = [f"edge-{n:02d}" for n in range(1, hosts + 1)]
        self.podman = podman
        self.inventory = state_dir / "inventory"

    def up(self) -> None:
        started = lab(
            self.state_dir, "up", "--hosts", str(len(self.hosts)), "--container-prefix", CONTAINER_PREFIX, *PORTS
        )
        assert started.returncode == 0, started.stderr
        self.group_vars = yaml.safe_load((self.inventory / "group_vars/all.yml").read_text())
        cloud = json.loads((self.state_dir / "cloud/cloud.json").read_text())
        self.cloud = cloud
        self.control_url = cloud["control_url"]
        self._tls = ssl.create_default_context(cafile=cloud["ca_bundle"])

    def state(self) -> dict:
        with urllib.request.urlopen(f"{self.control_url}/state", context=self._tls, timeout=30) as response:
            state = json.load(response)
        return {"dps": {k: v for k, v in state["dps"].items() if k != "operations"}, "iothubs": state["iothubs"]}

    def est_state(self) -> dict:
        with urllib.request.urlopen(f"{self.control_url}/state", context=self._tls, timeout=30) as response:
            return json.load(response)["est"]

    def est_control(self, body: dict) -> dict:
        """POST /_emulator/est: the EST server's certificate lifetime, or a bootstrap identity."""
        request = urllib.request.Request(
            f"{self.control_url}/est", data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, context=self._tls, timeout=30) as response:
            return json.load(response)

    def add_fault(self, match: dict, action: dict, count: int = 1) -> None:
        """POST /_emulator/faults: the next ``count`` requests that match get ``action``."""
        body = json.dumps({"match": match, "action": action, "count": count}).encode()
        request = urllib.request.Request(
            f"{self.control_url}/faults", data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, context=self._tls, timeout=30) as response:
            assert response.status == 201

    def clear_faults(self) -> None:
        request = urllib.request.Request(f"{self.control_url}/faults", method="DELETE")
        with urllib.request.urlopen(request, context=self._tls, timeout=30) as response:
            assert response.status == 204

    def faults(self) -> list[dict]:
        with urllib.request.urlopen(f"{self.control_url}/faults", context=self._tls, timeout=30) as response:
            return json.load(response)

    def container(self, host: str) -> str:
        return f"{CONTAINER_PREFIX}-{host}"

    def sh(self, host: str, command: str, check: bool = True) -> str:
        return self.podman("exec", self.container(host), "sh", "-c", command, check=check)

    def existing(self, host: str, paths: list[str]) -> list[str]:
        tests = " ; ".join(f"[ -e {shlex.quote(p)} ] && echo {shlex.quote(p)}" for p in paths)
        return self.sh(host, tests + " ; true").split()

    def stat(self, host: str, path: str) -> str:
        """owner:group mode, as `stat` prints them."""
        return self.sh(host, f"stat -c '%U:%G %a' {shlex.quote(path)}").strip()


def summary_rows(output: str) -> dict[str, list[str]]:
    """The last fleet summary's rows by host, cut at the header's column offsets: id, DPS status, hub, edgeAgent."""
    lines = output.splitlines()
    header_at = max(i for i, line in enumerate(lines) if "REGISTRATION ID" in line and "EDGEAGENT" in line)
    header = lines[header_at]
    offsets = [header.index(name) for name in ("HOST", "REGISTRATION ID", "DPS", "HUB", "EDGEAGENT")] + [None]
    rows = {}
    for line in lines[header_at + 1 :]:
        if not line.strip() or len(line) - len(line.lstrip()) != offsets[0]:
            break
        cells = [line[start:end].strip() for start, end in itertools.pairwise(offsets)]
        rows[cells[0]] = cells[1:]
    return rows


def secrets_of(fleet: Fleet) -> list[str]:
    """The lab's keys and token, and every line of the fleet's private keys."""
    keys = [
        re.search(r"SharedAccessKey=([^;]+)", fleet.group_vars[name]).group(1)
        for name in ("edgefleet_dps_connection_string", "edgefleet_iothub_connection_string")
    ]
    key_lines = [
        line
        for path in Path(fleet.group_vars["edgefleet_pki_dir"]).rglob("*.key.pem")
        for line in path.read_text().splitlines()
        if "-----" not in line
    ]
    return [*keys, fleet.group_vars["edgefleet_dps_management_token"], "PRIVATE KEY", *key_lines]
