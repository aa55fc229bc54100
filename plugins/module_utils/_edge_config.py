# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# PRIVATE to the edgefleet.iotedge collection. Do not use this from other collections:
# it may change at any time.

"""The device's IoT Edge configuration from inventory settings: /etc/aziot/config.toml (1.2+) or
/etc/iotedge/config.yaml (1.1), as complete text (device-side.md 1.2-1.10 and 2).

No value is pasted into the text: every setting is validated, then the document is built as data and written by a
real serializer (tomli-w for TOML, PyYAML for YAML), so a quote, a newline, ``[section]`` or ``#`` in a value can only
ever end up inside that value. Errors name the inventory variable to change (``edgefleet_<setting>``) and never
repeat secret values (EST password, PKCS#11 URIs, which may carry a PIN).

Nothing here imports AnsibleModule; the edgefleet.iotedge.iotedge_config filter calls render_edge_config().
"""

from __future__ import annotations

import re
import traceback
from urllib.parse import quote, urlsplit

from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki import registration_id_problem
from ansible_collections.edgefleet.iotedge.plugins.module_utils._shown import shown

try:
    # A TOML writer: the standard library reads TOML (tomllib) but cannot write it.
    import tomli_w
except ImportError:
    HAS_TOMLI_W = False
    TOMLI_W_IMPORT_ERROR: str | None = traceback.format_exc()
else:
    HAS_TOMLI_W = True
    TOMLI_W_IMPORT_ERROR = None

try:
    import yaml
except ImportError:
    HAS_YAML = False
    YAML_IMPORT_ERROR: str | None = traceback.format_exc()
else:
    HAS_YAML = True
    YAML_IMPORT_ERROR = None

GENERATIONS = ("1.2+", "1.1")
HEADER = "# Managed by Ansible (edgefleet.iotedge). Manual edits are overwritten on the next run.\n"
DEFAULT_GLOBAL_ENDPOINT = "https://global.azure-devices-provisioning.net"
DEFAULT_AGENT_IMAGES = {
    "1.2+": "mcr.microsoft.com/azureiotedge-agent:1.5",
    "1.1": "mcr.microsoft.com/azureiotedge-agent:1.1",
}
CERT_METHODS = ("file", "est")
KEY_METHODS = ("file", "pkcs11")
REPROVISIONING_MODES = ("Dynamic", "AlwaysOnStartup", "OnErrorOnly")
DEFAULT_REPROVISIONING_MODE = "Dynamic"
# ``[provisioning.attestation.identity_cert.auto_renew]`` as the 1.4+ template writes it.
AUTO_RENEW = {"rotate_key": True, "threshold": "80%", "retry": "4%"}
EDGE_CA_SOURCES = ("quickstart", "fleet")
# The runtime's own Edge CA when config.toml has no [edge_ca] (1.2+ apply.rs; 1.1's auto_generated_ca_lifetime_days).
QUICKSTART_EDGE_CA_DAYS = 90
# A renewal policy (cert_renewal's Policy): N% of the lifetime (0 < N < 100), or N minutes or days before the end.
RENEWAL_POLICY = re.compile(r"([0-9]+)(%|min|day)")

# Every setting the renderer knows (the role variable name minus ``edgefleet_``).
SETTINGS = (
    "generation",
    "registration_id",
    "iotedge_hostname",
    "dps_global_endpoint",
    "dps_id_scope",
    "iotedge_identity_cert_method",
    "iotedge_identity_cert_path",
    "iotedge_identity_key_method",
    "iotedge_identity_key_path",
    "iotedge_identity_key_pkcs11_uri",
    "iotedge_pkcs11_lib_path",
    "iotedge_pkcs11_base_slot",
    "iotedge_est_url",
    "iotedge_est_trusted_certs",
    "iotedge_est_username",
    "iotedge_est_password",
    "iotedge_est_bootstrap_cert_path",
    "iotedge_est_bootstrap_key_path",
    "iotedge_est_bootstrap_key_pkcs11_uri",
    "iotedge_est_subject",
    "iotedge_est_expiry_days",
    "iotedge_est_auto_renew",
    "iotedge_est_auto_renew_rotate_key",
    "iotedge_est_auto_renew_threshold",
    "iotedge_est_auto_renew_retry",
    "iotedge_est_identity_auto_renew_rotate_key",
    "iotedge_est_identity_auto_renew_threshold",
    "iotedge_est_identity_auto_renew_retry",
    "iotedge_auto_reprovisioning_mode",
    "iotedge_always_reprovision_on_startup",
    "iotedge_dynamic_reprovisioning",
    "iotedge_agent_image",
    "iotedge_trust_bundle_cert_path",
    "edge_ca",
    "iotedge_edge_ca_cert_path",
    "iotedge_edge_ca_key_path",
    "iotedge_edge_ca_expiry_days",
    "iotedge_edge_ca_renew_threshold",
    "iotedge_edge_ca_renew_retry",
)
# Each setting is the inventory variable of the same name with this prefix (the iotedge_settings lookup reads them).
VARIABLE_PREFIX = "edgefleet_"
# Settings the role derives from another variable: an error names the variable the user sets.
SETTING_VARIABLES = {
    "iotedge_identity_cert_path": "edgefleet_iotedge_cert_dir",
    "iotedge_identity_key_path": "edgefleet_iotedge_secrets_dir",
    "iotedge_edge_ca_cert_path": "edgefleet_iotedge_cert_dir",
    "iotedge_edge_ca_key_path": "edgefleet_iotedge_secrets_dir",
}
# Never repeated in an error message.
SECRET_SETTINGS = frozenset(
    (
        "iotedge_est_username",
        "iotedge_est_password",
        "iotedge_identity_key_pkcs11_uri",
        "iotedge_pkcs11_base_slot",
        "iotedge_est_bootstrap_key_pkcs11_uri",
    )
)
# Subject attributes an EST certificate may carry beside its CN (the registration id), as certd names them.
SUBJECT_ATTRIBUTE = re.compile(r"[A-Za-z][A-Za-z0-9]{0,15}")

# RFC 1123 host names: labels of letters, digits and '-', not starting or ending with '-'.
# Every pattern is applied with fullmatch: '$' would also match before a trailing newline.
HOSTNAME_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
ID_SCOPE_PATTERN = re.compile(r"[A-Za-z0-9]+")
# A container image reference as Docker's distribution/reference grammar has it:
# [registry[:port]/]path-component(/path-component)*[:tag][@algorithm:hex].
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
IMAGE_PATTERN = re.compile(
    r"(?:(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*)(?::[0-9]+)?/)?"
    + _PATH_COMPONENT
    + r"(?:/"
    + _PATH_COMPONENT
    + r")*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?"
)
# Whitespace, quotes, backslash, controls: never part of a URL or URI the runtime should get.
_URL_FORBIDDEN = re.compile(r"[\s\"'\\<>`{}|^\x00-\x1f\x7f]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Characters kept as they are in a file URI path; everything else is percent-encoded.
_FILE_URI_SAFE = "/-._~!$&'()*+,;=:@"
_BOOLEANS = {
    "true": True,
    "yes": True,
    "on": True,
    "1": True,
    "false": False,
    "no": False,
    "off": False,
    "0": False,
}
# PyYAML's line folding only starts past this width: a value stays on one line.
_YAML_WIDTH = 1 << 30


def setting_variables() -> dict:
    """The inventory variable of each setting that has one of its own: ``{setting: edgefleet_<setting>}``."""
    return {name: VARIABLE_PREFIX + name for name in SETTINGS if name not in SETTING_VARIABLES}


class EdgeConfigError(Exception):
    """A setting the renderer cannot use: ``edgefleet_<setting>: <problem>. <how to fix>``."""

    def __init__(self, setting: str, message: str):
        self.setting = setting
        self.variable = SETTING_VARIABLES.get(setting, VARIABLE_PREFIX + setting)
        self.message = message
        super().__init__(f"{self.variable}: {message}")


class EdgeConfigLibraryError(Exception):
    """A Python library the controller needs for rendering is missing."""


# ---- reading settings ---------------------------------------------------------------------------------------


def _type_name(value) -> str:
    return type(value).__name__


def _plain(value: str) -> str:
    """A plain ``str`` (Ansible passes str subclasses that carry tags); no lone surrogates, which UTF-8 cannot hold."""
    text = str.__str__(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("has characters that cannot be written as UTF-8") from None
    return text


class _Settings:
    def __init__(self, settings):
        unknown = sorted(str(key) for key in settings if key not in SETTINGS)
        if unknown:
            first = unknown[0]
            if first.startswith("edgefleet_") and first[len("edgefleet_") :] in SETTINGS:
                raise EdgeConfigError(
                    first[len("edgefleet_") :],
                    f"was passed as {first!r}. Settings keys are the role variable names without the "
                    f"'edgefleet_' prefix: use {first[len('edgefleet_') :]!r}",
                )
            others = f" (unknown too: {', '.join(unknown[1:])})" if len(unknown) > 1 else ""
            raise EdgeConfigError(
                first,
                f"is not a setting of edgefleet.iotedge.iotedge_config{others}. Remove it or correct its name; "
                f"the settings are: {', '.join(SETTINGS)}",
            )
        self._settings = settings

    def raw(self, key: str):
        return self._settings.get(key)

    def text(self, key: str) -> str | None:
        """A string setting; None and "" mean unset."""
        value = self._settings.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise EdgeConfigError(key, f"must be a string, got a {_type_name(value)}. Set it to a string")
        try:
            value = _plain(value)
        except ValueError as error:
            raise EdgeConfigError(key, f"{error}. Correct the value") from None
        return value or None

    def choice(self, key: str, choices: tuple, default: str) -> str:
        value = self.text(key)
        if value is None:
            return default
        if value not in choices:
            described = "a value" if key in SECRET_SETTINGS else shown(value)
            raise EdgeConfigError(key, f"{described} is not one of {', '.join(choices)}. Use one of them")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self._settings.get(key)
        if value is None or value == "":
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _BOOLEANS:
            return _BOOLEANS[value.strip().lower()]
        raise EdgeConfigError(key, f"must be a boolean, got {shown(value)}. Use true or false")

    def positive_int(self, key: str) -> int | None:
        value = self._settings.get(key)
        if value is None or value == "":
            return None
        if isinstance(value, str) and re.fullmatch(r"\s*[0-9]+\s*", value):
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise EdgeConfigError(key, f"must be a whole number of days, got {shown(value)}. Use a number such as 365")
        if value <= 0:
            raise EdgeConfigError(
                key,
                f"is {int(value)}; the runtime refuses it ('expiry_days must be greater than 0'). Use a number of days "
                "above 0, or leave it empty for the EST server's default",
            )
        return int(value)


# ---- validating values --------------------------------------------------------------------------------------


def _registration_id(settings: _Settings) -> str | None:
    """Validated with the one DPS rule (module_utils/_pki.py); unset means the runtime uses the cert CN."""
    value = settings.text("registration_id")
    if value is None:
        return None
    problem = registration_id_problem(value)
    if problem:
        raise EdgeConfigError("registration_id", f'{problem}. The default is "{{{{ inventory_hostname | lower }}}}"')
    return value


def _hostname(settings: _Settings, generation: str) -> str | None:
    key = "iotedge_hostname"
    value = settings.text(key)
    if value is None:
        if generation == "1.1":
            raise EdgeConfigError(
                key,
                "is not set, and IoT Edge 1.1's config.yaml needs a hostname. Set it to the device's DNS name, "
                'e.g. "{{ inventory_hostname }}"',
            )
        return None
    labels = value.split(".")
    if len(value) > 253 or not all(HOSTNAME_LABEL.fullmatch(label) for label in labels):
        raise EdgeConfigError(
            key,
            f"{shown(value)} is not a DNS host name (RFC 1123: labels of letters, digits and '-' up to 63 characters, "
            "not starting or ending with '-', joined by dots, 253 characters at most). Use the device's DNS name"
            + ("" if generation == "1.1" else ", or leave it empty to use the machine's hostname"),
        )
    return value


def _url(settings: _Settings, key: str, schemes: tuple, fix: str, default: str | None = None) -> str | None:
    value = settings.text(key)
    if value is None:
        return default
    problem = None
    if _URL_FORBIDDEN.search(value):
        problem = "has whitespace, quotes or other characters a URL cannot have"
    else:
        try:
            parts = urlsplit(value)
            # Reading .port raises ValueError for a port that is not a number from 0 to 65535.
            host, _port = parts.hostname, parts.port
        except ValueError:
            problem = "is not a valid URL"
        else:
            if parts.scheme not in schemes:
                problem = f"is not an {' or '.join(scheme + '://' for scheme in schemes)} URL"
            elif not host:
                problem = "has no host"
            elif parts.username is not None or parts.password is not None:
                problem = "has credentials in it"
    if problem:
        described = "the value" if key in SECRET_SETTINGS else shown(value)
        raise EdgeConfigError(key, f"{described} {problem}. {fix}")
    return value


def _absolute_path(settings: _Settings, key: str, fix: str, required: bool) -> str | None:
    value = settings.text(key)
    if value is None:
        if required:
            raise EdgeConfigError(key, f"is not set. {fix}")
        return None
    return _check_path(key, value, fix)


def _check_path(key: str, value: str, fix: str) -> str:
    if not value.startswith("/") or value.startswith("//"):
        raise EdgeConfigError(key, f"{shown(value)} is not an absolute path on the device. {fix}")
    if _CONTROL.search(value):
        raise EdgeConfigError(key, f"{shown(value)} has control characters (newline, tab, ...). {fix}")
    return value


def file_uri(path: str) -> str:
    """``file:///abs/path`` with everything outside RFC 3986 path characters percent-encoded (device-side.md 1.10)."""
    return "file://" + quote(path, safe=_FILE_URI_SAFE)


def _pkcs11_uri(settings: _Settings, key: str, fix: str) -> str:
    value = settings.text(key)
    if value is None:
        raise EdgeConfigError(key, f"is not set. {fix}")
    # The value may hold a PIN (pin-value=...): say what is wrong, never what it is.
    if not value.startswith("pkcs11:"):
        raise EdgeConfigError(key, f"does not start with 'pkcs11:'. {fix}")
    if _URL_FORBIDDEN.sub("", value) != value:
        raise EdgeConfigError(
            key, f"has whitespace, quotes or control characters; a PKCS#11 URI percent-encodes them (%20). {fix}"
        )
    return value


def _free_text(settings: _Settings, key: str, fix: str) -> str | None:
    """Any text (a password may contain anything); the serializer escapes it."""
    value = settings.text(key)
    if value is not None and "\x00" in value:
        raise EdgeConfigError(key, f"has a NUL character. {fix}")
    return value


def _pair(settings: _Settings, first: tuple, second: tuple):
    """Two settings that go together: both or neither. Each item is (key, value)."""
    (first_key, first_value), (second_key, second_value) = first, second
    if (first_value is None) != (second_value is None):
        missing, given = (first_key, second_key) if first_value is None else (second_key, first_key)
        raise EdgeConfigError(missing, f"is not set but edgefleet_{given} is. Set both of them, or neither")
    return first_value, second_value


# ---- the documents ------------------------------------------------------------------------------------------


def _common(settings: _Settings, generation: str) -> dict:
    scope = settings.text("dps_id_scope")
    if scope is None:
        raise EdgeConfigError(
            "dps_id_scope",
            "is not set. Set it to the ID scope of your Device Provisioning Service (Azure portal: the DPS overview "
            "page, or `az iot dps show --name <dps> --query properties.idScope -o tsv`), e.g. 0ne00C0FFEE",
        )
    if not ID_SCOPE_PATTERN.fullmatch(scope):
        raise EdgeConfigError(
            "dps_id_scope",
            f"{shown(scope)} is not a DPS ID scope (letters and digits only, like 0ne00C0FFEE). Copy it from the DPS "
            "overview page or `az iot dps show --name <dps> --query properties.idScope -o tsv`",
        )
    return {
        "registration_id": _registration_id(settings),
        "hostname": _hostname(settings, generation),
        "global_endpoint": _url(
            settings,
            "dps_global_endpoint",
            ("https",),
            f"Use the DPS global device endpoint, {DEFAULT_GLOBAL_ENDPOINT}",
            default=DEFAULT_GLOBAL_ENDPOINT,
        ),
        "id_scope": scope,
        "agent_image": _agent_image(settings, generation),
    }


def _agent_image(settings: _Settings, generation: str) -> str:
    key = "iotedge_agent_image"
    value = settings.text(key)
    if value is None:
        return DEFAULT_AGENT_IMAGES[generation]
    if not IMAGE_PATTERN.fullmatch(value):
        raise EdgeConfigError(
            key,
            f"{shown(value)} is not a container image reference. Use one like {DEFAULT_AGENT_IMAGES[generation]}, or "
            "leave it empty for that default",
        )
    return value


def _identity_cert_path(settings: _Settings) -> str:
    key = "iotedge_identity_cert_path"
    fix = (
        "Set it to an absolute directory on the device for the identity full-chain certificate, or leave it empty "
        "for the runtime's default"
    )
    return file_uri(_absolute_path(settings, key, fix, required=True))


def _identity_key_path(settings: _Settings) -> str:
    key = "iotedge_identity_key_path"
    fix = (
        "Set it to an absolute directory on the device for the identity private key, or leave it empty for the "
        "runtime's default"
    )
    return file_uri(_absolute_path(settings, key, fix, required=True))


def _render_1_2(settings: _Settings) -> str:
    common = _common(settings, "1.2+")
    cert_method = settings.choice("iotedge_identity_cert_method", CERT_METHODS, "file")
    key_method = settings.choice("iotedge_identity_key_method", KEY_METHODS, "file")
    mode = settings.choice("iotedge_auto_reprovisioning_mode", REPROVISIONING_MODES, DEFAULT_REPROVISIONING_MODE)
    trust_bundle = _absolute_path(
        settings,
        "iotedge_trust_bundle_cert_path",
        "Set it to the absolute path of a PEM bundle of CA certificates on the device, or leave it empty",
        required=False,
    )

    # Top-level keys first: TOML puts any key written after a [table] header into that table (device-side.md 1.2).
    document: dict = {}
    if common["hostname"] is not None:
        document["hostname"] = common["hostname"]
    if trust_bundle is not None:
        document["trust_bundle_cert"] = file_uri(trust_bundle)
    document["auto_reprovisioning_mode"] = mode

    attestation: dict = {"method": "x509"}
    if common["registration_id"] is not None:
        attestation["registration_id"] = common["registration_id"]
    cert_issuance = None
    if cert_method == "file":
        attestation["identity_cert"] = _identity_cert_path(settings)
        if key_method == "file":
            attestation["identity_pk"] = _identity_key_path(settings)
        else:
            attestation["identity_pk"] = _pkcs11_uri(
                settings,
                "iotedge_identity_key_pkcs11_uri",
                "Set it to the PKCS#11 URI of the identity key, e.g. pkcs11:token=edge;object=device-id?pin-value=...",
            )
    else:
        attestation["identity_cert"], cert_issuance = _est(settings, common["registration_id"])
    document["provisioning"] = {
        "source": "dps",
        "global_endpoint": common["global_endpoint"],
        "id_scope": common["id_scope"],
        "attestation": attestation,
    }
    if cert_issuance is not None:
        document["cert_issuance"] = cert_issuance
    # keyd needs the PKCS#11 library for the identity key or the EST bootstrap key in a token.
    if key_method == "pkcs11" or settings.text("iotedge_est_bootstrap_key_pkcs11_uri") is not None:
        document["aziot_keys"] = _aziot_keys(settings)
    document["agent"] = {"name": "edgeAgent", "type": "docker", "config": {"image": common["agent_image"]}}
    edge_ca = _edge_ca_1_2(settings)
    if edge_ca is not None:
        document["edge_ca"] = edge_ca

    if not HAS_TOMLI_W:
        raise EdgeConfigLibraryError(
            "Rendering /etc/aziot/config.toml needs the Python library tomli-w on the controller: install it with "
            "`pip install tomli-w` (it is in the collection's requirements.txt). Import error: "
            + str(TOMLI_W_IMPORT_ERROR).strip().splitlines()[-1]
        )
    return HEADER + "\n" + tomli_w.dumps(document)


def _edge_ca_paths(settings: _Settings) -> tuple[str, str]:
    """Where the role puts the fleet-issued Edge CA's full chain and key on the device."""
    fix = "Set it to an absolute directory on the device, or leave it empty for the runtime's default"
    return (
        _absolute_path(settings, "iotedge_edge_ca_cert_path", fix, required=True),
        _absolute_path(settings, "iotedge_edge_ca_key_path", fix, required=True),
    )


def _quickstart_days(settings: _Settings, limit: int) -> int:
    key = "iotedge_edge_ca_expiry_days"
    value = settings.raw(key)
    if value is None or value == "":
        return QUICKSTART_EDGE_CA_DAYS
    if isinstance(value, str) and re.fullmatch(r"\s*[0-9]+\s*", value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= limit:
        raise EdgeConfigError(
            key,
            f"is {shown(value)}; the runtime's own Edge CA lasts a whole number of days from 1 to {limit}. Use one, "
            f"or leave it empty for {QUICKSTART_EDGE_CA_DAYS}",
        )
    return value


def _renewal_policy(settings: _Settings, key: str, default: str) -> str:
    value = settings.text(key) or default
    found = RENEWAL_POLICY.fullmatch(value)
    if found is None or int(found.group(1)) <= 0 or (found.group(2) == "%" and int(found.group(1)) >= 100):
        raise EdgeConfigError(
            key,
            f"{shown(value)} is not a renewal policy the runtime reads. Use a share of the lifetime below 100% "
            f"(e.g. {default}), or a time before the end in minutes or days (e.g. 90min, 7day)",
        )
    return value


def _edge_ca_1_2(settings: _Settings) -> dict | None:
    """[edge_ca]: the fleet's certificate and key as file URIs, or the runtime's own (quickstart) with its lifetime
    and renewal when they differ from the runtime's defaults (none written then, so the file stays as it was)."""
    if settings.choice("edge_ca", EDGE_CA_SOURCES, "quickstart") == "fleet":
        cert, key = _edge_ca_paths(settings)
        return {"cert": file_uri(cert), "pk": file_uri(key)}
    days = _quickstart_days(settings, 2**32 - 1)
    renewal = {
        "rotate_key": True,  # the runtime's own Edge CA is renewed with a new key (its template says it must)
        "threshold": _renewal_policy(settings, "iotedge_edge_ca_renew_threshold", AUTO_RENEW["threshold"]),
        "retry": _renewal_policy(settings, "iotedge_edge_ca_renew_retry", AUTO_RENEW["retry"]),
    }
    if days == QUICKSTART_EDGE_CA_DAYS and renewal == AUTO_RENEW:
        return None
    edge_ca: dict = {"auto_generated_edge_ca_expiry_days": days}
    if renewal != AUTO_RENEW:
        edge_ca["auto_renew"] = renewal
    return edge_ca


def _edge_ca_1_1(settings: _Settings) -> dict | None:
    """1.1's ``certificates``: the fleet's device CA (its full chain also as the trusted CAs), or the quickstart one's
    lifetime when it differs from 90 days. 1.1 cannot renew its own: a renewal policy is an error, not dropped."""
    for key, default in (("iotedge_edge_ca_renew_threshold", "80%"), ("iotedge_edge_ca_renew_retry", "4%")):
        value = settings.text(key)
        if value not in (None, default):
            raise EdgeConfigError(
                key,
                f"is {shown(value)}, and IoT Edge 1.1 does not renew its Edge CA (edgefleet_generation is 1.1). "
                f"Leave it at {default}, or move the device to 1.2+",
            )
    if settings.choice("edge_ca", EDGE_CA_SOURCES, "quickstart") == "fleet":
        cert, key = _edge_ca_paths(settings)
        return {"device_ca_cert": cert, "device_ca_pk": key, "trusted_ca_certs": cert}
    days = _quickstart_days(settings, 65535)
    return None if days == QUICKSTART_EDGE_CA_DAYS else {"auto_generated_ca_lifetime_days": days}


def _aziot_keys(settings: _Settings) -> dict:
    lib_key, slot_key = "iotedge_pkcs11_lib_path", "iotedge_pkcs11_base_slot"
    lib = settings.text(lib_key)
    slot = settings.text(slot_key)
    if lib is None or slot is None:
        missing = lib_key if lib is None else slot_key
        raise EdgeConfigError(
            missing,
            "is not set, and a key in a PKCS#11 token (edgefleet_iotedge_identity_key_method: pkcs11, or "
            "edgefleet_iotedge_est_bootstrap_key_pkcs11_uri) needs both "
            f"edgefleet_{lib_key} and edgefleet_{slot_key}. Set the library path (e.g. /usr/lib/libmypkcs11.so) and "
            "the base slot URI (e.g. pkcs11:slot-id=0?pin-value=...)",
        )
    lib = _check_path(lib_key, lib, "Set it to the absolute path of the PKCS#11 library on the device")
    slot = _pkcs11_uri(settings, slot_key, "Set it to the slot URI, e.g. pkcs11:slot-id=0?pin-value=...")
    return {"pkcs11_lib_path": lib, "pkcs11_base_slot": slot}


def _est(settings: _Settings, registration_id: str | None):
    """The identity certificate issued by EST: the attestation's identity_cert table and [cert_issuance]."""
    if registration_id is None:
        raise EdgeConfigError(
            "registration_id",
            "is empty, and an identity certificate issued by EST (edgefleet_iotedge_identity_cert_method: est) "
            'takes its common name from it. Set it, e.g. "{{ inventory_hostname | lower }}"',
        )
    url = _url(
        settings,
        "iotedge_est_url",
        ("https", "http"),
        "Set it to the EST server's URL, e.g. https://est.example.com/.well-known/est (http:// works, but the "
        "runtime warns that unencrypted HTTP exposes the device to man-in-the-middle attacks)",
    )
    if url is None:
        raise EdgeConfigError(
            "iotedge_est_url",
            "is not set, and edgefleet_iotedge_identity_cert_method is est. Set it to the EST server's URL, "
            "e.g. https://est.example.com/.well-known/est",
        )
    identity_cert: dict = {"method": "est", "url": url}
    subject = _est_subject(settings)
    if subject:
        # The CSR's subject is the registration id as CN with these beside it (apply.rs CsrSubject::Subject).
        identity_cert["subject"] = {"CN": registration_id, **subject}
    else:
        identity_cert["common_name"] = registration_id
    expiry_days = settings.positive_int("iotedge_est_expiry_days")
    if expiry_days is not None:
        identity_cert["expiry_days"] = expiry_days
    if settings.boolean("iotedge_est_auto_renew", False):
        identity_cert["auto_renew"] = _auto_renew_table(settings, "iotedge_est_auto_renew")

    est: dict = {}
    trusted = settings.raw("iotedge_est_trusted_certs")
    if trusted not in (None, ""):
        fix = "Set it to a list of absolute paths of CA certificates on the device that the EST server's TLS chains to"
        if isinstance(trusted, str) or not isinstance(trusted, (list, tuple)):
            raise EdgeConfigError(
                "iotedge_est_trusted_certs", f"must be a list of paths, got a {_type_name(trusted)}. {fix}"
            )
        uris = []
        for item in trusted:
            if not isinstance(item, str):
                raise EdgeConfigError("iotedge_est_trusted_certs", f"has a {_type_name(item)} item, not a path. {fix}")
            try:
                path = _plain(item)
            except ValueError as error:
                raise EdgeConfigError("iotedge_est_trusted_certs", f"has an item that {error}. {fix}") from None
            uris.append(file_uri(_check_path("iotedge_est_trusted_certs", path, fix)))
        if uris:
            est["trusted_certs"] = uris
    auth: dict = {}
    username, password = _pair(
        settings,
        ("iotedge_est_username", _free_text(settings, "iotedge_est_username", "Set the EST user name")),
        ("iotedge_est_password", _free_text(settings, "iotedge_est_password", "Set the EST password")),
    )
    if username is not None:
        auth.update(username=username, password=password)
    path_fix = "Set it to an absolute path on the device"
    key_in_token = settings.text("iotedge_est_bootstrap_key_pkcs11_uri") is not None
    if key_in_token and settings.text("iotedge_est_bootstrap_key_path") is not None:
        raise EdgeConfigError(
            "iotedge_est_bootstrap_key_pkcs11_uri",
            "and edgefleet_iotedge_est_bootstrap_key_path are both set: the bootstrap key is in a file or in a "
            "PKCS#11 token. Set one of them",
        )
    bootstrap_key_setting = "iotedge_est_bootstrap_key_pkcs11_uri" if key_in_token else "iotedge_est_bootstrap_key_path"
    bootstrap_key_value = (
        _pkcs11_uri(settings, bootstrap_key_setting, "Set it to the PKCS#11 URI of the bootstrap key")
        if key_in_token
        else _absolute_path(settings, bootstrap_key_setting, path_fix, required=False)
    )
    bootstrap_cert, bootstrap_key = _pair(
        settings,
        (
            "iotedge_est_bootstrap_cert_path",
            _absolute_path(settings, "iotedge_est_bootstrap_cert_path", path_fix, required=False),
        ),
        (bootstrap_key_setting, bootstrap_key_value),
    )
    if bootstrap_cert is not None:
        auth.update(
            bootstrap_identity_cert=file_uri(bootstrap_cert),
            bootstrap_identity_pk=bootstrap_key if key_in_token else file_uri(bootstrap_key),
        )
    if auth:
        est["auth"] = auth
    identity_renewal = _auto_renew_table(settings, "iotedge_est_identity_auto_renew")
    if identity_renewal != AUTO_RENEW:
        # Written only when it is not the runtime's default, which certd then leaves out too.
        est["identity_auto_renew"] = identity_renewal
    est["urls"] = {"default": url}
    return identity_cert, {"est": est}


def _auto_renew_table(settings: _Settings, prefix: str) -> dict:
    """An auto_renew table (cert_renewal's AutoRenewConfig) from <prefix>_rotate_key, _threshold and _retry."""
    return {
        "rotate_key": settings.boolean(f"{prefix}_rotate_key", AUTO_RENEW["rotate_key"]),
        "threshold": _renewal_policy(settings, f"{prefix}_threshold", AUTO_RENEW["threshold"]),
        "retry": _renewal_policy(settings, f"{prefix}_retry", AUTO_RENEW["retry"]),
    }


def _est_subject(settings: _Settings) -> dict:
    """The subject attributes beside the CN (an EST server that wants O, OU, C...); never CN itself."""
    key = "iotedge_est_subject"
    value = settings.raw(key)
    fix = 'Give a mapping of attribute to value, e.g. {O: "Contoso", C: "US"}; the CN is the registration id'
    if value in (None, "", {}):
        return {}
    if not isinstance(value, dict):
        raise EdgeConfigError(key, f"must be a mapping, got a {_type_name(value)}. {fix}")
    subject = {}
    for name, text in value.items():
        if not isinstance(name, str) or not SUBJECT_ATTRIBUTE.fullmatch(name):
            raise EdgeConfigError(key, f"has the attribute name {shown(name)}, which is not one. {fix}")
        if name.upper() == "CN":
            raise EdgeConfigError(key, f"sets CN, which is always the registration id. Remove it. {fix}")
        if not isinstance(text, str) or not text or len(text) > 64 or _CONTROL.search(text):
            raise EdgeConfigError(
                key, f"{name} must be text of 1 to 64 characters without control characters, got {shown(text)}"
            )
        subject[name.upper()] = text
    return subject


def _refuse_for_1_1(settings: _Settings) -> None:
    """A choice IoT Edge 1.1 cannot do is an error, not silently dropped."""
    cert_method = settings.choice("iotedge_identity_cert_method", CERT_METHODS, "file")
    if cert_method != "file":
        raise EdgeConfigError(
            "iotedge_identity_cert_method",
            f"is {cert_method!r}, and certificates issued by EST need IoT Edge 1.2+ (edgefleet_generation is 1.1). "
            "Use file with 1.1, or move the device to 1.2+",
        )
    key_method = settings.choice("iotedge_identity_key_method", KEY_METHODS, "file")
    if key_method != "file":
        raise EdgeConfigError(
            "iotedge_identity_key_method",
            f"is {key_method!r}, and PKCS#11 keys need IoT Edge 1.2+ (edgefleet_generation is 1.1). "
            "Use file with 1.1, or move the device to 1.2+",
        )


def _render_1_1(settings: _Settings) -> str:
    _refuse_for_1_1(settings)
    common = _common(settings, "1.1")
    attestation: dict = {"method": "x509"}
    if common["registration_id"] is not None:
        attestation["registration_id"] = common["registration_id"]
    attestation["identity_cert"] = _identity_cert_path(settings)
    attestation["identity_pk"] = _identity_key_path(settings)
    document = {
        "provisioning": {
            "source": "dps",
            "global_endpoint": common["global_endpoint"],
            "scope_id": common["id_scope"],
            "attestation": attestation,
            "always_reprovision_on_startup": settings.boolean("iotedge_always_reprovision_on_startup", True),
            "dynamic_reprovisioning": settings.boolean("iotedge_dynamic_reprovisioning", False),
        },
        "agent": {
            "name": "edgeAgent",
            "type": "docker",
            "env": {},
            "config": {"image": common["agent_image"], "auth": {}},
        },
        "hostname": common["hostname"],
        "connect": {
            "management_uri": "unix:///var/run/iotedge/mgmt.sock",
            "workload_uri": "unix:///var/run/iotedge/workload.sock",
        },
        "listen": {"management_uri": "fd://iotedge.mgmt.socket", "workload_uri": "fd://iotedge.socket"},
        "homedir": "/var/lib/iotedge",
        "moby_runtime": {"uri": "unix:///var/run/docker.sock", "network": "azure-iot-edge"},
    }
    certificates = _edge_ca_1_1(settings)
    if certificates is not None:
        document["certificates"] = certificates
    if not HAS_YAML:
        raise EdgeConfigLibraryError(
            "Rendering /etc/iotedge/config.yaml needs PyYAML on the controller: install it with `pip install pyyaml`. "
            "Import error: " + str(YAML_IMPORT_ERROR).strip().splitlines()[-1]
        )
    return HEADER + "\n" + _yaml_dump(document)


class _Quoted(str):
    """A string value written double-quoted, as the 1.1 template writes them."""


def _quote_strings(value):
    if isinstance(value, dict):
        return {key: _quote_strings(item) for key, item in value.items()}
    if isinstance(value, str):
        return _Quoted(value)
    return value


def _yaml_dump(document: dict) -> str:
    """PyYAML's SafeDumper, keys in the order given, every string value double-quoted.

    Quoting every value means no YAML 1.1/1.2 difference (``yes``, ``0o17``, ``1e3``...) can turn a string into
    something else in the runtime's YAML parser; PyYAML escapes quotes, backslashes, newlines and anything outside
    printable ASCII inside the quotes.
    """

    class Dumper(yaml.SafeDumper):
        pass

    def represent_quoted(dumper, data):
        return dumper.represent_scalar("tag:yaml.org,2002:str", str.__str__(data), style='"')

    Dumper.add_representer(_Quoted, represent_quoted)
    return yaml.dump(
        _quote_strings(document),
        Dumper=Dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=False,
        width=_YAML_WIDTH,
        indent=2,
    )


def render_edge_config(settings) -> str:
    """The full text of /etc/aziot/config.toml (generation 1.2+) or /etc/iotedge/config.yaml (generation 1.1).

    ``settings`` is a flat mapping keyed by the role variable names minus ``edgefleet_`` (see SETTINGS). Raises
    EdgeConfigError naming the variable to change, or EdgeConfigLibraryError when tomli-w or PyYAML is missing.
    Same settings, same text: byte for byte.
    """
    reader = _Settings(settings)
    generation = reader.text("generation")
    if generation not in GENERATIONS:
        described = "is not set" if generation is None else f"is {shown(generation)}"
        raise EdgeConfigError(
            "generation",
            f"{described}, not one of {', '.join(GENERATIONS)}. Set it to the IoT Edge generation of the host",
        )
    if generation == "1.1":
        return _render_1_1(reader)
    return _render_1_2(reader)


__all__ = (
    "DEFAULT_AGENT_IMAGES",
    "DEFAULT_GLOBAL_ENDPOINT",
    "HAS_TOMLI_W",
    "HAS_YAML",
    "SETTINGS",
    "SETTING_VARIABLES",
    "TOMLI_W_IMPORT_ERROR",
    "YAML_IMPORT_ERROR",
    "EdgeConfigError",
    "EdgeConfigLibraryError",
    "file_uri",
    "render_edge_config",
)
