# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# PRIVATE to the edgefleet.iotedge collection. Do not use this from other collections:
# it may change at any time.

"""IoT Edge deployment manifests, versioned deployment ids and target conditions written from twin tags.

Pure functions, no I/O apart from reading a manifest file. Sources:

- Manifest forms: ``{"modulesContent": {...}}`` or ``{"content": {"modulesContent": {...}}}``, the two forms that
  ``az iot edge deployment create --content`` accepts (Azure CLI reference, az iot edge deployment).
- Layered or standard: "An edge deployment is classified as layered if a module has properties.desired.* defined"
  (same reference); a layered deployment never sets edgeAgent's or edgeHub's desired properties as a whole nor their
  ``systemModules`` (Microsoft Learn, "Understand IoT Edge automatic deployments", layered deployment); a standard
  one carries ``$edgeAgent`` and ``$edgeHub`` ``properties.desired`` (module-composition).
- Deployment ids: at most 128 lowercase characters, none of ``& ^ [ ] { } \\ | " < > /`` ("Deploy and monitor IoT
  Edge modules at scale using the Azure CLI"; Microsoft Learn, automatic device management with the CLI).
- 50 modules per deployment (IoT Hub quotas, "Other limits").
- Query language: string literals in single or double quotes with the escapes ``\\'``, ``\\"``, ``\\\\`` and
  ``\\uXXXX``; ``IN`` with an array constant; ``AND`` (Microsoft Learn, "IoT Hub query language", Expressions and
  conditions). Names that are query keywords cannot be used as property names (MicrosoftDocs/azure-docs#17106:
  ``tags.group`` fails).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re

from ansible_collections.edgefleet.iotedge.plugins.module_utils._http import ConfigurationError

DESIRED = "properties.desired"
EDGE_AGENT = "$edgeAgent"
EDGE_HUB = "$edgeHub"
SYSTEM_MODULES = (EDGE_AGENT, EDGE_HUB)
MAX_MODULES = 50
MAX_ID_LENGTH = 128
# The version is the first VERSION_LENGTH hex digits of the SHA-256 of the canonical content (48 bits: two different
# contents of one name collide with a probability of about 2**-48).
VERSION_LENGTH = 12
MAX_NAME_LENGTH = MAX_ID_LENGTH - 1 - VERSION_LENGTH
# PBKDF2-HMAC-SHA256 with OWASP's iteration count for it (Password Storage Cheat Sheet), salted with the deployment's
# name, turns a registry password into what the version digest covers.
SECRET_ITERATIONS = 600_000
SECRET_SALT = "edgefleet.iotedge deployment version"
# Lowercase letters and digits, inner '-', '_' and '.': a subset of what the hub allows in an id, chosen so that an
# id reads the same in a URL, in a label and inside ``configurations.[[<id>]]`` of the hub's metric queries.
NAME = re.compile(r"[a-z0-9](?:[a-z0-9._-]*[a-z0-9])?")
VERSION = re.compile("[0-9a-f]{" + str(VERSION_LENGTH) + "}")
# One segment of a tag path as the query language reads it unquoted (an identifier).
TAG_SEGMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Words of the query language that cannot name a property (``tags.group`` is refused by the hub).
QUERY_KEYWORDS = frozenset(
    (
        "AND",
        "AS",
        "BY",
        "FALSE",
        "FROM",
        "GROUP",
        "IN",
        "NIN",
        "NOT",
        "NULL",
        "OR",
        "SELECT",
        "TOP",
        "TRUE",
        "UNDEFINED",
        "WHERE",
    )
)


# Settings that a full configuration document (az iot edge deployment show) carries beside its content: each has
# an option of its own, so a manifest that brings one is refused rather than silently half-used.
MANIFEST_SETTINGS = {
    "targetCondition": "target_condition",
    "priority": "priority",
    "labels": "labels",
    "metrics": "metrics",
}


# ---- manifest ----------------------------------------------------------------------------------------------


def _parse_manifest_text(text: str, path: str):
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        import yaml
    except ImportError:
        raise ConfigurationError(
            f"manifest_path: {path} is not JSON, and PyYAML (needed to read YAML) is not installed"
        ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"manifest_path: {path} is neither JSON nor YAML ({exc})") from None


def read_manifest_file(path: str):
    """The manifest in a JSON or YAML file; OSError (missing, unreadable) is left to the caller's path handling."""
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    return _parse_manifest_text(text, path)


def _manifest_body(manifest: dict):
    """What holds ``modulesContent`` in either manifest form."""
    return manifest.get("content") if "content" in manifest and "modulesContent" not in manifest else manifest


def modules_content_of(manifest, option: str = "manifest") -> dict:
    """The ``modulesContent`` of either manifest form (a deep copy), or a ConfigurationError naming ``option``."""
    if not isinstance(manifest, dict):
        raise ConfigurationError(
            f'{option}: must be a mapping, {{"modulesContent": {{...}}}} or {{"content": {{"modulesContent": {{...}}}}}} '
            f"(the deployment.json format), got {type(manifest).__name__}"
        )
    for key, option_name in MANIFEST_SETTINGS.items():
        if key in manifest:
            raise ConfigurationError(
                f"{option}: has {key}; a deployment's {key} is given with the {option_name} option, not in the manifest"
            )
    body = _manifest_body(manifest)
    if not isinstance(body, dict) or "modulesContent" not in body:
        other = sorted(key for key in ("deviceContent", "moduleContent") if isinstance(body, dict) and key in body)
        if other:
            raise ConfigurationError(
                f"{option}: has {other[0]}, which makes an automatic device or module configuration, not an IoT Edge "
                "deployment; give the deployment manifest with modulesContent"
            )
        raise ConfigurationError(
            f'{option}: has no modulesContent; give {{"modulesContent": {{...}}}} or '
            '{"content": {"modulesContent": {...}}} (the deployment.json format)'
        )
    extra = sorted(key for key in body if key not in ("modulesContent", "deviceContent", "moduleContent"))
    if body is not manifest and extra:
        raise ConfigurationError(f"{option}: content has unknown keys {extra}; only modulesContent is expected")
    for section in ("deviceContent", "moduleContent"):
        if body.get(section) not in (None, {}):
            raise ConfigurationError(
                f"{option}: has both modulesContent and {section}; an IoT Edge deployment has modulesContent only"
            )
    modules = body["modulesContent"]
    if not isinstance(modules, dict) or not modules:
        raise ConfigurationError(f"{option}: modulesContent must be a non-empty mapping of module id -> content")
    try:
        json.dumps(modules, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"{option}: modulesContent must be plain JSON (strings, numbers, booleans, null, lists, mappings): {exc}; "
            "quote dates and other special YAML values"
        ) from None
    return copy.deepcopy(modules)


def _desired_path(key: str) -> list | None:
    """``properties.desired`` -> [], ``properties.desired.modules.x`` -> ['modules', 'x'], anything else -> None."""
    if key == DESIRED:
        return []
    if key.startswith(DESIRED + ".") and len(key) > len(DESIRED) + 1:
        return key[len(DESIRED) + 1 :].split(".")
    return None


def is_layered(modules_content: dict) -> bool:
    """The hub's and az's rule: layered when a module's content names a path below ``properties.desired``."""
    return any(
        (_desired_path(key) or []) != []
        for entry in modules_content.values()
        if isinstance(entry, dict)
        for key in entry
        if _desired_path(key) is not None
    )


def module_names(modules_content: dict) -> list:
    """The modules that ``$edgeAgent``'s content declares (standard: ``modules``; layered: ``modules.<name>`` paths)."""
    names = set()
    for key, value in (modules_content.get(EDGE_AGENT) or {}).items():
        path = _desired_path(key)
        if path == [] and isinstance(value, dict) and isinstance(value.get("modules"), dict):
            names.update(value["modules"])
        elif path == ["modules"] and isinstance(value, dict):
            names.update(value)
        elif path and len(path) >= 2 and path[0] == "modules":
            names.add(path[1])
    return sorted(names)


def module_images(modules_content: dict) -> dict:
    """module name -> ``settings.image`` where the content names one (what a report shows per version)."""
    images = {}
    for key, value in (modules_content.get(EDGE_AGENT) or {}).items():
        path = _desired_path(key)
        entries = {}
        if path == [] and isinstance(value, dict):
            entries = value.get("modules") if isinstance(value.get("modules"), dict) else {}
        elif path == ["modules"] and isinstance(value, dict):
            entries = value
        elif path and len(path) == 2 and path[0] == "modules":
            entries = {path[1]: value}
        for name, module in entries.items():
            image = ((module or {}).get("settings") or {}).get("image") if isinstance(module, dict) else None
            if isinstance(image, str):
                images[name] = image
    return images


def check_modules_content(modules_content: dict, *, layered: bool, option: str = "manifest") -> None:
    """Refuse, before anything is sent, content the hub would refuse or classify other than ``layered`` says."""
    for module_id, entry in modules_content.items():
        if not isinstance(entry, dict) or not entry:
            raise ConfigurationError(
                f'{option}: modulesContent.{module_id} must be a mapping like {{"properties.desired": {{...}}}}'
            )
        for key, value in entry.items():
            path = _desired_path(key)
            if path is None:
                raise ConfigurationError(
                    f"{option}: modulesContent.{module_id} key {key!r} must be 'properties.desired' or, in a layered "
                    "deployment, a path below it such as 'properties.desired.modules.<name>'"
                )
            if path == [] and not isinstance(value, dict):
                raise ConfigurationError(f"{option}: modulesContent.{module_id}.properties.desired must be a mapping")
            if any(not part for part in path):
                raise ConfigurationError(f"{option}: modulesContent.{module_id} key {key!r} has an empty path segment")
    found_layered = is_layered(modules_content)
    if layered and not found_layered:
        raise ConfigurationError(
            f"{option}: layered is true but no module sets a path below properties.desired; a layered deployment "
            "adds to the standard one with keys like 'properties.desired.modules.<name>' in $edgeAgent and "
            "'properties.desired.routes.<name>' in $edgeHub. Set layered: false for a standard deployment"
        )
    if found_layered and not layered:
        paths = sorted(
            f"{module_id}.{key}" for module_id, entry in modules_content.items() for key in entry if _desired_path(key)
        )
        raise ConfigurationError(
            f"{option}: uses paths below properties.desired ({', '.join(paths[:3])}), which makes it a layered "
            "deployment; set layered: true, or give each module one 'properties.desired' mapping for a standard one"
        )
    if layered:
        for module_id in SYSTEM_MODULES:
            for key in modules_content.get(module_id) or {}:
                path = _desired_path(key) or []
                if not path or path[0] == "systemModules":
                    raise ConfigurationError(
                        f"{option}: a layered deployment cannot set {module_id} {key!r}: edgeAgent and edgeHub come "
                        "from the standard deployment. Add modules with 'properties.desired.modules.<name>' and "
                        "routes with 'properties.desired.routes.<name>'"
                    )
    else:
        for module_id in SYSTEM_MODULES:
            if not isinstance((modules_content.get(module_id) or {}).get(DESIRED), dict):
                raise ConfigurationError(
                    f"{option}: a standard deployment needs modulesContent.{module_id}.properties.desired "
                    "(the runtime's own settings); for a deployment that only adds modules set layered: true"
                )
    count = len(module_names(modules_content))
    if count > MAX_MODULES:
        raise ConfigurationError(
            f"{option}: declares {count} modules; IoT Hub allows at most {MAX_MODULES} per deployment. Split it into "
            "a standard deployment and layered ones"
        )


# ---- versions and ids --------------------------------------------------------------------------------------


REGISTRY_CREDENTIALS = ["runtime", "settings", "registryCredentials"]


def _registries_at(path: list, value) -> list:
    """The registry mappings in ``value``, found at ``path`` below ``properties.desired``."""
    depth = len(path)
    if depth == len(REGISTRY_CREDENTIALS) + 1 and path[: depth - 1] == REGISTRY_CREDENTIALS:
        return [value]
    if path != REGISTRY_CREDENTIALS[:depth]:
        return []
    for segment in REGISTRY_CREDENTIALS[depth:]:
        value = value.get(segment) if isinstance(value, dict) else None
    return list(value.values()) if isinstance(value, dict) else []


def _registries_with_password(modules_content) -> list:
    """The mappings of ``$edgeAgent``'s ``runtime.settings.registryCredentials.<registry>`` that hold a password, in a
    standard manifest or under the dotted paths of a layered one."""
    edge_agent = modules_content.get(EDGE_AGENT) if isinstance(modules_content, dict) else None
    found = []
    for key, value in (edge_agent if isinstance(edge_agent, dict) else {}).items():
        path = _desired_path(key) if isinstance(key, str) else None
        if path is not None:
            found.extend(
                registry
                for registry in _registries_at(path, value)
                if isinstance(registry, dict) and isinstance(registry.get("password"), str) and registry["password"]
            )
    return found


def manifest_secrets(manifest) -> list:
    """The container registry passwords a manifest (either form) holds: values never to be shown. Tolerant of any
    input, since a manifest refused for another reason is still echoed in the module's failure."""
    body = _manifest_body(manifest) if isinstance(manifest, dict) else None
    modules_content = body.get("modulesContent") if isinstance(body, dict) else None
    return [registry["password"] for registry in _registries_with_password(modules_content)]


def canonical_content(modules_content: dict) -> bytes:
    """The content as the digest sees it: ``{"modulesContent": ...}`` as JSON with sorted keys and no spacing.

    Key order and formatting of the manifest file do not matter; every value, empty mappings included, does.
    """
    return json.dumps(
        {"modulesContent": modules_content}, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")


def _stretched(secret: str, name: str) -> str:
    return hashlib.pbkdf2_hmac(
        "sha256", secret.encode("utf-8"), f"{SECRET_SALT}/{name}".encode(), SECRET_ITERATIONS
    ).hex()


def content_version(modules_content: dict, name: str) -> str:
    """The version of ``name``'s content. A registry password enters the digest only stretched (``_stretched``):
    the version is shown in every log, and a plain digest over content that holds a password would let whoever knows
    the rest of the manifest test guesses of it offline at the speed of SHA-256."""
    digested = copy.deepcopy(modules_content)
    for registry in _registries_with_password(digested):
        registry["password"] = _stretched(registry["password"], name)
    return hashlib.sha256(canonical_content(digested)).hexdigest()[:VERSION_LENGTH]


def check_name(name) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name) or len(name) > MAX_NAME_LENGTH:
        raise ConfigurationError(
            f"name: {name!r} is not usable; use 1 to {MAX_NAME_LENGTH} lowercase letters, digits and inner '-', '_' "
            f"or '.' (the deployment id is <name>-<{VERSION_LENGTH} hex digits of the content>, at most "
            f"{MAX_ID_LENGTH} characters)"
        )
    return name


def deployment_id(name: str, version: str) -> str:
    return f"{name}-{version}"


def version_of_id(name: str, configuration_id: str) -> str | None:
    """The version part of ``<name>-<version>``, or None when the id is not one of ``name``'s versions."""
    prefix = name + "-"
    if configuration_id.startswith(prefix) and VERSION.fullmatch(configuration_id[len(prefix) :]):
        return configuration_id[len(prefix) :]
    return None


# ---- target conditions -------------------------------------------------------------------------------------


def quote_string(text: str) -> str:
    """A query-language string literal: single quotes; backslash, quote and control characters escaped."""
    escaped = []
    for char in text:
        if char == "\\":
            escaped.append("\\\\")
        elif char == "'":
            escaped.append("\\'")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            escaped.append(f"\\u{ord(char):04x}")
        else:
            escaped.append(char)
    return "'" + "".join(escaped) + "'"


def query_literal(value, where: str) -> str:
    """A tag value as a query constant: strings quoted, numbers and booleans as JSON writes them (types matter:
    the hub never finds the number 3 equal to the string '3')."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigurationError(f"{where}: {value!r} is not a number a twin tag can hold")
        return repr(value)
    if isinstance(value, str):
        return quote_string(value)
    raise ConfigurationError(
        f"{where}: {value!r} cannot be matched; give a string, number or boolean (or a list of them), or write the "
        "condition yourself in target_condition"
    )


def tag_path(name) -> str:
    """``ring`` -> ``tags.ring``; ``location.site`` -> ``tags.location.site`` (a nested tag)."""
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"target_tags: tag names must be non-empty strings, got {name!r}")
    for segment in name.split("."):
        if not TAG_SEGMENT.fullmatch(segment) or segment.upper() in QUERY_KEYWORDS:
            raise ConfigurationError(
                f"target_tags: tag name {name!r} cannot be written into a target condition unquoted (each dotted part "
                "must be a letter or '_' followed by letters, digits or '_', and not a query keyword such as GROUP); "
                "rename the tag or write the condition yourself in target_condition"
            )
    return "tags." + name


def target_condition_from_tags(tags) -> str:
    """``{ring: canary, site: [a, b]}`` -> ``tags.ring='canary' AND tags.site IN ['a', 'b']`` (tags sorted by name,
    list values in the order given, duplicates dropped)."""
    if not isinstance(tags, dict) or not tags:
        raise ConfigurationError("target_tags: must be a non-empty mapping of tag name -> value or list of values")
    clauses = []
    for name in sorted(tags, key=str):
        path = tag_path(name)
        value = tags[name]
        where = f"target_tags.{name}"
        if isinstance(value, (list, tuple)):
            literals = []
            for item in value:
                literal = query_literal(item, where)
                if literal not in literals:
                    literals.append(literal)
            if not literals:
                raise ConfigurationError(f"{where}: an empty list matches no device; give at least one value")
            clause = f"{path}={literals[0]}" if len(literals) == 1 else f"{path} IN [{', '.join(literals)}]"
        else:
            clause = f"{path}={query_literal(value, where)}"
        clauses.append(clause)
    return " AND ".join(clauses)


__all__ = (
    "DESIRED",
    "EDGE_AGENT",
    "EDGE_HUB",
    "MAX_ID_LENGTH",
    "MAX_MODULES",
    "MAX_NAME_LENGTH",
    "VERSION_LENGTH",
    "canonical_content",
    "check_modules_content",
    "check_name",
    "content_version",
    "deployment_id",
    "is_layered",
    "manifest_secrets",
    "module_images",
    "module_names",
    "modules_content_of",
    "query_literal",
    "quote_string",
    "read_manifest_file",
    "tag_path",
    "target_condition_from_tags",
    "version_of_id",
)
