"""Lab benchmark: `python -m lab up --hosts N` from a cached base image, its no-change re-run, memory per host
idle and with the runtime double running (every host provisioned through DPS by lab/playbooks/provision_by_hand.yml
and showing edgeAgent running).

The baseline, in the same run: N bare containers of the same image started with `podman run` and no systemd
(`sleep infinity`), which is what podman itself costs; the ratio shows what systemd, sshd, host keys, the CA
install and the inventory add. Memory is podman's per-container figure once every host is up and idle.

Ends with `lab: hosts=<n> up_seconds=<s> vs_bare_podman=<x> rerun_seconds=<r> memory_mb_per_host=<m>`, the memory
with the double running.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, replace_doc_section, timed

sys.path.insert(0, str(REPO))

from lab.fleet.image import ensure_base_image
from lab.fleet.podman import Podman

# Free ports (taken by the lab) and container names of this run, away from any other lab.
PORTS = ["--free-ports"]
CONTAINER_PREFIX = f"bench{os.getpid()}"
UNITS = {"b": 1e-6, "kb": 1e-3, "kib": 1.024e-3, "mb": 1.0, "mib": 1.048576, "gb": 1e3, "gib": 1073.741824}


def lab(state_dir: Path, *args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "lab", "--state-dir", str(state_dir), *args],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        capture_output=True,
        check=True,
    )


def megabytes(usage: str) -> float:
    """'14.94MB / 25.28GB' -> 14.94"""
    amount, unit = re.match(r"\s*([\d.]+)\s*([a-zA-Z]+)", usage).groups()
    return float(amount) * UNITS[unit.lower()]


def host_memory(podman: Podman, prefix: str) -> dict[str, list[float]]:
    """Per host, in MB: podman's usage (the cgroup's, page cache included) and resident memory (anonymous pages
    plus mapped files, from the container's memory.stat): what the host's processes hold."""
    stats = json.loads(podman.run("stats", "--no-stream", "--format", "json").stdout or "[]")
    usage, resident = [], []
    for entry in stats:
        if not entry["name"].startswith(prefix):
            continue
        usage.append(megabytes(entry["mem_usage"]))
        memory_stat = podman.run("exec", entry["name"], "cat", "/sys/fs/cgroup/memory/memory.stat").stdout
        fields = dict(line.split() for line in memory_stat.splitlines() if len(line.split()) == 2)
        resident.append((int(fields["total_rss"]) + int(fields["total_mapped_file"])) / 1e6)
    return {"usage": usage, "resident": resident}


def provision_by_hand(state_dir: Path, pki_dir: Path) -> None:
    subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i",
            str(state_dir / "inventory"),
            str(REPO / "lab/playbooks/provision_by_hand.yml"),
            "-e",
            json.dumps({"pki_dir": str(pki_dir)}),
        ],
        cwd=REPO,
        env=dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg")),
        capture_output=True,
        check=True,
    )


def wait_for_edge_agents(podman: Podman, containers: list[str], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    waiting = list(containers)
    while waiting and time.monotonic() < deadline:
        listing = podman.run("exec", waiting[0], "sh", "-c", "iotedge list 2>&1 || true").stdout
        if re.search(r"^edgeAgent\s+running\s", listing, re.M):
            waiting.pop(0)
        else:
            time.sleep(2)
    if waiting:
        raise SystemExit(f"edgeAgent not running on {', '.join(waiting)} after {timeout:.0f} s")


def bare_containers(podman: Podman, image: str, count: int) -> None:
    for index in range(count):
        podman.run(
            "run", "-d", "--name", f"{CONTAINER_PREFIX}-bare-{index}", "--network", "host", image, "sleep", "inf"
        )


def measure(hosts: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="edgefleet-bench-lab-") as work:
        state_dir = Path(work) / "lab"
        podman = Podman(Path(work))
        image = ensure_base_image(podman, log=lambda line: print(line, file=sys.stderr))
        try:
            bare_seconds = timed(bare_containers, podman, image, hosts)[0]
        finally:
            for index in range(hosts):
                podman.run("rm", "--force", "--time", "0", f"{CONTAINER_PREFIX}-bare-{index}", check=False)
        try:
            up = ("up", "--hosts", str(hosts), "--container-prefix", CONTAINER_PREFIX, *PORTS)
            up_seconds = timed(lab, state_dir, *up)[0]
            rerun_seconds = timed(lab, state_dir, *up)[0]
            idle_memory = host_memory(podman, f"{CONTAINER_PREFIX}-edge-")
            provision_seconds = timed(provision_by_hand, state_dir, Path(work) / "pki")[0]
            wait_for_edge_agents(podman, [f"{CONTAINER_PREFIX}-edge-{index:02d}" for index in range(1, hosts + 1)])
            time.sleep(5)  # let the daemons settle after their start
            memory = host_memory(podman, f"{CONTAINER_PREFIX}-edge-")
        finally:
            lab(state_dir, "down")
    return {
        "hosts": hosts,
        "up_seconds": up_seconds,
        "rerun_seconds": rerun_seconds,
        "bare_seconds": bare_seconds,
        "vs_bare_podman": up_seconds / bare_seconds,
        "provision_seconds": provision_seconds,
        "idle_memory_mb_per_host": statistics.median(idle_memory["resident"]),
        "memory_mb_per_host": statistics.median(memory["resident"]),
        "memory_mb_max": max(memory["resident"]),
        "usage_mb_per_host": statistics.median(memory["usage"]),
    }


def doc_section(result: dict) -> str:
    today = datetime.date.today().isoformat()
    return (
        f"Measured {today} on {platform.machine()} with {os.cpu_count()} cores (`make bench`, or "
        "`.venv/bin/python benchmarks/run.py lab`); the base image was cached.\n\n"
        "| hosts | `lab up` | per host | no-change `lab up` | bare `podman run` x N | vs_bare_podman "
        "| resident memory per idle host (median) | by-hand provisioning, all hosts | resident memory per host with "
        "the double running (median, max) | podman's usage with page cache (median) |\n"
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n"
        f"| {result['hosts']} | {result['up_seconds']:.1f} s | {result['up_seconds'] / result['hosts']:.2f} s "
        f"| {result['rerun_seconds']:.2f} s | {result['bare_seconds']:.1f} s | {result['vs_bare_podman']:.1f}x "
        f"| {result['idle_memory_mb_per_host']:.1f} MB | {result['provision_seconds']:.1f} s "
        f"| {result['memory_mb_per_host']:.1f} MB, {result['memory_mb_max']:.1f} MB "
        f"| {result['usage_mb_per_host']:.1f} MB |\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=10)
    parser.add_argument("--write-docs", action="store_true", help="write the results into docs/performance.md")
    args = parser.parse_args(argv)
    result = measure(args.hosts)
    print(json.dumps(result, indent=2))
    if args.write_docs:
        replace_doc_section("lab", doc_section(result))
    print(
        f"lab: hosts={result['hosts']} up_seconds={result['up_seconds']:.1f} "
        f"vs_bare_podman={result['vs_bare_podman']:.1f} rerun_seconds={result['rerun_seconds']:.2f} "
        f"memory_mb_per_host={result['memory_mb_per_host']:.1f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
