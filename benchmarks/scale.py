"""Scale benchmark: the controller phases of provision_edge.yml (`--tags pki,dps`) over 100, 500 and 1000 inventory
hosts that are never contacted, against the lab's DPS emulator, beside the same modules called directly.

For each fleet size, on a fresh DPS and a fresh PKI directory:

- (a) the module work alone: the modules those phases run (the DPS read that checks the credentials, pki_ca,
  pki_identity for every host, dps_certificate uploading and proving the CA, dps_enrollment for every host in bulk),
  each executed as Ansible executes a module (a new interpreter reading an arguments file), with the same arguments;
- then DPS emptied and another PKI directory: (b) `ansible-playbook playbooks/provision_edge.yml --tags pki,dps`
  over N hosts, with its peak memory: the largest sum, over ansible-playbook and its worker processes, of their
  proportional set size (each page shared after a fork counted once), sampled every 50 ms.

Both must end with N individual enrollments in DPS. The ratio vs_modules = b / a is what the play around the modules
costs. Each pair is measured --repeat times (default 3), (a) right before (b), and the pair with the median ratio is
reported: the disk and CPU of these machines change speed for minutes at a time (writing the 1000 identity
directories took from 0.5 s to 3.8 s within one hour), so a ratio is only fair between runs made side by side. Peak
memory is the largest of the repeats. Ends with `scale: hosts=<n> seconds=<b> modules_seconds=<a> vs_modules=<x> peak_mb=<m>` for the
largest fleet.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml
from _common import BIN, COLLECTIONS, REPO, replace_doc_section, run_module_process
from enroll import Lab

MODULES = COLLECTIONS / "ansible_collections" / "edgefleet" / "iotedge" / "plugins" / "modules"
PLAYBOOK = REPO / "playbooks" / "provision_edge.yml"
LOG_DIR = REPO / "build" / "bench-scale-logs"
GOAL_VS_MODULES = 3.0
GOAL_PEAK_MB = 300.0
CA_CERTIFICATE_NAME = "edgefleet-root"


class BenchmarkError(Exception):
    pass


def group_vars(lab: Lab, pki_dir: Path) -> dict:
    """What `python -m lab up` writes for DPS, without hosts to reach."""
    dps = lab.info["dps"]
    return {
        "edgefleet_dps_id_scope": dps["id_scope"],
        "edgefleet_dps_global_endpoint": dps["global_endpoint"],
        "edgefleet_dps_connection_string": dps["connection_string"],
        "edgefleet_dps_management_url": dps["management_url"],
        "edgefleet_dps_resource_id": dps["management_resource_id"],
        "edgefleet_dps_management_token": dps["management_token"],
        "edgefleet_ca_bundle": lab.info["ca_bundle"],
        "edgefleet_dps_ca_certificate_name": CA_CERTIFICATE_NAME,
        "edgefleet_pki_dir": str(pki_dir),
    }


def host_names(hosts: int) -> list[str]:
    return [f"scale-{number:04d}" for number in range(1, hosts + 1)]


def module_work(lab: Lab, hosts: int, pki_dir: Path) -> float:
    """(a): the modules of the pki and dps phases, one process each, timed together."""
    dps_connection = {"connection_string": lab.info["dps"]["connection_string"], "ca_bundle": lab.info["ca_bundle"]}
    management = {
        "management_url": lab.info["dps"]["management_url"],
        "resource_id": lab.info["dps"]["management_resource_id"],
        "bearer_token": lab.info["dps"]["management_token"],
        "ca_bundle": lab.info["ca_bundle"],
    }
    ca_dir, identity_dir = pki_dir / "ca", pki_dir / "identities"
    names = host_names(hosts)
    calls = [
        ("dps_enrollment_info", {"kind": "individual", "registration_ids": names[:1], **dps_connection}),
        ("pki_ca", {"path": str(ca_dir), "generation": "1.2+"}),
        ("pki_identity", {"ca_path": str(ca_dir), "path": str(identity_dir), "devices": names, "generation": "1.2+"}),
        (
            "dps_certificate",
            {
                "name": CA_CERTIFICATE_NAME,
                "certificate_path": str(ca_dir / "root.cert.pem"),
                "ca_path": str(ca_dir),
                **management,
            },
        ),
    ]
    start = time.perf_counter()
    identities = {}
    for module, arguments in calls:
        result = run_module_process(MODULES / f"{module}.py", arguments)
        identities = result.get("identities", identities)
    enrollments = [
        {
            "registration_id": name,
            "primary_certificate_path": identities[name]["cert_path"],
            "initial_twin": {"tags": {}, "desired_properties": {}},
        }
        for name in names
    ]
    arguments = {"enrollments": enrollments, "provisioning_status": "enabled", "iot_edge": True, **dps_connection}
    run_module_process(MODULES / "dps_enrollment.py", arguments)
    return time.perf_counter() - start


def tree_pss_mb(pid: int) -> float:
    """The proportional set size of a process and its descendants, in MB (shared pages counted once)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry))
    total_kb, pending = 0, [pid]
    while pending:
        current = pending.pop()
        pending += children.get(current, [])
        try:
            for line in Path(f"/proc/{current}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total_kb += int(line.split()[1])
        except OSError:
            continue
    return total_kb / 1024


def playbook_run(inventory: Path, hosts: int) -> tuple[float, float]:
    """(b): wall time and peak memory of the controller phases over the inventory's hosts."""
    environment = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    command = [str(BIN / "ansible-playbook"), "-i", str(inventory), "--tags", "pki,dps", str(PLAYBOOK)]
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = LOG_DIR / f"scale-{hosts}.log"
    peak = [0.0]
    with log.open("w") as output:
        start = time.perf_counter()
        process = subprocess.Popen(command, cwd=REPO, env=environment, stdout=output, stderr=subprocess.STDOUT)
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.05):
                peak[0] = max(peak[0], tree_pss_mb(process.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        returncode = process.wait()
        seconds = time.perf_counter() - start
        done.set()
        sampler.join()
    if returncode != 0:
        raise BenchmarkError(f"the playbook exited {returncode} over {hosts} hosts; see {log}")
    return seconds, peak[0]


def measure_pair(lab: Lab, hosts: int, work: Path) -> tuple[float, float, float]:
    """(a), then (b) on an emptied DPS, each with its own new PKI directory: their seconds and (b)'s peak memory."""
    work.mkdir(parents=True)
    lab.reset()
    modules_seconds = module_work(lab, hosts, work / "modules")
    if lab.enrollment_count() != hosts:
        raise BenchmarkError(f"the modules left {lab.enrollment_count()} enrollments, not {hosts}")
    lab.reset()
    inventory = work / "inventory"
    (inventory / "group_vars").mkdir(parents=True)
    # Hosts that are never contacted: the pki and dps phases run on the controller only.
    edge = {name: {"ansible_host": "127.0.0.1", "ansible_port": 9} for name in host_names(hosts)}
    (inventory / "hosts.yml").write_text(yaml.safe_dump({"all": {"children": {"edge": {"hosts": edge}}}}))
    (inventory / "group_vars" / "all.yml").write_text(yaml.safe_dump(group_vars(lab, work / "playbook")))
    seconds, peak_mb = playbook_run(inventory, hosts)
    if lab.enrollment_count() != hosts:
        raise BenchmarkError(f"the playbook left {lab.enrollment_count()} enrollments, not {hosts}")
    return modules_seconds, seconds, peak_mb


def measure_fleet(lab: Lab, hosts: int, work: Path, repeat: int) -> dict:
    pairs = [measure_pair(lab, hosts, work / f"{hosts}-{attempt}") for attempt in range(1, repeat + 1)]
    median_pair = sorted(pairs, key=lambda pair: pair[1] / pair[0])[len(pairs) // 2]
    modules_seconds, seconds = median_pair[0], median_pair[1]
    return {
        "hosts": hosts,
        "seconds": seconds,
        "modules_seconds": modules_seconds,
        "vs_modules": seconds / modules_seconds,
        "ratios": [pair[1] / pair[0] for pair in pairs],
        "peak_mb": max(pair[2] for pair in pairs),
        "repeat": repeat,
    }


def measure(sizes: list[int], repeat: int) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="edgefleet-bench-scale-") as work:
        lab = Lab(Path(work) / "lab")
        try:
            return [measure_fleet(lab, hosts, Path(work), repeat) for hosts in sizes]
        finally:
            lab.stop()
            shutil.rmtree(work, ignore_errors=True)


def ansible_core_version() -> str:
    completed = subprocess.run([str(BIN / "ansible"), "--version"], capture_output=True, text=True, check=True)
    return completed.stdout.split("[core ", 1)[1].split("]", 1)[0]


def doc_section(fleets: list[dict]) -> str:
    today = datetime.date.today().isoformat()
    rows = "".join(
        f"| {fleet['hosts']} | {fleet['modules_seconds']:.1f} s | {fleet['seconds']:.1f} s "
        f"| {1000 * fleet['seconds'] / fleet['hosts']:.0f} ms | **{fleet['vs_modules']:.2f}x** "
        f"| {fleet['peak_mb']:.0f} MB | {', '.join(f'{ratio:.2f}' for ratio in fleet['ratios'])} |\n"
        for fleet in fleets
    )
    return (
        f"Measured {today} on {platform.machine()} with {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"ansible-core {ansible_core_version()}, against the lab DPS emulator in its own process on 127.0.0.1. "
        "Command: `.venv/bin/python benchmarks/run.py scale --write-docs`. Of "
        f"{fleets[0]['repeat']} pairs of (a) then (b), the one with the median ratio (all ratios in the last column); "
        "the largest peak.\n\n"
        "| hosts | (a) the modules alone | (b) `--tags pki,dps` | per host | vs_modules = b/a | peak memory of (b) "
        "| each pair's b/a |\n"
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n" + rows
    )


def final_line(fleet: dict) -> str:
    return (
        f"scale: hosts={fleet['hosts']} seconds={fleet['seconds']:.1f} modules_seconds={fleet['modules_seconds']:.1f} "
        f"vs_modules={fleet['vs_modules']:.2f} peak_mb={fleet['peak_mb']:.0f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--sizes",
        type=lambda text: [int(size) for size in text.split(",")],
        default=[100, 500, 1000],
        help="fleet sizes (default 100,500,1000)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="pairs measured per fleet size, the one with the median ratio kept (default 3)",
    )
    parser.add_argument("--write-docs", action="store_true", help="write the results into docs/performance.md")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    try:
        fleets = measure(args.sizes, args.repeat)
    except BenchmarkError as error:
        print(f"scale: {error}", file=sys.stderr)
        return 1
    for fleet in fleets:
        print(final_line(fleet), flush=True)
    if args.write_docs:
        replace_doc_section("scale", doc_section(fleets))
    largest = fleets[-1]
    return 0 if largest["vs_modules"] <= GOAL_VS_MODULES and largest["peak_mb"] < GOAL_PEAK_MB else 1


if __name__ == "__main__":
    raise SystemExit(main())
