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
  - With O(observe), reads the state that later M(edgefleet.iotedge.iotedge_host) tasks of the run compare (paths,
    users, packages, whether the runtime runs its configuration, and the runtime modules' status) and returns it as
    RV(observation). Given that to their O(edgefleet.iotedge.iotedge_host#module:observed) option, those tasks decide
    on the controller and run on the host only where something differs, so a host that is already right costs this
    one module run.
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
  observe:
    description:
      - What to read for RV(observation). Owners, modes and contents are not given here, the later tasks compare
        them with what they want.
    type: dict
    suboptions:
      directories:
        description: Directories, read with their parents.
        type: list
        elements: path
        default: []
      files:
        description: Files, read with the SHA-256 of their content (an HMAC-SHA256 with O(observe.digest_key)).
        type: list
        elements: path
        default: []
      digest_key:
        description:
          - Keys the files' digests (HMAC-SHA256). The observation is shown with C(-v); a plain hash of a file that
            holds a short secret (a configuration with an EST password) would let a reader of the log guess it.
            Draw one per run and give the same to O(edgefleet.iotedge.iotedge_host#module:observed_key).
        type: str
      runtime_users:
        description: Users whose existence tells whether the runtime is installed.
        type: list
        elements: str
        default: []
      packages:
        description: Debian packages whose installed version to read (C(dpkg-query); the apt cache is not opened).
        type: list
        elements: str
        default: []
      config_path:
        description: The runtime's configuration file, whose age is compared with what the runtime applied.
        type: path
      applied_marker:
        description: IoT Edge 1.2 and later, the file C(iotedge config apply) writes.
        type: path
      service:
        description: IoT Edge 1.1, the daemon that reads the configuration when it starts.
        type: str
      modules:
        description: Runtime modules whose status C(iotedge list) gives, when the runtime is installed and answers.
        type: list
        elements: str
        default: []
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
observation:
  description:
    - The state O(observe) named, for the O(edgefleet.iotedge.iotedge_host#module:observed) option of later tasks.
      C(modules) maps each module of O(observe.modules) that C(iotedge list) showed to its status; it is empty when
      the runtime is not installed or does not answer.
  returned: when O(observe) is set
  type: dict
  sample:
    paths:
      /var/aziot/certs: {kind: directory, owner: aziotcs, group: aziotcs, mode: 493}
      /var/aziot/certs/device-id.pem: {kind: file, owner: aziotcs, group: aziotcs, mode: 420, digest: 9f86d0...}
    users: {aziotcs: true, aziotks: true}
    packages: {aziot-edge: 1.5.44-1, moby-engine: null}
    runtime:
      config_path: /etc/aziot/config.toml
      config_mtime: 1764500000.0
      applied_marker: /etc/aziot/identityd/config.d/00-super.toml
      applied_mtime: 1764500001.0
      service: ''
      service_active: null
    modules: {edgeAgent: running}
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

from functools import partial

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.facts.namespace import PrefixFactNamespace
from ansible.module_utils.facts.system.distribution import DistributionFactCollector

from ansible_collections.edgefleet.iotedge.plugins.module_utils._iotedge_cli import (
    IotedgeError,
    ModuleInfoRequest,
    module_info,
    resolving_runner,
)
from ansible_collections.edgefleet.iotedge.plugins.module_utils._iotedge_host import (
    OWNED_OPTIONS,
    HostStateError,
    Observed,
    Request,
    converge,
    observe,
    wanted_directories,
)

OBSERVE_OPTIONS = {
    "directories": {"type": "list", "elements": "path", "default": []},
    "files": {"type": "list", "elements": "path", "default": []},
    "runtime_users": {"type": "list", "elements": "str", "default": []},
    "packages": {"type": "list", "elements": "str", "default": []},
    "config_path": {"type": "path"},
    "applied_marker": {"type": "path"},
    "service": {"type": "str"},
    "modules": {"type": "list", "elements": "str", "default": []},
    "digest_key": {"type": "str", "no_log": True},
}


def main():
    module = AnsibleModule(
        argument_spec={
            "directories": {"type": "list", "elements": "dict", "default": [], "options": OWNED_OPTIONS},
            "observe": {"type": "dict", "options": OBSERVE_OPTIONS},
            "distribution_facts": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    result = {"changed": False}
    try:
        request = Request(
            directories=wanted_directories(module.params["directories"]),
            preflight=True,
            check_mode=module.check_mode,
        )
        converge(request, module.run_command)
        wanted = module.params["observe"]
        if wanted is not None:
            result["observation"] = observe(
                Observed(
                    directories=wanted["directories"],
                    files=wanted["files"],
                    runtime_users=wanted["runtime_users"],
                    packages=wanted["packages"],
                    config_path=wanted["config_path"] or "",
                    applied_marker=wanted["applied_marker"] or "",
                    service=wanted["service"] or "",
                    digest_key=wanted["digest_key"] or "",
                ),
                module.run_command,
            )
            result["observation"]["modules"] = _module_status(module, wanted["modules"])
    except HostStateError as error:
        module.fail_json(msg=str(error))
    if module.params["distribution_facts"]:
        # ansible.builtin.setup's collector and names (ansible_distribution, ...), which Ansible files under
        # ansible_facts['distribution'].
        namespace = PrefixFactNamespace(namespace_name="ansible", prefix="ansible_")
        result["ansible_facts"] = DistributionFactCollector(namespace=namespace).collect_with_namespace(module=module)
    module.exit_json(**result)


def _module_status(module, names) -> dict:
    """Each named runtime module's status from `iotedge list`; empty where the runtime is absent or not answering."""
    if not names:
        return {}
    run = resolving_runner(module.get_bin_path, partial(module.run_command, handle_exceptions=False))
    try:
        return module_info(run, ModuleInfoRequest(names=names))["status"]
    except IotedgeError:
        return {}


if __name__ == "__main__":
    main()
