#!/usr/bin/python
# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: iotedge_host_preflight
short_description: Check an IoT Edge host before a run changes anything, and read its distribution facts
version_added: 0.1.0
description:
  - Fails when an existing parent of an identity directory cannot be entered by other users (the runtime reads its
    identity as C(aziotcs)/C(aziotks), or C(iotedge) on 1.1, and would fail later with "is not readable by user"),
    naming the directory's variable. Changes nothing.
  - With O(distribution_facts=true) returns the host's distribution facts, collected by Ansible's own distribution
    fact collector under the names M(ansible.builtin.setup) gives them, so a play that needs only those (the
    repository defaults of the iotedge_install role) can skip fact gathering.
  - A module of its own rather than a mode of M(edgefleet.iotedge.iotedge_host), because the fact collector it imports
    doubles the size of the code sent to the host, which every converging run would otherwise carry.
author: edgefleet developers (@edgefleet)
extends_documentation_fragment:
  - edgefleet.iotedge._attributes
attributes:
  check_mode:
    support: full
    details: The module only reads.
  diff_mode:
    support: none
  facts:
    description: Action returns an C(ansible_facts) dictionary that will update existing host facts.
    support: full
    details: Only with O(distribution_facts=true).
options:
  directories:
    description: The identity directories (created later by M(edgefleet.iotedge.iotedge_host)) whose parents to check.
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: Absolute path on the host.
        type: path
        required: true
      owner:
        description: The directory's owner, checked for a name only.
        type: str
        required: true
      group:
        description: Group; default the owner's name.
        type: str
      mode:
        description: Octal mode as a string, for example V('0700'), checked for its form only.
        type: str
        required: true
      variable:
        description: The inventory variable that chose O(directories[].path), named in errors.
        type: str
        default: ''
  distribution_facts:
    description:
      - Return the distribution facts in C(ansible_facts), the same as M(ansible.builtin.setup) with
        C(gather_subset=distribution) returns them (C(distribution), C(distribution_release),
        C(distribution_version), C(distribution_major_version), C(distribution_file_*), C(os_family), ...).
    type: bool
    default: true
seealso:
  - module: edgefleet.iotedge.iotedge_host
  - module: ansible.builtin.setup
"""

EXAMPLES = r"""
- name: Check the identity directories and read the distribution facts, without a setup run
  edgefleet.iotedge.iotedge_host_preflight:
    directories:
      - {path: /var/aziot/certs, owner: aziotcs, mode: "0755", variable: edgefleet_iotedge_cert_dir}
      - {path: /var/aziot/secrets, owner: aziotks, mode: "0700", variable: edgefleet_iotedge_secrets_dir}
  become: true

- name: Use them
  ansible.builtin.debug:
    msg: "{{ ansible_facts['distribution'] }} {{ ansible_facts['distribution_release'] }}"
"""

RETURN = r"""
ansible_facts:
  description: With O(distribution_facts=true), the distribution facts of M(ansible.builtin.setup), under the same names.
  returned: when O(distribution_facts=true)
  type: dict
  contains:
    distribution:
      description: The distribution's name.
      type: str
      sample: Debian
    distribution_release:
      description: Its release (code name).
      type: str
      sample: bookworm
    distribution_version:
      description: Its version.
      type: str
      sample: "12.8"
    distribution_major_version:
      description: Its major version.
      type: str
      sample: "12"
    os_family:
      description: Its family.
      type: str
      sample: Debian
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.facts.namespace import PrefixFactNamespace
from ansible.module_utils.facts.system.distribution import DistributionFactCollector

from ansible_collections.edgefleet.iotedge.plugins.module_utils._iotedge_host import (
    OWNED_OPTIONS,
    HostStateError,
    Request,
    converge,
    wanted_directories,
)


def main():
    module = AnsibleModule(
        argument_spec={
            "directories": {"type": "list", "elements": "dict", "default": [], "options": OWNED_OPTIONS},
            "distribution_facts": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    try:
        request = Request(
            directories=wanted_directories(module.params["directories"]),
            preflight=True,
            check_mode=module.check_mode,
        )
        converge(request, module.run_command)
    except HostStateError as error:
        module.fail_json(msg=str(error))
    result = {"changed": False}
    if module.params["distribution_facts"]:
        # ansible.builtin.setup's collector and names (ansible_distribution, ...), which Ansible files under
        # ansible_facts['distribution'].
        namespace = PrefixFactNamespace(namespace_name="ansible", prefix="ansible_")
        result["ansible_facts"] = DistributionFactCollector(namespace=namespace).collect_with_namespace(module=module)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
