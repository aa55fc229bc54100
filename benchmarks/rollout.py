"""Rollout benchmark: playbooks/provision_edge.yml on fresh labs of 5, 10 and 20 hosts.

For each fleet size n, a fresh lab (`lab down`, then `lab up --hosts n` in build/bench-rollout-lab, on ports of its
own and with containers named edgefleet-bench-*), then three timed ansible-playbook runs on group `edge`:

- the baseline, benchmarks/playbooks/facts_baseline.yml: fact gathering only (what touching every host once costs);
- the first run of playbooks/provision_edge.yml (must exit 0 with failed=0 and unreachable=0 for every host);
- its no-change re-run (must report changed=0 for every host in the PLAY RECAP).

vs_facts_baseline = provision seconds / baseline seconds, both measured on the same hosts in the same run. The
per-host marginal cost is the least-squares slope of seconds over n. Every run uses the same `--forks` (default
10; Ansible's own default is 5) and an SSH ControlPath directory of its own, so each one opens its connections
(as a first run does) instead of inheriting the previous run's persistent ones.

Ends with `rollout: hosts=<n> seconds=<s> vs_facts_baseline=<x> rerun_seconds=<r>` for the largest fleet.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import BIN, REPO, replace_doc_section, timed

STATE_DIR = REPO / "build" / "bench-rollout-lab"
LOG_DIR = REPO / "build" / "bench-rollout-logs"
PLOT = REPO / "docs" / "performance-rollout.png"
# Free ports (taken by the lab) and container names of this run: never another lab, a test suite's or molecule's.
CONTAINER_PREFIX = f"edgefleet-bench{os.getpid()}"
PORTS = ["--free-ports"]
PROVISION = REPO / "playbooks" / "provision_edge.yml"
BASELINE = REPO / "benchmarks" / "playbooks" / "facts_baseline.yml"
RECAP_LINE = re.compile(r"^(\S+)\s+:\s+((?:\w+=\d+\s*)+)$", re.M)


class BenchmarkError(RuntimeError):
    """A run did not do what the benchmark needs (failed, unreachable, or changed something on the re-run)."""


def lab(*args: str) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "lab", "--state-dir", str(STATE_DIR), *args],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise BenchmarkError(f"python -m lab {' '.join(args)} failed:\n{completed.stderr[-3000:]}")


def recap(output: str) -> dict[str, dict[str, int]]:
    """The PLAY RECAP: {host: {"ok": .., "changed": .., "unreachable": .., "failed": .., ...}}."""
    if "PLAY RECAP" not in output:
        return {}
    tail = output.rpartition("PLAY RECAP")[2]
    return {
        host: {key: int(value) for key, value in (pair.split("=") for pair in counters.split())}
        for host, counters in RECAP_LINE.findall(tail)
    }


def close_connections(control_dir: Path) -> None:
    """Stop the persistent SSH masters a run left behind (ControlPersist), so no run inherits another's."""
    for socket in control_dir.iterdir():
        subprocess.run(["ssh", "-o", f"ControlPath={socket}", "-O", "exit", "unused"], capture_output=True, check=False)


def playbook(playbook_path: Path, forks: int, log_name: str) -> tuple[float, dict[str, dict[str, int]]]:
    """Run one playbook on the bench lab; return its wall time and its PLAY RECAP. The output goes to LOG_DIR."""
    with tempfile.TemporaryDirectory(prefix="edgefleet-bench-cp-") as control_dir:
        environment = dict(
            os.environ,
            ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_SSH_CONTROL_PATH_DIR=control_dir,
        )
        environment.pop("ANSIBLE_STDOUT_CALLBACK", None)  # the recap below is the default callback's
        command = [
            str(BIN / "ansible-playbook"),
            *("-i", str(STATE_DIR / "inventory"), "--forks", str(forks)),
            str(playbook_path),
        ]
        try:
            seconds, completed = timed(
                subprocess.run, command, cwd=REPO, env=environment, capture_output=True, text=True, check=False
            )
        finally:
            close_connections(Path(control_dir))
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = LOG_DIR / f"{log_name}.log"
    log.write_text(completed.stdout + completed.stderr)
    hosts = recap(completed.stdout)
    if completed.returncode != 0 or not hosts:
        raise BenchmarkError(
            f"{playbook_path.name} exited {completed.returncode} ({log}):\n{(completed.stdout + completed.stderr)[-3000:]}"
        )
    broken = {host: counts for host, counts in hosts.items() if counts.get("failed") or counts.get("unreachable")}
    if broken:
        raise BenchmarkError(f"{playbook_path.name}: failed or unreachable hosts {broken} (see {log})")
    return seconds, hosts


def other_containers() -> list[str]:
    """Running containers that are not the benchmark's: the machine's other load during the run."""
    listed = subprocess.run(["podman", "ps", "--format", "{{.Names}}"], capture_output=True, text=True, check=False)
    return [name for name in listed.stdout.split() if not name.startswith(CONTAINER_PREFIX)]


def measure_fleet(hosts: int, forks: int) -> dict:
    lab("down")
    up_seconds = timed(lab, "up", "--hosts", str(hosts), "--container-prefix", CONTAINER_PREFIX, *PORTS)[0]
    baseline_seconds, baseline = playbook(BASELINE, forks, f"{hosts}-hosts-facts-baseline")
    provision_seconds, provision = playbook(PROVISION, forks, f"{hosts}-hosts-provision")
    rerun_seconds, rerun = playbook(PROVISION, forks, f"{hosts}-hosts-rerun")
    for name, counts in (("facts baseline", baseline), ("provision", provision), ("re-run", rerun)):
        if len(counts) != hosts:
            raise BenchmarkError(f"{name} on {hosts} hosts: the recap lists {len(counts)} hosts: {sorted(counts)}")
    changed = {host: counts["changed"] for host, counts in rerun.items() if counts.get("changed")}
    if changed:
        raise BenchmarkError(f"the re-run on {hosts} hosts changed something: {changed} (see {LOG_DIR})")
    return {
        "hosts": hosts,
        "lab_up_seconds": up_seconds,
        "baseline_seconds": baseline_seconds,
        "provision_seconds": provision_seconds,
        "vs_facts_baseline": provision_seconds / baseline_seconds,
        "rerun_seconds": rerun_seconds,
        "provision_changed_total": sum(counts["changed"] for counts in provision.values()),
        "other_containers": len(other_containers()),
    }


def slope(fleets: list[dict], key: str) -> float | None:
    """Least-squares seconds per additional host (None with fewer than two fleet sizes)."""
    if len({fleet["hosts"] for fleet in fleets}) < 2:
        return None
    return statistics.linear_regression([fleet["hosts"] for fleet in fleets], [fleet[key] for fleet in fleets]).slope


def measure(sizes: list[int], forks: int) -> dict:
    others = other_containers()
    shutil.rmtree(LOG_DIR, ignore_errors=True)  # only this run's logs
    print(f"rollout: forks={forks}, sizes={sizes}; other running containers: {len(others)}", file=sys.stderr)
    fleets = []
    measured = False
    try:
        for hosts in sizes:
            fleets.append(measure_fleet(hosts, forks))
            print(json.dumps(fleets[-1]), file=sys.stderr, flush=True)
        measured = True
    finally:
        try:
            lab("down")
        except BenchmarkError as error:
            if measured:
                raise
            print(f"rollout: teardown failed too: {error}", file=sys.stderr)  # keep the error that got us here
    return {
        "forks": forks,
        "cores": os.cpu_count(),
        "other_containers": max([len(others), *(fleet["other_containers"] for fleet in fleets)]),
        "fleets": fleets,
        "provision_slope": slope(fleets, "provision_seconds"),
        "rerun_slope": slope(fleets, "rerun_seconds"),
        "baseline_slope": slope(fleets, "baseline_seconds"),
    }


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    hosts = [fleet["hosts"] for fleet in result["fleets"]]
    figure, axes = pyplot.subplots(figsize=(7, 4.2), dpi=100)
    for key, label, marker in (
        ("provision", "provision_edge.yml, first run", "o"),
        ("rerun", "provision_edge.yml, no-change re-run", "s"),
        ("baseline", "facts only, the baseline", "^"),
    ):
        per_host = result[f"{key}_slope"]
        if per_host is not None:
            label += f" ({per_host:.2f} s/host)"
        axes.plot(hosts, [fleet[f"{key}_seconds"] for fleet in result["fleets"]], marker=marker, label=label)
    axes.set_xlabel("edge hosts")
    axes.set_ylabel("wall time (s)")
    axes.set_xticks(hosts)
    axes.set_xlim(left=0)
    axes.set_ylim(bottom=0)
    axes.grid(True, alpha=0.3)
    axes.legend()
    axes.set_title(f"Rollout on lab hosts (forks={result['forks']}, {result['cores']} cores)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    pyplot.close(figure)


def seconds_per_host(value: float | None) -> str:
    return "n/a (one fleet size)" if value is None else f"{value:.2f} s"


def doc_section(result: dict, command: str) -> str:
    import ansible

    rows = "".join(
        f"| {fleet['hosts']} | {fleet['baseline_seconds']:.1f} s | {fleet['provision_seconds']:.1f} s "
        f"| **{fleet['vs_facts_baseline']:.2f}x** | {fleet['rerun_seconds']:.1f} s |\n"
        for fleet in result["fleets"]
    )
    return (
        f"Measured {datetime.date.today().isoformat()} on {platform.machine()} with {result['cores']} cores "
        f"(controller and lab hosts share them), Python {platform.python_version()}, ansible-core "
        f"{ansible.__version__}, `--forks {result['forks']}`; other containers running on the machine (counted before the run and "
        f"after each fleet): at most {result['other_containers']}. Command: `{command}`.\n\n"
        "![Wall time of provision_edge.yml, its re-run and the facts-only baseline against the number of hosts]"
        "(performance-rollout.png)\n\n"
        "| hosts | facts baseline | provision_edge.yml | vs_facts_baseline | no-change re-run |\n"
        "| ---: | ---: | ---: | ---: | ---: |\n"
        f"{rows}\n"
        f"Marginal cost per host (least-squares slope over the fleet sizes): provision "
        f"**{seconds_per_host(result['provision_slope'])}**, re-run {seconds_per_host(result['rerun_slope'])}, "
        f"facts baseline {seconds_per_host(result['baseline_slope'])}.\n"
    )


def final_line(result: dict) -> str:
    largest = max(result["fleets"], key=lambda fleet: fleet["hosts"])
    return (
        f"rollout: hosts={largest['hosts']} seconds={largest['provision_seconds']:.1f} "
        f"vs_facts_baseline={largest['vs_facts_baseline']:.2f} rerun_seconds={largest['rerun_seconds']:.1f}"
    )


def sizes_argument(text: str) -> list[int]:
    sizes = sorted({int(part) for part in text.split(",") if part.strip()})
    if not sizes or sizes[0] < 1 or sizes[-1] > 99:
        raise argparse.ArgumentTypeError("fleet sizes between 1 and 99, comma-separated")
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=sizes_argument, default=[5, 10, 20], help="fleet sizes (default 5,10,20)")
    parser.add_argument("--forks", type=int, default=10, help="ansible-playbook --forks for every run (default 10)")
    parser.add_argument("--write-docs", action="store_true", help="write the results into docs/performance.md")
    parser.add_argument("--plot", type=Path, help="PNG path (default: docs/ with --write-docs, else build/)")
    args = parser.parse_args(argv)
    try:
        result = measure(args.sizes, args.forks)
    except BenchmarkError as error:
        print(f"rollout: FAILED: {error}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    plot_path = args.plot or (PLOT if args.write_docs else REPO / "build" / "bench-rollout.png")
    plot(result, plot_path)
    print(f"plot: {plot_path}", file=sys.stderr)
    if args.write_docs:
        sizes = ",".join(str(fleet["hosts"]) for fleet in result["fleets"])
        command = (
            ".venv/bin/python benchmarks/run.py rollout --write-docs"
            if (args.sizes, args.forks) == ([5, 10, 20], 10)
            else f".venv/bin/python benchmarks/rollout.py --sizes {sizes} --forks {args.forks} --write-docs"
        )
        replace_doc_section("rollout", doc_section(result, command))
    print(final_line(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
