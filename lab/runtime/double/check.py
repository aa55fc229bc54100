"""``iotedge check [--output text|json] [--verbose] [--warnings-as-errors] [--dont-run ID...]`` of the double.

The checks that make sense without a container engine (device-side.md 3.3): configuration files well-formed and
up to date with config.toml, the preloaded certificate and key readable by aziotcs/aziotks and matching, identity
certificate expiry, the identity services answering, and TLS to the DPS endpoint and the assigned hub. Checks that
need a container engine or Microsoft's servers (versions, time, container connectivity) are reported as skipped.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import socket
import ssl
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from . import EDGE_VERSION, IOTEDGE_1_1_VERSION
from .aziotd import KEYD_SOCKET
from .config_apply import ApplyError, parse, service_files, validate
from .ipc import call

ETC = Path("/etc/aziot")
CONFIG = ETC / "config.toml"
DEVICE_INFO = Path("/var/lib/aziot/identityd/device_info")
AZIOT_SOCKETS = {
    "keyd": "/run/aziot/keyd.sock",
    "certd": "/run/aziot/certd.sock",
    "identityd": "/run/aziot/identityd.sock",
}
EXPIRY_WARNING_DAYS = 7
AZIOT_CONFIG = "Configuration checks (aziot-identity-service)"
AZIOT_CONNECTIVITY = "Connectivity checks (aziot-identity-service)"
EDGE_CONFIG = "Configuration checks"
EDGE_CONNECTIVITY = "Connectivity checks"
# The real check's marks: check mark, double exclamation, multiplication sign.
SYMBOLS = {
    "ok": ("\u221a", "OK"),
    "warning": ("\u203c", "Warning"),
    "error": ("\u00d7", "Error"),
    "fatal": ("\u00d7", "Error"),
}


@dataclass
class Outcome:
    result: str  # ok | warning | error | fatal | skipped | ignored
    details: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        body: dict = {"result": self.result}
        if self.details and self.result in ("warning", "error", "fatal"):
            body["details"] = self.details
        return body


def ok(*details: str) -> Outcome:
    return Outcome("ok", list(details))


def warning(*details: str) -> Outcome:
    return Outcome("warning", list(details))


def error(*details: str) -> Outcome:
    return Outcome("error", list(details))


def skipped(*details: str) -> Outcome:
    return Outcome("skipped", list(details))


# ---- what the checks look at ------------------------------------------------------------------------------


class Device:
    """The host as the checks see it, loaded once."""

    def __init__(self) -> None:
        self.config_source = CONFIG.read_text()
        self.settings = None
        self.settings_error = None
        try:
            self.settings = validate(self.config_source, parse(self.config_source), socket.gethostname())
        except ApplyError as failure:
            self.settings_error = str(failure)

    @staticmethod
    def service_file(service: str) -> Path:
        return ETC / service / "config.d/00-super.toml"

    def service_config(self, service: str) -> dict:
        return tomllib.loads(self.service_file(service).read_text())

    @staticmethod
    def readable_by(user: str, path: str) -> bool:
        return subprocess.run(["runuser", "-u", user, "--", "test", "-r", path], check=False).returncode == 0

    @staticmethod
    def user_ids(user: str) -> str:
        uid = subprocess.run(["id", "-u", user], capture_output=True, text=True, check=False).stdout.strip()
        gid = subprocess.run(["id", "-g", user], capture_output=True, text=True, check=False).stdout.strip()
        return f"uid {uid}, gid {gid}"


def _file_path(uri: str) -> str:
    return urlsplit(uri).path


def _openssl(*args: str, stdin: str | None = None) -> str:
    return subprocess.run(["openssl", *args], input=stdin, capture_output=True, text=True, check=False).stdout


def _not_after(path: str) -> datetime.datetime | None:
    text = _openssl("x509", "-noout", "-enddate", "-in", path).strip()
    if not text.startswith("notAfter="):
        return None
    moment = datetime.datetime.strptime(text.split("=", 1)[1], "%b %d %H:%M:%S %Y %Z")
    return moment.replace(tzinfo=datetime.UTC)


def _not_before(path: str) -> datetime.datetime | None:
    text = _openssl("x509", "-noout", "-startdate", "-in", path).strip()
    if not text.startswith("notBefore="):
        return None
    return datetime.datetime.strptime(text.split("=", 1)[1], "%b %d %H:%M:%S %Y %Z").replace(tzinfo=datetime.UTC)


def _tls_handshake(host: str, port: int) -> None:
    context = ssl.create_default_context()
    with socket.create_connection((host, port), timeout=10) as raw, context.wrap_socket(raw, server_hostname=host):
        pass


# ---- the checks -------------------------------------------------------------------------------------------


def well_formed(service: str):
    def run(device: Device) -> Outcome:
        path = device.service_file(service)
        if not path.exists():
            return error(f"{path} does not exist.", "Did you run 'iotedge config apply'?")
        try:
            device.service_config(service)
        except (OSError, tomllib.TOMLDecodeError) as failure:
            return error(f"{path} could not be parsed: {failure}")
        return ok()

    return run


def up_to_date(services: tuple[str, ...]):
    def run(device: Device) -> Outcome:
        if device.settings is None:
            return error(f"{CONFIG} is not valid: {device.settings_error}")
        uids = {}
        for user in ("aziotks", "aziotcs", "aziotid", "aziottpm", "iotedge"):
            uids[user] = int(subprocess.run(["id", "-u", user], capture_output=True, text=True, check=True).stdout)
        expected = service_files(device.settings, uids)
        for service in services:
            path = device.service_file(service)
            if not path.exists():
                return warning(f"{path} does not exist.", "Did you run 'iotedge config apply'?")
            if path.read_text() != expected[service]:
                return warning(f"{path} is not up-to-date with {CONFIG}.", "Did you run 'iotedge config apply'?")
        return ok()

    return run


def valid_hostname(device: Device) -> Outcome:
    hostname = device.service_config("identityd").get("hostname", "")
    if not re.fullmatch(
        r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*", hostname
    ):
        return error(f"identityd config has hostname {hostname!r}, which is not a valid RFC 1035 host name")
    return ok()


def _preloaded(device: Device, service: str, table: str) -> dict[str, str]:
    return {
        name: value
        for name, value in (device.service_config(service).get(table) or {}).items()
        if isinstance(value, str) and value.startswith("file:")
    }


def _utc(moment: datetime.datetime) -> str:
    """A time as chrono's DateTime<Utc> prints it."""
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC"


def certificate_validity(path: str, name: str, cert_id: str) -> Outcome:
    """aziotctl's CertificateValidity::to_check_result: not yet valid or expired is an error, under 7 days a warning."""
    not_after, not_before = _not_after(path), _not_before(path)
    if not_after is None or not_before is None:
        return error(f"could not parse {path} as a valid .pem")
    now = datetime.datetime.now(datetime.UTC)
    if not_before > now:
        return error(f"{name} '{cert_id}' has not-before time {_utc(not_before)} which is in the future")
    if not_after < now:
        return error(f"{name} '{cert_id}' expired at {_utc(not_after)}")
    if not_after < now + datetime.timedelta(days=EXPIRY_WARNING_DAYS):
        days = (not_after - now).days
        return warning(f"{name} '{cert_id}' will expire soon ({_utc(not_after)}, in {days} days)")
    return ok()


def certs_preloaded(device: Device) -> Outcome:
    """Every preloaded certificate certd would load - the identity, a preloaded Edge CA, the trust bundle's members -
    readable and within its validity (aziotctl certs_preloaded.rs walks the ids in order; the first problem wins)."""
    preloaded = device.service_config("certd").get("preloaded_certs") or {}
    visited: dict[str, str] = {}

    def walk(cert_id: str) -> Outcome:
        location = preloaded.get(cert_id)
        if isinstance(location, list):
            for member in location:
                outcome = walk(member)
                if outcome.result != "ok":
                    return outcome
            return ok()
        if not isinstance(location, str):
            return ok()
        previous = visited.setdefault(cert_id, location)
        if previous != location:
            return error(f'preloaded cert "{cert_id}" has been defined more than once')
        if urlsplit(location).scheme != "file":
            return error(f'preloaded cert "{cert_id}" has a scheme other than `file://`')
        path = _file_path(location)
        if not device.readable_by("aziotcs", path):
            return error(
                f"{path} is not readable by user aziotcs ({device.user_ids('aziotcs')}), "
                "see https://aka.ms/iotedge/cert-permissions"
            )
        # The certificate's name is empty in this check (certs_preloaded.rs), hence the message's leading space.
        return certificate_validity(path, "", cert_id)

    for cert_id in sorted(preloaded):
        outcome = walk(cert_id)
        if outcome.result != "ok":
            return outcome
    return ok()


def readable(service: str, table: str, user: str):
    def run(device: Device) -> Outcome:
        for _name, uri in _preloaded(device, service, table).items():
            path = _file_path(uri)
            if not device.readable_by(user, path):
                return error(
                    f"{path} is not readable by user {user} ({device.user_ids(user)}), "
                    "see https://aka.ms/iotedge/cert-permissions"
                )
        return ok()

    return run


def _token_keys(device: Device) -> list[str]:
    """The preloaded keys in a PKCS#11 token: only keyd may load those (PKCS#11 libraries are not cross-process safe)."""
    keys = device.service_config("keyd").get("preloaded_keys") or {}
    return [name for name, value in keys.items() if isinstance(value, str) and value.startswith("pkcs11:")]


def _token_public_key(key_id: str) -> str:
    """The public key keyd reads from the token; KeyError with keyd's reason when it cannot."""
    answer = call(KEYD_SOCKET, {"op": "public_key", "id": key_id}, timeout=60)
    if "public_key" not in answer:
        raise KeyError(answer.get("error", "keyd did not answer"))
    return answer["public_key"]


def key_pairs_read(device: Device) -> Outcome:
    outcome = readable("keyd", "preloaded_keys", "aziotks")(device)
    if outcome.result != "ok":
        return outcome
    for key_id in _token_keys(device):
        try:
            _token_public_key(key_id)
        except (KeyError, OSError) as failure:
            return error(f"could not load preloaded private key with ID {key_id!r}", str(failure).strip("'\""))
    return outcome


def certs_match_keys(device: Device) -> Outcome:
    cert = _preloaded(device, "certd", "preloaded_certs").get("device-id")
    key = _preloaded(device, "keyd", "preloaded_keys").get("device-id")
    in_token = "device-id" in _token_keys(device)
    if not cert or not (key or in_token):
        return skipped()
    certificate_key = _openssl("x509", "-noout", "-pubkey", "-in", _file_path(cert))
    try:
        private_key = (
            _token_public_key("device-id") if in_token else _openssl("pkey", "-pubout", "-in", _file_path(key))
        )
    except (KeyError, OSError):
        return skipped()  # key-pairs-read reports why the key cannot be loaded
    if not certificate_key or certificate_key != private_key:
        return error("certificate 'device-id' does not match its private key 'device-id'")
    return ok()


def identity_certificate_expiry(device: Device) -> Outcome:
    cert = _preloaded(device, "certd", "preloaded_certs").get("device-id")
    if not cert:
        return skipped()
    path = _file_path(cert)
    if _not_after(path) is None:
        return error(f"device identity certificate at {path} cannot be read")
    return certificate_validity(path, "device identity certificate", "device-id")


def running(service: str):
    def run(_device: Device) -> Outcome:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
                client.settimeout(5)
                client.connect(AZIOT_SOCKETS[service])
        except OSError as failure:
            return error(f"could not connect to {AZIOT_SOCKETS[service]}: {failure.strerror or failure}")
        return ok()

    return run


def endpoint_reachable(url: str) -> Outcome:
    """A TLS handshake with the host of ``url``, trusting the system store as the runtime does."""
    endpoint = urlsplit(url)
    try:
        _tls_handshake(endpoint.hostname, endpoint.port or 443)
    except (OSError, ssl.SSLError) as failure:
        return error(f"could not connect to {endpoint.netloc}: {failure}")
    return ok()


def hub_reachable(backup: Path) -> Outcome:
    """The hub the provisioning backup names, over TLS."""
    try:
        hub = json.loads(backup.read_text())["hub"]
    except (OSError, ValueError, KeyError):
        return skipped("the device is not provisioned yet")
    return endpoint_reachable(f"https://{hub}/")


def management_socket_answers(uri: str) -> Outcome:
    if not uri.startswith("unix://"):
        return error(f"configuration has an invalid management URI {uri!r}")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(5)
            client.connect(uri.removeprefix("unix://"))
    except OSError as failure:
        return error(f"could not connect to {uri}: {failure.strerror or failure}")
    return ok()


def dps_endpoint(device: Device) -> Outcome:
    if device.settings is None or device.settings.source != "dps":
        return skipped()
    return endpoint_reachable(device.settings.global_endpoint)


def iothub_https(_device: Device) -> Outcome:
    return hub_reachable(DEVICE_INFO)


def management_uri(device: Device) -> Outcome:
    return management_socket_answers((device.service_config("edged").get("connect") or {}).get("management_uri", ""))


def container_engine(_device) -> Outcome:
    if subprocess.run(["getent", "group", "docker"], capture_output=True, check=False).returncode != 0:
        return error("could not find a container engine: the docker group does not exist")
    return ok()


def not_applicable(reason: str):
    return lambda _device: skipped(reason)


NO_ENGINE = "the edgefleet test double has no container engine"
NO_INTERNET = "the edgefleet test double does not compare with Microsoft's servers"

CHECKS = [
    (AZIOT_CONFIG, "keyd-config-well-formed", "keyd configuration is well-formed", well_formed("keyd")),
    (AZIOT_CONFIG, "certd-config-well-formed", "certd configuration is well-formed", well_formed("certd")),
    (AZIOT_CONFIG, "tpmd-config-well-formed", "tpmd configuration is well-formed", well_formed("tpmd")),
    (AZIOT_CONFIG, "identityd-config-well-formed", "identityd configuration is well-formed", well_formed("identityd")),
    (
        AZIOT_CONFIG,
        "configs-up-to-date",
        "daemon configurations up-to-date with config.toml",
        up_to_date(("keyd", "certd", "identityd", "tpmd")),
    ),
    (AZIOT_CONFIG, "hostname", "identityd config toml file specifies a valid hostname", valid_hostname),
    (AZIOT_CONFIG, "aziot-version", "aziot-identity-service package is up-to-date", not_applicable(NO_INTERNET)),
    (AZIOT_CONFIG, "host-local-time", "host time is close to reference time", not_applicable(NO_INTERNET)),
    (
        AZIOT_CONFIG,
        "identity-certificate-expiry",
        "production readiness: identity certificates expiry",
        identity_certificate_expiry,
    ),
    (AZIOT_CONFIG, "certs-preloaded", "preloaded certificates are valid", certs_preloaded),
    (AZIOT_CONFIG, "keyd-running", "keyd is running", running("keyd")),
    (AZIOT_CONFIG, "certd-running", "certd is running", running("certd")),
    (AZIOT_CONFIG, "identityd-running", "identityd is running", running("identityd")),
    (
        AZIOT_CONFIG,
        "certs-read",
        "all preloaded certificates readable by aziotcs",
        readable("certd", "preloaded_certs", "aziotcs"),
    ),
    (
        AZIOT_CONFIG,
        "key-pairs-read",
        "all preloaded key pairs readable by aziotks",
        key_pairs_read,
    ),
    (AZIOT_CONFIG, "certs-match-private-keys", "all preloaded certificates match their private keys", certs_match_keys),
    (
        AZIOT_CONNECTIVITY,
        "host-connect-dps-endpoint",
        "host can connect to and perform TLS handshake with DPS endpoint",
        dps_endpoint,
    ),
    (
        AZIOT_CONNECTIVITY,
        "host-connect-iothub-https",
        "host can connect to and perform TLS handshake with iothub HTTPS / WebSockets port",
        iothub_https,
    ),
    (
        AZIOT_CONNECTIVITY,
        "host-connect-iothub-amqp",
        "host can connect to and perform TLS handshake with iothub AMQP port",
        not_applicable("the lab hub speaks HTTPS only"),
    ),
    (
        AZIOT_CONNECTIVITY,
        "host-connect-iothub-mqtt",
        "host can connect to and perform TLS handshake with iothub MQTT port",
        not_applicable("the lab hub speaks HTTPS only"),
    ),
    (EDGE_CONFIG, "aziot-edged-config-well-formed", "aziot-edged configuration is well-formed", well_formed("edged")),
    (EDGE_CONFIG, "config-up-to-date", "configuration up-to-date with config.toml", up_to_date(("edged",))),
    (EDGE_CONFIG, "container-engine-uri", "container engine is installed and functional", container_engine),
    (
        EDGE_CONFIG,
        "connect-management-uri",
        "configuration has correct URIs for daemon mgmt endpoint",
        management_uri,
    ),
    (EDGE_CONFIG, "aziot-edge-version", "aziot-edge package is up-to-date", not_applicable(NO_INTERNET)),
    (EDGE_CONFIG, "container-engine-logrotate", "production readiness: logs policy", not_applicable(NO_ENGINE)),
    (
        EDGE_CONNECTIVITY,
        "container-default-connect-upstream-https",
        "container on the default network can connect to upstream HTTPS / WebSockets port",
        not_applicable(NO_ENGINE),
    ),
]


# ---- running and printing ---------------------------------------------------------------------------------


def run_checks(device, dont_run: set[str], checks=None) -> list[tuple[str, str, str, Outcome]]:
    results = []
    fatal = False
    for section, check_id, description, check in checks or CHECKS:
        if check_id in dont_run:
            outcome = Outcome("ignored")
        elif fatal or device is None:
            outcome = skipped("skipping because of previous failures")
        else:
            try:
                outcome = check(device)
            except (OSError, ValueError, KeyError, tomllib.TOMLDecodeError, subprocess.SubprocessError) as failure:
                outcome = error(str(failure))
        results.append((section, check_id, description, outcome))
    return results


def text_report(results, *, verbose: bool, warnings_as_errors: bool, generation: str = "1.2+") -> tuple[str, int]:
    """1.2+ puts a blank line before each section; 1.1 only between sections."""
    lines: list[str] = []
    section = None
    counts = {"ok": 0, "warning": 0, "error": 0}
    for result_section, _check_id, description, outcome in results:
        if outcome.result in ("skipped", "ignored") and not verbose:
            continue
        if result_section != section:
            section = result_section
            lines += ["", section, "-" * len(section)]
        if outcome.result in ("skipped", "ignored"):
            lines.append(f"{SYMBOLS['warning'][0]} {description} - Warning")
            lines += [f"    {detail}" for detail in outcome.details or ["skipped"]]
            continue
        result = "error" if outcome.result == "fatal" else outcome.result
        if result == "warning" and warnings_as_errors:
            result = "error"
        counts[result] += 1
        symbol, word = SYMBOLS[result]
        lines.append(f"{symbol} {description} - {word}")
        if result != "ok":
            lines += [f"    {detail}" for detail in outcome.details]
    if generation == "1.1" and lines and lines[0] == "":
        lines.pop(0)
    lines.append("")
    lines.append(f"{counts['ok']} check(s) succeeded.")
    if counts["warning"]:
        lines.append(f"{counts['warning']} check(s) raised warnings. Re-run with --verbose for more details.")
    if counts["error"]:
        lines.append(f"{counts['error']} check(s) raised errors. Re-run with --verbose for more details.")
    return "\n".join(lines) + "\n", 1 if counts["error"] else 0


def json_report(
    results, *, warnings_as_errors: bool, version_key: str = "aziot_edged_version", version: str = EDGE_VERSION
) -> tuple[str, int]:
    machine = platform.machine()
    body = {
        "additional_info": {
            version_key: version,
            "now": datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z"),
            "os": {"id": "debian", "version_id": "12", "arch": machine, "bitness": 64},
        },
        "checks": {
            check_id: {"result": outcome.to_json(), "additional_info": {}} for _s, check_id, _d, outcome in results
        },
    }
    failing = {"error", "fatal"} | ({"warning"} if warnings_as_errors else set())
    status = 1 if any(outcome.result in failing for *_rest, outcome in results) else 0
    return json.dumps(body) + "\n", status


def parse_options(args: list[str]):
    """(output, verbose, warnings_as_errors, dont_run), or an error message."""
    output, verbose, warnings_as_errors, dont_run = "text", False, False, set()
    rest = list(args)
    while rest:
        option = rest.pop(0)
        if option in ("-o", "--output") and rest:
            output = rest.pop(0)
        elif option.startswith("--output="):
            output = option.split("=", 1)[1]
        elif option == "--verbose":
            verbose = True
        elif option == "--warnings-as-errors":
            warnings_as_errors = True
        elif option == "--dont-run":
            while rest and not rest[0].startswith("-"):
                dont_run.add(rest.pop(0))
        else:
            return f"error: unexpected argument '{option}' found"
    if output not in ("text", "json"):
        return f"error: invalid value '{output}' for '--output <OUTPUT>'"
    return output, verbose, warnings_as_errors, dont_run


def report(results, options, *, generation: str = "1.2+") -> int:
    output, verbose, warnings_as_errors, _dont_run = options
    if output == "json":
        if generation == "1.1":
            text, status = json_report(
                results,
                warnings_as_errors=warnings_as_errors,
                version_key="iotedged_version",
                version=IOTEDGE_1_1_VERSION,
            )
        else:
            text, status = json_report(results, warnings_as_errors=warnings_as_errors)
    else:
        text, status = text_report(
            results, verbose=verbose, warnings_as_errors=warnings_as_errors, generation=generation
        )
    sys.stdout.write(text)
    return status


def main(args: list[str]) -> int:
    options = parse_options(args)
    if isinstance(options, str):
        print(options, file=sys.stderr)
        return 2
    dont_run = options[3]
    try:
        device = Device() if os.geteuid() == 0 else None
    except OSError:
        device = None
    if device is None:
        fatal = "Could not open IoT Edge configuration. You might need to run this command as root."
        results = [
            (AZIOT_CONFIG, "keyd-config-well-formed", "keyd configuration is well-formed", Outcome("fatal", [fatal]))
        ]
        results += run_checks(None, dont_run)[1:]
    else:
        results = run_checks(device, dont_run)
    return report(results, options)
