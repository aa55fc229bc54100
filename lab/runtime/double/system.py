"""``iotedge system status|logs|restart|stop|reprovision`` of the double (device-side.md 3.2)."""

from __future__ import annotations

import os
import subprocess
import sys

from .aziotd import request_reprovision
from .config_apply import STOP_ORDER, Host, _systemctl, restart

SERVICES = STOP_ORDER  # aziot-edged, aziot-identityd, aziot-keyd, aziot-certd, aziot-tpmd
SOCKETS = {
    "aziot-edged": ("aziot-edged.mgmt.socket", "aziot-edged.workload.socket"),
    "aziot-identityd": ("aziot-identityd.socket",),
    "aziot-keyd": ("aziot-keyd.socket",),
    "aziot-certd": ("aziot-certd.socket",),
    "aziot-tpmd": ("aziot-tpmd.socket",),
}


def _is_active(unit: str) -> subprocess.CompletedProcess:
    return subprocess.run(["systemctl", "is-active", unit], capture_output=True, text=True, check=False)


def service_state(service: str) -> str:
    """Running (active), Ready (inactive: idle socket-activated), else Down - <why>; never "Stopped"."""
    state = _is_active(f"{service}.service")
    word = state.stdout.strip()
    if word == "active":
        if any(_is_active(socket).stdout.strip() != "active" for socket in SOCKETS[service]):
            return "Down - socket error"
        return "Running"
    if word == "inactive":
        return "Ready"
    return f"Down - {(state.stdout + state.stderr).strip()}"


def status(out=sys.stdout) -> int:
    states = {service: service_state(service) for service in SERVICES}
    print("System services:", file=out)
    for service, state in states.items():
        print(f"    {service:<24}{state}", file=out)
    print("", file=out)
    print("Use 'iotedge system logs' to check for non-fatal errors.", file=out)
    print("Use 'iotedge check' to diagnose connectivity and configuration issues.", file=out)
    for service, state in states.items():
        if state.startswith("Down"):
            print(f"{service} is in a bad state because:", file=out)
            print(f"{service}.service: {state.removeprefix('Down - ')}: Printing the last 10 log lines.", file=out)
            out.flush()
            subprocess.run(["journalctl", "-u", f"{service}.service", "--no-pager", "-e", "-n", "10"], check=False)
    return 0


def logs(args: list[str]) -> int:
    units = [argument for service in SERVICES for argument in ("-u", f"{service}.service")]
    extra = args[args.index("--") + 1 :] if "--" in args else ["-e", "--no-pager"]
    return subprocess.run(["journalctl", *units, *extra], check=False).returncode


def stop(host: Host, out=sys.stdout) -> int:
    for service in SERVICES:
        print(f"Stopping {service}.service...", end="", file=out, flush=True)
        completed = host.systemctl("stop", f"{service}.service")
        print("Stopped!" if completed.returncode == 0 else "\nsystemctl exited with non-zero status code.", file=out)
    return 0


def reprovision(host: Host, out=sys.stdout) -> int:
    """Ask identityd to register with DPS again (trigger Api), then restart edged for the new identity (system.rs).

    A refusal leaves edged alone: it goes on with the device it obtained at its start.
    """
    failure = request_reprovision()
    if failure is not None:
        print(f"Failed to reprovision: {failure}", file=sys.stderr)
        print("Error running system command", file=sys.stderr)
        print("", file=sys.stderr)
        return 1
    print("Successfully reprovisioned with IoT Hub.", file=out)
    # aziotctl's restart for edged alone: stop it, start its sockets, start it.
    _systemctl(host, "stop", "aziot-edged.service", "Stopping", "Stopped", out)
    for socket_unit in SOCKETS["aziot-edged"]:
        _systemctl(host, "start", socket_unit, "Starting", "Started", out)
    _systemctl(host, "start", "aziot-edged.service", "Starting", "Started", out)
    return 0


def main(args: list[str]) -> int:
    command = args[0] if args else ""
    if command in ("restart", "stop", "reprovision") and os.geteuid() != 0:
        print("Command failed: this command must be run as root", file=sys.stderr)
        return 1
    host = Host()
    if command == "status":
        return status()
    if command == "logs":
        return logs(args[1:])
    if command == "restart":
        restart(host)
        return 0
    if command == "stop":
        return stop(host)
    if command == "reprovision":
        return reprovision(host)
    print(f"error: unrecognized subcommand '{command}'", file=sys.stderr)
    return 2
