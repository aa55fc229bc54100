# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: fleet_summary
short_description: The closing table of provision_edge.yml - one line per host with its enrollment, hub and edgeAgent
version_added: 0.3.0
description:
  - One line per inventory host, sorted by name - its registration id, what DPS says of its registration, the hub it
    was assigned to and the state of edgeAgent - under a header line.
  - A host that left the run shows C(FAILED) in place of edgeAgent's state, a retired host C(retired) for both; a value
    that no phase of the run read shows C(not checked) (or C(-)).
  - One Python pass, where a Jinja loop over a thousand hosts took seconds.
author: edgefleet developers (@edgefleet)
options:
  _input:
    description: Every host of the play (C(ansible_play_hosts_all)).
    type: list
    elements: str
    required: true
  running:
    description: The hosts still in the run (C(ansible_play_hosts)).
    type: list
    elements: str
    required: true
  identities:
    description: Host -> its settings with C(registration_id) (C(edge_pki_preflight.hosts)).
    type: dict
    required: true
  registrations:
    description: Host -> C(status) and C(assigned_hub) as DPS reports them (C(edgefleet_registrations)).
    type: dict
    required: true
  runtimes:
    description: Host -> C(edge_agent), the state the runtime phase read (C(edgefleet_runtime) of each host).
    type: dict
    default: {}
  retired:
    description: The hosts retired in this run (the group C(edgefleet_retiring)).
    type: list
    elements: str
    default: []
"""

EXAMPLES = r"""
- name: Show the fleet, one line per host
  ansible.builtin.debug:
    msg: >-
      {{ ansible_play_hosts_all | edgefleet.iotedge.fleet_summary(ansible_play_hosts, edge_pki_preflight.hosts,
         edgefleet_registrations | default({}), retired=groups.get('edgefleet_retiring', [])) }}
  run_once: true
"""

RETURN = r"""
_value:
  description: The header and one line per host, joined by newlines.
  type: str
"""

from ansible.errors import AnsibleFilterError

ROW_FORMAT = "%-20s %-28s %-15s %-34s %s"
HEADER = ROW_FORMAT % ("HOST", "REGISTRATION ID", "DPS", "HUB", "EDGEAGENT")


def fleet_summary(hosts, running, identities, registrations, runtimes=None, retired=()) -> str:
    runtimes = runtimes or {}
    mappings = {"identities": identities, "registrations": registrations, "runtimes": runtimes}
    for name, value in mappings.items():
        if not isinstance(value, dict):
            raise AnsibleFilterError(f"edgefleet.iotedge.fleet_summary: {name} must be a dictionary by host")
    running, retired = set(running), set(retired)
    rows = [HEADER]
    for host in sorted(hosts):
        registration = registrations.get(host) or {}
        runtime = runtimes.get(host) or {}
        if host in retired:
            registration, runtime = {"status": "retired"}, {"edge_agent": "retired"}
        rows.append(
            ROW_FORMAT
            % (
                host,
                (identities.get(host) or {}).get("registration_id", "-"),
                registration.get("status", "not checked"),
                registration.get("assigned_hub") or "-",
                runtime.get("edge_agent", "not checked") if host in running else "FAILED",
            )
        )
    return "\n".join(rows)


class FilterModule:
    def filters(self):
        return {"fleet_summary": fleet_summary}
