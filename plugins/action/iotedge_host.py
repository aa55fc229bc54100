# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Action plugin of edgefleet.iotedge.iotedge_host: reads the files' sources on the controller, then runs the module
on the host once with their content (a secret one as a no_log value).

A failure is prefixed with the host's inventory name, so a line of a fleet run says which host and what to fix.
"""

from __future__ import annotations

from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase

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
        module_result = self._execute_module(
            module_name="edgefleet.iotedge.iotedge_host", module_args=module_args, task_vars=task_vars
        )
        if module_result.get("failed") and module_result.get("msg"):
            module_result["msg"] = f"{host}: {module_result['msg']}"
        result.update(module_result)
        return result

    def _read_source(self, source: str) -> str:
        with open(self._loader.path_dwim(source), "rb") as handle:
            return handle.read().decode("utf-8")

    @staticmethod
    def _failed(result: dict, host: str, message: str) -> dict:
        result.update(failed=True, changed=False, msg=f"{host}: {message}")
        return result
