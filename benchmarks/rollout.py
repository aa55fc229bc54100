"""Rollout benchmark: playbooks/provision_edge.yml on fresh labs of 5, 10 and 20 hosts, against two baselines.

For each fleet size n (labs in build/bench-rollout-lab, on free ports, containers named edgefleet-bench<pid>-*):

- the shell baseline, on a fresh lab of n hosts: benchmarks/shell_rollout.py does the same host work as the roles
  (apt source and install, chain and key, the rendered config, `iotedge config apply`, polling `iotedge list` until
  edgeAgent runs) as one `ssh ... bash -s` per host, `--forks` at a time. Its inputs (the PKI and DPS phases of the
  playbook, then benchmarks/playbooks/shell_inputs.yml) are made before the clock starts;
- then a second fresh lab of n hosts, and timed ansible-playbook runs on group `edge`:
  - the facts baseline, benchmarks/playbooks/facts_baseline.yml: fact gathering only (touching every host once);
  - the first run of playbooks/provision_edge.yml (must exit 0 with failed=0 and unreachable=0 for every host);
  - its no-change re-run (must report changed=0 for every host), with the per-task profile
    (benchmarks/callback_plugins/task_profile.py);
  - the no-change re-run under mitogen's `mitogen_linear` strategy (must also report changed=0).

vs_shell = first run / shell baseline; rerun_vs_facts = re-run / facts baseline; rerun_mitogen_vs_facts = the
mitogen re-run / facts baseline, each pair measured in the same run. Every run uses the same `--forks` (default 20)
and an SSH ControlPath directory of its own, so each one opens its connections instead of inheriting persistent ones.

Ends with `rollout: hosts=<n> seconds=<s> vs_shell=<x> rerun_seconds=<r> rerun_vs_facts=<y>
rerun_mitogen_vs_facts=<z>` (one line) for the largest fleet.
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

import shell_rollout
from _common import BIN, REPO, replace_doc_section, timed

STATE_DIR = REPO / "build" / "bench-rollout-lab"
LOG_DIR = REPO / "build" / "bench-rollout-logs"
PLOT = REPO / "docs" / "performance-rollout.png"
# Free ports (taken by the lab) and container names of this run: never another lab, a test suite's or molecule's.
CONTAINER_PREFIX = f"edgefleet-bench{os.getpid()}"
PORTS = ["--free-ports"]
PROVISION = REPO / "playbooks" / "provision_edge.yml"
BASELINE = REPO / "benchmarks" / "playbooks" / "facts_baseline.yml"
SHELL_INPUTS = REPO / "benchmarks" / "playbooks" / "shell_inputs.yml"
CALLBACKS = REPO / "benchmarks" / "callback_plugins"
PROFILE_DIR = REPO / "build" / "bench-rollout-profiles"
INSTALL_TASK_PREFIX = "edgefleet.iotedge.iotedge_install : "
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


def mitogen_environment() -> dict[str, str]:
    """The settings that run a playbook under mitogen (docs/performance.md): its strategy plugins and strategy."""
    import ansible_mitogen

    return {
        "ANSIBLE_STRATEGY_PLUGINS": str(Path(ansible_mitogen.__file__).parent / "plugins" / "strategy"),
        "ANSIBLE_STRATEGY": "mitogen_linear",
    }


def profile_environment(name: str) -> dict[str, str]:
    PROFILE_DIR.mkdir(parents=True, exist_ok=True)
    return {
        "ANSIBLE_CALLBACK_PLUGINS": str(CALLBACKS),
        "ANSIBLE_CALLBACKS_ENABLED": "task_profile",
        "EDGEFLEET_TASK_PROFILE": str(PROFILE_DIR / f"{name}.json"),
    }


def playbook(
    playbook_path: Path, forks: int, log_name: str, *options: str, environment_extra: dict[str, str] | None = None
) -> tuple[float, dict[str, dict[str, int]]]:
    """Run one playbook on the bench lab; return its wall time and its PLAY RECAP. The output goes to LOG_DIR."""
    with tempfile.TemporaryDirectory(prefix="edgefleet-bench-cp-") as control_dir:
        environment = dict(
            os.environ,
            ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_SSH_CONTROL_PATH_DIR=control_dir,
            **(environment_extra or {}),
        )
        environment.pop("ANSIBLE_STDOUT_CALLBACK", None)  # the recap below is the default callback's
        command = [
            str(BIN / "ansible-playbook"),
            *("-i", str(STATE_DIR / "inventory"), "--forks", str(forks)),
            *options,
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


def fresh_lab(hosts: int) -> float:
    lab("down")
    return timed(lab, "up", "--hosts", str(hosts), "--container-prefix", CONTAINER_PREFIX, *PORTS)[0]


def shell_baseline(hosts: int, forks: int) -> float:
    """The shell rollout's seconds on a fresh lab; its inputs (PKI, DPS, rendered configs) are made untimed first."""
    fresh_lab(hosts)
    playbook(PROVISION, forks, f"{hosts}-hosts-shell-pki-dps", "--tags", "pki,dps")
    inputs_dir = STATE_DIR / "shell-inputs"
    shutil.rmtree(inputs_dir, ignore_errors=True)
    inputs_dir.mkdir(parents=True)
    playbook(SHELL_INPUTS, forks, f"{hosts}-hosts-shell-inputs", "-e", f"shell_inputs_dir={inputs_dir}")
    seconds, failures = timed(shell_rollout.rollout, STATE_DIR / "inventory", inputs_dir, forks)
    if failures:
        raise BenchmarkError(f"the shell baseline failed on {sorted(failures)}: {json.dumps(failures)[-3000:]}")
    return seconds


def fleet_measured(result: dict, command: str, settings: str = "") -> str:
    """The first line of a one-lab benchmark's section: when, on what, with which settings and command."""
    import ansible

    return (
        f"Measured {datetime.date.today().isoformat()} on {platform.machine()}, Python {platform.python_version()}, "
        f"ansible-core {ansible.__version__}, `--forks {result['forks']}`{settings}; other containers running: at "
        f"most {result['other_containers']}. Command: `{command}`.\n\n"
    )


def fleet_benchmark_main(
    name: str, description: str, argv: list[str] | None, measure, doc_section, final_line, min_hosts: int = 1
) -> int:
    """The command line of a benchmark on one fresh lab of --hosts hosts (default 20) with --forks (default 20):
    measure, print the result as JSON and its final line, and with --write-docs its section of docs/performance.md."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=20, help="lab hosts (default 20)")
    parser.add_argument("--forks", type=int, default=20, help="ansible-playbook --forks (default 20)")
    parser.add_argument("--write-docs", action="store_true", help="write the result into docs/performance.md")
    args = parser.parse_args(argv)
    if not min_hosts <= args.hosts <= 99:
        parser.error(f"--hosts between {min_hosts} and 99")
    try:
        result = measure(args.hosts, args.forks)
    except BenchmarkError as error:
        print(f"{name}: FAILED: {error}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    if args.write_docs:
        command = (
            f".venv/bin/python benchmarks/run.py {name} --write-docs"
            if (args.hosts, args.forks) == (20, 20)
            else f".venv/bin/python benchmarks/{name}.py --hosts {args.hosts} --forks {args.forks} --write-docs"
        )
        replace_doc_section(name, doc_section(result, command))
    print(final_line(result))
    return 0


def every_host_ran(name: str, hosts: int, counts: dict[str, dict[str, int]]) -> None:
    if len(counts) != hosts:
        raise BenchmarkError(f"{name} on {hosts} hosts: the recap lists {len(counts)} hosts: {sorted(counts)}")


def no_change(name: str, hosts: int, counts: dict[str, dict[str, int]]) -> None:
    every_host_ran(name, hosts, counts)
    changed = {host: host_counts["changed"] for host, host_counts in counts.items() if host_counts.get("changed")}
    if changed:
        raise BenchmarkError(f"{name} on {hosts} hosts changed something: {changed} (see {LOG_DIR})")


def measure_fleet(hosts: int, forks: int) -> dict:
    shell_seconds = shell_baseline(hosts, forks)
    up_seconds = fresh_lab(hosts)
    baseline_seconds, baseline = playbook(BASELINE, forks, f"{hosts}-hosts-facts-baseline")
    provision_seconds, provision = playbook(
        PROVISION, forks, f"{hosts}-hosts-provision", environment_extra=profile_environment(f"{hosts}-hosts-provision")
    )
    rerun_seconds, rerun = playbook(
        PROVISION, forks, f"{hosts}-hosts-rerun", environment_extra=profile_environment(f"{hosts}-hosts-rerun")
    )
    mitogen_seconds, mitogen_rerun = playbook(
        PROVISION, forks, f"{hosts}-hosts-rerun-mitogen", environment_extra=mitogen_environment()
    )
    every_host_ran("the facts baseline", hosts, baseline)
    every_host_ran("provision", hosts, provision)
    no_change("the re-run", hosts, rerun)
    no_change("the mitogen re-run", hosts, mitogen_rerun)
    return {
        "hosts": hosts,
        "lab_up_seconds": up_seconds,
        "shell_seconds": shell_seconds,
        "baseline_seconds": baseline_seconds,
        "provision_seconds": provision_seconds,
        "vs_shell": provision_seconds / shell_seconds,
        "vs_facts_baseline": provision_seconds / baseline_seconds,
        "rerun_seconds": rerun_seconds,
        "rerun_vs_facts": rerun_seconds / baseline_seconds,
        "rerun_mitogen_seconds": mitogen_seconds,
        "rerun_mitogen_vs_facts": mitogen_seconds / baseline_seconds,
        "rerun_profile": task_profile(PROFILE_DIR / f"{hosts}-hosts-rerun.json"),
        "install_seconds": install_seconds(PROFILE_DIR / f"{hosts}-hosts-provision.json"),
        "provision_changed_total": sum(counts["changed"] for counts in provision.values()),
        "other_containers": len(other_containers()),
    }


def task_profile(path: Path) -> dict:
    """The re-run's task count (and how many ran on some host) and its slowest tasks, from the callback's JSON."""
    records = json.loads(path.read_text())
    slowest = sorted(records, key=lambda record: record["seconds"], reverse=True)[:8]
    return {
        "tasks": len(records),
        "ran": sum(1 for record in records if record["hosts"]),
        "slowest": [{"task": record["task"], "seconds": record["seconds"]} for record in slowest],
    }


def install_seconds(path: Path) -> float:
    """The first run's time in role iotedge_install: the sources list, apt-get update and the packages."""
    records = json.loads(path.read_text())
    return sum(record["seconds"] for record in records if record["task"].startswith(INSTALL_TASK_PREFIX))


def slope(fleets: list[dict], key: str) -> float | None:
    """Least-squares seconds per additional host (None with fewer than two fleet sizes)."""
    if len({fleet["hosts"] for fleet in fleets}) < 2:
        return None
    return statistics.linear_regression([fleet["hosts"] for fleet in fleets], [fleet[key] for fleet in fleets]).slope


def measure(sizes: list[int], forks: int) -> dict:
    others = other_containers()
    shutil.rmtree(LOG_DIR, ignore_errors=True)  # only this run's logs
    shutil.rmtree(PROFILE_DIR, ignore_errors=True)
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
        "shell_slope": slope(fleets, "shell_seconds"),
        "rerun_mitogen_slope": slope(fleets, "rerun_mitogen_seconds"),
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
        ("shell", "parallel-SSH shell script, the same host work", "v"),
        ("rerun_mitogen", "no-change re-run under mitogen", "D"),
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
        f"| {fleet['hosts']} | {fleet['baseline_seconds']:.1f} s | {fleet['shell_seconds']:.1f} s "
        f"| {fleet['provision_seconds']:.1f} s | **{fleet['vs_shell']:.2f}x** | {fleet['rerun_seconds']:.1f} s "
        f"| **{fleet['rerun_vs_facts']:.2f}x** | {fleet['rerun_mitogen_seconds']:.1f} s "
        f"| **{fleet['rerun_mitogen_vs_facts']:.2f}x** |\n"
        for fleet in result["fleets"]
    )
    largest = max(result["fleets"], key=lambda fleet: fleet["hosts"])
    profile = largest["rerun_profile"]
    slowest = "".join(f"| {task['task']} | {task['seconds']:.2f} s |\n" for task in profile["slowest"])
    install_shares = "; ".join(
        f"{fleet['install_seconds']:.1f} s of {fleet['provision_seconds']:.1f} s on {fleet['hosts']} hosts "
        f"({100 * fleet['install_seconds'] / fleet['provision_seconds']:.0f} %)"
        for fleet in result["fleets"]
    )
    return (
        f"Measured {datetime.date.today().isoformat()} on {platform.machine()} with {result['cores']} cores "
        f"(controller and lab hosts share them), Python {platform.python_version()}, ansible-core "
        f"{ansible.__version__}, mitogen {mitogen_version()}, `--forks {result['forks']}`; other containers running "
        f"on the machine (counted before the run and after each fleet): at most {result['other_containers']}. "
        f"Command: `{command}`.\n\n"
        "![Wall time of provision_edge.yml, its re-runs and the baselines against the number of hosts]"
        "(performance-rollout.png)\n\n"
        "| hosts | facts baseline | shell baseline | provision_edge.yml | vs_shell | no-change re-run | rerun_vs_facts "
        "| re-run under mitogen | rerun_mitogen_vs_facts |\n"
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n"
        f"{rows}\n"
        f"Marginal cost per host (least-squares slope over the fleet sizes): provision "
        f"**{seconds_per_host(result['provision_slope'])}**, re-run {seconds_per_host(result['rerun_slope'])}, "
        f"shell baseline {seconds_per_host(result['shell_slope'])}, facts baseline "
        f"{seconds_per_host(result['baseline_slope'])}.\n\n"
        "The first run's apt share: role iotedge_install's tasks (the sources list, `apt-get update` of the "
        "repository only, the container engine and the runtime packages, with `apt-get` itself) took "
        f"{install_shares}. Before (issue 16's measurement, 3 hosts): the first `ansible.builtin.apt` task ran "
        "`apt-get update` against the Debian mirror and installed python3-apt and four dependencies on every host, "
        "11.8 s and 17 CPU-s of the first run; now nothing is fetched from the mirror (test_rollout checks the hosts' "
        "apt logs).\n\n"
        f"The no-change re-run on {largest['hosts']} hosts, task by task: {profile['tasks']} tasks, "
        f"{profile['ran']} of them ran on some host; the slowest:\n\n"
        "| task | seconds |\n| --- | ---: |\n"
        f"{slowest}"
    )


def mitogen_version() -> str:
    from importlib.metadata import version

    return version("mitogen")


def final_line(result: dict) -> str:
    largest = max(result["fleets"], key=lambda fleet: fleet["hosts"])
    return (
        f"rollout: hosts={largest['hosts']} seconds={largest['provision_seconds']:.1f} "
        f"vs_shell={largest['vs_shell']:.2f} rerun_seconds={largest['rerun_seconds']:.1f} "
        f"rerun_vs_facts={largest['rerun_vs_facts']:.2f} rerun_mitogen_vs_facts={largest['rerun_mitogen_vs_facts']:.2f}"
    )


def sizes_argument(text: str) -> list[int]:
    sizes = sorted({int(part) for part in text.split(",") if part.strip()})
    if not sizes or sizes[0] < 1 or sizes[-1] > 99:
        raise argparse.ArgumentTypeError("fleet sizes between 1 and 99, comma-separated")
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=sizes_argument, default=[5, 10, 20], help="fleet sizes (default 5,10,20)")
    parser.add_argument("--forks", type=int, default=20, help="ansible-playbook --forks for every run (default 20)")
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
            if (args.sizes, args.forks) == ([5, 10, 20], 20)
            else f".venv/bin/python benchmarks/rollout.py --sizes {sizes} --forks {args.forks} --write-docs"
        )
        replace_doc_section("rollout", doc_section(result, command))
    print(final_line(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
