# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# PRIVATE to the edgefleet.iotedge collection. Do not use this from other collections:
# it may change at any time.

"""Run a controller module (PKI, DPS, IoT Hub) in the action plugin's worker process instead of a module process.

Executed as a module, every such task builds an AnsiballZ payload (an AST scan of every module_utils it imports),
starts an interpreter, unpacks the zip and compiles those imports again without bytecode caching, and passes
arguments and results as JSON: 0.5-1.5 s per task on a small controller, more than the work of a thousand devices.
When the module would run on this controller anyway (local connection, this interpreter, this user, no task
environment, not async), the action plugin calls the module's own ``main()`` with ControllerModule standing in for
AnsibleModule: the same argument spec and validation (ArgumentSpecValidator, what AnsibleModule uses), the same
no_log masking, and the result serialized and parsed as a module's. Otherwise the module is executed as usual.
"""

from __future__ import annotations

import json
import os
import sys

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.module_utils.common.parameters import remove_values
from ansible.module_utils.errors import UnsupportedError
from ansible.plugins.action import ActionBase
from ansible.plugins.action.normal import ActionModule as NormalAction
from ansible.vars.clean import remove_internal_keys

try:  # ansible-core 2.19+: the serialization profiles modules use
    from ansible.module_utils.common.json import Direction, get_module_encoder
except ImportError:  # older ansible-core: the module is executed as usual
    Direction = None

SERIALIZATION_PROFILE = "legacy"  # what AnsibleModule uses unless the module declares another one; ours do not


class ModuleExit(Exception):
    """Raised by ControllerModule.exit_json and fail_json: the module's result, as AnsibleModule would print it."""

    def __init__(self, result: dict):
        super().__init__(result.get("msg", ""))
        self.result = result


class ControllerModule:
    """The part of AnsibleModule that the collection's controller modules use (plugins/module_utils/_module.py)."""

    # A result with a `path` that exists gets its owner, group, mode and state, as AnsibleModule adds them.
    add_path_info = AnsibleModule.add_path_info
    user_and_group = AnsibleModule.user_and_group
    selinux_enabled = AnsibleModule.selinux_enabled
    selinux_context = AnsibleModule.selinux_context
    selinux_initial_context = AnsibleModule.selinux_initial_context
    selinux_mls_enabled = AnsibleModule.selinux_mls_enabled
    _selinux_enabled = _selinux_mls_enabled = _selinux_initial_context = None

    def __init__(
        self,
        argument_spec: dict,
        *,
        name: str,
        arguments: dict,
        check_mode: bool,
        diff: bool,
        supports_check_mode: bool = False,
        mutually_exclusive=None,
        required_together=None,
        required_one_of=None,
        required_if=None,
        required_by=None,
    ):
        self.argument_spec = argument_spec
        self._name = name
        self.check_mode = check_mode
        self._diff = diff
        self.params: dict = {}
        self.no_log_values: set = set()
        if check_mode and not supports_check_mode:
            raise ModuleExit({"skipped": True, "msg": "remote module does not support check mode"})
        validation = ArgumentSpecValidator(
            argument_spec,
            mutually_exclusive=mutually_exclusive,
            required_together=required_together,
            required_one_of=required_one_of,
            required_if=required_if,
            required_by=required_by,
        ).validate(arguments)
        self.no_log_values = validation._no_log_values
        self.params = validation.validated_parameters
        if validation.errors.errors:  # AnsibleValidationErrorMultiple is always true
            message = validation.errors.msg
            if isinstance(validation.errors[0], UnsupportedError):
                message = f"Unsupported parameters for ({name}) module: {message}"
            self.fail_json(msg=message)

    def exit_json(self, **result):
        raise ModuleExit(self._formatted(result))

    def fail_json(self, msg: str, **result):
        raise ModuleExit(self._formatted({**result, "failed": True, "msg": msg}))

    def _formatted(self, result: dict) -> dict:
        """As AnsibleModule._return_formatted: path information and the invocation added, no_log values masked (bools
        and None kept)."""
        self.add_path_info(result)
        result.setdefault("invocation", {"module_args": self.params})
        preserved = {key: value for key, value in result.items() if value is None or isinstance(value, bool)}
        result = remove_values(result, self.no_log_values)
        result.update(preserved)
        return result


def same_interpreter(path: str, executable: str) -> bool:
    """Whether ``path`` runs this interpreter with its packages: the same program in the same directory (``python``
    and ``python3`` of one virtualenv are; the system interpreter that a virtualenv links to is not)."""
    if not isinstance(path, str) or not os.path.isabs(path):
        return False  # a bare name or "auto": interpreter discovery decides, on the host
    return os.path.dirname(os.path.abspath(path)) == os.path.dirname(os.path.abspath(executable)) and (
        os.path.realpath(path) == os.path.realpath(executable)
    )


class ControllerModuleAction(NormalAction):
    """The action plugin of a controller module: its ``main(module_class)`` runs here when it may (see the docstring
    of this file), else ansible.builtin.normal executes the module as usual (async included)."""

    module_main = None  # the module's main(module_class=AnsibleModule), set by each action plugin

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        if not self.runs_in_this_process(task_vars):
            return super().run(tmp, task_vars)
        result = ActionBase.run(self, tmp, task_vars)
        result.update(self.run_in_this_process(self._task.args))
        return result

    def runs_in_this_process(self, task_vars: dict) -> bool:
        """Whether the module would run here anyway: on this machine, with this interpreter, as this user."""
        if Direction is None or getattr(self._connection, "transport", None) != "local":
            return False
        if self._play_context.become or self._task.async_val or any(self._task.environment or []):
            return False
        host_vars = task_vars
        if self._task.delegate_to:
            host_vars = (task_vars.get("ansible_delegated_vars") or {}).get(self._task.delegate_to, {})
        interpreter = host_vars.get("ansible_python_interpreter")
        return isinstance(interpreter, str) and same_interpreter(self._templar.template(interpreter), sys.executable)

    def run_in_this_process(self, arguments: dict) -> dict:
        # Through the module encoder and back, as a module process receives them: plain data, dates as text.
        arguments = json.loads(
            json.dumps(arguments, cls=get_module_encoder(SERIALIZATION_PROFILE, Direction.CONTROLLER_TO_MODULE))
        )
        name = self._task.action

        def module_class(argument_spec, **options):
            return ControllerModule(
                argument_spec,
                name=name,
                arguments=arguments,
                check_mode=bool(self._task.check_mode),
                diff=bool(self._task.diff),
                **options,
            )

        try:
            type(self).module_main(module_class)
        except ModuleExit as exit_:
            output = json.dumps(
                exit_.result, cls=get_module_encoder(SERIALIZATION_PROFILE, Direction.MODULE_TO_CONTROLLER)
            )
        else:
            output = json.dumps({"failed": True, "msg": f"{name} ended without a result"})
        data = self._parse_returned_data({"stdout": output, "stderr": "", "rc": 0}, SERIALIZATION_PROFILE)
        remove_internal_keys(data)
        return data
