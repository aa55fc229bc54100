"""``iotedge check`` of the 1.1 double: the 1.1 check ids (device-side.md 3.3) that apply without a container engine.

Sections "Configuration checks" and "Connectivity checks" with 1.1's layout; JSON as 1.2+ with ``iotedged_version``.
"""

from __future__ import annotations

import datetime
import os
import socket
import sys

from .check import (
    EDGE_CONFIG,
    EDGE_CONNECTIVITY,
    EXPIRY_WARNING_DAYS,
    Outcome,
    _not_after,
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
from .iotedged import BACKUP, DEFAULT_CONFIG, SettingsError, file_uri, load_settings

QUICKSTART_DAYS = 90


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


def identity_certificate_expiry(device: LegacyDevice) -> Outcome:
    if device.config is None:
        return skipped()
    path = str(file_uri("identity_cert", device.config["provisioning"]["attestation"]["identity_cert"]))
    not_after = _not_after(path)
    if not_after is None:
        return error(f"device identity certificate at {path} cannot be read")
    now = datetime.datetime.now(datetime.UTC)
    if not_after <= now:
        return error(f"device identity certificate expired at {not_after}")
    if (not_after - now).days < EXPIRY_WARNING_DAYS:
        return warning(f"device identity certificate will expire soon ({not_after}, in {(not_after - now).days} days)")
    return ok()


def certificates_quickstart(device: LegacyDevice) -> Outcome:
    if (device.config or {}).get("certificates"):
        return ok()
    days = int(
        ((device.config or {}).get("certificates") or {}).get("auto_generated_ca_lifetime_days", QUICKSTART_DAYS)
    )
    return warning(
        "The Edge device is using self-signed automatically-generated development certificates.",
        f"They will expire in {days} days causing module-to-module and downstream device communication to fail on "
        "an active deployment.",
        "Please consider using production certificates instead. See https://aka.ms/iotedge-prod-checklist-certs "
        "for best practices.",
    )


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
