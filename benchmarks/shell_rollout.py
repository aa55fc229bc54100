"""The shell baseline of benchmarks/rollout.py: the same host work as the roles, as a plain parallel-SSH script.

Per host, one `ssh ... bash -s` (the inventory's user, port and key; up to `forks` hosts at a time) that writes the
apt sources list, installs the container engine and the runtime packages, writes the identity chain and key with
the runtime's owners and modes, writes config.toml, runs `iotedge config apply` and polls `iotedge list` every
second until edgeAgent runs. Its inputs (benchmarks/playbooks/shell_inputs.yml) are made before the clock starts.
"""

from __future__ import annotations

import concurrent.futures
import json
import shlex
import subprocess
from pathlib import Path

import yaml

WAIT_SECONDS = 300

SCRIPT = r"""set -eu
export DEBIAN_FRONTEND=noninteractive
printf '# shell baseline\n%s\n' {sources_line} > /etc/apt/sources.list.d/edgefleet-iotedge.list
apt-get update -q >/dev/null
{install_engine}
apt-get install -y -q {packages} >/dev/null
install -d -o root -g root -m 0755 /var/aziot
install -d -o {cert_owner} -g {cert_owner} -m 0755 {cert_dir}
install -d -o {key_owner} -g {key_owner} -m 0700 {key_dir}
printf '%s\n' {cert} > {cert_path}
chown {cert_owner}:{cert_owner} {cert_path}; chmod 0644 {cert_path}
umask 077; printf '%s\n' {key} > {key_path}
chown {key_owner}:{key_owner} {key_path}; chmod 0600 {key_path}
printf '%s' {config} > /etc/aziot/config.toml; chmod 0600 /etc/aziot/config.toml
iotedge config apply --config-file /etc/aziot/config.toml >/dev/null
for _ in $(seq {wait}); do
  if iotedge list 2>/dev/null | grep -Eq '^edgeAgent +running'; then exit 0; fi
  sleep 1
done
echo "edgeAgent did not run within {wait} s" >&2; exit 1
"""


def host_script(inputs: dict) -> str:
    quoted = {key: shlex.quote(value) for key, value in inputs.items() if isinstance(value, str)}
    engine = inputs["engine_package"]
    return SCRIPT.format(
        **quoted,
        install_engine=f"apt-get install -y -q {shlex.quote(engine)} >/dev/null" if engine else ":",
        packages=" ".join(shlex.quote(package) for package in inputs["packages"]),
        cert_dir=shlex.quote(str(Path(inputs["cert_path"]).parent)),
        key_dir=shlex.quote(str(Path(inputs["key_path"]).parent)),
        wait=WAIT_SECONDS,
    )


def ssh_targets(inventory_dir: Path) -> dict[str, list[str]]:
    """{host: the ssh command line that reaches it}, from the lab's inventory (hosts.yml)."""
    inventory = yaml.safe_load((inventory_dir / "hosts.yml").read_text())["all"]
    common = inventory["vars"]
    options = shlex.split(common.get("ansible_ssh_common_args", ""))
    return {
        host: [
            "ssh",
            *("-i", common["ansible_ssh_private_key_file"]),
            *("-p", str(host_vars["ansible_port"])),
            *options,
            f"{common['ansible_user']}@{host_vars['ansible_host']}",
            "bash -s",
        ]
        for host, host_vars in inventory["children"]["edge"]["hosts"].items()
    }


def run_host(command: list[str], script: str) -> tuple[int, str]:
    completed = subprocess.run(command, input=script, capture_output=True, text=True, check=False)
    return completed.returncode, completed.stderr[-2000:]


def rollout(inventory_dir: Path, inputs_dir: Path, forks: int) -> dict[str, str]:
    """Run the script on every host, `forks` at a time; return {host: error} for the hosts that failed."""
    targets = ssh_targets(inventory_dir)
    scripts = {host: host_script(json.loads((inputs_dir / f"{host}.json").read_text())) for host in targets}
    with concurrent.futures.ThreadPoolExecutor(max_workers=forks) as pool:
        futures = {host: pool.submit(run_host, targets[host], scripts[host]) for host in targets}
        results = {host: future.result() for host, future in futures.items()}
    return {host: stderr for host, (returncode, stderr) in results.items() if returncode != 0}
