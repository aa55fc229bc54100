"""``iotedge``: the CLI of the runtime double. So far ``version``, ``config apply``, ``list``, ``check`` and ``system``."""

from __future__ import annotations

import datetime
import http.client
import json
import os
import socket
import sys

from . import EDGE_VERSION

DEFAULT_HOST = "unix:///var/run/iotedge/mgmt.sock"
MGMT_API_VERSION = "2020-07-07"
MIN_COLUMN_WIDTH = 15
PADDING = 2


class ModuleRuntimeError(Exception):
    """``A module runtime error occurred`` with its causes."""

    def __init__(self, *causes: str) -> None:
        super().__init__("A module runtime error occurred")
        self.causes = causes


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 30) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


def list_modules(host: str) -> list[dict]:
    path = host.removeprefix("unix://")
    connection = UnixHTTPConnection(path)
    try:
        connection.request("GET", f"/modules?api-version={MGMT_API_VERSION}")
        response = connection.getresponse()
        body = json.loads(response.read() or b"{}")
    except OSError as error:
        reason = f"{error.strerror or error} (os error {error.errno})" if error.errno else str(error)
        raise ModuleRuntimeError(
            "A module runtime error occurred", f"error trying to connect: {reason}", reason
        ) from None
    finally:
        connection.close()
    return body.get("modules", [])


def humanize(seconds: float) -> str:
    """chrono-humanize's rough wording, precise up to 20 seconds (device-side.md 3.1)."""
    seconds = max(0, int(seconds))
    if seconds <= 45:
        return "1 second" if seconds == 1 else f"{seconds} seconds"
    if seconds <= 90:
        return "a minute"
    minutes = seconds // 60
    if minutes < 45:
        return f"{max(2, minutes)} minutes"
    if minutes <= 90:
        return "an hour"
    hours = seconds // 3600
    if hours < 22:
        return f"{max(2, hours)} hours"
    if hours <= 36:
        return "a day"
    days = seconds // 86400
    if days < 7:
        return f"{max(2, days)} days"
    weeks = days // 7
    if weeks < 4:
        return "a week" if weeks == 1 else f"{weeks} weeks"
    months = days // 30
    return "a month" if months <= 1 else f"{months} months"


def describe(module: dict, now: datetime.datetime) -> tuple[str, str, str, str]:
    status = module.get("status") or {}
    runtime = (status.get("runtimeStatus") or {}).get("status", "unknown")
    started = status.get("startTime")
    if runtime == "running" and started:
        since = now - datetime.datetime.fromisoformat(started.replace("Z", "+00:00"))
        description = f"Up {humanize(since.total_seconds())}"
    elif runtime in ("stopped", "dead"):
        description = "Stopped"
    elif runtime == "failed":
        description = f"Failed ({status.get('exitStatus', {}).get('statusCode', 1)})"
    else:
        description = "Unknown"
    image = ((module.get("config") or {}).get("settings") or {}).get("image", "")
    return module.get("name", ""), runtime, description, image


def table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    """tabwriter with minwidth 15 and padding 2; the last column unpadded."""
    all_rows = [header, *rows]
    widths = [max(MIN_COLUMN_WIDTH, *(len(row[i]) for row in all_rows)) + PADDING for i in range(len(header) - 1)]
    lines = [
        "".join(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)) + row[-1] for row in all_rows
    ]
    return "\n".join(lines) + "\n"


def list_command(header: str = "Config") -> int:
    """``header`` is ``Config`` from 1.3 on and ``CONFIG`` up to 1.2."""
    host = os.environ.get("IOTEDGE_HOST", DEFAULT_HOST)
    try:
        modules = list_modules(host)
    except ModuleRuntimeError as error:
        print(str(error), file=sys.stderr)
        for cause in error.causes:
            print(f"\tcaused by: {cause}", file=sys.stderr)
        print("", file=sys.stderr)
        return 1
    now = datetime.datetime.now(datetime.UTC)
    # Byte order: uppercase names before lowercase ones, as the real sort does.
    rows = sorted((describe(module, now) for module in modules), key=lambda row: row[0].encode())
    sys.stdout.write(table(rows, ("NAME", "STATUS", "DESCRIPTION", header)))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args in (["version"], ["--version"], ["-V"]):
        print(f"iotedge {EDGE_VERSION}")
        return 0
    if args[:2] == ["config", "apply"]:
        from . import config_apply

        return config_apply.main(args[2:])
    if args == ["list"]:
        return list_command()
    if args[:1] == ["system"]:
        from . import system

        return system.main(args[1:])
    if args[:1] == ["check"]:
        from . import check

        return check.main(args[1:])
    command = " ".join(args) or "(none)"
    print(f"iotedge {command}: not implemented by the edgefleet test double yet", file=sys.stderr)
    return 2
