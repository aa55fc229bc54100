# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: unclaimed_enrollments
short_description: The individual enrollments of the fleet's CA that no inventory host claims any more
version_added: 0.2.0
description:
  - From every individual enrollment of a DPS instance (as M(edgefleet.iotedge.dps_enrollment_info) returns them),
    those whose certificate was issued by the CA of the claimed hosts' own enrollments, but whose registration id
    no host claims - a host removed from inventory without being retired, which DPS would still let in.
  - C(playbooks/provision_edge.yml) retires them with C(edgefleet_retire_unclaimed=true); C(playbooks/fleet_report.yml)
    lists them.
author: edgefleet developers (@edgefleet)
options:
  _input:
    description: Every individual enrollment of the DPS instance (M(edgefleet.iotedge.dps_enrollment_info)'s C(enrollments)).
    type: list
    elements: dict
    required: true
  claimed:
    description: The registration ids the inventory claims (every host, retired ones included).
    type: list
    elements: str
    required: true
"""

EXAMPLES = r"""
- name: The enrollments no host claims
  ansible.builtin.set_fact:
    unclaimed: "{{ all_enrollments.enrollments | edgefleet.iotedge.unclaimed_enrollments(claimed=registration_ids) }}"
"""

RETURN = r"""
_value:
  description: Each unclaimed enrollment's C(registration_id), C(issuer), C(provisioning_status) and C(registration_status), sorted.
  type: list
  elements: dict
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.edgefleet.iotedge.plugins.module_utils._fleet_report import unclaimed_registration_ids


def unclaimed_enrollments(enrollments, claimed) -> list:
    if not isinstance(enrollments, list) or not isinstance(claimed, list):
        raise AnsibleFilterError(
            "edgefleet.iotedge.unclaimed_enrollments: the input is a list of enrollments and claimed a list of ids"
        )
    return unclaimed_registration_ids([str(item) for item in claimed], enrollments)


class FilterModule:
    def filters(self):
        return {"unclaimed_enrollments": unclaimed_enrollments}
