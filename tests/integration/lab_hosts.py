"""Start and stop lab fleets from tests: the lab command on ports of the tests' own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Ports of their own, so a lab a developer is running on the default ports is left alone.
PORTS = [
    *("--ssh-base-port", "22851", "--dps-port", "19543", "--device-port", "19544", "--hub-port", "19545"),
    *("--apt-port", "19580"),
]


def lab(state_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lab", "--state-dir", str(state_dir), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
