# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Action plugin of edgefleet.iotedge.iotedge_host: reads the files' sources on the controller, then runs the module
on the host once with their content (a secret one as a no_log value).

Given the host's state read earlier in the run (`observed`, from iotedge_host_preflight), it first compares that with
what the task wants, with the core's own rules, and returns without a module run on the host when nothing differs.

A failure is prefixed with the host's inventory name, so a line of a fleet run says which host and what to fix.
"""

from __future__ import annotations

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase

from ansible_collections.edgefleet.iotedge.plugins.module_utils._iotedge_host import (
    HOST_OPTIONS,
    HostStateError,
    request_from_params,
    unchanged_outcome,
)

MISSING_SOURCE_HINT = (
    "Run the PKI phase first (playbooks/provision_edge.yml, tag pki) or point the variable at this host's file."
)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        task_vars = task_vars or {}
        host = task_vars.get("inventory_hostname", "")
        module_args = dict(self._task.args)
        observed = module_args.pop("observed", None)
        observed_key = module_args.pop("observed_key", None) or ""
        files, missing = [], []
        for item in module_args.get("files") or []:
            item = dict(item)
            source = item.pop("src", None)
            item["secret"] = boolean(item.get("secret", False), strict=False)
            if item["secret"] and item.get("content") is not None:
                item["secret_content"] = item.pop("content")
            if source:
                try:
                    content = self._read_source(source)
                except FileNotFoundError:
                    if not self._task.check_mode:
                        missing.append((item.get("variable") or "files[].src", source))
                    content = None  # check mode: an earlier phase would make it; predicted as written
                except (OSError, UnicodeDecodeError) as error:
                    return self._failed(result, host, f"{item.get('variable') or 'files[].src'}: {source}: {error}")
                if content is not None:
                    item["secret_content" if item.get("secret") else "content"] = content
            files.append(item)
        if missing:
            names = " and ".join(name for name, _path in missing)
            paths = ", ".join(path for _name, path in missing)
            return self._failed(result, host, f"{names}: {paths} not found on the controller. {MISSING_SOURCE_HINT}")
        module_args["files"] = files
        outcome = self._unchanged_outcome(module_args, observed, observed_key) if isinstance(observed, dict) else None
        if outcome is not None:
            result.update(outcome.to_result(), from_observation=True)
            return result
        module_result = self._execute_module(
            module_name="edgefleet.iotedge.iotedge_host", module_args=module_args, task_vars=task_vars
        )
        if module_result.get("failed") and module_result.get("msg"):
            module_result["msg"] = f"{host}: {module_result['msg']}"
        result.update(module_result)
        result.setdefault("from_observation", False)
        return result

    def _unchanged_outcome(self, module_args: dict, observed: dict, key: str):
        """The module's outcome decided from the observation, or None when the host must be read and converged."""
        validated = ArgumentSpecValidator(HOST_OPTIONS).validate(module_args)
        if validated.error_messages:
            return None  # the module run reports them, as without an observation
        try:
            request = request_from_params(validated.validated_parameters, self._task.check_mode)
        except HostStateError:
            return None
        return unchanged_outcome(request, observed, key)

    def _read_source(self, source: str) -> str:
        with open(self._loader.path_dwim(source), "rb") as handle:
            return handle.read().decode("utf-8")

    @staticmethod
    def _failed(result: dict, host: str, message: str) -> dict:
        result.update(failed=True, changed=False, msg=f"{host}: {message}")
        return result
