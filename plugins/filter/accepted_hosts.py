# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: accepted_hosts
short_description: The hosts a role's preflight accepted, in play order, or one setting of each
version_added: 0.3.0
description:
  - Of the hosts given, those that a role's preflight accepted (the keys of its C(hosts)), in the order given; with
    O(where), only those whose setting of that name is true; with O(attribute), that setting of each instead of the
    host's name.
  - The roles read their hosts and registration ids with it; one Python pass, where a Jinja C(select) and
    C(map('extract')) over a thousand hosts took a large part of a second.
author: edgefleet developers (@edgefleet)
options:
  _input:
    description: Host -> its settings, the C(hosts) of a role's preflight (M(edgefleet.iotedge.validate_inventory)).
    type: dict
    required: true
  hosts:
    description: The hosts to take (C(ansible_play_hosts)); those the preflight did not accept are left out.
    type: list
    elements: str
    required: true
  attribute:
    description: The setting to return for each host (for example V(registration_id)) instead of the host's name.
    type: str
  where:
    description: Only the hosts whose setting of this name is true (for example V(rotate) or V(edge_ca) of edge_pki).
    type: str
"""

EXAMPLES = r"""
- name: Ensure the identity chains of the play's hosts
  edgefleet.iotedge.pki_identity:
    ca_path: /srv/edgefleet/ca
    path: /srv/edgefleet/identities
    devices: "{{ edge_pki_preflight.hosts | edgefleet.iotedge.accepted_hosts(ansible_play_hosts, attribute='registration_id') }}"
    rotate: >-
      {{ edge_pki_preflight.hosts | edgefleet.iotedge.accepted_hosts(ansible_play_hosts, attribute='registration_id', where='rotate') }}
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
_value:
  description: The accepted hosts' names (or their O(attribute)), in the order of O(hosts).
  type: list
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.edgefleet.iotedge.plugins.plugin_utils._fleet_hosts import accepted_hosts as _accepted


def accepted_hosts(preflight, hosts, attribute=None, where=None) -> list:
    if not isinstance(preflight, dict) or not isinstance(hosts, list):
        raise AnsibleFilterError(
            "edgefleet.iotedge.accepted_hosts: the input is a role preflight's hosts (a dictionary by host), hosts a list"
        )
    taken = []
    for host, settings in _accepted(preflight, hosts):
        if where is not None and not settings.get(where):
            continue
        if attribute is None:
            taken.append(host)
        elif attribute in settings:
            taken.append(settings[attribute])
        else:
            raise AnsibleFilterError(
                f"edgefleet.iotedge.accepted_hosts: the preflight's settings of {host} have no {attribute}"
            )
    return taken


class FilterModule:
    def filters(self):
        return {"accepted_hosts": accepted_hosts}
