"""The AWX credential type in docs/awx/ is one AWX accepts, and injects only what the collection reads.

AWX's own checks (awx/main/fields.py, CredentialTypeInputField and CredentialTypeInjectorField) are repeated here:
field ids and injected names are identifiers, every injector template renders with the defined fields only, no
ANSIBLE_ environment variable. Then the collection's side: every environment variable injected is one a module
falls back to (read from the modules' argument specs), every extra variable is a role variable of a
meta/argument_specs.yml, and a field that feeds a secret option or variable is secret.
"""

from __future__ import annotations

import fnmatch
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import jinja2
import pytest
import yaml
from jinja2 import meta, sandbox

from ansible.module_utils import basic

from ansible_collections.edgefleet.iotedge.plugins import modules as collection_modules

ROOT = Path(__file__).resolve().parents[3]
INPUTS = ROOT / "docs" / "awx" / "credential-type-inputs.yml"
INJECTORS = ROOT / "docs" / "awx" / "credential-type-injectors.yml"
GUIDE = ROOT / "docs" / "awx.md"

# awx/main/fields.py: the patterns and keys AWX's JSON schemas allow.
NAME = re.compile(r"[a-zA-Z_]+[a-zA-Z0-9_]*")
FILE_TEMPLATE = re.compile(r"template(\.[a-zA-Z_]+[a-zA-Z0-9_]*)?")
STRING_ONLY_KEYS = {"choices", "multiline", "format", "secret"}
FIELD_KEYS = {"id", "label", "help_text", "type", "ask_at_runtime", "default", *STRING_ONLY_KEYS}
RESERVED_IDS = {"tower", "awx"}  # the namespace of file injectors' names ({{ tower.filename }})


def load(path: Path) -> dict:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(document, dict), f"{path.name}: not a mapping"
    return document


def fields() -> list[dict]:
    return load(INPUTS)["fields"]


def templates() -> list[tuple[str, str, str]]:
    """(kind, injected name, template) for every injector."""
    return [(kind, name, template) for kind, entries in load(INJECTORS).items() for name, template in entries.items()]


def referenced_fields(template: str) -> set[str]:
    return meta.find_undeclared_variables(jinja2.Environment().parse(template))


class _SpecCaptured(Exception):
    pass


def module_argument_specs(monkeypatch) -> dict[str, dict]:
    """Each module's argument spec, as its main() hands it to AnsibleModule (caught before anything runs)."""
    specs = {}
    for info in pkgutil.iter_modules(collection_modules.__path__):
        module = importlib.import_module(f"{collection_modules.__name__}.{info.name}")
        if not hasattr(module, "AnsibleModule") or not hasattr(module, "main"):
            continue  # a documentation stub of an action plugin

        def capture(*args, _name=info.name, **kwargs):
            specs[_name] = kwargs.get("argument_spec", args[0] if args else {})
            raise _SpecCaptured

        monkeypatch.setattr(module, "AnsibleModule", capture)
        with pytest.raises(_SpecCaptured):
            # A controller module takes the class as an argument (its action plugin may pass a stand-in).
            module.main(*([capture] if inspect.signature(module.main).parameters else []))
    return specs


def environment_reads(monkeypatch) -> dict[str, list[tuple[str, str, bool]]]:
    """Environment variable -> (module, option, no_log) for every env_fallback in the modules' argument specs."""
    reads: dict[str, list[tuple[str, str, bool]]] = {}

    def walk(module: str, spec: dict, prefix: str = "") -> None:
        for option, settings in spec.items():
            fallback = settings.get("fallback")
            if fallback and fallback[0] is basic.env_fallback:
                for variable in fallback[1]:
                    reads.setdefault(variable, []).append((module, prefix + option, bool(settings.get("no_log"))))
            walk(module, settings.get("options") or {}, f"{prefix}{option}.")

    for module, spec in module_argument_specs(monkeypatch).items():
        walk(module, spec)
    return reads


def role_variables() -> dict[str, dict]:
    """Every variable declared in a role's meta/argument_specs.yml (any entry point) -> its spec."""
    declared: dict[str, dict] = {}
    for path in sorted((ROOT / "roles").glob("*/meta/argument_specs.yml")):
        for entry_point in (load(path).get("argument_specs") or {}).values():
            declared.update(entry_point.get("options") or {})
    return declared


# --- what AWX accepts ---------------------------------------------------------------------------------------------


def test_inputs_have_awx_s_shape():
    inputs = load(INPUTS)
    assert set(inputs) <= {"fields", "required"}
    ids = [field.get("id") for field in inputs["fields"]]
    labels = [field.get("label") for field in inputs["fields"]]
    assert len(ids) == len(set(ids)), "field ids must be unique"
    assert len(labels) == len(set(labels)), "labels must be unique"
    for field in inputs["fields"]:
        assert set(field) <= FIELD_KEYS, f"{field.get('id')}: keys AWX does not know: {set(field) - FIELD_KEYS}"
        assert isinstance(field["id"], str) and NAME.fullmatch(field["id"]), f"{field['id']!r} is not an identifier"
        assert field["id"] not in RESERVED_IDS
        assert not field["id"].lower().startswith("ansible_")
        assert isinstance(field["label"], str) and field["label"]
        assert isinstance(field.get("help_text", ""), str)
        assert field.get("type", "string") in ("string", "boolean")
        if field.get("type", "string") != "string":
            assert not set(field) & STRING_ONLY_KEYS, f"{field['id']}: {STRING_ONLY_KEYS} need type string"
        for key in ("secret", "multiline", "ask_at_runtime"):
            assert isinstance(field.get(key, False), bool), f"{field['id']}.{key} must be a boolean"
    assert set(inputs.get("required", [])) <= set(ids), "required names a field that does not exist"


def test_injectors_have_awx_s_shape():
    injectors = load(INJECTORS)
    assert set(injectors) <= {"env", "extra_vars", "file"}
    for name in injectors.get("env", {}):
        assert NAME.fullmatch(name), f"env {name!r} is not a shell variable name"
        assert not name.startswith("ANSIBLE_"), f"env {name}: AWX refuses ANSIBLE_ variables in credentials"
    for name in injectors.get("extra_vars", {}):
        assert NAME.fullmatch(name), f"extra_vars {name!r} is not a variable name"
    for name in injectors.get("file", {}):
        assert FILE_TEMPLATE.fullmatch(name), f"file {name!r} must be template or template.<name>"
    for kind, name, template in templates():
        assert isinstance(template, str), f"{kind} {name}: the template must be a string"
        assert template.isascii() or kind != "env", f"env {name}: AWX takes ASCII only"


def test_every_template_uses_existing_fields_only():
    ids = {field["id"] for field in fields()}
    strict = sandbox.ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined)
    for kind, name, template in templates():
        unknown = referenced_fields(template) - ids
        assert not unknown, f"{kind} {name} references {sorted(unknown)}, which are not field ids"
        # What AWX does when the type is saved: render with every field defined, undefined names an error.
        strict.from_string(template).render({field_id: "EXAMPLE" for field_id in ids})


def test_every_field_is_injected():
    used = set().union(*(referenced_fields(template) for _kind, _name, template in templates()))
    assert {field["id"] for field in fields()} == used


# --- what the collection reads ------------------------------------------------------------------------------------


def test_every_environment_variable_injected_is_one_a_module_reads(monkeypatch):
    reads = environment_reads(monkeypatch)
    assert "EDGEFLEET_DPS_CONNECTION_STRING" in reads, "the argument specs were not read"
    for name in load(INJECTORS).get("env", {}):
        assert name in reads, f"env {name}: no module falls back to it (they read {sorted(reads)})"


def test_every_extra_variable_injected_is_a_role_variable():
    declared = role_variables()
    for name in load(INJECTORS).get("extra_vars", {}):
        assert name in declared, f"extra_vars {name}: no role's meta/argument_specs.yml declares it"
        assert declared[name].get("type", "str") == "str", f"{name}: the credential injects a string"


def test_a_field_that_feeds_a_secret_is_secret(monkeypatch):
    reads = environment_reads(monkeypatch)
    declared = role_variables()
    secret = {field["id"]: field.get("secret", False) for field in fields()}
    for kind, name, template in templates():
        if kind == "env":
            is_secret = any(no_log for _module, _option, no_log in reads[name])
        elif kind == "extra_vars":
            is_secret = bool(declared[name].get("no_log"))
        else:
            is_secret = True  # a file is only worth it for key material
        if is_secret:
            for field_id in referenced_fields(template):
                assert secret[field_id] is True, f"{field_id} feeds the secret {kind} {name}: set secret: true"


def test_the_secrets_this_type_exists_for_are_secret_fields():
    injected = {name: referenced_fields(template) for _kind, name, template in templates()}
    secret = {field["id"] for field in fields() if field.get("secret") is True}
    for name in (
        "edgefleet_dps_connection_string",
        "edgefleet_iothub_connection_string",
        "edgefleet_pki_passphrase",
        "EDGEFLEET_DPS_MANAGEMENT_TOKEN",
    ):
        assert name in injected, f"{name} is not injected"
        assert injected[name] <= secret, f"{name} comes from a field that is not secret"


def test_the_dps_connection_string_is_required():
    # The DPS preflight refuses an empty edgefleet_dps_connection_string: a credential without one cannot run a job.
    extra_vars = load(INJECTORS)["extra_vars"]
    assert referenced_fields(extra_vars["edgefleet_dps_connection_string"]) <= set(load(INPUTS)["required"])


# --- shipped and documented ---------------------------------------------------------------------------------------


def test_the_definition_ships_in_the_collection_artifact():
    build_ignore = load(ROOT / "galaxy.yml").get("build_ignore") or []
    for path in (INPUTS, INJECTORS, GUIDE):
        relative = path.relative_to(ROOT).as_posix()
        for pattern in build_ignore:
            assert not fnmatch.fnmatch(relative, pattern), f"{relative} is left out by build_ignore {pattern!r}"
            assert not fnmatch.fnmatch(path.name, pattern), f"{relative} is left out by build_ignore {pattern!r}"


def test_the_guide_links_the_definition_and_names_what_it_injects():
    guide = GUIDE.read_text(encoding="utf-8")
    assert "(awx/credential-type-inputs.yml)" in guide
    assert "(awx/credential-type-injectors.yml)" in guide
    for _kind, name, _template in templates():
        assert f"`{name}`" in guide, f"docs/awx.md does not name {name}"
    for field in fields():
        assert field["label"] in guide, f"docs/awx.md does not name the field {field['label']!r}"
