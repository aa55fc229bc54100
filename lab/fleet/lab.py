"""The whole lab: the cloud emulators as a background process, N edge hosts, and an inventory that points at them.

``up`` converges on the wanted lab (running twice changes nothing), ``down`` removes every container, process
and file it made (the cached base image stays unless asked), ``status`` describes what runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from lab.fleet.hosts import (
    HOST_LABEL,
    IMAGE_LABEL,
    LABEL,
    PORT_LABEL,
    SEED_LABEL,
    HostSpec,
    create_host,
    generate_key,
    host_files,
    seed_digest,
    start_host,
)
from lab.fleet.image import ensure_base_image, image_reference
from lab.fleet.podman import Podman
from lab.runtime.packages import build_repository

REPO = Path(__file__).resolve().parents[2]
SERVICE_START_TIMEOUT = 30.0


class LabError(RuntimeError):
    """Something the lab needs is missing or did not start; the message says what to do."""


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def start_detached(command: list[str], log_path: Path, ready, what: str, timeout: float = SERVICE_START_TIMEOUT) -> int:
    """Start ``command`` in its own session (it outlives `lab up`; `lab down` ends it) and wait for ``ready(pid)``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            command,
            cwd=REPO,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready(process.pid):
            return process.pid
        if process.poll() is not None:
            break
        time.sleep(0.2)
    process.kill()
    raise LabError(f"{what} did not start; the end of {log_path}:\n{log_path.read_text()[-2000:]}")


def stop_pid(pid: int | None) -> bool:
    """SIGTERM, then SIGKILL after 10 s; False when nothing ran."""
    if not pid_alive(pid):
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    return True


def http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, context=context, timeout=5) as answer:
            return answer.status == 200
    except OSError:
        return False


@dataclass
class LabConfig:
    state_dir: Path = REPO / ".lab"
    hosts: int = 3
    host_prefix: str = "edge"
    container_prefix: str = "edgefleet-lab"
    ssh_base_port: int = 22201
    # Fixed ports keep the inventory the same across `up` runs and restarts of the emulators.
    dps_port: int = 18443
    device_port: int = 18444
    hub_port: int = 18445
    apt_port: int = 18480
    debian_mirror: str | None = None

    @property
    def lab_id(self) -> str:
        """Labels this lab's containers, so two labs (a user's and a test's) never touch each other's."""
        return hashlib.sha256(str(self.state_dir.resolve()).encode()).hexdigest()[:12]

    def host_specs(self) -> list[HostSpec]:
        return [
            HostSpec(
                name=f"{self.host_prefix}-{index:02d}",
                container=f"{self.container_prefix}-{self.host_prefix}-{index:02d}",
                ssh_port=self.ssh_base_port + index - 1,
            )
            for index in range(1, self.hosts + 1)
        ]


class Lab:
    def __init__(self, config: LabConfig, log=print) -> None:
        self.config = config
        self.state_dir = config.state_dir.resolve()
        self.podman = Podman(self.state_dir)
        self.log = log

    # ---- paths ---------------------------------------------------------------------------------------------

    @property
    def cloud_dir(self) -> Path:
        return self.state_dir / "cloud"

    @property
    def cloud_info_path(self) -> Path:
        return self.cloud_dir / "cloud.json"

    @property
    def client_key(self) -> Path:
        return self.state_dir / "ssh" / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.state_dir / "ssh" / "known_hosts"

    @property
    def inventory_dir(self) -> Path:
        return self.state_dir / "inventory"

    def host_key(self, spec: HostSpec) -> Path:
        return self.state_dir / "hosts" / spec.name / "ssh_host_ed25519_key"

    # ---- cloud emulators -----------------------------------------------------------------------------------

    def cloud_info(self) -> dict | None:
        """cloud.json of a live emulator process, or None."""
        if not self.cloud_info_path.exists():
            return None
        info = json.loads(self.cloud_info_path.read_text())
        if not pid_alive(info.get("pid")):
            return None
        context = ssl.create_default_context(cafile=info["ca_bundle"])
        return info if http_ok(f"{info['control_url']}/health", context) else None

    def ensure_cloud(self) -> dict:
        info = self.cloud_info()
        if info is not None:
            return info
        self.cloud_info_path.unlink(missing_ok=True)
        command = [
            sys.executable,
            "-m",
            "lab.cloud",
            "--state-dir",
            str(self.cloud_dir),
            "--dps-port",
            str(self.config.dps_port),
            "--device-port",
            str(self.config.device_port),
            "--hub-port",
            str(self.config.hub_port),
        ]

        def ready(pid: int) -> bool:
            info = self.cloud_info()
            return info is not None and info["pid"] == pid

        start_detached(
            command,
            self.cloud_dir / "cloud.log",
            ready,
            f"the cloud emulators (ports {self.config.dps_port}, {self.config.device_port}, {self.config.hub_port})",
        )
        info = self.cloud_info()
        self.log(f"cloud emulators up: DPS {info['dps']['url']}, hub {info['iothub']['url']}")
        return info

    def stop_cloud(self) -> bool:
        info = json.loads(self.cloud_info_path.read_text()) if self.cloud_info_path.exists() else {}
        return stop_pid(info.get("pid"))

    # ---- apt repository of the runtime double -------------------------------------------------------------

    @property
    def apt_dir(self) -> Path:
        return self.state_dir / "apt"

    @property
    def apt_url(self) -> str:
        return f"http://127.0.0.1:{self.config.apt_port}/"

    def _apt_pid(self) -> int | None:
        pid_file = self.state_dir / "apt.pid"
        return int(pid_file.read_text()) if pid_file.exists() else None

    def ensure_apt_repository(self) -> str:
        """Build the double's packages (when their sources changed) and serve them on 127.0.0.1."""
        build_repository(self.apt_dir / "repo")
        if pid_alive(self._apt_pid()) and http_ok(f"{self.apt_url}Packages"):
            return self.apt_url
        command = [
            sys.executable,
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            "--directory",
            str(self.apt_dir / "repo"),
            str(self.config.apt_port),
        ]
        pid = start_detached(
            command,
            self.apt_dir / "http.log",
            lambda _pid: http_ok(f"{self.apt_url}Packages"),
            f"the apt repository server (port {self.config.apt_port})",
        )
        (self.state_dir / "apt.pid").write_text(str(pid))
        self.log(f"apt repository of the runtime double: {self.apt_url}")
        return self.apt_url

    # ---- hosts ---------------------------------------------------------------------------------------------

    def _containers(self) -> dict[str, dict]:
        return {entry["Names"][0]: entry for entry in self.podman.containers(f"{LABEL}={self.config.lab_id}")}

    def ensure_hosts(self, image: str, lab_ca: Path) -> list[str]:
        """Converge the containers on the wanted hosts; return what was done, one line per host."""
        generate_key(self.client_key, "edgefleet-lab")
        existing = self._containers()
        wanted = self.config.host_specs()
        actions = []
        for name in sorted(set(existing) - {spec.container for spec in wanted}):
            self.podman.remove(name)
            actions.append(f"{name}: removed (not part of a {len(wanted)}-host lab)")
        for spec in wanted:
            current = existing.get(spec.container)
            labels = (current or {}).get("Labels") or {}
            host_key = generate_key(self.host_key(spec), spec.name)
            files = host_files(spec, host_key, self.client_key.with_suffix(".pub"), lab_ca)
            wanted_labels = {IMAGE_LABEL: image, PORT_LABEL: str(spec.ssh_port), SEED_LABEL: seed_digest(files)}
            if current is not None and any(labels.get(key) != value for key, value in wanted_labels.items()):
                self.podman.remove(spec.container)
                actions.append(f"{spec.name}: replaced (image, port, keys or lab CA changed)")
                current = None
            if current is None:
                create_host(self.podman, spec, image=image, lab_id=self.config.lab_id, files=files)
                actions.append(f"{spec.name}: created, sshd on 127.0.0.1:{spec.ssh_port}")
            elif current.get("State") != "running":
                start_host(self.podman, spec)
                actions.append(f"{spec.name}: started")
        return actions

    # ---- inventory -----------------------------------------------------------------------------------------

    def write_inventory(self, cloud: dict, apt_url: str) -> Path:
        specs = self.config.host_specs()
        lines = []
        for spec in specs:
            public = self.host_key(spec).with_suffix(".pub").read_text().split()
            lines.append(f"[127.0.0.1]:{spec.ssh_port} {public[0]} {public[1]}\n")
        self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
        self.known_hosts.write_text("".join(lines))
        hosts = {
            "all": {
                "children": {
                    "edge": {
                        "hosts": {
                            spec.name: {"ansible_host": "127.0.0.1", "ansible_port": spec.ssh_port} for spec in specs
                        }
                    }
                },
                "vars": {
                    "ansible_user": "root",
                    "ansible_ssh_private_key_file": str(self.client_key),
                    "ansible_ssh_common_args": (
                        f"-o UserKnownHostsFile={self.known_hosts} -o StrictHostKeyChecking=yes "
                        "-o ControlMaster=auto -o ControlPersist=60s"
                    ),
                },
            }
        }
        group_vars = {
            # Where the lab's services are; the same variables point at real Azure in a production inventory.
            "edgefleet_dps_id_scope": cloud["dps"]["id_scope"],
            "edgefleet_dps_global_endpoint": cloud["dps"]["global_endpoint"],
            "edgefleet_dps_connection_string": cloud["dps"]["connection_string"],
            "edgefleet_dps_management_url": cloud["dps"]["management_url"],
            "edgefleet_dps_resource_id": cloud["dps"]["management_resource_id"],
            "edgefleet_dps_management_token": cloud["dps"]["management_token"],
            "edgefleet_iothub_connection_string": cloud["iothub"]["connection_string"],
            "lab_iothub_hostname": cloud["iothub"]["host_name"],
            "edgefleet_ca_bundle": cloud["ca_bundle"],
            # The runtime double's packages from the lab's flat repository, instead of packages.microsoft.com.
            "edgefleet_iotedge_apt_uri": apt_url,
            "edgefleet_iotedge_apt_suite": "./",
            "edgefleet_iotedge_apt_components": [],
            "edgefleet_iotedge_apt_signing_key_url": "",
            "edgefleet_iotedge_apt_trusted": True,
            # apt-get update reads only that repository: a rollout fetches nothing from deb.debian.org (the image's
            # sources.list); the packages' other dependencies are in the base image (lab/fleet/image.py).
            "edgefleet_iotedge_apt_update_scope": "repository",
            # The fleet PKI of the lab lives and dies with it.
            "edgefleet_pki_dir": str(self.state_dir.resolve() / "pki"),
        }
        self.inventory_dir.mkdir(parents=True, exist_ok=True)
        _write(self.inventory_dir / "hosts.yml", "---\n" + yaml.safe_dump(hosts, sort_keys=False), 0o644)
        header = "---\n# Written by `python -m lab up`: the lab's endpoints and development keys (loopback only).\n"
        _write(
            self.inventory_dir / "group_vars" / "all.yml", header + yaml.safe_dump(group_vars, sort_keys=False), 0o600
        )
        return self.inventory_dir

    # ---- commands ------------------------------------------------------------------------------------------

    def up(self) -> dict:
        if shutil.which("podman") is None or shutil.which("debootstrap") is None:
            raise LabError("the lab needs podman, runc and debootstrap: run `make setup` (or apt-get install them)")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        image = ensure_base_image(self.podman, mirror=self.config.debian_mirror, work_dir=self.state_dir, log=self.log)
        cloud = self.ensure_cloud()
        apt_url = self.ensure_apt_repository()
        for line in self.ensure_hosts(image, Path(cloud["ca_bundle"])):
            self.log(line)
        inventory = self.write_inventory(cloud, apt_url)
        self.log(f"inventory: {inventory / 'hosts.yml'}")
        return self.status()

    def down(self, purge_image: bool = False) -> list[str]:
        done = []
        for name in sorted(self._containers()):
            self.podman.remove(name)
            done.append(f"{name}: removed")
        if self.stop_cloud():
            done.append("cloud emulators: stopped")
        if stop_pid(self._apt_pid()):
            done.append("apt repository server: stopped")
        if purge_image and self.podman.image_exists(image_reference()):
            self.podman.run("rmi", image_reference())
            done.append(f"{image_reference()}: removed")
        if self.state_dir.exists():
            # Last: it holds the podman configuration the steps above used.
            shutil.rmtree(self.state_dir)
            done.append(f"{self.state_dir}: removed")
        return done

    def status(self) -> dict:
        containers = self._containers()
        cloud = self.cloud_info()
        return {
            "state_dir": str(self.state_dir),
            "image": image_reference(),
            "cloud": None
            if cloud is None
            else {
                "pid": cloud["pid"],
                "dps": cloud["dps"]["url"],
                "global_endpoint": cloud["dps"]["global_endpoint"],
                "iothub": cloud["iothub"]["url"],
                "control": cloud["control_url"],
                "id_scope": cloud["dps"]["id_scope"],
            },
            "hosts": [
                {
                    "name": (entry.get("Labels") or {}).get(HOST_LABEL),
                    "container": name,
                    "ssh": f"127.0.0.1:{(entry.get('Labels') or {}).get(PORT_LABEL)}",
                    "state": entry.get("State"),
                }
                for name, entry in sorted(containers.items())
            ],
            "apt_repository": self.apt_url if pid_alive(self._apt_pid()) else None,
            "inventory": str(self.inventory_dir / "hosts.yml") if (self.inventory_dir / "hosts.yml").exists() else None,
        }


def _write(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(temporary, path)
