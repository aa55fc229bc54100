"""The IoT Edge runtime test double as Debian packages, named, versioned and laid out like the real ones.

1.1 generation (device-side.md 2): ``libiothsm-std`` and ``iotedge`` 1.1.19-1 (exactly that libiothsm-std; user
iotedge; ``iotedge.service`` with ``iotedge.socket`` and ``iotedge.mgmt.socket``; config.yaml.template copied to a
0400 config.yaml on first install; ``iotedged`` and the 1.1 ``iotedge`` CLI). They conflict with the 1.2+ packages.


1.2+ generation (device-side.md 1.1, 1.12, 7): ``aziot-identity-service`` 1.5.6-1 (users aziotks, aziotcs, aziotid,
aziottpm and their memberships; the four services with their sockets, only the sockets enabled and started;
``config.toml.template`` and per-service defaults) and ``aziot-edge`` 1.5.44-1 (depends on exactly that identity
service; refuses to install without a ``docker`` group; user iotedge and the module users; ``aziot-edged`` with its
mgmt and workload sockets; ``config.toml.edge.template``; the ``iotedge`` CLI). ``moby-engine`` stands in for the
container engine: it creates the ``docker`` group, as the real package does, and nothing else.

Built with dpkg-deb into a flat apt repository (``Packages`` index by dpkg-scanpackages) that the lab serves.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

RUNTIME_SOURCE = Path(__file__).resolve().parent / "double"
PYTHON_PACKAGE_DIR = "usr/lib/python3/dist-packages/edgefleet_iotedge_double"

IDENTITY_SERVICE_VERSION = "1.5.6-1"
EDGE_VERSION = "1.5.44-1"
MOBY_VERSION = "25.0.0-1"
IOTEDGE_1_1_VERSION = "1.1.19-1"
IDENTITY_SERVICES = (
    # (service, user, socket path)
    ("aziot-keyd", "aziotks", "/run/aziot/keyd.sock"),
    ("aziot-certd", "aziotcs", "/run/aziot/certd.sock"),
    ("aziot-identityd", "aziotid", "/run/aziot/identityd.sock"),
    ("aziot-tpmd", "aziottpm", "/run/aziot/tpmd.sock"),
)


@dataclass
class Package:
    name: str
    version: str
    description: str
    depends: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    files: dict[str, tuple[bytes, int]] = field(default_factory=dict)  # path -> (content, mode)
    scripts: dict[str, str] = field(default_factory=dict)  # preinst, postinst, prerm, postrm

    def control(self) -> str:
        lines = [
            f"Package: {self.name}",
            f"Version: {self.version}",
            "Architecture: all",
            "Maintainer: edgefleet developers <edgefleet@localhost>",
            "Section: admin",
            "Priority: optional",
        ]
        if self.depends:
            lines.append(f"Depends: {', '.join(self.depends)}")
        if self.conflicts:
            lines.append(f"Conflicts: {', '.join(self.conflicts)}")
        lines.append(f"Description: {self.description}")
        lines.append(" Test double of the edgefleet.iotedge lab; not Microsoft's package.")
        return "\n".join(lines) + "\n"


def _script(body: str) -> str:
    return "#!/bin/sh\nset -e\n" + body.strip() + "\n\n#DEBHELPER#\nexit 0\n"


def _unit(description: str, body: str) -> bytes:
    return f"[Unit]\nDescription={description}\n{body.strip()}\n".encode()


def _edge_daemon_unit(exec_start: str, sockets: tuple) -> tuple[bytes, int]:
    """The edge daemon's service unit (aziot-edged or 1.1's iotedged): socket-activated, runs as iotedge."""
    names = " ".join(sockets)
    body = f"""
After=network-online.target {names}
Requires={names}

[Service]
ExecStart={exec_start}
Sockets={names}
User=iotedge
Group=iotedge
Restart=on-failure
RestartSec=5
RestartPreventExitStatus=153

[Install]
WantedBy=multi-user.target
"""
    return _unit("Azure IoT Edge daemon (edgefleet test double)", body), 0o644


def _socket_unit(
    name: str, description: str, service: str, path: str, mode: str, user: str, group: str
) -> tuple[bytes, int]:
    """A socket unit that activates ``service`` and hands it the socket under the unit's own name."""
    body = f"""
PartOf={service}

[Socket]
Service={service}
ListenStream={path}
SocketMode={mode}
DirectoryMode=0755
SocketUser={user}
SocketGroup={group}
FileDescriptorName={name}

[Install]
WantedBy=sockets.target
"""
    return _unit(description, body), 0o644


def _python_sources() -> dict[str, tuple[bytes, int]]:
    files = {}
    for source in sorted(RUNTIME_SOURCE.rglob("*.py")):
        relative = source.relative_to(RUNTIME_SOURCE)
        files[f"{PYTHON_PACKAGE_DIR}/{relative}"] = (source.read_bytes(), 0o644)
    return files


def _entry_point(module: str) -> tuple[bytes, int]:
    script = (
        f"#!/usr/bin/python3\nimport sys\n\nfrom edgefleet_iotedge_double.{module} import main\n\nsys.exit(main())\n"
    )
    return script.encode(), 0o755


def identity_service_package() -> Package:
    files = dict(_python_sources())
    files["usr/libexec/aziot-identity-service/aziotd"] = _entry_point("aziotd")
    files["etc/aziot/config.toml.template"] = (TEMPLATE_IDENTITY.encode(), 0o600)
    for service, user, socket in IDENTITY_SERVICES:
        short = service.removeprefix("aziot-")
        files[f"etc/aziot/{short}/config.toml.default"] = (
            f"# {service} defaults (edgefleet test double)\n".encode(),
            0o400,
        )
        files[f"lib/systemd/system/{service}.service"] = (
            _unit(
                f"Azure IoT {short} service (edgefleet test double)",
                f"""
Requires={service}.socket
After={service}.socket

[Service]
ExecStart=/usr/libexec/aziot-identity-service/aziotd {service}
User={user}
Group={user}
Restart=on-failure
RestartSec=5
""",
            ),
            0o644,
        )
        files[f"lib/systemd/system/{service}.socket"] = _socket_unit(
            f"{service}.socket", f"Azure IoT {short} API socket", f"{service}.service", socket, "0660", user, user
        )
    users = """
add_user() {  # name home [extra groups...]
    name=$1 home=$2; shift 2
    getent group "$name" >/dev/null || addgroup --quiet --system "$name"
    getent passwd "$name" >/dev/null || adduser --quiet --system --ingroup "$name" --home "$home" --no-create-home \\
        --shell /sbin/nologin "$name"
    for group in "$@"; do adduser --quiet "$name" "$group"; done
}
add_user aziotks /var/lib/aziot/keyd
add_user aziottpm /var/lib/aziot/tpmd
add_user aziotcs /var/lib/aziot/certd aziotks
add_user aziotid /var/lib/aziot/identityd aziotcs aziotks aziottpm
"""
    dirs = "\n".join(
        f"install -d -m 0700 -o {user} -g {user} /var/lib/aziot/{service.removeprefix('aziot-')} "
        f"/etc/aziot/{service.removeprefix('aziot-')}/config.d\n"
        f"chown {user}:{user} /etc/aziot/{service.removeprefix('aziot-')}/config.toml.default"
        for service, user, _socket in IDENTITY_SERVICES
    )
    sockets = " ".join(f"{service}.socket" for service, _user, _socket in IDENTITY_SERVICES)
    return Package(
        name="aziot-identity-service",
        version=IDENTITY_SERVICE_VERSION,
        description="Azure IoT Identity Service (edgefleet test double)",
        depends=["python3 (>= 3.11)", "adduser", "ca-certificates"],
        conflicts=["iotedge", "libiothsm-std"],
        files=files,
        scripts={
            "preinst": _script(f'if [ "$1" = install ] || [ "$1" = upgrade ]; then\n{users}\nfi'),
            "postinst": _script(
                f"""
if [ "$1" = configure ]; then
{dirs}
    install -d -m 0755 /var/lib/aziot
    # As the real deb: the four sockets are enabled and started; the services start on demand.
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload
        systemctl enable {sockets} >/dev/null 2>&1
        systemctl start {sockets}
    fi
fi
"""
            ),
            "prerm": _script(
                f'if [ -d /run/systemd/system ] && [ "$1" = remove ]; then systemctl stop {sockets} || true; fi'
            ),
        },
    )


def edge_package() -> Package:
    files = {
        "usr/bin/iotedge": _entry_point("iotedge"),
        "usr/libexec/aziot/aziot-edged": _entry_point("edged"),
        "etc/aziot/config.toml.edge.template": (TEMPLATE_EDGE.encode(), 0o600),
        "etc/aziot/edged/config.toml.default": (b"# aziot-edged defaults (edgefleet test double)\n", 0o400),
        "lib/systemd/system/aziot-edged.service": _edge_daemon_unit(
            "/usr/libexec/aziot/aziot-edged", ("aziot-edged.mgmt.socket", "aziot-edged.workload.socket")
        ),
        "lib/systemd/system/aziot-edged.mgmt.socket": _socket_unit(
            "aziot-edged.mgmt.socket",
            "Azure IoT Edge daemon management socket",
            "aziot-edged.service",
            "/var/run/iotedge/mgmt.sock",
            "0660",
            "edgeagentuser",
            "iotedge",
        ),
        "lib/systemd/system/aziot-edged.workload.socket": _socket_unit(
            "aziot-edged.workload.socket",
            "Azure IoT Edge daemon workload socket",
            "aziot-edged.service",
            "/var/run/iotedge/workload.sock",
            "0666",
            "iotedge",
            "iotedge",
        ),
    }
    preinst = """
if [ "$1" = install ] || [ "$1" = upgrade ]; then
    if ! getent group docker >/dev/null; then
        echo "ERROR: No container runtime detected."
        echo "Please install a container runtime and run this install again."
        exit 1
    fi
    getent group iotedge >/dev/null || addgroup --quiet --system iotedge
    getent passwd iotedge >/dev/null || adduser --quiet --system --ingroup iotedge --home /var/lib/aziot/edged \\
        --no-create-home --shell /sbin/nologin iotedge
    getent passwd edgeagentuser >/dev/null || adduser --quiet --system --uid 13622 --ingroup iotedge \\
        --no-create-home --shell /sbin/nologin edgeagentuser
    getent passwd edgehubuser >/dev/null || adduser --quiet --system --uid 13623 --ingroup iotedge \\
        --no-create-home --shell /sbin/nologin edgehubuser
    for group in docker systemd-journal aziotcs aziotks aziotid; do
        getent group "$group" >/dev/null && adduser --quiet iotedge "$group"
    done
    for group in sudo admin; do
        for member in $(getent group "$group" | cut -d: -f4 | tr ',' ' '); do adduser --quiet "$member" iotedge; done
    done
fi
"""
    postinst = """
if [ "$1" = configure ]; then
    chown iotedge:iotedge /etc/aziot/edged/config.toml.default
    install -d -m 0700 -o iotedge -g iotedge /etc/aziot/edged/config.d
    install -d -m 0755 -o iotedge -g iotedge /var/lib/aziot/edged /var/log/aziot/edged
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload
        # As the real deb: enabled, not started.
        systemctl enable aziot-edged.service aziot-edged.mgmt.socket aziot-edged.workload.socket >/dev/null 2>&1
    fi
    if [ ! -f /etc/aziot/config.toml ]; then
        cat <<'BANNER'
===============================================================================

                              Azure IoT Edge

  IMPORTANT: Please configure the device with provisioning information.

  Please create a new system configuration.

  You can quickly configure the device for manual provisioning with
   a connection string using:

    sudo iotedge config mp --connection-string '...'

  For other provisioning options, copy the template file
  at /etc/aziot/config.toml.edge.template to /etc/aziot/config.toml,
  update it with your device information, then apply the configuration to
  the IoT Edge services with:

    sudo iotedge config apply

===============================================================================
BANNER
    fi
fi
"""
    return Package(
        name="aziot-edge",
        version=EDGE_VERSION,
        description="Azure IoT Edge Module Runtime (edgefleet test double)",
        depends=[
            f"aziot-identity-service (= {IDENTITY_SERVICE_VERSION})",
            "adduser",
            "ca-certificates",
            "hostname",
            "sed",
        ],
        files=files,
        scripts={"preinst": _script(preinst), "postinst": _script(postinst)},
    )


def moby_package() -> Package:
    return Package(
        name="moby-engine",
        version=MOBY_VERSION,
        description="Container engine stand-in: creates the docker group (edgefleet test double)",
        depends=["adduser"],
        scripts={
            "postinst": _script(
                'if [ "$1" = configure ]; then getent group docker >/dev/null || addgroup --quiet --system docker; fi'
            )
        },
    )


def libiothsm_package() -> Package:
    """1.1's HSM library; in the double it carries the shared Python code (the 2038 rule lives in iotedged)."""
    return Package(
        name="libiothsm-std",
        version=IOTEDGE_1_1_VERSION,
        description="Azure IoT standard mode HSM lib (edgefleet test double)",
        depends=["python3 (>= 3.11)"],
        conflicts=["aziot-identity-service", "aziot-edge"],
        files=dict(_python_sources()),
    )


def iotedge_1_1_package() -> Package:
    files = {
        "usr/bin/iotedge": _entry_point("iotedge11"),
        "usr/bin/iotedged": _entry_point("iotedged"),
        "etc/iotedge/config.yaml.template": (TEMPLATE_1_1.encode(), 0o644),
        "lib/systemd/system/iotedge.service": _edge_daemon_unit(
            "/usr/bin/iotedged -c /etc/iotedge/config.yaml", ("iotedge.socket", "iotedge.mgmt.socket")
        ),
        "lib/systemd/system/iotedge.socket": _socket_unit(
            "iotedge.socket",
            "Azure IoT Edge daemon workload socket",
            "iotedge.service",
            "/var/run/iotedge/workload.sock",
            "0666",
            "iotedge",
            "iotedge",
        ),
        "lib/systemd/system/iotedge.mgmt.socket": _socket_unit(
            "iotedge.mgmt.socket",
            "Azure IoT Edge daemon management socket",
            "iotedge.service",
            "/var/run/iotedge/mgmt.sock",
            "0660",
            "iotedge",
            "iotedge",
        ),
    }
    preinst = """
if [ "$1" = install ] || [ "$1" = upgrade ]; then
    getent group iotedge >/dev/null || addgroup --quiet --system iotedge
    getent passwd iotedge >/dev/null || adduser --quiet --system --ingroup iotedge --home /var/lib/iotedge \
        --no-create-home --shell /bin/false iotedge
    getent group docker >/dev/null && adduser --quiet iotedge docker
    for group in sudo admin; do
        for member in $(getent group "$group" | cut -d: -f4 | tr ',' ' '); do adduser --quiet "$member" iotedge; done
    done
fi
"""
    postinst = """
if [ "$1" = configure ]; then
    install -d -m 0755 -o iotedge -g iotedge /var/lib/iotedge /var/log/iotedge
    if [ ! -f /etc/iotedge/config.yaml ]; then
        cp -a /etc/iotedge/config.yaml.template /etc/iotedge/config.yaml
        sed -i "s/<ADD HOSTNAME HERE>/$(hostname)/" /etc/iotedge/config.yaml
        chown iotedge:iotedge /etc/iotedge/config.yaml
        chmod 0400 /etc/iotedge/config.yaml
    fi
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload
        systemctl enable iotedge.service iotedge.socket iotedge.mgmt.socket >/dev/null 2>&1
        systemctl start iotedge.socket iotedge.mgmt.socket
    fi
fi
"""
    return Package(
        name="iotedge",
        version=IOTEDGE_1_1_VERSION,
        description="Azure IoT Edge Security Daemon 1.1 (edgefleet test double)",
        depends=[f"libiothsm-std (= {IOTEDGE_1_1_VERSION})", "python3-yaml", "adduser", "ca-certificates"],
        conflicts=["aziot-identity-service", "aziot-edge"],
        files=files,
        scripts={"preinst": _script(preinst), "postinst": _script(postinst)},
    )


def packages() -> list[Package]:
    return [moby_package(), identity_service_package(), edge_package(), libiothsm_package(), iotedge_1_1_package()]


def build_deb(package: Package, out_dir: Path) -> Path:
    with tempfile.TemporaryDirectory(prefix=f"edgefleet-deb-{package.name}-") as temporary:
        root = Path(temporary)
        debian = root / "DEBIAN"
        debian.mkdir()
        (debian / "control").write_text(package.control())
        for name, body in package.scripts.items():
            script = debian / name
            script.write_text(body.replace("#DEBHELPER#\n", ""))
            script.chmod(0o755)
        for path, (content, mode) in package.files.items():
            target = root / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
            target.chmod(mode)
        output = out_dir / f"{package.name}_{package.version}_all.deb"
        subprocess.run(
            ["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(output)],
            check=True,
            capture_output=True,
        )
    return output


def repository_digest() -> str:
    """Changes whenever a package's content would: the double's sources and this recipe."""
    digest = hashlib.sha256(Path(__file__).read_bytes())
    for source in sorted(RUNTIME_SOURCE.rglob("*.py")):
        digest.update(str(source.relative_to(RUNTIME_SOURCE)).encode() + source.read_bytes())
    return digest.hexdigest()[:16]


def build_repository(repo_dir: Path) -> Path:
    """A flat apt repository (``deb [trusted=yes] URL ./``) in ``repo_dir``; rebuilt only when the recipe changed."""
    stamp = repo_dir / ".digest"
    digest = repository_digest()
    if stamp.exists() and stamp.read_text() == digest and (repo_dir / "Packages").exists():
        return repo_dir
    shutil.rmtree(repo_dir, ignore_errors=True)
    repo_dir.mkdir(parents=True)
    for package in packages():
        build_deb(package, repo_dir)
    index = subprocess.run(
        ["dpkg-scanpackages", "--multiversion", "."], cwd=repo_dir, capture_output=True, text=True, check=True
    ).stdout
    (repo_dir / "Packages").write_text(index)
    stamp.write_text(digest)
    return repo_dir


TEMPLATE_1_1 = """\
###############################################################################
#                      IoT Edge Daemon configuration (edgefleet test double)
###############################################################################
#
# This file configures the IoT Edge daemon 1.1. Restart it after a change:
#   sudo systemctl restart iotedge
#
# DPS with X.509:
# provisioning:
#   source: "dps"
#   global_endpoint: "https://global.azure-devices-provisioning.net"
#   scope_id: "<SCOPE_ID>"
#   attestation:
#     method: "x509"
#     registration_id: "<OPTIONAL REGISTRATION ID. LEAVE COMMENTED OUT TO REGISTER WITH CN OF identity_cert>"
#     identity_cert: "<REQUIRED URI TO DEVICE IDENTITY CERTIFICATE>"
#     identity_pk: "<REQUIRED URI TO DEVICE IDENTITY PRIVATE KEY>"
#   always_reprovision_on_startup: true
#   dynamic_reprovisioning: false

provisioning:
  source: "manual"
  device_connection_string: "<ADD DEVICE CONNECTION STRING HERE>"

agent:
  name: "edgeAgent"
  type: "docker"
  env: {}
  config:
    image: "mcr.microsoft.com/azureiotedge-agent:1.1"
    auth: {}

hostname: "<ADD HOSTNAME HERE>"

connect:
  management_uri: "unix:///var/run/iotedge/mgmt.sock"
  workload_uri: "unix:///var/run/iotedge/workload.sock"

listen:
  management_uri: "fd://iotedge.mgmt.socket"
  workload_uri: "fd://iotedge.socket"

homedir: "/var/lib/iotedge"

moby_runtime:
  uri: "unix:///var/run/docker.sock"
"""

TEMPLATE_IDENTITY = """\
# ==============================================================================
# Azure IoT Identity Service configuration template (edgefleet test double)
# ==============================================================================
# Copy to /etc/aziot/config.toml, fill in the provisioning section, then run
#   sudo aziotctl config apply
"""

TEMPLATE_EDGE = """\
# ==============================================================================
# Azure IoT Edge configuration template (edgefleet test double)
# ==============================================================================
#
# Copy this file to /etc/aziot/config.toml, fill in the provisioning section and
# apply it with:
#   sudo iotedge config apply
#
# Global parameters (hostname, parent_hostname, trust_bundle_cert,
# auto_reprovisioning_mode, ...) must come before the first [table] header.
#
# hostname = "my-device"
# auto_reprovisioning_mode = "Dynamic"

# ==============================================================================
# Provisioning: DPS with X.509
# ==============================================================================
# [provisioning]
# source = "dps"
# global_endpoint = "https://global.azure-devices-provisioning.net/"
# id_scope = "0ab1234C5D6"
#
# [provisioning.attestation]
# method = "x509"
# registration_id = "my-device"
#
# identity_cert = "file:///var/aziot/certs/device-id.pem"
# identity_pk = "file:///var/aziot/secrets/device-id.key.pem"
"""
