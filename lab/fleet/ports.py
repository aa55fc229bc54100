"""Free loopback ports for a lab that must not meet another one (test suites, molecule, benchmarks).

`lab up --free-ports` takes free ports for the emulators and the apt repository and a run of free ports for the hosts'
sshd, and records them in the lab's state directory, so that a later `up` of the same lab (a restart) keeps them.
"""

from __future__ import annotations

import json
import random
import socket
from pathlib import Path

PORTS_FILE = "ports.json"
SERVICE_PORTS = ("dps_port", "device_port", "hub_port", "apt_port")
# Above the fixed ports the lab documents (the developer's 18443-18480 and 22201+, the molecule scenarios' and the
# benchmarks' 24xxx-25xxx) and below Linux's ephemeral range (32768-60999), so an outgoing connection never takes a
# port a lab service is about to listen on.
PORT_RANGE = (26000, 32000)


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_run(count: int, rng: random.Random | None = None, attempts: int = 500) -> int:
    """The first of ``count`` consecutive free ports (at least one), from a random start in PORT_RANGE."""
    rng = rng or random.SystemRandom()
    low, high = PORT_RANGE
    for _attempt in range(attempts):
        base = rng.randrange(low, high - max(count, 1))
        if all(_bindable(port) for port in range(base, base + max(count, 1))):
            return base
    raise OSError(f"no run of {count} free ports between {low} and {high}")


def lab_ports(state_dir: Path, hosts: int) -> dict[str, int]:
    """The lab's ports: the ones recorded in its state directory when they still fit, otherwise new free ones."""
    path = state_dir / PORTS_FILE
    recorded = json.loads(path.read_text()) if path.exists() else {}
    base, run = recorded.get("ssh_base_port"), recorded.get("ssh_ports", 0)
    if not isinstance(base, int) or not isinstance(run, int) or run < hosts:
        base, run = free_port_run(hosts), hosts
    taken = set(range(base, base + max(run, 1)))
    ports = {"ssh_base_port": base}
    for name in SERVICE_PORTS:
        port = recorded.get(name)
        while not isinstance(port, int) or port in taken:
            port = free_port_run(1)
        ports[name] = port
        taken.add(port)
    state_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**ports, "ssh_ports": run}, indent=2) + "\n")
    return ports
