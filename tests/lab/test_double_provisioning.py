"""The runtime double's provisioning against the in-process DPS emulator: backups, reprovisioning, 1.1's fallback.

identityd (1.2+) runs in-process with certd and keyd as handlers behind a stand-in for the unix-socket call, on the
five files ``iotedge config apply`` writes; 1.1's backup provisioning is called directly.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from lab.runtime.double import aziotd, dps, iotedged, system
from lab.runtime.double import x509 as double_x509
from lab.runtime.double.config_apply import SERVICE_USERS, Host, parse, service_files, validate

REGISTER = "RuntimeRegistration_RegisterDevice"
NOW = dt.datetime.now(dt.UTC)


@pytest.fixture
def dps_lab(cloud, monkeypatch):
    """The emulator, trusted as the system store (the daemons trust nothing else), polled without waiting."""
    monkeypatch.setenv("SSL_CERT_FILE", str(cloud.ca_bundle))
    monkeypatch.setattr(dps, "POLL_SECONDS", 0)
    return cloud


@pytest.fixture
def enroll(kit):
    """PUT an individual X.509 enrollment (replacing any) through the DPS service API."""
    service = kit.https(kit.cloud.dps_port)

    def put(registration_id: str, pem: str, replace: bool = False, **extra) -> None:
        headers = {**kit.dps_auth(), "If-Match": "*"} if replace else kit.dps_auth()
        body = kit.x509_enrollment(registration_id, pem, capabilities={"iotEdge": True}, **extra)
        status, _headers, answer = service.request(
            "PUT", f"/enrollments/{registration_id}?api-version=2021-10-01", body, headers
        )
        assert status == 200, answer

    return put


def registrations(cloud) -> list[dict]:
    return [request for request in cloud.runtime.request_log if request["operation"] == REGISTER]


# ---- 1.2+: aziot-identityd ----------------------------------------------------------------------------------


@dataclass
class IdentityHost:
    """One device's /etc/aziot and identityd home, with identityd, certd and keyd answering in-process."""

    cloud: object
    etc: Path
    home: Path
    secrets: Path
    daemons: dict = field(default_factory=dict)
    identityd: aziotd.Identityd | None = None

    @property
    def keyd_home(self) -> Path:
        return aziotd.KEYD_HOME

    @property
    def certd_home(self) -> Path:
        return aziotd.CERTD_HOME

    def apply(self, issued, registration_id: str | None = None, scope: str | None = None) -> None:
        """Write the identity files and the five configs as ``iotedge config apply`` does."""
        cert, key = issued.write(self.secrets, "device-id")
        registration = f'registration_id = "{registration_id}"\n' if registration_id else ""
        self.apply_source(
            f'[provisioning.attestation]\nmethod = "x509"\n{registration}'
            f'identity_cert = "file://{cert}"\nidentity_pk = "file://{key}"\n',
            scope,
        )

    def apply_source(self, attestation_and_more: str, scope: str | None = None) -> None:
        """config apply of a config.toml: hostname and DPS, then the given attestation and tables."""
        source = (
            'hostname = "edge-01"\n\n[provisioning]\nsource = "dps"\n'
            f'global_endpoint = "{self.cloud.global_endpoint}"\nid_scope = "{scope or self.cloud.id_scope}"\n\n'
            + attestation_and_more
        )
        files = service_files(validate(source, parse(source), "machine"), dict.fromkeys(SERVICE_USERS, os.getuid()))
        for service in ("keyd", "certd", "identityd"):
            path = self.etc / service / "config.d" / "00-super.toml"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(files[service])

    def start(self) -> aziotd.Identityd:
        """A fresh identityd process: trigger Startup; raises what the real one would log and exit on."""
        self.identityd = aziotd.Identityd()
        self.daemons[aziotd.IDENTITYD_SOCKET] = self.identityd.handle
        self.identityd.start()
        return self.identityd

    def backup(self) -> dict:
        return json.loads((self.home / "device_info").read_text())


@pytest.fixture
def device(dps_lab, tmp_path, monkeypatch) -> IdentityHost:
    host = IdentityHost(dps_lab, tmp_path / "etc", tmp_path / "identityd", tmp_path / "secrets")
    host.home.mkdir()
    host.secrets.mkdir()
    monkeypatch.setattr(aziotd, "ETC", host.etc)
    monkeypatch.setattr(aziotd, "IDENTITYD_HOME", host.home)
    # What keyd creates and certd issues stays in the test's directory.
    for name, directory in (("KEYD_HOME", "keyd"), ("CERTD_HOME", "certd")):
        (tmp_path / directory).mkdir()
        monkeypatch.setattr(aziotd, name, tmp_path / directory)
    monkeypatch.setattr(aziotd, "KEYD_KEYS", tmp_path / "keyd" / "keys")
    monkeypatch.setattr(aziotd, "CERTD_CERTS", tmp_path / "certd" / "certs")
    host.daemons.update({aziotd.CERTD_SOCKET: aziotd.certd, aziotd.KEYD_SOCKET: aziotd.keyd})

    def call(path: str, request: dict, timeout: float = 300) -> dict:
        # One JSON line each way, as over the daemons' sockets.
        answer = host.daemons[path](json.loads(json.dumps(request)))
        return json.loads(json.dumps(answer))

    monkeypatch.setattr(aziotd, "call", call)
    return host


class RecordingHost(Host):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, str]] = []

    def systemctl(self, verb: str, unit: str) -> subprocess.CompletedProcess:
        self.calls.append((verb, unit))
        return subprocess.CompletedProcess([], 0, "", "")


def test_first_start_registers_and_keeps_both_backups(device, enroll, pki, capsys):
    leaf = pki.leaf("edge-solo")
    enroll("edge-solo", leaf.pem)
    device.apply(leaf)
    started = device.start()
    assert started.device == {
        "hub": device.cloud.hub_host_name,
        "device_id": "edge-solo",
        "registration_id": "edge-solo",
    }
    assert len(registrations(device.cloud)) == 1
    assert device.backup() == started.device
    # prev_state: identityd's settings as it read them.
    prev_state = device.home / "prev_state"
    assert prev_state.read_text() == (device.etc / "identityd/config.d/00-super.toml").read_text()
    assert oct(prev_state.stat().st_mode & 0o777) == "0o600"
    log = capsys.readouterr().err
    assert "[INFO] - Provisioning starting. Reason: Startup" in log
    assert "Provisioned with backup" not in log
    assert "[INFO] - Successfully provisioned with DPS." in log
    assert log.index("Provisioning complete.") < log.index("Identity reconciliation complete.")


def test_a_restart_uses_the_backup_without_asking_dps(device, enroll, pki, capsys):
    leaf = pki.leaf("edge-solo")
    enroll("edge-solo", leaf.pem)
    device.apply(leaf)
    first = device.start().device
    device.cloud.runtime.request_log.clear()
    capsys.readouterr()
    assert device.start().device == first
    assert registrations(device.cloud) == []
    log = capsys.readouterr().err
    assert "[INFO] - Provisioning starting. Reason: Startup" in log
    assert "[INFO] - Provisioned with backup for edge-solo." in log


def test_replaced_certificate_files_do_not_make_a_restart_register(device, enroll, pki):
    old = pki.leaf("edge-solo")
    enroll("edge-solo", old.pem)
    device.apply(old)
    first = device.start().device
    device.cloud.runtime.request_log.clear()
    # Rotation: a new certificate and key in the same files, nothing enrolled for it yet.
    device.apply(pki.leaf("edge-solo"))
    assert device.start().device == first
    assert registrations(device.cloud) == []


def test_changed_provisioning_settings_do_not_make_a_restart_register(device, enroll, pki):
    """As the real identityd (iotedge issue 7013): only ``iotedge system reprovision`` applies new DPS settings."""
    leaf = pki.leaf("edge-solo")
    enroll("edge-solo", leaf.pem)
    device.apply(leaf)
    first = device.start().device
    device.cloud.runtime.request_log.clear()
    device.apply(leaf, registration_id="edge-solo", scope="0ne00BEEF00")
    assert device.start().device == first
    assert registrations(device.cloud) == []
    assert 'scope_id = "0ne00BEEF00"' in (device.home / "prev_state").read_text()


def test_an_unusable_backup_is_dropped_and_the_start_registers(device, enroll, pki, capsys):
    leaf = pki.leaf("edge-solo")
    enroll("edge-solo", leaf.pem)
    device.apply(leaf)
    (device.home / "device_info").write_text("not json\n")
    assert device.start().device["device_id"] == "edge-solo"
    assert len(registrations(device.cloud)) == 1
    assert "[WARN] - Ignoring invalid device info backup:" in capsys.readouterr().err


def test_a_key_keyd_cannot_load_fails_the_start_even_with_a_backup(device, enroll, pki, capsys):
    leaf = pki.leaf("edge-solo")
    enroll("edge-solo", leaf.pem)
    device.apply(leaf)
    device.start()
    (device.secrets / "device-id.key.pem").unlink()
    assert aziotd.identityd(None) == 1
    assert (
        "[ERROR] - Failed to provision with IoT Hub, and no valid device backup was found: could not get the identity "
        "private key: could not load key pair 'device-id'" in capsys.readouterr().err
    )


def test_a_refused_first_registration_is_fatal(device, pki, capsys):
    device.apply(pki.leaf("edge-unknown"))
    assert aziotd.identityd(None) == 1
    log = capsys.readouterr().err
    assert "[ERROR] - Failed to provision with IoT Hub, and no valid device backup was found: DPS:" in log
    assert "401002" in log
    assert not (device.home / "device_info").exists()


def test_reprovision_registers_the_new_certificate_and_restarts_edged(device, enroll, pki, capsys):
    old = pki.leaf("edge-solo")
    enroll("edge-solo", old.pem)
    device.apply(old)
    running = device.start()
    # Rotation: the enrollment takes the new certificate, and names a new device id so the change is visible.
    new = pki.leaf("edge-solo")
    enroll("edge-solo", new.pem, deviceId="edge-solo-renewed", replace=True)
    device.apply(new)
    device.cloud.runtime.request_log.clear()
    capsys.readouterr()
    host, out = RecordingHost(), io.StringIO()
    assert system.reprovision(host, out) == 0
    assert out.getvalue().splitlines() == [
        "Successfully reprovisioned with IoT Hub.",
        "Stopping aziot-edged.service...Stopped!",
        "Starting aziot-edged.mgmt.socket...Started!",
        "Starting aziot-edged.workload.socket...Started!",
        "Starting aziot-edged.service...Started!",
    ]
    assert host.calls == [
        ("stop", "aziot-edged.service"),
        ("start", "aziot-edged.mgmt.socket"),
        ("start", "aziot-edged.workload.socket"),
        ("start", "aziot-edged.service"),
    ]
    assert len(registrations(device.cloud)) == 1
    assert running.handle({"op": "get_device"})["device_id"] == "edge-solo-renewed"
    assert device.backup()["device_id"] == "edge-solo-renewed"
    log = capsys.readouterr().err
    assert "[INFO] - Provisioning starting. Reason: Api" in log
    assert "[INFO] - Identity reconciliation started. Reason: Api" in log


def test_a_refused_reprovision_reports_and_leaves_identityd_without_a_device(device, enroll, pki, capsys):
    old = pki.leaf("edge-solo")
    enroll("edge-solo", old.pem)
    device.apply(old)
    running = device.start()
    # The new certificate is not enrolled: DPS refuses it.
    device.apply(pki.leaf("edge-solo"))
    capsys.readouterr()
    host = RecordingHost()
    assert system.reprovision(host, io.StringIO()) == 1
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    failure = next(line for line in lines if line.startswith("Failed to reprovision: "))
    assert failure.startswith("Failed to reprovision: DPS: ") and "401002" in failure
    assert lines[lines.index(failure) + 1 :] == ["Error running system command", ""]
    assert "[INFO] - !!! DPS: " in captured.err
    # edged is left alone; identityd keeps answering, without a device and without a backup (as the real one).
    assert host.calls == []
    assert running.handle({"op": "get_device"}) == {"error": "device identity not found"}
    assert not (device.home / "device_info").exists()
    # So its next start registers, and fails for good while DPS still refuses.
    device.cloud.runtime.request_log.clear()
    assert aziotd.identityd(None) == 1
    assert len(registrations(device.cloud)) == 1


def test_reprovision_through_a_dps_outage_reports_the_status(device, enroll, pki, capsys):
    leaf = pki.leaf("edge-solo")
    enroll("edge-solo", leaf.pem)
    device.apply(leaf)
    running = device.start()
    device.cloud.faults.add({"match": {"operation": REGISTER}, "action": {"status": 503}})
    answer = running.handle({"op": "reprovision"})
    assert answer["error"].startswith("DPS: ")
    assert running.device is None
    # Once DPS answers again, reprovisioning brings the device back.
    assert running.handle({"op": "reprovision"})["device_id"] == "edge-solo"
    assert device.backup()["device_id"] == "edge-solo"


def test_reprovision_when_identityd_cannot_be_reached(monkeypatch, capsys):
    def refuse(path, request, timeout=300):
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(aziotd, "call", refuse)
    host = RecordingHost()
    assert system.reprovision(host, io.StringIO()) == 1
    assert capsys.readouterr().err.startswith(
        "Failed to reprovision: could not reach aziot-identityd at /run/aziot/identityd.sock: "
    )
    assert host.calls == []


def test_identityd_answers_an_unknown_operation():
    assert aziotd.Identityd().handle({"op": "reboot"}) == {"error": "unknown operation 'reboot'"}


# ---- 1.2+: an identity certificate that certd issues with a local CA -----------------------------------------


@pytest.fixture
def fleet_group(kit, root):
    """A DPS group enrollment for the test root, verified out of band: any chain up to it registers."""
    kit.cloud.dps.put_certificate("lab-root", {"certificate": root.pem, "isVerified": True}, None)
    service = kit.https(kit.cloud.dps_port)
    body = kit.group_enrollment("fleet", ca_name="lab-root", capabilities={"iotEdge": True})
    status, _headers, answer = service.request(
        "PUT", "/enrollmentGroups/fleet?api-version=2021-10-01", body, kit.dps_auth()
    )
    assert status == 200, answer


def local_ca_source(registration_id: str, cert: Path, pk: str, options: str = "", keys: str = "") -> str:
    return (
        f'[provisioning.attestation]\nmethod = "x509"\nregistration_id = "{registration_id}"\n'
        f'identity_cert = {{ method = "local_ca", common_name = "{registration_id}"{options} }}\n\n'
        f'{keys}[cert_issuance.local_ca]\ncert = "file://{cert}"\npk = "{pk}"\n'
    )


def issued_chain(device: IdentityHost, cert_id: str = "device-id") -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates((device.certd_home / "certs" / f"{cert_id}.pem").read_bytes())


def test_the_local_ca_issues_the_identity_certificate_and_identityd_registers_with_it(device, fleet_group, pki, root):
    local_ca = pki.ca("edge-lc local CA", root)
    cert, key = local_ca.write(device.secrets, "local-ca")
    device.apply_source(local_ca_source("edge-lc", cert, f"file://{key}"))
    assert device.start().device["device_id"] == "edge-lc"
    assert len(registrations(device.cloud)) == 1
    leaf, *issuers = issued_chain(device)
    # The local CA's file follows the new certificate, as certd appends the issuer's stack.
    assert issuers == [local_ca.certificate, root.certificate]
    assert leaf.subject.rfc4514_string() == "CN=edge-lc"
    assert leaf.issuer == local_ca.certificate.subject
    leaf.verify_directly_issued_by(local_ca.certificate)
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == dt.timedelta(days=30)
    # The key is the one keyd created for the identity; the local CA's key was only used to sign.
    identity_key = serialization.load_pem_private_key((device.keyd_home / "keys/device-id.pem").read_bytes(), None)
    assert leaf.public_key() == identity_key.public_key()


def test_the_local_ca_uses_the_options_lifetime_and_never_outlives_itself(device, fleet_group, pki, root):
    local_ca = pki.ca("edge-lc local CA", root, not_after=NOW + dt.timedelta(days=100))
    cert, key = local_ca.write(device.secrets, "local-ca")
    device.apply_source(local_ca_source("edge-lc", cert, f"file://{key}", ", expiry_days = 365"))
    device.start()
    leaf = issued_chain(device)[0]
    # certd ends it with its issuer; openssl 3.0's x509 -req counts whole days, so the double ends it within a day.
    issuer_end = local_ca.certificate.not_valid_after_utc
    assert issuer_end - dt.timedelta(days=1) < leaf.not_valid_after_utc <= issuer_end


def test_a_local_ca_signs_with_a_key_inside_a_token(device, fleet_group, pki, root, soft_token):
    public_key = soft_token.generate("local-ca")
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edge-lc token CA")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(root.certificate.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(root.key, hashes.SHA256())
    )
    cert = device.secrets / "local-ca.pem"
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    keys = '[aziot_keys]\npkcs11_lib_path = "/usr/lib/softhsm/libsofthsm2.so"\n\n'
    device.apply_source(local_ca_source("edge-lc", cert, soft_token.uri("local-ca"), keys=keys))
    assert device.start().device["device_id"] == "edge-lc"
    leaf, issuer = issued_chain(device)
    assert issuer == certificate
    # Signed by the token's key: the certificate verifies with the public half the token let out.
    leaf.verify_directly_issued_by(certificate)
    assert not list(device.keyd_home.glob("**/local-ca*"))


def test_local_ca_issuance_without_a_local_ca_is_certds_error(device, pki):
    certd_config = device.etc / "certd" / "config.d" / "00-super.toml"
    certd_config.parent.mkdir(parents=True)
    certd_config.write_text('[cert_issuance.device-id]\nmethod = "local_ca"\n')
    assert aziotd.certd({"id": "device-id"}) == {"error": "certificate 'device-id' not found", "issuable": True}
    csr = double_x509.new_csr(new_key_pem(), "edge-lc")
    assert aziotd.certd({"op": "create_cert", "id": "device-id", "csr": csr}) == {
        "error": "could not create certificate 'device-id': cert 'device-id' is configured to be issued by local CA, "
        "but local CA is not configured"
    }


def new_key_pem() -> str:
    return (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        .decode()
    )


# ---- 1.1: iotedged's backup provisioning --------------------------------------------------------------------


@pytest.fixture
def iotedge11(dps_lab, tmp_path, monkeypatch):
    monkeypatch.setattr(iotedged, "HOME", tmp_path)
    monkeypatch.setattr(iotedged, "BACKUP", tmp_path / "cache" / "provisioning_backup.json")
    return dps_lab


def settings_1_1(cloud, **extra) -> dict:
    return {
        "source": "dps",
        "global_endpoint": cloud.global_endpoint,
        "scope_id": cloud.id_scope,
        "attestation": {"method": "x509", "identity_cert": "file:///unused", "identity_pk": "file:///unused"},
        **extra,
    }


def credentials(issued, directory: Path) -> tuple[str, str]:
    cert, key = issued.write(directory, issued.certificate.serial_number)
    return cert.read_text(), key.read_text()


def test_1_1_registers_at_every_start_and_keeps_the_backup(iotedge11, enroll, pki, tmp_path):
    leaf = pki.leaf("edge-11")
    enroll("edge-11", leaf.pem)
    for _start in range(2):
        device = iotedged.provision(settings_1_1(iotedge11), *credentials(leaf, tmp_path))
    assert device == {"hub": iotedge11.hub_host_name, "device_id": "edge-11"}
    assert len(registrations(iotedge11)) == 2
    assert json.loads(iotedged.BACKUP.read_text()) == device


def test_1_1_falls_back_to_the_backup_when_dps_refuses(iotedge11, enroll, pki, tmp_path, capsys):
    old = pki.leaf("edge-11")
    enroll("edge-11", old.pem)
    first = iotedged.provision(settings_1_1(iotedge11), *credentials(old, tmp_path))
    capsys.readouterr()
    # A rotated certificate DPS does not accept: the start registers, fails, and goes on with the backup.
    assert iotedged.provision(settings_1_1(iotedge11), *credentials(pki.leaf("edge-11"), tmp_path)) == first
    assert len(registrations(iotedge11)) == 2
    messages = [line.split(" ", 1)[1] for line in capsys.readouterr().err.splitlines()]
    assert messages[0] == "[WARN] - Could not provision device"
    assert messages[1].startswith("[WARN] - \tcaused by: DPS: ") and "401002" in messages[1]
    assert messages[2:] == ["[INFO] - Restoring device credentials from backup"]


def test_1_1_falls_back_to_the_backup_through_a_dps_outage(iotedge11, enroll, pki, tmp_path):
    leaf = pki.leaf("edge-11")
    enroll("edge-11", leaf.pem)
    first = iotedged.provision(settings_1_1(iotedge11), *credentials(leaf, tmp_path))
    iotedge11.faults.add({"match": {"operation": REGISTER}, "action": {"status": 503}})
    assert iotedged.provision(settings_1_1(iotedge11), *credentials(leaf, tmp_path)) == first


def test_1_1_without_a_backup_a_refusal_stays_fatal(iotedge11, pki, tmp_path):
    with pytest.raises(dps.ProvisioningError, match="401002"):
        iotedged.provision(settings_1_1(iotedge11), *credentials(pki.leaf("edge-11"), tmp_path))
    assert not iotedged.BACKUP.exists()


def test_1_1_without_always_reprovision_uses_the_backup_without_dps(iotedge11, enroll, pki, tmp_path, capsys):
    leaf = pki.leaf("edge-11")
    enroll("edge-11", leaf.pem)
    settings = settings_1_1(iotedge11, always_reprovision_on_startup=False)
    # No backup yet: the start says so and registers.
    first = iotedged.provision(settings, *credentials(leaf, tmp_path))
    assert len(registrations(iotedge11)) == 1
    assert "Provisioning backup could not be restored: Could not restore previous provisioning result" in (
        capsys.readouterr().err
    )
    assert iotedged.provision(settings, *credentials(leaf, tmp_path)) == first
    assert len(registrations(iotedge11)) == 1
    log = capsys.readouterr().err
    assert "[INFO] - Attempting to restore provisioning backup..." in log
    assert "[INFO] - Restoring device credentials from backup" in log


def test_1_1_always_reprovision_on_startup_must_be_a_boolean():
    text = (
        'provisioning:\n  source: "dps"\n  global_endpoint: "https://127.0.0.1:18444/"\n  scope_id: "0ne00C0FFEE"\n'
        '  always_reprovision_on_startup: "sometimes"\n  attestation:\n    method: "x509"\n'
        '    identity_cert: "file:///c.pem"\n    identity_pk: "file:///k.pem"\n'
    )
    with pytest.raises(iotedged.SettingsError, match="expected a boolean"):
        iotedged.load_settings(text)
