#!/usr/bin/python
# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: validate_inventory
short_description: Check the hosts' inventory variables for a role of the collection, before anything is written
version_added: 0.1.0
description:
  - Reads the host's values of every variable of one role of edgefleet.iotedge (as the host resolves them - inventory,
    group_vars, extra vars and the role's defaults) and fails the host with every problem found, each naming the
    variable and the fix. It runs on the controller only (an action plugin) and contacts nothing.
  - Applies the role's argument spec without converting types - a list or a number given for a string (a CA
    passphrase, say) is an error, never turned into its text - then the rules of the values themselves, the same
    ones the modules apply - registration ids, twin tags and properties (IoT Hub's rules at every depth), DPS
    names and connection strings, apt repository fields, host directories, CA validity for the IoT Edge generation,
    and the runtime configuration (rendered once with the settings given in O(config_settings)).
  - Every pattern matches the whole value, so a value ending in a line break is refused.
  - Error messages never contain a secret's value, so the task runs without C(no_log) and its errors stay readable.
  - Names a variable with the C(edgefleet_) prefix that no role of the collection knows, with the closest known name.
    C(edgefleet_unknown_variables) decides what that does - V(warn) (the default), V(fail) or V(ignore).
  - With O(hosts) it checks every host named, each with its own variables as a task of the play would see them on
    that host, in this one task (run it with C(run_once)), and fails none of them - it returns the accepted hosts
    with what the roles read of them and the refused ones with their problems, and the caller fails those. A task
    run per host costs the controller a worker process for every host, which at a thousand hosts is most of a run.
    For the roles that name one certificate, one enrollment or one device twin by the registration id (V(edge_pki),
    V(dps_enrollment), V(iotedge_deployment)) hosts that share one are refused, each named with the others, and so
    is a host whose value of a variable the controller reads once for the fleet differs from the other hosts'.
  - The roles run it with O(hosts) in their C(preflight) task files; C(playbooks/provision_edge.yml) runs those for
    every host before the PKI, DPS or any host is touched.
author: edgefleet developers (@edgefleet)
extends_documentation_fragment:
  - edgefleet.iotedge._attributes
attributes:
  check_mode:
    support: full
    details: It only reads variables.
  diff_mode:
    support: none
options:
  role:
    description: The role whose variables to check (its C(meta/argument_specs.yml) says which and of what type).
    type: str
    required: true
    choices: [edge_pki, dps_enrollment, iotedge_install, iotedge_provision, iotedge_deployment]
  config_settings:
    description:
      - The settings of the filter edgefleet.iotedge.iotedge_config for this host (role iotedge_provision), rendered
        once to check them. Never logged.
      - With O(hosts), each host's own C(iotedge_provision_settings) (the role's variable) are rendered instead.
    type: dict
  hosts:
    description:
      - Inventory hosts to check, each with its own variables (usually C(ansible_play_hosts), with C(run_once)).
      - Without it, only the host the task runs for is checked, and the task fails when it has a problem.
    type: list
    elements: str
seealso:
  - module: edgefleet.iotedge.pki_identity
  - module: edgefleet.iotedge.dps_enrollment
"""

EXAMPLES = r"""
- name: Check the DPS variables of every host of the play, once, before anything is written
  edgefleet.iotedge.validate_inventory:
    role: dps_enrollment
    hosts: "{{ ansible_play_hosts }}"
  run_once: true
  register: dps_check

- name: Fail the hosts it refused, each with its problems (the others go on)
  ansible.builtin.fail:
    msg: "{{ dps_check.refused[inventory_hostname] | join(' | ') }}"
  when: inventory_hostname in dps_check.refused

- name: Check this host's DPS variables
  edgefleet.iotedge.validate_inventory:
    role: dps_enrollment

- name: Check the runtime configuration variables, rendering the configuration once
  edgefleet.iotedge.validate_inventory:
    role: iotedge_provision
    config_settings: "{{ iotedge_provision_settings }}"
"""

RETURN = r"""
role:
  description: The role whose variables were checked.
  returned: always
  type: str
checked:
  description: The variables the host defines for the role, all of them checked.
  returned: without O(hosts)
  type: list
  elements: str
registration_id:
  description: The host's registration id as it resolves (C(edgefleet_registration_id)), when the role has one.
  returned: without O(hosts)
  type: str
  sample: edge-01
hosts:
  description:
    - Each accepted host with what the roles read of it - C(registration_id); for V(dps_enrollment) also C(twin)
      (C(tags), C(desired_properties)) and C(certificate_path) (where edgefleet.iotedge.pki_identity keeps its leaf);
      for V(iotedge_deployment) C(ring) and C(tags) (the twin tags its device must have, the ring tag included);
      for V(edge_pki) the flags C(rotate), C(retired), C(edge_ca) and C(device_key).
  returned: with O(hosts)
  type: dict
  sample: {"edge-01": {"registration_id": "edge-01"}}
hosts_with:
  description:
    - For each flag of RV(hosts) (V(edge_pki) - C(rotate), C(retired), C(edge_ca), C(device_key)), the accepted hosts
      that have it, in the order of O(hosts); empty for a flag no host has. The roles read these lists rather than
      filter every host's entry in Jinja.
  returned: with O(hosts)
  type: dict
  sample: {"retired": ["edge-07"], "device_key": [], "edge_ca": [], "rotate": []}
refused:
  description: Each refused host with its problems, each naming the variable and the fix.
  returned: with O(hosts)
  type: dict
  sample: {"edge-02": ["edgefleet_registration_id: registration id 'Edge-02' has uppercase letters; use 'edge-02'"]}
errors:
  description: Every problem found, each C(edgefleet_<variable>) then the problem and the fix; the task fails when there is one.
  returned: failure, without O(hosts)
  type: list
  elements: str
  sample: ["edgefleet_pki_passphrase: must be a string, got a list. Quote the value in YAML"]
"""
