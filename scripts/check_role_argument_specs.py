"""Check that every role's defaults/main.yml and meta/argument_specs.yml (entry point ``main``) agree.

A role without a main task file (the collection's common role, which declares shared variables) may name its one
entry point otherwise; that entry point is compared instead.

For each role under roles/:

* every variable in defaults/main.yml (or defaults/main/*.yml) must be an option of the ``main`` entry point;
* every option that declares a ``default`` must be set in defaults/main.yml (argument spec defaults are only
  documentation; ansible-core does not apply them), and to the same value;
* options without a ``default`` (required ones, or optional ones that are simply undefined) may be absent from
  defaults/main.yml; if they are present, their value must be null.

Values are compared as loaded from YAML, type included (``1`` is not ``true``, ``"0644"`` is not ``644``).
Exits 0 when there are no roles. Usage: .venv/bin/python scripts/check_role_argument_specs.py [REPO_ROOT]
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

MISSING = object()


class _Loader(yaml.SafeLoader):
    """SafeLoader that keeps Ansible's !vault and !unsafe values as opaque tagged strings."""


class Tagged(str):
    """A value with an Ansible tag (!vault, !unsafe); compared by tag and text, shown without its content."""

    def __new__(cls, tag: str, text: str) -> Tagged:
        obj = super().__new__(cls, f"{tag} {text}")
        obj.tag = tag
        return obj

    def __repr__(self) -> str:
        return f"<{self.tag} value>"


def _tagged(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    text = loader.construct_scalar(node) if isinstance(node, yaml.ScalarNode) else ""
    return Tagged(f"!{suffix}", text)


_Loader.add_multi_constructor("!", _tagged)


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as fh:
        return yaml.load(fh, Loader=_Loader)  # a SafeLoader subclass


def first_existing(*paths: Path) -> Path | None:
    return next((p for p in paths if p.is_file()), None)


def load_defaults(role: Path) -> tuple[dict[str, Any], list[str]]:
    errors: list[str] = []
    files: list[Path] = []
    main = first_existing(role / "defaults" / "main.yml", role / "defaults" / "main.yaml", role / "defaults" / "main")
    if main is not None:
        files.append(main)
    elif (role / "defaults" / "main").is_dir():
        files.extend(sorted(p for p in (role / "defaults" / "main").iterdir() if p.suffix in (".yml", ".yaml")))
    merged: dict[str, Any] = {}
    for path in files:
        data = load_yaml(path)
        if data is None:
            continue
        if not isinstance(data, dict):
            errors.append(f"{path}: expected a mapping of variables, got {type(data).__name__}")
            continue
        merged.update(data)
    return merged, errors


def load_main_options(role: Path) -> tuple[dict[str, Any] | None, list[str]]:
    """Return the options of entry point main, or None when the role has no argument specs at all."""
    spec_file = first_existing(role / "meta" / "argument_specs.yml", role / "meta" / "argument_specs.yaml")
    if spec_file is not None:
        specs = (load_yaml(spec_file) or {}).get("argument_specs")
        where = spec_file
    else:
        meta = first_existing(role / "meta" / "main.yml", role / "meta" / "main.yaml")
        specs = (load_yaml(meta) or {}).get("argument_specs") if meta else None
        where = meta
        if specs is None:
            return None, []
    if not isinstance(specs, dict):
        return {}, [f"{where}: argument_specs must be a mapping"]
    entry_point = "main"
    if not isinstance(specs.get("main"), dict) and not (role / "tasks" / "main.yml").exists() and len(specs) == 1:
        # A role without tasks/main.yml (common) documents its variables under another name: an entry point `main` would
        # make ansible-core add an argument check to every play that has the role as a dependency.
        (entry_point,) = specs
    if not isinstance(specs.get(entry_point), dict):
        return {}, [f"{where}: no argument_specs.main entry point"]
    options = specs[entry_point].get("options") or {}
    if not isinstance(options, dict):
        return {}, [f"{where}: argument_specs.main.options must be a mapping"]
    return options, []


def same(a: Any, b: Any) -> bool:
    """Equality that also requires equal types (so True != 1 and 1 != 1.0), recursively."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def check_role(role: Path) -> list[str]:
    name = role.name
    defaults, errors = load_defaults(role)
    options, spec_errors = load_main_options(role)
    errors += spec_errors
    if options is None:
        if defaults:
            errors.append(
                f"{name}: defaults/main.yml sets {len(defaults)} variables but meta/argument_specs.yml is missing"
            )
        return errors

    for key in sorted(defaults.keys() - options.keys()):
        errors.append(f"{name}: {key}: in defaults/main.yml but not an option in meta/argument_specs.yml (main)")
    for key in sorted(options):
        option = options[key] if isinstance(options[key], dict) else {}
        spec_default = option.get("default", MISSING)
        value = defaults.get(key, MISSING)
        if value is MISSING:
            if spec_default is not MISSING:
                errors.append(
                    f"{name}: {key}: argument_specs.yml documents default {spec_default!r} but defaults/main.yml "
                    "does not set it"
                )
            continue
        if spec_default is MISSING:
            if value is not None:
                errors.append(f"{name}: {key}: defaults/main.yml sets {value!r} but argument_specs.yml has no default")
            continue
        if not same(value, spec_default):
            errors.append(
                f"{name}: {key}: default differs: defaults/main.yml {value!r} != argument_specs.yml {spec_default!r}"
            )
    return errors


def main() -> int:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent
    roles_dir = root / "roles"
    roles = sorted(p for p in roles_dir.iterdir() if p.is_dir()) if roles_dir.is_dir() else []
    if not roles:
        print("check_role_argument_specs: no roles, nothing to check")
        return 0
    errors: list[str] = []
    for role in roles:
        try:
            errors += check_role(role)
        except yaml.YAMLError as exc:
            errors.append(f"{role.name}: YAML error: {exc}")
    for line in errors:
        print(f"ERROR: {line}", file=sys.stderr)
    print(f"check_role_argument_specs: {len(roles)} role(s), {len(errors)} problem(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
