# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Action plugin of edgefleet.iotedge.validate_inventory: runs on the controller, never on the host.

It reads the host's values of one role's variables (as the host resolves them: inventory, group_vars, role
defaults, extra vars), hands them to the module_utils/_inventory core and fails the host with every problem found.
"""

from __future__ import annotations

import functools
import os

import yaml

from ansible.errors import AnsibleError
from ansible.plugins.action import ActionBase

from ansible_collections.edgefleet.iotedge.plugins.module_utils._inventory import (
    ROLES,
    UNKNOWN_VARIABLE_MODES,
    check_role,
    load_role_options,
    unknown_variables,
)

ROLES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir, "roles")


@functools.lru_cache(maxsize=None)
def role_options(role: str) -> dict:
    """The options of a role's meta/argument_specs.yml and of the collection roles it depends on (read once)."""
    role_dir = os.path.join(ROLES_DIR, role)
    with open(os.path.join(role_dir, "meta", "main.yml"), encoding="utf-8") as handle:
        dependencies = (yaml.safe_load(handle) or {}).get("dependencies") or []
    options: dict = {}
    for dependency in dependencies:
        name = dependency.get("role") if isinstance(dependency, dict) else dependency
        options.update(role_options(name.rsplit(".", 1)[-1]))
    with open(os.path.join(role_dir, "meta", "argument_specs.yml"), encoding="utf-8") as handle:
        options.update(load_role_options(yaml.safe_load(handle)))
    return options


@functools.lru_cache(maxsize=None)
def known_variables() -> frozenset:
    return frozenset(name for role in ROLES for name in role_options(role))


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False
    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        task_vars = task_vars or {}
        _spec, args = self.validate_argument_spec(
            argument_spec={
                "role": {"type": "str", "required": True, "choices": list(ROLES)},
                "config_settings": {"type": "dict", "no_log": True},
            }
        )
        role = args["role"]
        options = role_options(role)
        errors, values = [], {}
        for name in options:
            if name not in task_vars:
                continue
            try:
                values[name] = self._templar.template(task_vars[name])
            except AnsibleError as error:
                errors.append(f"{name}: cannot be resolved ({_first_line(error)}). Correct the expression")
        errors += check_role(role, options, values, config_settings=args["config_settings"])

        mode = self._unknown_variables_mode(task_vars, errors)
        unknown = unknown_variables((name for name in task_vars if name.startswith("edgefleet_")), known_variables())
        if unknown and mode == "fail":
            errors += [f"{message}. Remove it, or set edgefleet_unknown_variables: warn" for message in unknown]
        elif unknown and mode == "warn":
            result["warnings"] = [*result.get("warnings", []), *unknown]

        result["changed"] = False
        result["role"] = role
        result["checked"] = sorted(values)
        if "edgefleet_registration_id" in values:
            # Resolved once here; the roles read it from the registered result (hostvars) for the fleet's checks.
            result["registration_id"] = values["edgefleet_registration_id"]
        if errors:
            result["failed"] = True
            result["errors"] = errors
            result["msg"] = errors[0] if len(errors) == 1 else f"{len(errors)} problems: " + " | ".join(errors)
        else:
            result["msg"] = f"{len(values)} variables of role edgefleet.iotedge.{role} are valid"
        return result

    def _unknown_variables_mode(self, task_vars: dict, errors: list) -> str:
        mode = task_vars.get("edgefleet_unknown_variables", "warn")
        try:
            mode = self._templar.template(mode)
        except AnsibleError as error:
            errors.append(f"edgefleet_unknown_variables: cannot be resolved ({_first_line(error)})")
            return "warn"
        if mode not in UNKNOWN_VARIABLE_MODES:
            errors.append(
                f"edgefleet_unknown_variables: {mode!r} is not one of {', '.join(UNKNOWN_VARIABLE_MODES)}. Use one"
            )
            return "warn"
        return mode


def _first_line(error: Exception) -> str:
    text = getattr(error, "message", None) or str(error)
    return str(text).strip().splitlines()[0] if str(text).strip() else type(error).__name__
