# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: by_host
short_description: Re-key a mapping by registration id to the inventory hosts with those registration ids
version_added: 0.3.0
description:
  - For each of the hosts given that the preflight accepted (a key of O(preflight)), the value that O(_input) holds
    for the host's registration id, or O(default) when it holds none.
  - The roles publish their fleet facts with it (C(edgefleet_identities)); one Python pass where a Jinja loop over a
    thousand hosts took a large part of a second.
author: edgefleet developers (@edgefleet)
extends_documentation_fragment:
  - edgefleet.iotedge._fleet_hosts
options:
  _input:
    description: Registration id -> value (for example the C(identities) of M(edgefleet.iotedge.pki_identity)).
    type: dict
    required: true
  default:
    description: The value of a host whose registration id O(_input) does not hold.
    type: raw
    default: null
"""

EXAMPLES = r"""
- name: Publish the identities by inventory host
  ansible.builtin.set_fact:
    edgefleet_identities: "{{ identities.identities | edgefleet.iotedge.by_host(edge_pki_preflight.hosts, ansible_play_hosts) }}"
  run_once: true
"""

RETURN = r"""
_value:
  description: Inventory host -> value.
  type: dict
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.edgefleet.iotedge.plugins.plugin_utils._fleet_hosts import accepted_hosts


def by_host(values, preflight, hosts, default=None) -> dict:
    if not isinstance(values, dict) or not isinstance(preflight, dict) or not isinstance(hosts, list):
        raise AnsibleFilterError(
            "edgefleet.iotedge.by_host: the input is a dictionary by registration id, preflight a dictionary of host "
            "-> settings with registration_id, hosts a list"
        )
    return {
        host: values.get(settings["registration_id"], default) for host, settings in accepted_hosts(preflight, hosts)
    }


class FilterModule:
    def filters(self):
        return {"by_host": by_host}
