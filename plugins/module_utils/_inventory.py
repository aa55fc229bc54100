# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# PRIVATE to the edgefleet.iotedge collection. Do not use this from other collections:
# it may change at any time.

"""The collection's inventory variables, checked for one host before anything is written anywhere.

`check_role` applies, for one role, what its argument spec says (types without conversion, choices, list elements,
sub-options) and then the rules of the values themselves - the same functions the modules apply (registration ids,
twins, DPS names, the runtime configuration's renderer), so a value that would fail later fails here first.
`unknown_variables` names ``edgefleet_*`` variables that no role knows, with the closest known name.

Errors read ``edgefleet_<variable>: <problem>. <fix>`` and never contain a secret's value, so they can always be
shown. Nothing here imports AnsibleModule; the edgefleet.iotedge.validate_inventory action plugin calls it.
"""

from __future__ import annotations

import datetime
import difflib
import json
import os
import re

from ansible.module_utils.parsing.convert_bool import BOOLEANS_FALSE, BOOLEANS_TRUE

from ansible_collections.edgefleet.iotedge.plugins.module_utils._deployment_manifest import (
    check_name,
    tag_path,
    target_condition_from_tags,
)
from ansible_collections.edgefleet.iotedge.plugins.module_utils._deployment_rollout import (
    RolloutError,
    failure_allowance,
)
from ansible_collections.edgefleet.iotedge.plugins.module_utils._dps_certificate import CERTIFICATE_NAME_PATTERN
from ansible_collections.edgefleet.iotedge.plugins.module_utils._dps_client import parse_connection_string
from ansible_collections.edgefleet.iotedge.plugins.module_utils._dps_enrollment_group import (
    enrollment_group_id_problem,
)
from ansible_collections.edgefleet.iotedge.plugins.module_utils._dps_management import dps_resource_id
from ansible_collections.edgefleet.iotedge.plugins.module_utils._dps_records import (
    validate_initial_twin,
    validate_reprovision_policy,
)
from ansible_collections.edgefleet.iotedge.plugins.module_utils._edge_config import (
    EdgeConfigError,
    EdgeConfigLibraryError,
    render_edge_config,
)
from ansible_collections.edgefleet.iotedge.plugins.module_utils._http import ConfigurationError
from ansible_collections.edgefleet.iotedge.plugins.module_utils._identity_csr import CsrError, TokenKeyUri
from ansible_collections.edgefleet.iotedge.plugins.module_utils._iothub import parse_hub_connection_string
from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki import (
    GENERATION_1_1_LIMIT,
    UTCTIME_LIMIT,
    PkiError,
    common_name_problem,
    format_time,
    parse_time,
    registration_id_problem,
)
from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki_ca import (
    CONTENT_OPTIONS,
    INTERMEDIATE_FILES,
    handed_in_ca,
    handed_in_problems,
    missing_ca_files,
)
from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki_identity import identity_files
from ansible_collections.edgefleet.iotedge.plugins.module_utils._shown import shown

PREFIX = "edgefleet_"
ROLES = ("edge_pki", "dps_enrollment", "iotedge_install", "iotedge_provision", "iotedge_deployment")
UNKNOWN_VARIABLE_MODES = ("warn", "fail", "ignore")
# edgefleet_ names that are not role inputs: the playbook's own variables and the facts the roles publish.
PLAYBOOK_VARIABLES = frozenset(
    (
        "edgefleet_target",
        "edgefleet_scope",
        "edgefleet_unknown_variables",
        "edgefleet_report_dir",
        "edgefleet_report_min_days",
        "edgefleet_report_on_problem",
    )
)
PUBLISHED_FACTS = frozenset(
    (
        "edgefleet_identities",
        "edgefleet_pki_root_cert_path",
        "edgefleet_pki_ca_chain_path",
        "edgefleet_pki_ca_rollover",
        "edgefleet_enrollments",
        "edgefleet_refused",
        "edgefleet_registrations",
        "edgefleet_report",
        "edgefleet_runtime",
        "edgefleet_deployment",
    )
)

# Every pattern is applied with fullmatch: '$' would also match before a trailing newline.
_APT_URI = re.compile(r"(?:https?|file)://[^\s\[\]\"'#]+")
_APT_SUITE = re.compile(r"[A-Za-z0-9._/~+-]+")
_APT_COMPONENT = re.compile(r"[A-Za-z0-9._-]+")
_APT_VERSION = re.compile(r"[0-9][A-Za-z0-9.+~:-]*")
_APT_PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]+")
_HTTP_URL = re.compile(r"https?://[^\s\"'<>\\]+")
# Host paths the role writes to: absolute, no whitespace, quotes or backslash, no trailing slash.
_HOST_DIRECTORY = re.compile(r"/[^\s\"'\\]*[^/\s\"'\\]")
_HUB_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::[0-9]{1,5})?")
_CHECK_ID = re.compile(r"[A-Za-z0-9._-]+")
_PLAIN_TEXT = re.compile(r"[^\s\"'\\/?#]+")

# pki_ca's options as the edge_pki role calls them, for the checks of a CA handed in (messages name the variable).
_PKI_CA_VARIABLES = {
    "root_cert_content": "edgefleet_pki_ca_root_cert_content",
    "root_key_content": "edgefleet_pki_ca_root_key_content",
    "intermediate_cert_content": "edgefleet_pki_ca_intermediate_cert_content",
    "intermediate_key_content": "edgefleet_pki_ca_intermediate_key_content",
    "intermediate": "edgefleet_pki_intermediate",
    "passphrase": "edgefleet_pki_passphrase",
    "root_common_name": "edgefleet_pki_root_common_name",
    "intermediate_common_name": "edgefleet_pki_intermediate_common_name",
    "key_type": "edgefleet_pki_ca_key_type",
    "not_after": "edgefleet_pki_ca_not_after",
}


# ---- argument specs, applied without conversion -------------------------------------------------------------


def load_role_options(specs: dict) -> dict:
    """All options of a role's argument specs (every entry point), by name."""
    options: dict = {}
    for entry_point in (specs or {}).get("argument_specs", {}).values():
        options.update((entry_point or {}).get("options") or {})
    return options


def _type_problem(value, spec: dict, describe=shown):
    """(problem, value as the role will use it). Strings are never made from lists or numbers, and back.

    ``describe`` shows the value in the message (a secret's is described by its type only).
    """
    wanted = spec.get("type", "str")
    if wanted in ("str", "path"):
        if value is None:
            return None, ""
        if not isinstance(value, str):
            return f"must be a string, got {type_name(value)}. Quote the value in YAML", value
        return None, value
    if wanted == "bool":
        if isinstance(value, bool):
            return None, value
        # What Ansible itself reads as a boolean (yes/no, on/off, 1/0, ...), nothing else.
        key = value.lower() if isinstance(value, str) else value
        if isinstance(key, (str, int)) and key in BOOLEANS_TRUE | BOOLEANS_FALSE:
            return None, key in BOOLEANS_TRUE
        return f"must be true or false, got {describe(value)}", value
    if wanted == "int":
        if isinstance(value, bool):
            return f"must be a whole number, got {describe(value)}", value
        if isinstance(value, int):
            return None, value
        if isinstance(value, str) and re.fullmatch(r"-?[0-9]+", value):
            return None, int(value)
        return f"must be a whole number, got {describe(value)}", value
    if wanted == "list":
        if not isinstance(value, (list, tuple)):
            return f"must be a list, got {describe(value)}. Use a YAML list", value
        elements = spec.get("elements")
        if elements:
            for index, item in enumerate(value):
                problem, _converted = _type_problem(item, {"type": elements}, describe)
                if problem:
                    return f"item {index} {problem}", value
        return None, list(value)
    if wanted == "dict":
        if value is None:
            return None, {}
        if not isinstance(value, dict):
            return f"must be a dictionary, got {type_name(value)}. Use a YAML mapping", value
        return None, value
    return None, value


def check_options(options: dict, values: dict) -> tuple[list[str], dict]:
    """Types, choices and sub-options of the values given; returns (errors, values as the role uses them)."""
    errors, checked = [], {}
    for name, spec in options.items():
        if name not in values:
            continue
        value = values[name]
        secret = bool(spec.get("no_log"))
        problem, converted = _type_problem(value, spec, _type_only if secret else shown)
        if problem:
            errors.append(f"{name}: {problem}")
            continue
        choices = spec.get("choices")
        if choices is not None and converted not in choices:
            described = "the value given" if secret else shown(converted)
            errors.append(f"{name}: {described} is not one of {', '.join(repr(c) for c in choices)}. Use one of them")
            continue
        sub_options = spec.get("options")
        if sub_options and isinstance(converted, dict):
            unknown = sorted(set(converted) - set(sub_options))
            if unknown:
                errors.append(
                    f"{name}: unknown key(s) {', '.join(map(repr, unknown))}; the keys are {', '.join(sub_options)}"
                )
                continue
            sub_errors, _sub = check_options(sub_options, converted)
            errors.extend(f"{name}.{error}" for error in sub_errors)
        checked[name] = converted
    return errors, checked


def _type_only(value) -> str:
    return type_name(value)


def type_name(value) -> str:
    """What a user calls the type of a value (Ansible passes subclasses with internal names)."""
    for kind, name in ((bool, "a boolean"), (int, "a number"), (float, "a number"), (str, "a string")):
        if isinstance(value, kind):
            return name
    if isinstance(value, dict):
        return "a dictionary"
    if isinstance(value, (list, tuple)):
        return "a list"
    return "nothing (null)" if value is None else f"a {type(value).__name__}"


# ---- the values' own rules ------------------------------------------------------------------------------------


class _Rules:
    """Collects ``variable: problem`` messages for the values of one host; ``peers`` are variables of another role
    that one of this role's rules depends on (PEER_VARIABLES), as the host resolves them when it sets them."""

    def __init__(self, values: dict, peers: dict | None = None):
        self.values = values
        self.peers = peers or {}
        self.errors: list[str] = []

    def get(self, name: str, default=None):
        return self.values.get(name, default)

    def fail(self, name: str, message: str) -> None:
        self.errors.append(f"{name}: {message}")

    def pattern(self, name: str, pattern: re.Pattern, fix: str, *, allow_empty: bool = True) -> None:
        value = self.get(name)
        if not isinstance(value, str) or (allow_empty and value == ""):
            return
        if not pattern.fullmatch(value):
            self.fail(name, f"{shown(value)} {fix}")

    def controller_path(self, name: str) -> None:
        """A path on the controller: the modules join and create it; a control character would end up in a name."""
        value = self.get(name)
        if isinstance(value, str) and value and not value.isprintable():
            self.fail(name, f"{shown(value)} has control characters (a line break, a tab...). Correct the path")

    def registration_id(self) -> None:
        name = "edgefleet_registration_id"
        if name in self.values:
            problem = registration_id_problem(self.values[name])
            if problem:
                self.fail(name, f'{problem}. The default is "{{{{ inventory_hostname | lower }}}}"')


def _edge_pki_rules(rules: _Rules, now: datetime.datetime) -> None:
    rules.registration_id()
    for name in ("edgefleet_pki_dir", "edgefleet_pki_ca_dir", "edgefleet_pki_identity_dir"):
        rules.controller_path(name)
    for name in ("edgefleet_pki_root_common_name", "edgefleet_pki_intermediate_common_name"):
        if name in rules.values:
            problem = common_name_problem(rules.get(name))
            if problem:
                rules.fail(name, problem)
    root_name = rules.get("edgefleet_pki_root_common_name")
    if (
        rules.get("edgefleet_pki_intermediate", True)
        and root_name
        and root_name == rules.get("edgefleet_pki_intermediate_common_name")
    ):
        rules.fail(
            "edgefleet_pki_intermediate_common_name",
            "is the same as edgefleet_pki_root_common_name. Give the intermediate a name of its own",
        )
    for name, minimum in (("edgefleet_pki_ca_valid_days", 1), ("edgefleet_pki_valid_days", 1)):
        value = rules.get(name)
        if isinstance(value, int) and value < minimum:
            rules.fail(name, f"must be at least {minimum}, got {value}")
    renew, valid = rules.get("edgefleet_pki_renew_before_days"), rules.get("edgefleet_pki_valid_days")
    if isinstance(renew, int) and renew < 0:
        rules.fail("edgefleet_pki_renew_before_days", f"must be 0 or more, got {renew}")
    elif isinstance(renew, int) and isinstance(valid, int) and renew >= valid:
        rules.fail(
            "edgefleet_pki_renew_before_days",
            f"{renew} is not below edgefleet_pki_valid_days ({valid}), so every run would renew every identity. "
            "Lower it or raise edgefleet_pki_valid_days",
        )
    _ca_validity_rules(rules, now)
    _fleet_ca_input_rules(rules, now)
    if rules.get("edgefleet_pki_previous_passphrase") and not rules.get("edgefleet_pki_reencrypt"):
        rules.fail(
            "edgefleet_pki_previous_passphrase",
            "is only used with edgefleet_pki_reencrypt: true (to change the CA keys' passphrase). Set both, or "
            "remove it",
        )


def _fleet_ca_input_rules(rules: _Rules, now: datetime.datetime) -> None:
    """The fleet CA as an input: what is handed in must be a usable CA (the checks pki_ca applies, with the role's
    names), and with edgefleet_pki_ca_create false the CA must be there. Nothing a message says shows a key."""
    contents = {option: rules.get(_PKI_CA_VARIABLES[option]) for option in CONTENT_OPTIONS.values()}
    intermediate = rules.get("edgefleet_pki_intermediate", True)
    passphrase = rules.get("edgefleet_pki_passphrase") or None
    try:
        handed = handed_in_ca(contents, passphrase=passphrase, intermediate=intermediate, names=_PKI_CA_VARIABLES)
    except PkiError as error:
        rules.errors.append(str(error))
        return
    if handed is not None:
        not_after = rules.get("edgefleet_pki_ca_not_after")
        try:
            cap = parse_time(not_after, field="edgefleet_pki_ca_not_after") if not_after else None
        except PkiError:
            cap = None  # _ca_validity_rules names it
        rules.errors.extend(
            handed_in_problems(
                handed,
                root_common_name=rules.get("edgefleet_pki_root_common_name", "edgefleet Root CA"),
                intermediate_common_name=rules.get(
                    "edgefleet_pki_intermediate_common_name", "edgefleet Intermediate CA"
                ),
                key_type=rules.get("edgefleet_pki_ca_key_type", "ec-p256"),
                cap=cap,
                generation=rules.get("edgefleet_generation", "1.2+"),
                now=now,
                names=_PKI_CA_VARIABLES,
            )
        )
    ca_dir = rules.get("edgefleet_pki_ca_dir")
    if rules.get("edgefleet_pki_ca_create", True) or not isinstance(ca_dir, str) or not ca_dir.isprintable():
        return
    missing = missing_ca_files(os.path.expanduser(ca_dir), intermediate=intermediate, handed=handed)
    if not missing:
        return
    names = ", ".join(os.path.basename(path) for path in missing)
    only_intermediate = all(os.path.basename(path) in INTERMEDIATE_FILES for path in missing)
    rules.fail(
        "edgefleet_pki_ca_create",
        f"is false and the fleet CA in {ca_dir} (edgefleet_pki_ca_dir) is not complete ({names} missing there), "
        "so no new CA is made. Provide the existing CA: point edgefleet_pki_ca_dir at the directory that holds it (a "
        "mounted volume, a restored copy), or hand its files in with "
        + ", ".join(_PKI_CA_VARIABLES[option] for option in CONTENT_OPTIONS.values())
        + " (from a credential or ansible-vault"
        + ("; or set edgefleet_pki_intermediate: false to sign identities with the root" if only_intermediate else "")
        + "). Set edgefleet_pki_ca_create: true only where a new fleet CA is wanted",
    )


def _ca_validity_rules(rules: _Rules, now: datetime.datetime) -> None:
    """A CA issued now must end where the generation can read it (pki_ca refuses it later otherwise)."""
    not_after_text = rules.get("edgefleet_pki_ca_not_after")
    cap = None
    if isinstance(not_after_text, str) and not_after_text:
        try:
            cap = parse_time(not_after_text, field="edgefleet_pki_ca_not_after")
        except PkiError as error:
            rules.errors.append(str(error))
            return
        if cap <= now:
            rules.fail("edgefleet_pki_ca_not_after", f"{not_after_text} is in the past. Give a date in the future")
            return
    days = rules.get("edgefleet_pki_ca_valid_days")
    if not isinstance(days, int) or days < 1:
        return
    try:
        end = now + datetime.timedelta(days=days)
    except OverflowError:
        end = UTCTIME_LIMIT + datetime.timedelta(days=1)
    if cap is not None:
        end = min(end, cap)
    generation = rules.get("edgefleet_generation", "1.2+")
    limit, why = (
        (GENERATION_1_1_LIMIT, "on or after 2038-01-01, which IoT Edge 1.1 (libiothsm, 32-bit time) cannot use")
        if generation == "1.1"
        else (UTCTIME_LIMIT + datetime.timedelta(seconds=1), "after 2049-12-31, which IoT Edge rejects")
    )
    if end >= limit:
        rules.fail(
            "edgefleet_pki_ca_valid_days",
            f"a CA issued now would expire on {format_time(end)}, {why} (edgefleet_generation is {generation}). "
            "Set edgefleet_pki_ca_not_after (e.g. '2037-12-31') or lower edgefleet_pki_ca_valid_days",
        )


def _ca_bundle_rule(rules: _Rules) -> None:
    """The CA bundle the cloud modules trust is a file on the controller."""
    bundle = rules.get("edgefleet_ca_bundle")
    if isinstance(bundle, str) and bundle and bundle.isprintable() and not os.path.isfile(bundle):
        rules.fail("edgefleet_ca_bundle", f"{shown(bundle)} is not a file on the controller. Point it at a PEM file")


def _hub_connection_rule(rules: _Rules) -> None:
    hub_connection = rules.get("edgefleet_iothub_connection_string")
    if isinstance(hub_connection, str) and hub_connection:
        _connection_string(rules, "edgefleet_iothub_connection_string", parse_hub_connection_string)


def _dps_enrollment_rules(rules: _Rules) -> None:
    rules.registration_id()
    for name in ("edgefleet_pki_dir", "edgefleet_pki_ca_dir", "edgefleet_pki_identity_dir", "edgefleet_ca_bundle"):
        rules.controller_path(name)
    _ca_bundle_rule(rules)
    connection = rules.get("edgefleet_dps_connection_string")
    if "edgefleet_dps_connection_string" in rules.values and not connection:
        rules.fail(
            "edgefleet_dps_connection_string",
            "is empty. Set it to a DPS shared access policy connection string "
            "(HostName=<dps>.azure-devices-provisioning.net;SharedAccessKeyName=provisioningserviceowner;"
            "SharedAccessKey=...), kept in ansible-vault (az iot dps policy show --dps-name <dps> "
            "--resource-group <group> --policy-name provisioningserviceowner)",
        )
    elif isinstance(connection, str) and connection:
        _connection_string(rules, "edgefleet_dps_connection_string", parse_connection_string)
    _hub_connection_rule(rules)
    if rules.get("edgefleet_dps_enrollment_type") == "group":
        problem = enrollment_group_id_problem(rules.get("edgefleet_dps_enrollment_group_id"))
        if problem:
            rules.fail("edgefleet_dps_enrollment_group_id", problem)
    elif rules.peers.get("edgefleet_iotedge_identity_cert_method") == "est":
        # An individual enrollment names the device's certificate (its thumbprint); EST issues it on the device.
        rules.fail(
            "edgefleet_dps_enrollment_type",
            "is individual, and edgefleet_iotedge_identity_cert_method is 'est' on this host: the EST server issues "
            "the device's certificate on the device, and an individual enrollment can only hold a certificate known "
            "beforehand. Use edgefleet_dps_enrollment_type: group, with the EST issuing CA as the fleet CA "
            "(docs/variables.md, EST)",
        )
    for name in ("edgefleet_dps_ca_certificate_name", "edgefleet_dps_ca_rollover_certificate_name"):
        rules.pattern(
            name,
            CERTIFICATE_NAME_PATTERN,
            "is not a DPS certificate name. Use letters, digits, '-', '.' and '_' (starting with a letter or digit)",
            allow_empty=False,
        )
    if rules.get("edgefleet_dps_ca_rollover_certificate_name") == rules.get("edgefleet_dps_ca_certificate_name"):
        rules.fail(
            "edgefleet_dps_ca_rollover_certificate_name",
            "is the same as edgefleet_dps_ca_certificate_name. A CA rollover registers the old and the new CA at once, "
            "under these two names: give it another name (default: edgefleet_dps_ca_certificate_name + '-rollover')",
        )
    twin = {
        "tags": rules.get("edgefleet_dps_twin_tags") or {},
        "desired_properties": rules.get("edgefleet_dps_twin_desired_properties") or {},
    }
    for part, name in (
        ("tags", "edgefleet_dps_twin_tags"),
        ("desired_properties", "edgefleet_dps_twin_desired_properties"),
    ):
        try:
            validate_initial_twin({part: twin[part]}, name)
        except ConfigurationError as error:
            rules.errors.append(str(error).replace(f"{name}.{part}", name, 1))
    policy = rules.get("edgefleet_dps_reprovision_policy")
    if policy:
        try:
            validate_reprovision_policy(policy, "edgefleet_dps_reprovision_policy")
        except ConfigurationError as error:
            rules.errors.append(str(error))
    for index, hub in enumerate(rules.get("edgefleet_dps_iot_hubs") or []):
        if isinstance(hub, str) and not _HUB_HOST.fullmatch(hub):
            rules.fail(
                f"edgefleet_dps_iot_hubs[{index}]",
                f"{shown(hub)} is not an IoT hub host name (myhub.azure-devices.net)",
            )
    _management_rules(rules)


def _connection_string(rules: _Rules, name: str, parse) -> None:
    try:
        parse(rules.get(name), field=name)
    except ConfigurationError as error:
        rules.errors.append(str(error))  # the parsers never repeat the string


def _management_rules(rules: _Rules) -> None:
    """Where the fleet CA is uploaded (DPS's resource-manager API) and how the controller signs in."""
    if not rules.get("edgefleet_dps_ca_proof_of_possession", True) and "edgefleet_dps_resource_id" not in rules.values:
        return
    url = rules.get("edgefleet_dps_management_url")
    if isinstance(url, str) and (not url.startswith("https://") or not _HTTP_URL.fullmatch(url)):
        rules.fail(
            "edgefleet_dps_management_url",
            f"{shown(url)} is not an https:// URL (the bearer token must not travel in clear text). "
            "The default is https://management.azure.com",
        )
    parts = {
        "edgefleet_dps_subscription_id": "subscription_id",
        "edgefleet_dps_resource_group": "resource_group",
        "edgefleet_dps_name": "dps_name",
    }
    resource_id = rules.get("edgefleet_dps_resource_id") or None
    given = {option: rules.get(name) or None for name, option in parts.items()}
    if not resource_id and not all(given.values()):
        rules.fail(
            "edgefleet_dps_resource_id",
            "is empty, and the fleet CA must be uploaded to DPS and verified (group enrollments, and individual "
            "enrollments of CA-signed certificates, authenticate through it). Set edgefleet_dps_resource_id "
            "(az iot dps show --name <dps> --query id), or edgefleet_dps_subscription_id, "
            "edgefleet_dps_resource_group and edgefleet_dps_name",
        )
        return
    for name in parts:
        rules.pattern(name, _PLAIN_TEXT, "must be a plain name, without spaces, '/', '?' or '#'")
    try:
        dps_resource_id(resource_id=resource_id, **({} if resource_id else given))
    except ConfigurationError as error:
        message = str(error)
        for name, option in {**parts, "edgefleet_dps_resource_id": "resource_id"}.items():
            if message.startswith(option + ":"):
                message = name + message[len(option) :]
        rules.errors.append(message)
    credentials = ("edgefleet_azure_tenant_id", "edgefleet_azure_client_id", "edgefleet_azure_client_secret")
    set_ = [name for name in credentials if rules.get(name)]
    if set_ and len(set_) != len(credentials) and not rules.get("edgefleet_dps_management_token"):
        missing = [name for name in credentials if name not in set_]
        rules.fail(
            missing[0],
            f"is empty while {', '.join(set_)} is set: a service principal needs all three. Set "
            f"{', '.join(missing)}, or leave all three empty to use DefaultAzureCredential",
        )
    for name in ("edgefleet_azure_tenant_id", "edgefleet_azure_client_id"):
        rules.pattern(name, _PLAIN_TEXT, "has spaces or other characters an Entra ID tenant or client id cannot have")


def _iotedge_install_rules(rules: _Rules) -> None:
    rules.pattern(
        "edgefleet_iotedge_apt_uri",
        _APT_URI,
        "is not one http(s):// or file:// URL (no spaces, quotes, brackets or line breaks). Use the repository's "
        "URL, e.g. https://packages.microsoft.com/debian/12/prod",
        allow_empty=False,
    )
    rules.pattern(
        "edgefleet_iotedge_apt_suite",
        _APT_SUITE,
        "is not one apt suite word. Use e.g. bookworm, or ./ for a flat repository",
        allow_empty=False,
    )
    components = rules.get("edgefleet_iotedge_apt_components")
    suite = rules.get("edgefleet_iotedge_apt_suite")
    if isinstance(components, list) and isinstance(suite, str):
        # sources.list(5): a suite ending in '/' is a flat repository without components; any other needs one.
        if suite.endswith("/") and components:
            rules.fail(
                "edgefleet_iotedge_apt_components",
                f"must be empty for a flat repository (edgefleet_iotedge_apt_suite is {shown(suite)}). Use []",
            )
        elif not suite.endswith("/") and not components:
            rules.fail(
                "edgefleet_iotedge_apt_components",
                "is empty, and a suite that is not a flat repository ('./') needs components. Give them, e.g. [main]",
            )
        for index, component in enumerate(components):
            if isinstance(component, str) and not _APT_COMPONENT.fullmatch(component):
                rules.fail(
                    f"edgefleet_iotedge_apt_components[{index}]",
                    f"{shown(component)} is not one apt component word (letters, digits, '.', '_', '-')",
                )
    key_url = rules.get("edgefleet_iotedge_apt_signing_key_url")
    if isinstance(key_url, str) and key_url:
        rules.pattern(
            "edgefleet_iotedge_apt_signing_key_url",
            _HTTP_URL,
            "is not one http(s):// URL. Give the URL of the repository's ASCII-armored signing key",
        )
    elif "edgefleet_iotedge_apt_signing_key_url" in rules.values and not rules.get("edgefleet_iotedge_apt_trusted"):
        rules.fail(
            "edgefleet_iotedge_apt_signing_key_url",
            "is empty and edgefleet_iotedge_apt_trusted is false, so apt would refuse the repository. Set the key's "
            "URL, or edgefleet_iotedge_apt_trusted: true for a local mirror",
        )
    for name in ("edgefleet_iotedge_version", "edgefleet_iotedge_identity_service_version"):
        rules.pattern(name, _APT_VERSION, "is not an apt version string. Use one like 1.5.44-1, or leave it empty")
    if rules.get("edgefleet_generation") != "1.1" and bool(rules.get("edgefleet_iotedge_version")) != bool(
        rules.get("edgefleet_iotedge_identity_service_version")
    ):
        missing = (
            "edgefleet_iotedge_identity_service_version"
            if rules.get("edgefleet_iotedge_version")
            else "edgefleet_iotedge_version"
        )
        rules.fail(
            missing,
            "is not pinned while the other runtime package is: on 1.2+ aziot-edge depends on one exact "
            "aziot-identity-service version. Pin edgefleet_iotedge_version and "
            "edgefleet_iotedge_identity_service_version together (e.g. 1.5.44-1 and 1.5.6-1), or neither",
        )
    rules.pattern(
        "edgefleet_iotedge_container_engine_package",
        _APT_PACKAGE,
        "is not a Debian package name. Use e.g. moby-engine, or leave it empty when an engine is installed",
    )
    cache = rules.get("edgefleet_iotedge_apt_cache_valid_time")
    if isinstance(cache, int) and cache < 0:
        rules.fail("edgefleet_iotedge_apt_cache_valid_time", f"must be 0 or more seconds, got {cache}")


def _iotedge_provision_rules(rules: _Rules, config_settings) -> None:
    rules.registration_id()
    for name in ("edgefleet_iotedge_cert_dir", "edgefleet_iotedge_secrets_dir"):
        rules.pattern(
            name,
            _HOST_DIRECTORY,
            "is not an absolute host directory without spaces, quotes or line breaks and without a trailing slash. "
            "Use e.g. /var/aziot/certs, or leave it empty for the runtime's default",
        )
    for name in ("edgefleet_pki_dir", "edgefleet_pki_identity_dir"):
        rules.controller_path(name)
    for name in ("edgefleet_iotedge_identity_cert_src", "edgefleet_iotedge_identity_key_src"):
        rules.controller_path(name)
    timeout = rules.get("edgefleet_iotedge_wait_timeout")
    if isinstance(timeout, int) and timeout < 1:
        rules.fail("edgefleet_iotedge_wait_timeout", f"must be at least 1 second, got {timeout}")
    for index, check_id in enumerate(rules.get("edgefleet_iotedge_check_ignore") or []):
        if isinstance(check_id, str) and not _CHECK_ID.fullmatch(check_id):
            rules.fail(
                f"edgefleet_iotedge_check_ignore[{index}]",
                f"{shown(check_id)} is not an iotedge check id (like config-yaml-well-formed)",
            )
    if config_settings is not None and not rules.errors:
        try:
            render_edge_config(config_settings)
        except (EdgeConfigError, EdgeConfigLibraryError) as error:
            rules.errors.append(str(error))  # never holds a secret (see _edge_config)
    # After the rendering, so that a configuration that cannot be rendered at all says so too.
    _device_key_rules(rules)


def _device_key_rules(rules: _Rules) -> None:
    """A key made on the device goes with a certificate the controller signs, in a file the host makes or inside a
    PKCS#11 token; a key already in a token needs the certificate for it, which the controller cannot have made."""
    key_method = rules.get("edgefleet_iotedge_identity_key_method", "file")
    if rules.get("edgefleet_identity_key_origin") != "device":
        if key_method == "pkcs11" and _default_identity_chain(rules):
            rules.fail(
                "edgefleet_iotedge_identity_key_method",
                "is pkcs11 with a key made on the controller: the controller's certificate is for its own key, not "
                "one in the token. Set edgefleet_identity_key_origin: device (the key is generated inside the token "
                "and the controller signs its CSR), or point edgefleet_iotedge_identity_cert_src at the certificate "
                "of the token's key",
            )
        return
    cert_method = rules.get("edgefleet_iotedge_identity_cert_method", "file")
    if cert_method != "file":
        rules.fail(
            "edgefleet_identity_key_origin",
            f"is device, and edgefleet_iotedge_identity_cert_method is {shown(cert_method)}: a CSR signed by the fleet "
            "PKI needs the certificate method file (EST issues its certificates itself). Set one of them back",
        )
    if key_method == "pkcs11":
        _token_key_rules(rules)


def _default_identity_chain(rules: _Rules) -> bool:
    """Whether the certificate pushed is the chain edge_pki issues (the role's default for the variable)."""
    identity_dir, registration_id = rules.get("edgefleet_pki_identity_dir"), rules.get("edgefleet_registration_id")
    if not isinstance(identity_dir, str) or not isinstance(registration_id, str):
        return False
    return (
        rules.get("edgefleet_iotedge_identity_cert_src") == identity_files(identity_dir, registration_id)["chain_path"]
    )


def _token_key_rules(rules: _Rules) -> None:
    """A key generated inside a token: the URI must find the token by its label, name the key and carry the PIN."""
    name = "edgefleet_iotedge_identity_key_pkcs11_uri"
    uri = rules.get(name)
    if isinstance(uri, str) and uri.startswith("pkcs11:"):
        # The host module's own parse (identity_csr): the preflight refuses what it would, naming the variable.
        try:
            TokenKeyUri.parse(uri)
        except CsrError:
            rules.fail(
                name,
                "must name the token by its label, the key and the user PIN for a key generated on the device: "
                "pkcs11:token=<token label>;object=<key label>?pin-value=<PIN> (a slot id changes when a token is "
                "made)",
            )
    if rules.get("edgefleet_iotedge_pkcs11_init_token") and not rules.get("edgefleet_iotedge_pkcs11_so_pin"):
        rules.fail(
            "edgefleet_iotedge_pkcs11_so_pin",
            "is empty, and edgefleet_iotedge_pkcs11_init_token asks the role to initialise the token, which needs its "
            "security officer PIN. Set it (in ansible-vault)",
        )


# Variables of another role that a role's rules read (they are not the role's own, so not checked by its spec).
PEER_VARIABLES = {"dps_enrollment": ("edgefleet_iotedge_identity_cert_method",)}


def _deployment_manifest_rules(rules: _Rules, where: str, manifest, manifest_path) -> None:
    """Exactly one of a manifest (a mapping) and a manifest file on the controller."""
    if manifest and manifest_path:
        rules.errors.append(f"{where}: both a manifest and a manifest path are set; give one of them (the other empty)")
    elif not manifest and not manifest_path:
        rules.errors.append(
            f"{where}: no manifest; set a manifest file (a deployment.json, JSON or YAML) or the manifest itself"
        )
    elif manifest_path:
        if not isinstance(manifest_path, str) or not manifest_path.isprintable():
            rules.errors.append(f"{where}: the manifest path {shown(manifest_path)} is not a usable path")
        elif not os.path.isfile(manifest_path):
            rules.errors.append(
                f"{where}: {shown(manifest_path)} is not a file on the controller (a relative path is read from the "
                "directory ansible-playbook runs in). Point it at the deployment manifest"
            )
    elif not isinstance(manifest, dict):
        rules.errors.append(f"{where}: the manifest must be a mapping (modulesContent: ...), got {type_name(manifest)}")


def _deployment_tags_rules(rules: _Rules, name: str, tags, ring_tag) -> None:
    """Tags that select devices: a target condition can be written from them, and the ring tag is the rings' own."""
    if not tags:
        return
    try:
        target_condition_from_tags(tags)
    except ConfigurationError as error:
        rules.fail(name, str(error).split(": ", 1)[-1])
        return
    if isinstance(ring_tag, str) and ring_tag in tags:
        rules.fail(
            name,
            f"names the ring tag {ring_tag!r}; the rings decide which devices it targets (edgefleet_deployment_rings)",
        )


def _deployment_ring_rules(rules: _Rules, ring_tag) -> None:
    try:
        tag_path(ring_tag)
    except ConfigurationError as error:
        rules.fail("edgefleet_deployment_ring_tag", str(error).split(": ", 1)[1])
    rings = rules.get("edgefleet_deployment_rings")
    ring = rules.get("edgefleet_deployment_ring")
    if isinstance(rings, list):
        if not rings:
            rules.fail(
                "edgefleet_deployment_rings", "is empty. List the rings in rollout order, such as [canary, main]"
            )
        elif len(set(rings)) != len(rings) or not all(rings):
            rules.fail("edgefleet_deployment_rings", f"{shown(rings)} has an empty or repeated ring. Name each once")
        elif isinstance(ring, str) and ring not in rings:
            rules.fail(
                "edgefleet_deployment_ring",
                f"{shown(ring)} is not one of edgefleet_deployment_rings ({', '.join(rings)}). Use one of them, or add "
                "it to edgefleet_deployment_rings",
            )
    twin_tags = rules.get("edgefleet_dps_twin_tags") or {}
    if isinstance(twin_tags, dict) and isinstance(ring_tag, str) and twin_tags.get(ring_tag, ring) != ring:
        rules.fail(
            "edgefleet_dps_twin_tags",
            f"sets the tag {ring_tag!r} to {shown(twin_tags[ring_tag])}, but edgefleet_deployment_ring is "
            f"{shown(ring)}: the ring tag comes from edgefleet_deployment_ring. Remove it from edgefleet_dps_twin_tags",
        )


def _iotedge_deployment_rules(rules: _Rules) -> None:
    rules.registration_id()
    rules.controller_path("edgefleet_ca_bundle")
    _ca_bundle_rule(rules)
    _hub_connection_rule(rules)
    name = rules.get("edgefleet_deployment_name")
    if not name:
        rules.fail("edgefleet_deployment_name", "is not set. Name the deployment (its versions' ids start with it)")
    else:
        try:
            check_name(name)
        except ConfigurationError as error:
            rules.fail("edgefleet_deployment_name", str(error).split(": ", 1)[1])
    _deployment_manifest_rules(
        rules,
        "edgefleet_deployment_manifest_path",
        rules.get("edgefleet_deployment_manifest"),
        rules.get("edgefleet_deployment_manifest_path"),
    )
    ring_tag = rules.get("edgefleet_deployment_ring_tag", "ring")
    _deployment_ring_rules(rules, ring_tag)
    _deployment_tags_rules(
        rules, "edgefleet_deployment_target_tags", rules.get("edgefleet_deployment_target_tags"), ring_tag
    )
    priority = rules.get("edgefleet_deployment_priority")
    if isinstance(priority, int) and priority < 1:
        rules.fail(
            "edgefleet_deployment_priority",
            f"is {priority}; it must be 1 or more (the versions a rollout replaces go one below it)",
        )
    bump = rules.get("edgefleet_deployment_rollback_priority_bump")
    if isinstance(bump, int) and bump < 1:
        rules.fail("edgefleet_deployment_rollback_priority_bump", f"is {bump}; it must be 1 or more")
    for variable in ("edgefleet_deployment_wait_timeout", "edgefleet_deployment_poll_interval"):
        value = rules.get(variable)
        if isinstance(value, int) and value < 1:
            rules.fail(variable, f"is {value}; it must be 1 second or more")
    if "edgefleet_deployment_max_failures" in rules.values:
        try:
            failure_allowance(rules.get("edgefleet_deployment_max_failures"), 0)
        except RolloutError as error:
            rules.errors.append(str(error))
    for key, value in (rules.get("edgefleet_deployment_labels") or {}).items():
        if not isinstance(value, str):
            rules.fail(f"edgefleet_deployment_labels.{key}", f"must be text, got {type_name(value)}. Quote it")
    _deployment_layers_rules(rules, name, ring_tag, priority, bump)


_LAYER_KEYS = ("name", "manifest_path", "manifest", "tags", "priority")


def _deployment_layers_rules(rules: _Rules, base_name, ring_tag, priority, bump) -> None:
    names = [base_name]
    floor = priority + bump if isinstance(priority, int) and isinstance(bump, int) else None
    for index, layer in enumerate(rules.get("edgefleet_deployment_layers") or []):
        where = f"edgefleet_deployment_layers[{index}]"
        if not isinstance(layer, dict):
            rules.errors.append(f"{where}: must be a mapping with {', '.join(_LAYER_KEYS)}")
            continue
        unknown = sorted(set(layer) - set(_LAYER_KEYS))
        if unknown:
            rules.errors.append(f"{where}: unknown key(s) {', '.join(unknown)}; the keys are {', '.join(_LAYER_KEYS)}")
        try:
            check_name(layer.get("name"))
        except ConfigurationError as error:
            rules.errors.append(f"{where}.{error}")
        else:
            if layer["name"] in names:
                rules.errors.append(
                    f"{where}.name: {layer['name']!r} is used twice; each deployment needs its own name"
                )
            names.append(layer["name"])
        _deployment_manifest_rules(rules, f"{where}.manifest_path", layer.get("manifest"), layer.get("manifest_path"))
        tags = layer.get("tags")
        if not isinstance(tags, dict) or not tags:
            rules.errors.append(f"{where}.tags: must be a mapping of tag -> value(s) that selects the layer's hosts")
        else:
            _deployment_tags_rules(rules, f"{where}.tags", tags, ring_tag)
        layer_priority = layer.get("priority")
        if layer_priority is None:
            continue
        if isinstance(layer_priority, bool) or not isinstance(layer_priority, int):
            rules.errors.append(f"{where}.priority: must be a whole number, got {shown(layer_priority)}")
        elif floor is not None and layer_priority <= floor:
            rules.errors.append(
                f"{where}.priority: {layer_priority} is not above {floor} (edgefleet_deployment_priority + "
                "edgefleet_deployment_rollback_priority_bump): a layer applies only above the standard deployment, a "
                "rolled-back one included. Raise it, or leave it unset"
            )


def check_role(
    role: str, options: dict, values: dict, *, config_settings=None, now=None, peers: dict | None = None
) -> list[str]:
    """Every problem with one host's values for one role: the argument spec first, then the values' rules.

    ``values`` are the role's variables as the host resolves them (templated); ``config_settings`` the runtime
    configuration's settings (role iotedge_provision), rendered once to validate them; ``peers`` the host's values
    of the role's PEER_VARIABLES that it sets.
    """
    if role not in ROLES:
        raise ValueError(f"role: {role!r} is not one of {', '.join(ROLES)}")
    now = now or datetime.datetime.now(datetime.timezone.utc)
    errors, checked = check_options(options, values)
    failed = {error.split(":", 1)[0].split("[", 1)[0].split(".", 1)[0] for error in errors}
    rules = _Rules({name: value for name, value in checked.items() if name not in failed}, peers)
    if role == "edge_pki":
        _edge_pki_rules(rules, now)
    elif role == "dps_enrollment":
        _dps_enrollment_rules(rules)
    elif role == "iotedge_install":
        _iotedge_install_rules(rules)
    elif role == "iotedge_deployment":
        _iotedge_deployment_rules(rules)
    else:
        _iotedge_provision_rules(rules, config_settings if not errors else None)
    return errors + rules.errors


def shared_registration_ids(registration_ids: dict) -> dict:
    """Host -> the refusal of every host whose registration id another host of ``registration_ids`` (host -> id)
    also has. DPS and the PKI know a device by its id: those hosts would share a certificate, an enrollment and a hub
    device, so each of them is refused, named with the others; the rest go on."""
    owners: dict = {}
    for host, registration_id in registration_ids.items():
        owners.setdefault(registration_id, []).append(host)
    refused = {}
    for registration_id, hosts in owners.items():
        if len(hosts) < 2:
            continue
        for host in hosts:
            refused[host] = (
                f"edgefleet_registration_id: {' and '.join(sorted(hosts))} all have the registration id "
                f"'{registration_id}', and DPS and the PKI know a device by it (one certificate, one enrollment, one "
                "hub device). Give each host its own edgefleet_registration_id (the default is the inventory name, "
                "lowercased); the other hosts go on"
            )
    return refused


# The controller's batches (run_once: one PKI call, one bulk DPS write) read these once, from the play's first host,
# for every host: a host with another value would silently get the first host's. Everything else of the two roles is
# the host's own.
_FLEET_WIDE_PREFIXES = {
    "edge_pki": ("edgefleet_pki_",),
    "dps_enrollment": (
        "edgefleet_dps_",
        "edgefleet_iothub_",
        "edgefleet_azure_",
        "edgefleet_ca_bundle",
        "edgefleet_retire_",
        "edgefleet_pki_ca_dir",
        "edgefleet_pki_identity_dir",
        "edgefleet_pki_passphrase",
    ),
    "iotedge_deployment": ("edgefleet_deployment_", "edgefleet_iothub_", "edgefleet_ca_bundle"),
}
_PER_HOST = frozenset(
    {
        "edgefleet_identity_rotate",
        "edgefleet_dps_twin_tags",
        "edgefleet_dps_twin_desired_properties",
        "edgefleet_identity_rotation_timeout",
        "edgefleet_deployment_ring",
    }
)
_SECRET_MARKERS = ("passphrase", "connection_string", "secret", "token", "key_content")


def fleet_wide_variables(role: str, names) -> list[str]:
    """The variables of ``names`` that the controller reads once for a play's whole fleet in ``role``."""
    prefixes = _FLEET_WIDE_PREFIXES.get(role, ())
    return sorted(name for name in names if name.startswith(prefixes) and name not in _PER_HOST)


def uneven_fleet_values(values_by_host: dict) -> dict:
    """Host -> the refusals of each fleet-wide variable whose value on it differs from the fleet's.

    ``values_by_host`` maps the hosts, in play order, to their fleet-wide values. The fleet's value is the one most
    hosts have (on a tie, the first host's): the other hosts are refused, so that the host the controller's batch
    reads it from is never one of them. A secret's value is never shown.
    """
    hosts = list(values_by_host)
    names = sorted({name for values in values_by_host.values() for name in values})
    refused: dict = {}
    for name in names:
        groups: dict = {}
        for host in hosts:
            key = _comparable(values_by_host[host].get(name))
            groups.setdefault(key, []).append(host)
        if len(groups) < 2:
            continue
        fleet_key = max(groups, key=lambda key: (len(groups[key]), -hosts.index(groups[key][0])))
        fleet_hosts = groups[fleet_key]
        for key, odd_hosts in groups.items():
            if key == fleet_key:
                continue
            for host in odd_hosts:
                refused.setdefault(host, []).append(_uneven_message(name, values_by_host, host, fleet_hosts))
    return refused


def _comparable(value):
    """A key equal for equal values: a scalar as its type and value (faster than JSON, a thousand hosts times each
    fleet-wide variable), anything else as canonical JSON."""
    for scalar_type in (bool, int, str):  # bool first: True is an int too
        if isinstance(value, scalar_type):
            return scalar_type.__name__, scalar_type(value)
    if value is None:
        return None
    return json.dumps(value, sort_keys=True, default=str)


def _uneven_message(name: str, values_by_host: dict, host: str, fleet_hosts: list) -> str:
    named = ", ".join(fleet_hosts[:3]) + (f" and {len(fleet_hosts) - 3} more" if len(fleet_hosts) > 3 else "")
    if any(marker in name for marker in _SECRET_MARKERS):
        difference = f"differs on this host from its value on {named}"
    else:
        here, there = values_by_host[host].get(name), values_by_host[fleet_hosts[0]].get(name)
        difference = f"is {shown(here)} on this host but {shown(there)} on {named}"
    return (
        f"{name}: {difference}. The controller reads it once for the whole fleet of a run, so a host cannot have a "
        "value of its own: set it for every host (group_vars), or run the hosts that need another value in a run of "
        "their own (--limit, or another edgefleet_target)"
    )


def unknown_variables(names, known) -> list[str]:
    """A message per ``edgefleet_*`` name that no role knows, with the closest known name when there is one."""
    messages = []
    # Run for every host of a fleet: the membership test on a set, and the sorted list only for a name to match.
    known = frozenset(known) | PLAYBOOK_VARIABLES | PUBLISHED_FACTS
    candidates = None
    for name in sorted(set(names)):
        if not name.startswith(PREFIX) or name in known:
            continue
        if candidates is None:
            candidates = sorted(known)
        close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.75)
        hint = f"; did you mean {close[0]}?" if close else ""
        messages.append(f"{name} is not a variable of edgefleet.iotedge, so it has no effect{hint}")
    return messages


__all__ = (
    "PLAYBOOK_VARIABLES",
    "PUBLISHED_FACTS",
    "ROLES",
    "UNKNOWN_VARIABLE_MODES",
    "check_options",
    "check_role",
    "load_role_options",
    "unknown_variables",
)
