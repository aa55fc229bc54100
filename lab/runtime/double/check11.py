"""``iotedge check`` of the 1.1 double: the 1.1 check ids (device-side.md 3.3) that apply without a container engine.

Sections "Configuration checks" and "Connectivity checks" with 1.1's layout; JSON as 1.2+ with ``iotedged_version``.
"""

from __future__ import annotations

import datetime
import os
import socket
import sys
from pathlib import Path

from .check import (
    EDGE_CONFIG,
    EDGE_CONNECTIVITY,
    EXPIRY_WARNING_DAYS,
    Outcome,
    _not_after,
    _not_before,
    _utc,
    container_engine,
    endpoint_reachable,
    error,
    hub_reachable,
    management_socket_answers,
    not_applicable,
    ok,
    parse_options,
    report,
    run_checks,
    skipped,
    warning,
)
from .iotedged import (
    BACKUP,
    DEFAULT_CONFIG,
    DEVICE_CA_ALIAS,
    HSM_CERTS,
    LegacyCa,
    SettingsError,
    file_uri,
    load_settings,
)

# certificates_quickstart.rs warns this long before a configured device CA expires.
CA_EXPIRY_WARNING_DAYS = 90


class LegacyDevice:
    def __init__(self) -> None:
        self.text = DEFAULT_CONFIG.read_text()
        self.config = None
        self.error = None
        try:
            self.config = load_settings(self.text)
        except (SettingsError, ValueError) as failure:
            self.error = str(failure)


def well_formed(device: LegacyDevice) -> Outcome:
    if device.config is None:
        return error(f"{DEFAULT_CONFIG} could not be parsed.", device.error)
    return ok()


def connection_string(device: LegacyDevice) -> Outcome:
    if device.config and device.config["provisioning"].get("source") != "manual":
        return skipped("the device is provisioned through DPS")
    return error("Edge device information is required.")


def hostname(device: LegacyDevice) -> Outcome:
    configured = (device.config or {}).get("hostname")
    machine = socket.gethostname()
    if configured != machine:
        return error(f"config.yaml has hostname {configured} but device reports hostname {machine}.")
    return ok()


def management_uri(device: LegacyDevice) -> Outcome:
    return management_socket_answers(((device.config or {}).get("connect") or {}).get("management_uri", ""))


def _validity(path: Path) -> tuple[datetime.datetime, datetime.datetime] | None:
    not_after, not_before = _not_after(str(path)), _not_before(str(path))
    return None if not_after is None or not_before is None else (not_before, not_after)


def identity_certificate_expiry(device: LegacyDevice) -> Outcome:
    """1.1's CertificateValidity::to_check_result for the DPS identity certificate (identity_certificate_expiry.rs)."""
    if device.config is None:
        return skipped()
    path = file_uri("identity_cert", device.config["provisioning"]["attestation"]["identity_cert"])
    dates = _validity(path)
    if dates is None:
        return error(f"Could not parse {path} as a valid certificate file")
    not_before, not_after = dates
    now = datetime.datetime.now(datetime.UTC)
    name = "DPS identity certificate"
    if not_before > now:
        return error(f"{name} at {path} has not-before time {_utc(not_before)} which is in the future")
    if not_after < now:
        return error(f"{name} at {path} expired at {_utc(not_after)}")
    if not_after < now + datetime.timedelta(days=EXPIRY_WARNING_DAYS):
        return warning(f"{name} at {path} will expire soon ({_utc(not_after)}, in {(not_after - now).days} days)")
    return ok()


def certificates_quickstart(device: LegacyDevice) -> Outcome:
    """certificates_quickstart.rs: the device CA from config.yaml (an error once expired, a warning within 90 days),
    or the quickstart one under the home directory (a warning, an error once expired)."""
    if device.config is None:
        return skipped()
    ca = LegacyCa(device.config)
    if ca.configured:
        path = ca.paths["device_ca_cert"]
    else:
        found = sorted(HSM_CERTS.glob(f"{DEVICE_CA_ALIAS}*.cert.pem")) if HSM_CERTS.is_dir() else []
        if not found:
            return error(f"Could not find device CA certificate under {HSM_CERTS}")
        path = found[0]
    dates = _validity(path)
    if dates is None:
        return error(f"Could not parse {path} as a valid certificate file")
    not_after = dates[1]
    now = datetime.datetime.now(datetime.UTC)
    guide = "See https://aka.ms/iotedge-prod-checklist-certs for best practices."
    if not ca.configured:
        lead = "The Edge device is using self-signed automatically-generated development certificates."
        advice = f"Please consider using production certificates instead. {guide}"
        if not_after < now:
            return error(
                lead,
                f"The certs expired at {_utc(not_after)}. Restart the IoT Edge daemon to generate new development "
                "certs.",
                advice,
            )
        return warning(
            lead,
            f"They will expire in {(not_after - now).days} days (at {_utc(not_after)}) causing module-to-module and "
            "downstream device communication to fail on an active deployment.",
            "After the certs have expired, restarting the IoT Edge daemon will trigger it to generate new development "
            "certs.",
            advice,
        )
    if not_after < now:
        return error(
            f"The device CA cert has expired at {_utc(not_after)}. Renew the certificate to restore functionality.",
            guide,
        )
    if not_after < now + datetime.timedelta(days=CA_EXPIRY_WARNING_DAYS):
        return warning(
            f"The device CA cert will expire within the next {CA_EXPIRY_WARNING_DAYS} days, at {_utc(not_after)}. "
            "Renew the certificate before this date to retain functionality.",
            guide,
        )
    return ok()


def dps_endpoint(device: LegacyDevice) -> Outcome:
    if device.config is None:
        return skipped()
    return endpoint_reachable(device.config["provisioning"]["global_endpoint"])


def iothub_https(_device: LegacyDevice) -> Outcome:
    return hub_reachable(BACKUP)


CHECKS = [
    (EDGE_CONFIG, "config-yaml-well-formed", "config.yaml is well-formed", well_formed),
    (EDGE_CONFIG, "connection-string", "config.yaml has well-formed connection string", connection_string),
    (EDGE_CONFIG, "container-engine-uri", "container engine is installed and functional", container_engine),
    (EDGE_CONFIG, "hostname", "config.yaml has correct hostname", hostname),
    (EDGE_CONFIG, "connect-management-uri", "config.yaml has correct URIs for daemon mgmt endpoint", management_uri),
    (EDGE_CONFIG, "iotedged-version", "latest security daemon", not_applicable("no Microsoft servers here")),
    (EDGE_CONFIG, "host-local-time", "host time is close to real time", not_applicable("no Microsoft servers here")),
    (
        EDGE_CONFIG,
        "identity-certificate-expiry",
        "production readiness: identity certificates expiry",
        identity_certificate_expiry,
    ),
    (EDGE_CONFIG, "certificates-quickstart", "production readiness: certificates", certificates_quickstart),
    (
        EDGE_CONNECTIVITY,
        "host-connect-dps-endpoint",
        "host can connect to and perform TLS handshake with DPS endpoint",
        dps_endpoint,
    ),
    (
        EDGE_CONNECTIVITY,
        "host-connect-iothub-https",
        "host can connect to and perform TLS handshake with IoT Hub HTTPS / WebSockets port",
        iothub_https,
    ),
]


def main(args: list[str]) -> int:
    options = parse_options(args)
    if isinstance(options, str):
        print(options, file=sys.stderr)
        return 2
    try:
        device = LegacyDevice() if os.geteuid() == 0 else None
    except OSError:
        device = None
    if device is None:
        fatal = "Could not open IoT Edge configuration. You might need to run this command as root."
        results = [(EDGE_CONFIG, CHECKS[0][1], CHECKS[0][2], Outcome("fatal", [fatal]))]
        results += run_checks(None, options[3], CHECKS)[1:]
    else:
        results = run_checks(device, options[3], CHECKS)
    return report(results, options, generation="1.1")
