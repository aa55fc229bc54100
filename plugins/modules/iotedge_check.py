#!/usr/bin/python
# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: iotedge_check
short_description: Run C(iotedge check) on an IoT Edge host and fail on its errors
version_added: 0.1.0
description:
  - Runs C(iotedge check --output json) and returns every check with its result and details, the ids of the
    failing ones and how many checks had each result. Reads the reports of IoT Edge 1.1 and of 1.2 and later.
  - Fails when a check reports an error (or a warning, see O(fail_on)); the message lists each failing check id
    with the runtime's details. Accept a known one with O(ignore).
author: edgefleet developers (@edgefleet)
extends_documentation_fragment:
  - edgefleet.iotedge._attributes
attributes:
  check_mode:
    support: full
    details: The module only reads; it runs C(iotedge check) in check mode too.
  diff_mode:
    support: none
options:
  ignore:
    description:
      - Ids of checks whose result is accepted, for example V(container-engine-logrotate) or V(aziot-edge-version) on
        a host that cannot reach Microsoft's servers.
      - They stay in RV(checks) with C(ignored=true), are counted as C(ignored) in RV(counts) and never fail the
        module. The runtime still runs them.
      - An id the runtime does not report gives a warning (a typo, or a check of the other generation).
    type: list
    elements: str
    default: []
  fail_on:
    description:
      - V(error) fails when a check has the result V(error) or V(fatal) (what makes C(iotedge check) exit 1).
      - V(warning) fails on warnings as well, like C(iotedge check --warnings-as-errors).
      - V(never) only reports; use RV(error_ids) and RV(warning_ids) in your own conditions.
    type: str
    choices: [error, warning, never]
    default: error
  diagnostics_image_name:
    description:
      - The image the container connectivity checks run (C(--diagnostics-image-name)), for hosts that pull from a
        registry mirror instead of C(mcr.microsoft.com). Omit for the runtime's default.
    type: str
  executable:
    description: The C(iotedge) command, by name (searched in E(PATH) and the sbin directories) or by path.
    type: path
    default: iotedge
  wait_for_modules:
    description:
      - Modules that must be C(running) before the checks run, for example V(edgeAgent) right after C(iotedge config
        apply). The module polls C(iotedge list) every second, in the same run, instead of a task retried by C(until).
      - Fails with each module's last status when they are not all running after O(wait_timeout) seconds.
    type: list
    elements: str
    default: []
  wait_timeout:
    description: Seconds to wait for O(wait_for_modules).
    type: int
    default: 300
notes:
  - C(iotedge check) reads the runtime's configuration and keys; run the task with C(become), or the first check
    is fatal with "You might need to run this command as root".
  - Some checks ask Microsoft's servers for the latest versions and reach IoT Hub and DPS; offline hosts report
    them as errors or warnings - accept those with O(ignore).
seealso:
  - module: edgefleet.iotedge.iotedge_module_info
"""

EXAMPLES = r"""
- name: The runtime's own checks pass
  edgefleet.iotedge.iotedge_check:
    ignore:
      - aziot-edge-version  # no route to aka.ms from the plant network
  become: true

- name: Wait until edgeAgent runs, then run the checks
  edgefleet.iotedge.iotedge_check:
    wait_for_modules: [edgeAgent]
    wait_timeout: 300
  become: true

- name: Record warnings without failing
  edgefleet.iotedge.iotedge_check:
    fail_on: never
  become: true
  register: edge_check

- name: Show the warnings
  ansible.builtin.debug:
    msg: "{{ edge_check.checks | selectattr('result', 'eq', 'warning') | map(attribute='details') | list }}"
  when: edge_check.warning_ids | length > 0
"""

RETURN = r"""
checks:
  description: Every check the runtime reported, in the report's order (by id).
  returned: when the command printed a report, also when the module fails on its checks
  type: list
  elements: dict
  contains:
    id:
      description: The check id, as C(iotedge check-list) and C(--dont-run) name it.
      type: str
    description:
      description:
        - The runtime's description of the check. The JSON report has none, so it comes from the collection's table
          of the runtime's checks; V(null) for ids that table does not know.
      type: str
    result:
      description: V(ok), V(warning), V(error), V(fatal) (stopped the run), V(skipped) or V(ignored) (not applicable).
      type: str
    details:
      description: The runtime's message and its causes, for warnings, errors and fatal results; empty otherwise.
      type: list
      elements: str
    additional_info:
      description: What the check reported about itself (paths, versions, certificate dates), as the runtime gave it.
      type: dict
    ignored:
      description: Whether the id is in O(ignore).
      type: bool
  sample:
    - id: configs-up-to-date
      description: daemon configurations up-to-date with config.toml
      result: warning
      details:
        - /etc/aziot/keyd/config.d/00-super.toml does not exist.
        - Did you run 'aziotctl config apply'?
      additional_info: {}
      ignored: false
error_ids:
  description: Ids of the checks with the result V(error) or V(fatal), except those in O(ignore).
  returned: when the command printed a report, also when the module fails on its checks
  type: list
  elements: str
  sample: [key-pairs-read]
warning_ids:
  description: Ids of the checks with the result V(warning), except those in O(ignore).
  returned: when the command printed a report, also when the module fails on its checks
  type: list
  elements: str
  sample: [configs-up-to-date]
counts:
  description:
    - How many checks had each result (V(ok), V(warning), V(error), V(fatal), V(skipped), V(ignored)), and C(total).
    - Checks in O(ignore) are counted as C(ignored), whatever their result.
  returned: when the command printed a report, also when the module fails on its checks
  type: dict
  sample: {ok: 20, warning: 1, error: 0, fatal: 0, skipped: 4, ignored: 2, total: 27}
modules:
  description: The status of each module of O(wait_for_modules), all V(running) by then; empty without a wait.
  returned: when the command printed a report, also when the module fails on its checks
  type: dict
  sample: {edgeAgent: running}
additional_info:
  description: The report's information about the host - runtime version, OS, time; its keys vary by version.
  returned: when the command printed a report, also when the module fails on its checks
  type: dict
  sample: {aziot_edged_version: 1.5.44, now: "2026-11-27T12:00:00Z", os: {id: debian, version_id: "12"}}
"""

from functools import partial

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.edgefleet.iotedge.plugins.module_utils._iotedge_cli import (
    FAIL_ON,
    CheckRequest,
    IotedgeError,
    resolving_runner,
    run_check,
)


def main():
    module = AnsibleModule(
        argument_spec={
            "ignore": {"type": "list", "elements": "str", "default": []},
            "fail_on": {"type": "str", "choices": list(FAIL_ON), "default": "error"},
            "diagnostics_image_name": {"type": "str"},
            "executable": {"type": "path", "default": "iotedge"},
            "wait_for_modules": {"type": "list", "elements": "str", "default": []},
            "wait_timeout": {"type": "int", "default": 300},
        },
        supports_check_mode=True,
    )
    params = module.params
    run = resolving_runner(module.get_bin_path, partial(module.run_command, handle_exceptions=False))
    request = CheckRequest(
        executable=params["executable"],
        ignore=params["ignore"],
        fail_on=params["fail_on"],
        diagnostics_image_name=params["diagnostics_image_name"],
        wait_for_modules=params["wait_for_modules"],
        wait_timeout=params["wait_timeout"],
    )
    try:
        result = run_check(run, request, warn=module.warn)
    except IotedgeError as exc:
        module.fail_json(msg=str(exc), **exc.to_result())
    module.exit_json(**result)


if __name__ == "__main__":
    main()
