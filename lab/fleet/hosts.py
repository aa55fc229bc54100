"""Lab edge hosts: podman containers with systemd as PID 1 and sshd on 127.0.0.1, one port each.

``--network host`` keeps every connection on loopback, so each host gets its own sshd port, its own SSH host key
(known to the inventory, so Ansible checks it) and the lab's client key in root's authorized_keys.
"""

from __future__ import annotations

import hashlib
import io
import socket
import subprocess
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

from lab.fleet.podman import Podman

LABEL = "io.edgefleet.lab"
PORT_LABEL = "io.edgefleet.lab.ssh-port"
IMAGE_LABEL = "io.edgefleet.lab.image"
HOST_LABEL = "io.edgefleet.lab.host"
# A digest of the files a host was seeded with (host key, lab client key, lab CA): when they change, so must it.
SEED_LABEL = "io.edgefleet.lab.seed"
LAB_CA_PATH = "usr/local/share/ca-certificates/edgefleet-lab.crt"
BOOT_TIMEOUT = 60.0


class HostError(RuntimeError):
    """A lab host did not come up; the message names it and says what was seen."""


@dataclass(frozen=True)
class HostSpec:
    name: str  # host name and inventory name, e.g. edge-01
    container: str  # podman container name
    ssh_port: int


def generate_key(path: Path, comment: str) -> Path:
    """An ed25519 key pair at ``path`` / ``path.pub``, made once."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True)
    return path


def seed_tar(files: list[tuple[str, bytes, int]]) -> bytes:
    """A tar stream of (path inside the host, content, mode), owned by root, for one ``podman cp``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        directories = sorted({str(Path(path).parent) for path, _content, _mode in files})
        for directory in directories:
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o700 if directory.endswith(".ssh") else 0o755
            archive.addfile(info)
        for path, content, mode in files:
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(content), mode
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def host_files(spec: HostSpec, host_key: Path, client_public_key: Path, lab_ca: Path) -> list:
    sshd = f"# edgefleet lab: this host's own port, loopback only\nPort {spec.ssh_port}\nListenAddress 127.0.0.1\n"
    return [
        ("etc/ssh/sshd_config.d/edgefleet-lab.conf", sshd.encode(), 0o644),
        ("etc/ssh/ssh_host_ed25519_key", host_key.read_bytes(), 0o600),
        ("etc/ssh/ssh_host_ed25519_key.pub", host_key.with_suffix(".pub").read_bytes(), 0o644),
        ("root/.ssh/authorized_keys", client_public_key.read_bytes(), 0o600),
        (LAB_CA_PATH, lab_ca.read_bytes(), 0o644),
    ]


def wait_for_port(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            probe.settimeout(1)
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.2)
    return False


def seed_digest(files: list) -> str:
    digest = hashlib.sha256()
    for path, content, mode in files:
        digest.update(f"{path}:{mode}:".encode() + hashlib.sha256(content).digest())
    return digest.hexdigest()[:16]


def create_host(podman: Podman, spec: HostSpec, *, image: str, lab_id: str, files: list) -> None:
    """Create, seed (one tar through ``podman cp``), start, wait for sshd, trust the lab CA."""
    podman.run(
        "create",
        "--name",
        spec.container,
        "--hostname",
        spec.name,
        "--network",
        "host",
        "--systemd",
        "always",
        "--label",
        f"{LABEL}={lab_id}",
        "--label",
        f"{PORT_LABEL}={spec.ssh_port}",
        "--label",
        f"{IMAGE_LABEL}={image}",
        "--label",
        f"{HOST_LABEL}={spec.name}",
        "--label",
        f"{SEED_LABEL}={seed_digest(files)}",
        image,
        "/lib/systemd/systemd",
    )
    podman.copy_tar(spec.container, seed_tar(files))
    start_host(podman, spec)
    podman.exec(spec.container, "update-ca-certificates", "--fresh")


def start_host(podman: Podman, spec: HostSpec) -> None:
    podman.run("start", spec.container)
    if not wait_for_port(spec.ssh_port, BOOT_TIMEOUT):
        status = podman.exec(spec.container, "systemctl", "is-system-running", check=False).stdout.strip()
        raise HostError(
            f"{spec.name}: sshd did not answer on 127.0.0.1:{spec.ssh_port} within {BOOT_TIMEOUT:.0f} s "
            f"(systemd: {status or 'unknown'}); see `podman logs {spec.container}`"
        )
