"""Log lines as the aziot daemons write them: ``YYYY-MM-DDTHH:MM:SSZ [LEVEL] - message`` on stderr (journald)."""

from __future__ import annotations

import datetime
import sys


def log(level: str, message: str) -> None:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    print(f"{now} [{level}] - {message}", file=sys.stderr, flush=True)
