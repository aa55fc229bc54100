#!/usr/bin/python
# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: validate_inventory
short_description: Check one host's inventory variables for a role of the collection, before anything is written
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
  - The roles run it in their C(preflight) task files; C(playbooks/provision_edge.yml) runs it for every role and
    host before the PKI, DPS or any host is touched.
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
    choices: [edge_pki, dps_enrollment, iotedge_install, iotedge_provision]
  config_settings:
    description:
      - The settings of the filter edgefleet.iotedge.iotedge_config for this host (role iotedge_provision), rendered
        once to check them. Never logged.
    type: dict
seealso:
  - module: edgefleet.iotedge.pki_identity
  - module: edgefleet.iotedge.dps_enrollment
"""

EXAMPLES = r"""
- name: Check this host's DPS variables before anything is written
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
  returned: always
  type: list
  elements: str
registration_id:
  description: The host's registration id as it resolves (C(edgefleet_registration_id)), when the role has one.
  returned: when the role uses a registration id
  type: str
  sample: edge-01
errors:
  description: Every problem found, each C(edgefleet_<variable>) then the problem and the fix; the task fails when there is one.
  returned: failure
  type: list
  elements: str
  sample: ["edgefleet_pki_passphrase: must be a string, got a list. Quote the value in YAML"]
"""
