"""``iotedged -c /etc/iotedge/config.yaml``: the IoT Edge 1.1 security daemon of the double (user iotedge).

Loads config.yaml and validates it as 1.1's settings.rs does, reads the identity certificate and key itself (1.1 has
no key service), refuses a chain that libiothsm cannot represent (anything expiring on or after 2038-01-01),
provisions through DPS over mutual TLS with edgelet's backup provisioning (falls back to the backup when DPS fails;
skips DPS for a backup when ``always_reprovision_on_startup`` is false), prepares the device CA (``certificates``
in config.yaml, or a quickstart one under its home) and the workload CA it signs, then "runs" edgeAgent and serves
the management and workload APIs like the 1.2+ double (device-side.md 2).
"""

from __future__ import annotations

import datetime
import json
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

import yaml

from . import IOTEDGE_1_1_VERSION, x509
from .dps import ProvisioningError, common_name, file_key_sender, read_device_backup, register_with_dps
from .edged import WorkloadApi, new_server_key_and_csr, run_edge_runtime
from .ipc import activated_sockets
from .journal import log

DEFAULT_CONFIG = Path("/etc/iotedge/config.yaml")
HOME = Path("/var/lib/iotedge")
BACKUP = HOME / "cache" / "provisioning_backup.json"
MGMT_SOCKET_NAME = "iotedge.mgmt.socket"
WORKLOAD_SOCKET_NAME = "iotedge.socket"
# libiothsm's store under the home directory: the quickstart device CA and the workload CA, by alias.
HSM_CERTS = HOME / "hsm" / "certs"
HSM_KEYS = HOME / "hsm" / "cert_keys"
DEVICE_CA_ALIAS = "device_ca_alias"
WORKLOAD_CA_ALIAS = "iotedged-workload-ca"
WORKLOAD_CA_COMMON_NAME = "iotedged workload ca"
QUICKSTART_CA_COMMON_NAME = "iotedged device ca"
DEFAULT_CA_LIFETIME_DAYS = 90
DEVICE_CA_KEYS = ("device_ca_cert", "device_ca_pk", "trusted_ca_certs")
DEFAULT_AGENT_IMAGE = "mcr.microsoft.com/azureiotedge-agent:1.1"
LIBIOTHSM_LIMIT = datetime.datetime(2038, 1, 1, tzinfo=datetime.UTC)
# iotedged's exit codes (1.1 error.rs): 150 invalid device config, 153 could not load settings.
EXIT_INVALID_DEVICE_CONFIG = 150
EXIT_BAD_SETTINGS = 153
CONNECTION_STRING_PLACEHOLDER = "<ADD DEVICE CONNECTION STRING HERE>"


class SettingsError(Exception):
    """``Could not load settings`` and its causes."""


def file_uri(settings_key: str, uri) -> Path:
    """1.1 accepts ``file`` URIs with no port or query and an empty (or localhost) host."""
    parts = urlsplit(uri) if isinstance(uri, str) else None
    if parts is None or parts.scheme != "file" or parts.netloc not in ("", "localhost") or parts.query or parts.port:
        raise SettingsError(f"File URI {uri} is unsupported for '{settings_key}'. Please check the config.yaml file.")
    return Path(unquote(parts.path))


def load_settings(text: str) -> dict:
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise SettingsError(str(error).replace("\n", " ")) from None
    if not isinstance(config, dict) or not isinstance(config.get("provisioning"), dict):
        raise SettingsError("missing field `provisioning`")
    provisioning = config["provisioning"]
    source = provisioning.get("source")
    if source == "manual":
        if provisioning.get("device_connection_string") in (None, "", CONNECTION_STRING_PLACEHOLDER):
            raise ValueError(
                "Edge device information is required. Please update config.yaml with the IoT Hub connection information."
            )
        raise SettingsError("manual provisioning is not implemented by the edgefleet test double")
    if source != "dps":
        raise SettingsError(f"unknown variant `{source}`, expected one of `manual`, `dps`, `external`")
    for key in ("global_endpoint", "scope_id"):
        if not provisioning.get(key):
            raise SettingsError(f"missing field `{key}`")
    attestation = provisioning.get("attestation")
    if attestation and provisioning.get("registration_id"):
        raise SettingsError("Provisioning registration_id has to be set only in attestation")
    if not attestation:
        if not provisioning.get("registration_id"):
            raise SettingsError("Provisioning registration_id has to be set")
        raise SettingsError("TPM attestation is not implemented by the edgefleet test double")
    if attestation.get("method") != "x509":
        raise SettingsError(f"attestation method {attestation.get('method')!r} is not implemented by the test double")
    file_uri("provisioning.attestation.identity_cert", attestation.get("identity_cert"))
    file_uri("provisioning.attestation.identity_pk", attestation.get("identity_pk"))
    always = provisioning.get("always_reprovision_on_startup", True)
    if not isinstance(always, bool):
        raise SettingsError(f"provisioning.always_reprovision_on_startup: invalid type: {always!r}, expected a boolean")
    certificates = config.get("certificates")
    if certificates is not None:
        if not isinstance(certificates, dict):
            raise SettingsError("certificates: invalid type, expected a map")
        lifetime = certificates.get("auto_generated_ca_lifetime_days", DEFAULT_CA_LIFETIME_DAYS)
        if isinstance(lifetime, bool) or not isinstance(lifetime, int) or not 0 <= lifetime <= 65535:
            raise SettingsError(
                f"certificates.auto_generated_ca_lifetime_days: invalid value: {lifetime!r}, expected u16"
            )
        # A flattened Option: the three go together, and with one missing none is used (quickstart).
        if all(isinstance(certificates.get(key), str) for key in DEVICE_CA_KEYS):
            for key in DEVICE_CA_KEYS:
                setting_path(f"certificates.{key}", certificates[key])
    return config


def setting_path(settings_key: str, value: str) -> Path:
    """1.1's convert_to_path: an absolute path, or a file URI."""
    return Path(value) if value.startswith("/") else file_uri(settings_key, value)


class LegacyCa:
    """iotedged's certificates: the device CA (config.yaml's ``certificates``, or a quickstart one libiothsm makes
    under the home directory and renews once expired), the workload CA it issues at each start (valid as long as the
    device CA), and the module server certificates the workload CA issues. The trust bundle is trusted_ca_certs (the
    quickstart device CA with none)."""

    def __init__(self, config: dict) -> None:
        certificates = config.get("certificates") or {}
        self.lifetime = certificates.get("auto_generated_ca_lifetime_days", DEFAULT_CA_LIFETIME_DAYS)
        self.configured = all(isinstance(certificates.get(key), str) for key in DEVICE_CA_KEYS)
        self.paths = (
            {key: setting_path(f"certificates.{key}", certificates[key]) for key in DEVICE_CA_KEYS}
            if self.configured
            else {
                "device_ca_cert": HSM_CERTS / f"{DEVICE_CA_ALIAS}.cert.pem",
                "device_ca_pk": HSM_KEYS / f"{DEVICE_CA_ALIAS}.key.pem",
                "trusted_ca_certs": HSM_CERTS / f"{DEVICE_CA_ALIAS}.cert.pem",
            }
        )

    def prepare(self) -> None:
        """The device CA (a quickstart one made when missing or expired), then a new workload CA under it."""
        if not self.configured:
            cert = self.paths["device_ca_cert"]
            if not cert.is_file() or x509.days_left(cert.read_text()) < 0:
                for directory in (HSM_CERTS, HSM_KEYS):
                    directory.mkdir(parents=True, mode=0o700, exist_ok=True)
                x509.new_key(self.paths["device_ca_pk"])
                key = self.paths["device_ca_pk"].read_text()
                csr = x509.new_csr(key, QUICKSTART_CA_COMMON_NAME, ("basicConstraints=critical,CA:TRUE",))
                cert.write_text(x509.issue(csr, signer_key_pem=key, issuer_cert_pem=None, days=self.lifetime))
        device_ca = self.device_ca_chain()
        for subject, not_after in chain_limits(device_ca):
            if not_after >= LIBIOTHSM_LIMIT:
                raise x509.X509Error(
                    f"Certificate {subject} in {self.paths['device_ca_cert']} expires {not_after:%Y-%m-%d %H:%M:%S} "
                    "UTC, on or after 2038-01-01: libiothsm cannot use certificates that expire on or after "
                    "January 1, 2038"
                )
        expires = x509.validity(device_ca)[1]
        log("INFO", f"Edge issuer CA expiration date: {expires:%Y-%m-%dT%H:%M:%SZ}")
        if x509.days_left(device_ca) < 0:
            raise x509.X509Error("Edge device CA has expired")
        HSM_CERTS.mkdir(parents=True, mode=0o700, exist_ok=True)
        HSM_KEYS.mkdir(parents=True, mode=0o700, exist_ok=True)
        key_path = HSM_KEYS / f"{WORKLOAD_CA_ALIAS}.key.pem"
        x509.new_key(key_path)
        csr = x509.new_csr(
            key_path.read_text(), WORKLOAD_CA_COMMON_NAME, ("basicConstraints=critical,CA:TRUE,pathlen:0",)
        )
        workload = x509.issue(
            csr,
            signer_key_pem=self.paths["device_ca_pk"].read_text(),
            issuer_cert_pem=x509.first_certificate(device_ca),
            days=max(1, x509.days_left(device_ca)),
        )
        (HSM_CERTS / f"{WORKLOAD_CA_ALIAS}.cert.pem").write_text(workload + device_ca)

    def device_ca_chain(self) -> str:
        text = self.paths["device_ca_cert"].read_text()
        return text if text.endswith("\n") else text + "\n"

    def trust_bundle(self) -> str:
        return self.paths["trusted_ca_certs"].read_text()

    def server_certificate(self, module_id: str, gen_id: str, common_name: str) -> dict:
        module_id = module_id.lstrip("$")
        key_pem, csr = new_server_key_and_csr(module_id, common_name)
        workload_chain = (HSM_CERTS / f"{WORKLOAD_CA_ALIAS}.cert.pem").read_text()
        leaf = x509.issue(
            csr,
            signer_key_pem=(HSM_KEYS / f"{WORKLOAD_CA_ALIAS}.key.pem").read_text(),
            issuer_cert_pem=x509.first_certificate(workload_chain),
            days=x509.DEFAULT_EXPIRY_DAYS,
        )
        chain = leaf + workload_chain
        return {
            "privateKey": {"type": "key", "bytes": key_pem},
            "certificate": chain,
            "expiration": x509.validity(chain)[1].isoformat(),
        }


def chain_limits(pem: str) -> list[tuple[str, datetime.datetime]]:
    """(subject, notAfter) of every certificate in a PEM bundle."""
    blocks = re.findall(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", pem, re.S)
    limits = []
    for block in blocks:
        lines = subprocess.run(
            ["openssl", "x509", "-noout", "-subject", "-enddate", "-nameopt", "RFC2253"],
            input=block,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
        fields = dict(line.split("=", 1) for line in lines if "=" in line)
        not_after = datetime.datetime.strptime(fields["notAfter"], "%b %d %H:%M:%S %Y %Z")
        limits.append((fields["subject"], not_after.replace(tzinfo=datetime.UTC)))
    return limits


def restore_backup() -> dict:
    """The provisioning result of the last successful registration; OSError or ValueError when there is none."""
    log("INFO", "Restoring device credentials from backup")
    return read_device_backup(BACKUP)


def provision(provisioning: dict, cert_pem: str, key_pem: str) -> dict:
    """edgelet's BackupProvisioning around DPS (1.1 provisioning.rs), with its log lines.

    With ``always_reprovision_on_startup`` (the default) every start registers and a failed registration falls back
    to the backup; without it a usable backup is used and DPS is not asked. No usable backup and a failed
    registration: the error is raised.
    """
    if not provisioning.get("always_reprovision_on_startup", True):
        log("INFO", "Attempting to restore provisioning backup...")
        try:
            return restore_backup()
        except (OSError, ValueError):
            log("INFO", "Provisioning backup could not be restored: Could not restore previous provisioning result")
    attestation = provisioning["attestation"]
    try:
        registration_id = attestation.get("registration_id") or common_name(cert_pem)
        send = file_key_sender(provisioning["global_endpoint"], cert_pem, key_pem, HOME)
        state = register_with_dps(provisioning["scope_id"], registration_id, send)
    except (ProvisioningError, OSError) as error:
        log("WARN", "Could not provision device")
        log("WARN", f"\tcaused by: {error}")
        try:
            return restore_backup()
        except (OSError, ValueError):
            raise error from None
    device = {"hub": state["assignedHub"], "device_id": state["deviceId"]}
    BACKUP.parent.mkdir(parents=True, exist_ok=True)
    BACKUP.write_text(json.dumps(device) + "\n")
    return device


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if "--version" in args:
        print(f"iotedged {IOTEDGE_1_1_VERSION}")
        return 0
    config_file = Path(args[args.index("-c") + 1]) if "-c" in args else DEFAULT_CONFIG
    log("INFO", "Starting Azure IoT Edge Security Daemon")
    log("INFO", f"Version - {IOTEDGE_1_1_VERSION}")
    log("INFO", f"Using config file: {config_file}")
    try:
        config = load_settings(config_file.read_text())
    except ValueError as error:
        log("ERROR", str(error))
        return EXIT_INVALID_DEVICE_CONFIG
    except (SettingsError, OSError) as error:
        log("ERROR", "The daemon could not start up successfully: Could not load settings")
        log("ERROR", f"\tcaused by: {getattr(error, 'strerror', None) or error}")
        return EXIT_BAD_SETTINGS
    log("INFO", f"Configuring {HOME} as the home directory.")
    attestation = config["provisioning"]["attestation"]
    log("INFO", "Initializing hsm...")
    try:
        cert_path = file_uri("provisioning.attestation.identity_cert", attestation["identity_cert"])
        key_path = file_uri("provisioning.attestation.identity_pk", attestation["identity_pk"])
        cert_pem, key_pem = cert_path.read_text(), key_path.read_text()
    except OSError as error:
        log("ERROR", f"Could not read the device identity from {error.filename}: {error.strerror}")
        return 1
    for subject, not_after in chain_limits(cert_pem):
        if not_after >= LIBIOTHSM_LIMIT:
            log(
                "ERROR",
                f"Certificate {subject} in {cert_path} expires {not_after:%Y-%m-%d %H:%M:%S} UTC, on or after "
                "2038-01-01: libiothsm cannot use certificates that expire on or after January 1, 2038",
            )
            return 1
    log("INFO", "Provisioning edge device...")
    log("INFO", "Starting provisioning edge device via X509 provisioning...")
    try:
        device = provision(config["provisioning"], cert_pem, key_pem)
    except (ProvisioningError, OSError) as error:
        log("ERROR", f"Failed to provision with IoT Hub: {error}")
        return 1
    # The real iotedged says this after a restored backup too.
    log("INFO", "Successful DPS provisioning.")
    log("INFO", "Finished provisioning edge device.")
    ca = LegacyCa(config)
    try:
        ca.prepare()
    except (x509.X509Error, OSError) as error:
        log("ERROR", f"Could not prepare the workload CA: {error}")
        return 1
    WorkloadApi.issuer = ca
    sockets = activated_sockets()
    if MGMT_SOCKET_NAME not in sockets:
        log("ERROR", f"{MGMT_SOCKET_NAME} was not passed by systemd")
        return 1
    device["hostname"] = config.get("hostname")
    image = ((config.get("agent") or {}).get("config") or {}).get("image", DEFAULT_AGENT_IMAGE)
    run_edge_runtime(device, image, sockets[MGMT_SOCKET_NAME], sockets.get(WORKLOAD_SOCKET_NAME))
    return 0
