"""Run real ansible-playbook processes from this checkout (collection resolved through ansible.cfg)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

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


@pytest.fixture
def ansible_playbook():
    def run(playbook, *args, inventory=None, extra_vars=None, env=None) -> PlaybookRun:
        command = [str(BIN / "ansible-playbook"), str(REPO / playbook)]
        if inventory:
            command += ["-i", str(inventory)]
        if extra_vars:
            command += ["-e", json.dumps(extra_vars)]
        command += list(args)
        environment = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
        environment.pop("ANSIBLE_STDOUT_CALLBACK", None)
        environment.update(env or {})
        completed = subprocess.run(
            command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=600, check=False
        )
        return PlaybookRun(completed)

    return run
