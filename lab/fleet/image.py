"""The lab hosts' base image: Debian 12 minbase + systemd + sshd + python3, built offline with debootstrap.

Built once and cached in podman's image store under a tag derived from the recipe, so a changed recipe builds a
new image and an unchanged one is reused (about a minute to build, then free).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from lab.fleet.podman import Podman

SUITE = "bookworm"
# The runtime double's dependencies that its repository does not serve are here too (adduser, ca-certificates,
# hostname, sed, python3 and 1.1's python3-yaml: lab/runtime/packages.py), since the lab's rollouts refresh only that
# repository (edgefleet_iotedge_apt_update_scope: repository) and never reach deb.debian.org.
PACKAGES = (
    "python3",
    "systemd",
    "systemd-sysv",
    "openssh-server",
    "sudo",
    "ca-certificates",
    "procps",
    "adduser",
    "python3-yaml",
    # Keys inside a PKCS#11 token: SoftHSM as the token, GnuTLS's p11tool and certtool (what the collection's
    # identity_csr runs), curl and OpenSSL's pkcs11 engine (what the runtime double's keyd signs TLS handshakes with).
    "softhsm2",
    "gnutls-bin",
    "curl",
    "libengine-pkcs11-openssl",
)
DEFAULT_MIRROR = "http://deb.debian.org/debian"
IMAGE_NAME = "localhost/edgefleet-lab-base"
# Bump when the customisation below changes: it is part of the image tag.
RECIPE_VERSION = "1"


class ImageBuildError(RuntimeError):
    """debootstrap or the import failed; the message says which and carries the tool's last lines."""


def debian_mirror(sources_dir: Path = Path("/etc/apt")) -> str:
    """The Debian mirror this machine's apt uses (deb822 or one-line sources), else deb.debian.org."""
    for path in sorted(sources_dir.glob("sources.list.d/*.sources")):
        found = re.search(r"^URIs:\s*(\S+)", path.read_text(), re.M)
        if found and "security" not in found.group(1):
            return found.group(1)
    legacy = sources_dir / "sources.list"
    if legacy.exists():
        found = re.search(rf"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+{SUITE}\s", legacy.read_text(), re.M)
        if found:
            return found.group(1)
    return DEFAULT_MIRROR


def image_reference() -> str:
    recipe = "\n".join([SUITE, *PACKAGES, RECIPE_VERSION])
    return f"{IMAGE_NAME}:{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"


def _customise(rootfs: Path) -> None:
    """What every lab host shares; per-host files (host keys, sshd port, authorized_keys) come at create time."""
    for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    # systemd gives each container its own id at first boot.
    (rootfs / "etc/machine-id").write_text("")
    shutil.rmtree(rootfs / "var/cache/apt/archives", ignore_errors=True)
    (rootfs / "var/cache/apt/archives/partial").mkdir(parents=True)


def ensure_base_image(podman: Podman, *, mirror: str | None = None, work_dir: Path | None = None, log=print) -> str:
    """Return the image reference, building and importing it first when it is not in the store yet."""
    reference = image_reference()
    if podman.image_exists(reference):
        return reference
    # Labs started at once (test workers, benchmarks) build it once: the others wait, then find it.
    with _build_lock():
        if podman.image_exists(reference):
            return reference
        return _build_base_image(podman, reference, mirror=mirror, work_dir=work_dir, log=log)


@contextlib.contextmanager
def _build_lock():
    with open(Path(tempfile.gettempdir()) / "edgefleet-lab-image.lock", "w", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _build_base_image(podman: Podman, reference: str, *, mirror: str | None, work_dir: Path | None, log) -> str:
    mirror = mirror or debian_mirror()
    log(f"building {reference} with debootstrap from {mirror} (about a minute, once)")
    with tempfile.TemporaryDirectory(prefix="edgefleet-lab-rootfs-", dir=work_dir) as temporary:
        rootfs = Path(temporary) / "rootfs"
        completed = subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(rootfs), mirror],
            capture_output=True,
            text=True,
            check=False,
        )
        if completed.returncode != 0:
            tail = "\n".join((completed.stdout + completed.stderr).splitlines()[-15:])
            raise ImageBuildError(f"debootstrap {SUITE} from {mirror} failed:\n{tail}")
        _customise(rootfs)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        try:
            podman.run("import", "--change", "CMD=/lib/systemd/systemd", "-", reference, stdin=tar.stdout)
        finally:
            tar.stdout.close()
            tar.wait()
    return reference
