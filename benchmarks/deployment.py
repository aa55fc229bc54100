"""Deployment benchmark: playbooks/deploy_edge.yml on n provisioned lab hosts (default 20), against the hub's own pace.

On a fresh lab of n hosts (the rollout benchmark's lab directory, ports and container names), provisioned by
playbooks/provision_edge.yml, with the first two hosts in ring `canary` and the others in `main`:

- deploy_edge.yml with version 1 (two modules), ring by ring; every host must then list exactly v1's modules;
- the baseline: version 2 (new images) put straight into the hub as one deployment for the whole fleet at a higher
  priority, then the hub's twins read every second until every device applied it and reported success. This is the
  time the hub and the devices' edgeAgents take by themselves (the double's edgeAgent looks every 5 s). The
  deployment is then deleted and the fleet waited back onto v1, untimed;
- deploy_edge.yml with version 2, ring by ring, with the role's defaults (a ring's devices read every 10 s). A
  thread reads the hub's twins every second meanwhile: `seconds` is the time from the playbook's start until every
  device runs v2 (applied, in sync, status 200). Every host must then list exactly v2's modules (`iotedge list`);
- its no-change re-run (changed=0).

vs_direct = seconds / the baseline's seconds, both measured in the same run: what rings, their waits and the
playbook's own work cost over the hub's pace. Ends with `deployment: hosts=<n> rings=canary:<c>,main:<m>
seconds=<s> playbook_seconds=<p> direct_seconds=<d> vs_direct=<x> first_seconds=<f> rerun_seconds=<r>` (one line).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml
from _common import COLLECTIONS, REPO
from rollout import (
    CONTAINER_PREFIX,
    PROVISION,
    STATE_DIR,
    BenchmarkError,
    every_host_ran,
    fleet_benchmark_main,
    fleet_measured,
    fresh_lab,
    lab,
    no_change,
    other_containers,
    playbook,
)

sys.path.insert(0, str(REPO))

from lab.runtime.manifests import running_modules, standard_manifest

DEPLOY = REPO / "playbooks" / "deploy_edge.yml"
NAME = "bench-sensors"
DIRECT_NAME = "bench-direct"
CANARY_HOSTS = 2
V1 = {"sensor": "contoso.example/sensor:1.0", "filter": "contoso.example/filter:1.0"}
V2 = {"sensor": "contoso.example/sensor:2.0", "filter": "contoso.example/filter:2.0"}
# How long a fleet may take to reach a version outside a playbook (the baseline, the way back to v1).
SETTLE_TIMEOUT = 300


class Hub:
    """The lab hub read and written with the collection's own client (module_utils), as the modules do."""

    def __init__(self) -> None:
        sys.path.insert(0, str(COLLECTIONS))
        from ansible_collections.edgefleet.iotedge.plugins.module_utils import _iothub, _iothub_deployment

        self.deployments = _iothub_deployment
        settings = yaml.safe_load((STATE_DIR / "inventory" / "group_vars" / "all.yml").read_text())
        connection = _iothub.parse_hub_connection_string(settings["edgefleet_iothub_connection_string"])
        self.client = _iothub_deployment.IoTHubDeployments(connection, ca_bundle=settings["edgefleet_ca_bundle"])

    def devices(self, name: str) -> dict[str, dict]:
        """Each device targeted by a version of ``name``: its view (applied ids, in sync, last status)."""
        request = self.deployments.DeploymentInfoRequest(name=name, devices=True)
        return {view["device_id"]: view for view in self.deployments.deployment_info(self.client, request)["devices"]}

    def version_ids(self, name: str) -> list[str]:
        request = self.deployments.DeploymentInfoRequest(name=name)
        return [view["id"] for view in self.deployments.deployment_info(self.client, request)["deployments"]]

    def ensure(self, name: str, modules: dict | None, priority: int = 0) -> None:
        request = self.deployments.DeploymentRequest(
            name=name,
            state="present" if modules else "absent",
            manifest=standard_manifest(modules) if modules else None,
            target_tags={"ring": ["canary", "main"]} if modules else None,
            priority=priority,
            remove_superseded="never",
        )
        self.deployments.ensure_deployment(self.client, request, check_mode=False)


def runs_version(view: dict | None, version_id: str) -> bool:
    return bool(
        view
        and view["applied"] == [version_id]
        and view["in_sync"]
        and (view["last_desired_status"] or {}).get("code") == 200
    )


def wait_until_running(hub: Hub, name: str, version_id: str, hosts: list[str], start: float) -> float:
    """Seconds from ``start`` until every host's device runs ``version_id`` (reading the twins every second)."""
    while time.perf_counter() - start < SETTLE_TIMEOUT:
        devices = hub.devices(name)
        if all(runs_version(devices.get(host), version_id) for host in hosts):
            return time.perf_counter() - start
        time.sleep(1)
    raise BenchmarkError(f"{version_id} did not reach every host within {SETTLE_TIMEOUT} s: {hub.devices(name)}")


class Watcher(threading.Thread):
    """Reads the twins of ``name``'s devices every second while a playbook runs, to tell afterwards when every host
    first ran a version."""

    def __init__(self, hub: Hub, name: str, hosts: list[str]) -> None:
        super().__init__(daemon=True)
        self.hub, self.name, self.hosts = hub, name, hosts
        self.start_time = time.perf_counter()
        self.samples: list[tuple[float, dict]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.samples.append((time.perf_counter() - self.start_time, self.hub.devices(self.name)))
            except Exception as error:  # a read that fails is a sample missed, not a result
                self.samples.append((time.perf_counter() - self.start_time, {"error": str(error)}))
            self.stop.wait(1)

    def first_all_running(self, version_id: str) -> float | None:
        for seconds, devices in self.samples:
            if all(runs_version(devices.get(host), version_id) for host in self.hosts):
                return seconds
        return None


def listed(host: str) -> dict[str, str]:
    """`iotedge list` on a lab host: module name -> image (the Config column)."""
    completed = subprocess.run(
        ["podman", "exec", f"{CONTAINER_PREFIX}-{host}", "iotedge", "list"],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = completed.stdout.splitlines()
    if completed.returncode != 0 or not lines:
        raise BenchmarkError(f"iotedge list on {host} failed: {completed.stdout}{completed.stderr}")
    return {line.split()[0]: line.split()[-1] for line in lines[1:] if line.strip()}


def every_host_lists(hosts: list[str], modules: dict[str, str], what: str) -> None:
    wrong = {host: found for host in hosts if (found := listed(host)) != running_modules(modules)}
    if wrong:
        raise BenchmarkError(f"{what}: hosts not listing exactly {sorted(running_modules(modules))}: {wrong}")


def write_inventory(hosts: list[str], manifest_dir: Path) -> None:
    host_vars = STATE_DIR / "inventory" / "host_vars"
    host_vars.mkdir(exist_ok=True)
    for host in hosts:
        ring = "canary" if hosts.index(host) < CANARY_HOSTS else "main"
        (host_vars / f"{host}.yml").write_text("---\n" + yaml.safe_dump({"edgefleet_deployment_ring": ring}))
    for version, modules in (("v1", V1), ("v2", V2)):
        (manifest_dir / f"{version}.json").write_text(json.dumps(standard_manifest(modules)))


def deploy(forks: int, manifest_dir: Path, version: str, log_name: str) -> tuple[float, dict]:
    return playbook(
        DEPLOY,
        forks,
        log_name,
        "-e",
        f"edgefleet_deployment_name={NAME}",
        "-e",
        f"edgefleet_deployment_manifest_path={manifest_dir / f'{version}.json'}",
    )


def only_version_other_than(hub: Hub, old_id: str) -> str:
    others = [version_id for version_id in hub.version_ids(NAME) if version_id != old_id]
    if len(others) != 1:
        raise BenchmarkError(f"expected one version of {NAME} besides {old_id}, the hub holds {others}")
    return others[0]


def measure(count: int, forks: int) -> dict:
    others = other_containers()
    hosts = [f"edge-{number:02d}" for number in range(1, count + 1)]
    try:
        fresh_lab(count)
        with tempfile.TemporaryDirectory(prefix="edgefleet-bench-deploy-") as manifest_dir:
            manifests = Path(manifest_dir)
            provision_seconds, provisioned = playbook(PROVISION, forks, f"{count}-hosts-deploy-provision")
            every_host_ran("the provisioning", count, provisioned)
            write_inventory(hosts, manifests)
            hub = Hub()

            first_seconds = deploy(forks, manifests, "v1", f"{count}-hosts-deploy-v1")[0]
            (v1_id,) = hub.version_ids(NAME)
            every_host_lists(hosts, V1, "after v1")

            start = time.perf_counter()
            hub.ensure(DIRECT_NAME, V2, priority=1000)
            (direct_id,) = hub.version_ids(DIRECT_NAME)
            direct_seconds = wait_until_running(hub, DIRECT_NAME, direct_id, hosts, start)
            every_host_lists(hosts, V2, "after the direct deployment")
            hub.ensure(DIRECT_NAME, None)
            wait_until_running(hub, NAME, v1_id, hosts, time.perf_counter())
            every_host_lists(hosts, V1, "back on v1")

            watcher = Watcher(hub, NAME, hosts)
            watcher.start()
            try:
                playbook_seconds = deploy(forks, manifests, "v2", f"{count}-hosts-deploy-v2")[0]
            finally:
                watcher.stop.set()
                watcher.join()
            v2_id = only_version_other_than(hub, v1_id)
            seconds = watcher.first_all_running(v2_id)
            if seconds is None:
                raise BenchmarkError(f"the twins never showed every host on {v2_id} while the playbook ran")
            every_host_lists(hosts, V2, "after v2")

            rerun_seconds, rerun = deploy(forks, manifests, "v2", f"{count}-hosts-deploy-rerun")
            # The role runs once, for the play's first host: the recap lists that host alone.
            no_change("the re-run", 1, rerun)
    finally:
        lab("down")
    return {
        "hosts": count,
        "canary": CANARY_HOSTS,
        "main": count - CANARY_HOSTS,
        "forks": forks,
        "provision_seconds": provision_seconds,
        "first_seconds": first_seconds,
        "direct_seconds": direct_seconds,
        "seconds": seconds,
        "playbook_seconds": playbook_seconds,
        "vs_direct": seconds / direct_seconds,
        "rerun_seconds": rerun_seconds,
        "other_containers": max(len(others), len(other_containers())),
    }


def doc_section(result: dict, command: str) -> str:
    return (
        fleet_measured(result, command, ", the role's defaults (a ring read every 10 s)")
        + "| hosts (canary + main) | v1 first deployed | v2 straight into the hub (baseline) "
        "| v2 ring by ring: every host runs it | playbook ends | vs_direct | re-run |\n"
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n"
        f"| {result['hosts']} ({result['canary']} + {result['main']}) | {result['first_seconds']:.1f} s "
        f"| {result['direct_seconds']:.1f} s | {result['seconds']:.1f} s | {result['playbook_seconds']:.1f} s "
        f"| **{result['vs_direct']:.2f}x** | {result['rerun_seconds']:.1f} s |\n"
    )


def final_line(result: dict) -> str:
    return (
        f"deployment: hosts={result['hosts']} rings=canary:{result['canary']},main:{result['main']} "
        f"seconds={result['seconds']:.1f} playbook_seconds={result['playbook_seconds']:.1f} "
        f"direct_seconds={result['direct_seconds']:.1f} vs_direct={result['vs_direct']:.2f} "
        f"first_seconds={result['first_seconds']:.1f} rerun_seconds={result['rerun_seconds']:.1f}"
    )


def main(argv: list[str] | None = None) -> int:
    return fleet_benchmark_main(
        "deployment", __doc__, argv, measure, doc_section, final_line, min_hosts=CANARY_HOSTS + 1
    )


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "benchmarks"))
    raise SystemExit(main())
