# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: deployment_summary
short_description: A deployment's state per ring and per host - version, layers, modules, desired version, status
version_added: 0.2.0
description:
  - One row per inventory host, in ring order - the version of the deployment that applies to its device, the other
    (layered) deployments applied, the modules edgeAgent reports with their runtime status, the desired version,
    the one edgeAgent last acted on and its C(lastDesiredStatus) - and per ring how many hosts are ok, failed or
    waiting and which versions they run. Also as a text table.
  - The role edgefleet.iotedge.iotedge_deployment prints it at the end of a run.
author: edgefleet developers (@edgefleet)
options:
  _input:
    description: The C(devices) of M(edgefleet.iotedge.iothub_deployment_info) (with C(devices=true)).
    type: list
    elements: dict
    required: true
  hosts:
    description: Inventory host -> C(device_id) and C(ring).
    type: dict
    required: true
  rings:
    description: The rings in rollout order (the table's order).
    type: list
    elements: str
    required: true
  name:
    description: The deployment's base name (its versions' ids are C(<name>-<version>)).
    type: str
    required: true
"""

EXAMPLES = r"""
- name: Summarise the sensors deployment
  ansible.builtin.debug:
    msg: >-
      {{ (status.devices | edgefleet.iotedge.deployment_summary(hosts={'edge-01': {'device_id': 'edge-01',
         'ring': 'canary'}}, rings=['canary', 'main'], name='sensors')).table }}
"""

RETURN = r"""
_value:
  description:
    - C(hosts) - by host, C(device_id), C(ring), C(version), C(layers), C(modules) (name -> runtime status),
      C(desired_version), C(last_desired_version), C(in_sync), C(status_code), C(status_description).
    - C(rings) - by ring, C(hosts), C(ok), C(failed), C(waiting) and C(versions) (version -> hosts).
    - C(table) - the same as text.
  type: dict
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.edgefleet.iotedge.plugins.module_utils._deployment_rollout import summary


def deployment_summary(devices, hosts, rings, name) -> dict:
    if not isinstance(devices, list) or not isinstance(hosts, dict) or not isinstance(rings, list):
        raise AnsibleFilterError(
            "edgefleet.iotedge.deployment_summary: the input is iothub_deployment_info's devices (a list), hosts a "
            "dictionary of host -> device_id and ring, rings a list"
        )
    return summary(
        devices, {str(host): dict(facts) for host, facts in hosts.items()}, [str(r) for r in rings], str(name)
    )


class FilterModule:
    def filters(self):
        return {"deployment_summary": deployment_summary}
