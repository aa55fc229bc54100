"""Podman as the lab runs it: its own containers.conf (runc, cgroupfs, no default ulimits), never /etc.

See shared/design/lab-hosts-on-these-machines.md: crun fails on these hosts' hybrid cgroups, and podman's default
nofile/nproc ulimits exceed what the sandbox allows.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

CONTAINERS_CONF = """\
# Written by the edgefleet lab; used through CONTAINERS_CONF so that /etc stays untouched.
[containers]
default_ulimits = []

[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"
"""


class PodmanError(RuntimeError):
    """A podman command failed; the message carries its stderr."""


class Podman:
    def __init__(self, state_dir: Path) -> None:
        self.conf = state_dir / "containers.conf"

    def _env(self) -> dict[str, str]:
        self.conf.parent.mkdir(parents=True, exist_ok=True)
        if not self.conf.exists() or self.conf.read_text() != CONTAINERS_CONF:
            self.conf.write_text(CONTAINERS_CONF)
        return dict(os.environ, CONTAINERS_CONF=str(self.conf))

    def run(self, *args: str, stdin=None, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        completed = subprocess.run(
            ["podman", *args],
            env=self._env(),
            stdin=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and completed.returncode != 0:
            raise PodmanError(f"podman {' '.join(args[:3])} failed: {completed.stderr.strip()}")
        return completed

    def image_exists(self, reference: str) -> bool:
        return self.run("image", "exists", reference, check=False).returncode == 0

    def containers(self, label: str) -> list[dict]:
        """Every container (running or not) carrying ``label`` (key=value)."""
        listed = self.run("ps", "--all", "--filter", f"label={label}", "--format", "json").stdout
        return json.loads(listed or "[]")

    def inspect(self, name: str) -> dict | None:
        completed = self.run("container", "inspect", name, check=False)
        if completed.returncode != 0:
            return None
        return json.loads(completed.stdout)[0]

    def remove(self, name: str) -> None:
        self.run("rm", "--force", "--time", "5", name)

    def copy_tar(self, name: str, data: bytes) -> None:
        """Unpack a tar stream at / in the container (files keep the tar's modes and owners)."""
        completed = subprocess.run(
            ["podman", "cp", "-", f"{name}:/"], input=data, env=self._env(), capture_output=True, check=False
        )
        if completed.returncode != 0:
            raise PodmanError(f"podman cp into {name} failed: {completed.stderr.decode().strip()}")

    def exec(self, name: str, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run("exec", name, *command, check=check)
