#!/usr/bin/python
# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: iotedge_module_info
short_description: Read the modules an IoT Edge runtime runs, as C(iotedge list) shows them
version_added: 0.1.0
description:
  - Runs C(iotedge list) on the edge host and returns one record per module - name, status, description, image.
  - Reads both generations of the table - C(CONFIG) as the last header (IoT Edge 1.1 and 1.2) and C(Config)
    (1.3 and later) - and cuts cells at the header's column offsets, so descriptions with spaces stay whole.
  - Fails with the runtime's error and where to look when the runtime does not answer.
author: edgefleet developers (@edgefleet)
extends_documentation_fragment:
  - edgefleet.iotedge._attributes
attributes:
  check_mode:
    support: full
    details: The module only reads; it runs C(iotedge list) in check mode too.
  diff_mode:
    support: none
options:
  name:
    description:
      - Return only the modules with these names (case-sensitive, for example V(edgeAgent)). Omit for every module.
      - Names the runtime does not list are left out of the result; that is not an error.
    type: list
    elements: str
  executable:
    description: The C(iotedge) command, by name (searched in E(PATH) and the sbin directories) or by path.
    type: path
    default: iotedge
notes:
  - The command talks to the runtime's management socket; if it reports C(Permission denied), run the task with
    C(become).
  - On IoT Edge 1.2 and later an unprovisioned runtime may leave C(iotedge list) waiting rather than failing; bound
    the task with the C(timeout) task keyword.
seealso:
  - module: edgefleet.iotedge.iotedge_check
"""

EXAMPLES = r"""
- name: Wait until edgeAgent runs
  edgefleet.iotedge.iotedge_module_info:
    name: [edgeAgent]
  become: true
  register: runtime
  until: runtime.status.edgeAgent | default('') == 'running'
  retries: 30
  delay: 10

- name: Every module of the deployment runs
  edgefleet.iotedge.iotedge_module_info:
  become: true
  register: runtime
  failed_when: runtime.modules | rejectattr('status', 'eq', 'running') | list | length > 0
"""

RETURN = r"""
modules:
  description: One record per module, in the runtime's order (by name, uppercase before lowercase).
  returned: success
  type: list
  elements: dict
  contains:
    name:
      description: The module name.
      type: str
    status:
      description: V(running), V(stopped), V(failed), V(dead) or V(unknown).
      type: str
    description:
      description: The runtime's words for the status, for example V(Up an hour), V(Stopped) or V(Unknown).
      type: str
    config:
      description: The module's image; empty when the runtime shows none.
      type: str
  sample:
    - name: edgeAgent
      status: running
      description: Up an hour
      config: mcr.microsoft.com/azureiotedge-agent:1.5
runtime_header:
  description: The last column's header as printed, V(CONFIG) (IoT Edge 1.1 and 1.2) or V(Config) (1.3 and later).
  returned: success
  type: str
  sample: Config
status:
  description: Each returned module's status by name, for conditions such as C(runtime.status.edgeAgent == 'running').
  returned: success
  type: dict
  sample: {edgeAgent: running, edgeHub: running}
"""

from functools import partial

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.edgefleet.iotedge.plugins.module_utils._iotedge_cli import (
    IotedgeError,
    ModuleInfoRequest,
    module_info,
    resolving_runner,
)


def main():
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "list", "elements": "str"},
            "executable": {"type": "path", "default": "iotedge"},
        },
        supports_check_mode=True,
    )
    run = resolving_runner(module.get_bin_path, partial(module.run_command, handle_exceptions=False))
    request = ModuleInfoRequest(executable=module.params["executable"], names=module.params["name"] or [])
    try:
        result = module_info(run, request)
    except IotedgeError as exc:
        module.fail_json(msg=str(exc), **exc.to_result())
    module.exit_json(**result)


if __name__ == "__main__":
    main()
