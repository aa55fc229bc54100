# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: deployment_progress
short_description: Where a ring rollout's devices stand - settled, failed or still waiting
version_added: 0.2.0
description:
  - Sorts the expected devices by what their C($edgeAgent) twins say, as M(edgefleet.iotedge.iothub_deployment_info)
    with C(devices=true) returns them. V(ok) - the device applies the deployment, edgeAgent reported the current
    desired version (C(in_sync)) with C(lastDesiredStatus) code 200. V(failed) - it reported the current desired
    version with another code. V(waiting) - anything else (the hub has not applied the deployment to it yet, or
    edgeAgent has not acted on it yet).
  - The role edgefleet.iotedge.iotedge_deployment waits with it until every device of a ring has settled, and stops
    the rollout when the failed ones pass O(max_failures).
author: edgefleet developers (@edgefleet)
options:
  _input:
    description: The C(devices) of M(edgefleet.iotedge.iothub_deployment_info) (with C(devices=true)).
    type: list
    elements: dict
    required: true
  expected:
    description: Device id -> inventory host, the devices that must settle.
    type: dict
    required: true
  configuration_id:
    description: The deployment id the devices must apply; unset, any deployment will do (only the status counts).
    type: str
  max_failures:
    description:
      - How many failed devices are tolerated - a whole number, or a percentage of the expected devices such as
        V(10%) (rounded down).
    type: raw
    default: 0
"""

EXAMPLES = r"""
- name: Sort the canary devices by their state
  ansible.builtin.set_fact:
    canary: >-
      {{ status.devices | edgefleet.iotedge.deployment_progress(expected={'edge-01': 'edge-01'},
         configuration_id='sensors-0b9e51c2aa10', max_failures='10%') }}
"""

RETURN = r"""
_value:
  description:
    - C(ok) (hosts), C(failed) and C(waiting) (each with C(host), C(device_id) and C(reason)), C(total),
      C(allowed) (failures tolerated), C(settled) (none waiting) and C(over_threshold) (more failed than allowed);
      C(failed_text) and C(waiting_text) list those hosts with their reasons, for a message.
  type: dict
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.edgefleet.iotedge.plugins.module_utils._deployment_rollout import RolloutError, progress


def deployment_progress(devices, expected, configuration_id=None, max_failures=0) -> dict:
    if not isinstance(devices, list) or not isinstance(expected, dict):
        raise AnsibleFilterError(
            "edgefleet.iotedge.deployment_progress: the input is iothub_deployment_info's devices (a list) and "
            "expected a dictionary of device id -> host"
        )
    try:
        return progress(devices, {str(k): str(v) for k, v in expected.items()}, configuration_id, max_failures)
    except RolloutError as error:
        raise AnsibleFilterError(str(error)) from None


class FilterModule:
    def filters(self):
        return {"deployment_progress": deployment_progress}
