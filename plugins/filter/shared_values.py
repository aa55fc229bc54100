# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: shared_values
short_description: The values that several hosts share, with the hosts that share each
version_added: 0.1.0
description:
  - Reads one variable (a dotted path into each host's variables) for the given hosts and returns, for every value
    that more than one host has, the sorted list of those hosts. Values only one host has are left out, so an empty
    result means every host has a value of its own.
  - The roles use it to find hosts that share a registration id, fail just those and let the others go on.
author: edgefleet developers (@edgefleet)
options:
  _input:
    description: The variables of every host, usually C(hostvars).
    type: dict
    required: true
  hosts:
    description: The hosts to compare, usually C(ansible_play_hosts).
    type: list
    elements: str
    required: true
  path:
    description: Dotted path of the value in each host's variables, for example C(edge_pki_preflight.registration_id).
    type: str
    required: true
"""

EXAMPLES = r"""
- name: Find the registration ids that several hosts of the play share
  ansible.builtin.set_fact:
    shared_registration_ids: >-
      {{ hostvars | edgefleet.iotedge.shared_values(ansible_play_hosts, 'edge_pki_preflight.registration_id') }}
  run_once: true
"""

RETURN = r"""
_value:
  description:
    - 'Each shared value with the hosts that have it, for example C({"edge-01": ["edge-01", "Edge-01"]}).'
  type: dict
"""

from ansible.errors import AnsibleFilterError


def shared_values(variables, hosts, path: str) -> dict:
    """``{{ hostvars | edgefleet.iotedge.shared_values(hosts, 'a.b') }}``: value -> the hosts sharing it (2+)."""
    owners: dict = {}
    for host in hosts:
        value = variables[host]
        for part in path.split("."):
            try:
                value = value[part]
            except (KeyError, TypeError):
                raise AnsibleFilterError(f"edgefleet.iotedge.shared_values: {host} has no {path}") from None
        owners.setdefault(value, []).append(host)
    return {value: sorted(names) for value, names in owners.items() if len(names) > 1}


class FilterModule:
    """edgefleet.iotedge.shared_values."""

    def filters(self):
        return {"shared_values": shared_values}
