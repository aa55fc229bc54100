#!/usr/bin/python
# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: iotedge_host
short_description: Converge an IoT Edge host's identity files and configuration in one call
version_added: 0.1.0
description:
  - Compares the identity directories and files (content, owner, group, mode) and the runtime's configuration with
    what is wanted, and changes only what differs, in one module run instead of a task per file.
  - Refuses identity directories under an existing parent that other users cannot enter (the runtime reads its
    identity as C(aziotcs)/C(aziotks) or C(iotedge)); missing parents are created as C(root) with mode C(0755).
  - Writes each file atomically (a temporary file beside it, renamed into place). A file with O(files[].backup)
    keeps the replaced one as C(<file>.<pid>.<time>~), and only the newest O(backups_kept) of those stay. A failed
    write (a full disk) leaves the file in use and removes the partial backup.
  - Reports whether the runtime applied the configuration on disk (O(applied_marker), IoT Edge 1.2 and later) or
    runs it (O(service), 1.1), so a play can apply a configuration an interrupted run wrote but never applied.
  - The action plugin of the same name reads O(files[].src) on the controller and sends the content; a file marked
    O(files[].secret) travels as a C(no_log) value and is never shown in a diff.
  - Compares Debian packages with C(dpkg-query) and, with O(install=true), installs those not installed as asked with
    C(apt-get) itself, the way M(ansible.builtin.apt) runs it, so the host needs no C(python3-apt) (which
    M(ansible.builtin.apt) would first install from the distribution's mirror).
author: edgefleet developers (@edgefleet)
extends_documentation_fragment:
  - edgefleet.iotedge._attributes
attributes:
  check_mode:
    support: full
    details:
      - Predicts every change; on a host without the runtime the files are predicted as written.
      - Packages are predicted from C(dpkg-query) alone; neither C(apt-get update) nor C(apt-get install) runs.
  diff_mode:
    support: partial
    details: Shows the text of files with O(files[].diff) (never of a secret file).
  action:
    description:
      - Indicates this has a corresponding action plugin, so some parts of the options can be executed on the
        controller.
    support: full
    details:
      - The action plugin reads O(files[].src) on the controller.
      - With O(observed), it decides on the controller whether the host needs the module run at all.
options:
  directories:
    description: Directories to create or correct, in order.
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: Absolute path on the host.
        type: path
        required: true
      owner:
        description: Owner; the group is the owner's name unless O(directories[].group) is set.
        type: str
        required: true
      group:
        description: Group; default the owner's name.
        type: str
      mode:
        description: Octal mode as a string, for example V('0700').
        type: str
        required: true
      variable:
        description: The inventory variable that chose O(directories[].path), named in errors.
        type: str
        default: ''
  files:
    description: Files to write or correct, in order, after the directories.
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: Absolute path on the host.
        type: path
        required: true
      src:
        description:
          - Controller path of the content (read by the action plugin). In check mode a missing O(files[].src) is
            predicted as written (an earlier phase would make it); otherwise it is an error naming
            O(files[].variable).
        type: path
      content:
        description: The content, when not read from O(files[].src).
        type: str
      secret:
        description:
          - The content is a secret (a key, a configuration with credentials) - never logged nor shown. The action
            plugin sends it as O(files[].secret_content).
        type: bool
        default: false
      secret_content:
        description: A secret content (a C(no_log) value); the action plugin sets it for a O(files[].secret) file.
        type: str
      owner:
        description: Owner; the group is the owner's name unless O(files[].group) is set.
        type: str
        required: true
      group:
        description: Group; default the owner's name.
        type: str
      mode:
        description: Octal mode as a string, for example V('0600').
        type: str
        required: true
      backup:
        description: Keep the replaced file as C(<file>.<pid>.<time>~) beside it.
        type: bool
        default: false
      diff:
        description: Show the text as a diff in diff mode (ignored for a secret file).
        type: bool
        default: false
      made_on_host:
        description:
          - The file is made on the host, not sent (an identity key the device made itself,
            M(edgefleet.iotedge.identity_csr)). It is never read, written or replaced; only its owner, group and mode are corrected.
          - Missing, it is an error naming O(files[].variable), except in check mode, where it is predicted.
          - Mutually exclusive with O(files[].src), O(files[].content) and O(files[].secret_content).
        type: bool
        default: false
      variable:
        description: The inventory variable that chose O(files[].src), named in errors.
        type: str
        default: ''
  runtime_users:
    description:
      - Users the runtime reads its identity as. If one is missing the runtime is not installed - an error, except
        in check mode, where everything is predicted.
    type: list
    elements: str
    default: []
  backups_kept:
    description: How many of a backed-up file's newest backups stay.
    type: int
    default: 5
  config_path:
    description: The runtime configuration among O(files); its age is compared with O(applied_marker).
    type: path
  applied_marker:
    description:
      - IoT Edge 1.2 and later - a file C(iotedge config apply) writes, for example
        C(/etc/aziot/identityd/config.d/00-super.toml). Older than O(config_path) means a configuration was
        written and never applied.
    type: path
  service:
    description: IoT Edge 1.1 - the daemon that reads the configuration when it starts (C(iotedge)).
    type: str
  packages:
    description:
      - Debian packages by name, each with the version it must have (an apt version string such as V(1.5.44-1), with
        its epoch if it has one) or an empty string for any. Those not installed as asked are returned in
        RV(packages_to_install), and installed when O(install=true).
    type: dict
    default: {}
  install:
    description:
      - Install the O(packages) not installed as asked, with C(apt-get install) (C(DEBIAN_FRONTEND=noninteractive),
        C(-y -q), the dpkg options C(--force-confdef) and C(--force-confold), a 60 second wait for the dpkg lock), as
        C(name=version) where pinned. Packages installed as asked are not passed to apt; when none is left apt does
        not run at all.
      - Runs after the directories and files, so a sources list among O(files) is in place first.
      - Packages apt installs, upgrades, downgrades or removes (dependencies too) are returned in RV(installed) and
        RV(removed), read from dpkg before and after.
    type: bool
    default: false
  install_first:
    description:
      - Names among O(packages) installed in an C(apt-get install) run before the others, in this order, for example
        a container engine whose C(docker) group the runtime's packages need when they are configured.
    type: list
    elements: str
    default: []
  apt_update:
    description:
      - Whether C(apt-get update) runs before installing (only when a package is to be installed).
      - V(if_stale) refreshes the cache when it is older than O(apt_cache_valid_time) seconds (the age
        M(ansible.builtin.apt) reads - C(/var/lib/apt/periodic/update-success-stamp), else C(/var/lib/apt/lists)) or
        holds no package lists at all.
      - V(always) refreshes it, for example after the sources list changed.
      - V(never) uses the cache as it is.
    type: str
    choices: [if_stale, always, never]
    default: if_stale
  apt_cache_valid_time:
    description: Seconds the apt cache stays fresh for O(apt_update=if_stale).
    type: int
    default: 3600
  apt_update_sources:
    description:
      - A sources list in the one-line format (for example C(/etc/apt/sources.list.d/edgefleet-iotedge.list)) whose
        repositories alone every C(apt-get update) of this module refreshes (before installing, and the one refresh
        when a package is missing from the cache), so the host fetches nothing from its other sources' mirrors. It
        runs C(apt-get update -q -o Dir::Etc::sourcelist=<path> -o Dir::Etc::sourceparts=- -o
        APT::Get::List-Cleanup=0); the other sources' lists stay as they are.
      - With O(apt_update=if_stale) the cache's age is then that of these repositories' lists in
        C(/var/lib/apt/lists) (named as apt names them from each C(deb) line's URI and suite), read from when apt
        wrote them (their inode change time, since apt gives a downloaded list the server's modification time).
        They are refreshed when none is there, when the sources list is newer than the newest of them, or when that
        one is older than O(apt_cache_valid_time).
      - Dependencies that only the other sources serve must then already be installed, or be in their existing
        lists.
      - Unset, every source of the host is refreshed.
    type: path
  allow_downgrade:
    description:
      - Let apt install a pinned version older than the installed one (C(--allow-downgrades)). Without it such a pin
        fails with apt's message.
    type: bool
    default: false
  observed:
    description:
      - The RV(edgefleet.iotedge.iotedge_host_preflight#module:observation) that
        M(edgefleet.iotedge.iotedge_host_preflight) read earlier in the run, before anything changed the host.
      - When it shows every directory, file, package and the runtime already as wanted (and no configuration waiting
        to be applied), the action plugin returns that outcome without running the module on the host
        (RV(from_observation)); otherwise the module runs as without it and reads the host afresh.
      - Give it only while nothing has changed the host since it was read (provision_edge.yml drops it after the
        install phase changed a host).
    type: dict
  observed_key:
    description:
      - The O(edgefleet.iotedge.iotedge_host_preflight#module:observe.digest_key) the observation's file digests were
        keyed with.
    type: str
notes:
  - Content is text (PEM, TOML, YAML), sent in the module's arguments.
  - Package names and pinned versions are checked against Debian's rules before anything runs.
  - A failing C(apt-get) fails the task with apt's last lines and the command; what an earlier C(apt-get install)
    run of this task installed is named in the message.
seealso:
  - module: edgefleet.iotedge.iotedge_module_info
  - module: ansible.builtin.copy
  - module: ansible.builtin.apt
  - module: edgefleet.iotedge.iotedge_host_preflight
"""

EXAMPLES = r"""
- name: Push the identity and write the configuration, backed up
  edgefleet.iotedge.iotedge_host:
    runtime_users: [aziotcs, aziotks]
    directories:
      - {path: /var/aziot/certs, owner: aziotcs, mode: "0755"}
      - {path: /var/aziot/secrets, owner: aziotks, mode: "0700"}
    files:
      - {path: /var/aziot/certs/device-id.pem, src: pki/identities/edge-01/identity.full-chain.cert.pem,
         owner: aziotcs, mode: "0644", diff: true}
      - {path: /var/aziot/secrets/device-id.key.pem, src: pki/identities/edge-01/identity.key.pem,
         owner: aziotks, mode: "0600", secret: true}
      - {path: /etc/aziot/config.toml, content: "{{ config }}", owner: root, mode: "0600", backup: true, diff: true}
    config_path: /etc/aziot/config.toml
    applied_marker: /etc/aziot/identityd/config.d/00-super.toml
  become: true
  register: host
  notify: apply the configuration

- name: Install the container engine, then the pinned runtime packages, refreshing a cache older than an hour
  edgefleet.iotedge.iotedge_host:
    packages:
      moby-engine: ""
      aziot-edge: 1.5.44-1
      aziot-identity-service: 1.5.6-1
    install: true
    install_first: [moby-engine]
    apt_cache_valid_time: 3600
    allow_downgrade: true
  become: true

- name: Install from one repository, refreshing only its lists (no request to the distribution's mirror)
  edgefleet.iotedge.iotedge_host:
    packages: {aziot-edge: "", aziot-identity-service: ""}
    install: true
    apt_update_sources: /etc/apt/sources.list.d/edgefleet-iotedge.list
  become: true
"""

RETURN = r"""
from_observation:
  description: The action plugin decided from O(observed) that nothing differs; the module did not run on the host.
  returned: always
  type: bool
actions:
  description: What was changed (or would be, in check mode), one line each. Never holds content.
  returned: always
  type: list
  elements: str
  sample: ["wrote /etc/aziot/config.toml (root, 0600)"]
runtime_installed:
  description: Every user of O(runtime_users) exists.
  returned: always
  type: bool
was_provisioned:
  description: The runtime applied a configuration before (1.2+) or its daemon runs (1.1).
  returned: always
  type: bool
apply_pending:
  description: The configuration on disk before this run was never applied (or the 1.1 daemon does not run).
  returned: always
  type: bool
packages_to_install:
  description: The O(packages) not installed as asked, as apt takes them (C(name) or C(name=version)).
  returned: always
  type: list
  elements: str
  sample: ["aziot-edge=1.5.44-1"]
installed:
  description:
    - Packages C(apt-get) installed, upgraded or downgraded in this run (dependencies too), sorted by name, as dpkg
      shows them afterwards. Empty in check mode (see RV(packages_to_install)).
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The package, with C(:architecture) for a package that is C(Multi-Arch) V(same).
      type: str
    version:
      description: The version now installed.
      type: str
    previous_version:
      description: The version installed before, empty if it was not installed.
      type: str
  sample: [{name: aziot-edge, version: 1.5.44-1, previous_version: ""}]
removed:
  description: Packages C(apt-get) removed in this run (a conflicting package), with the version they had.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The package.
      type: str
    version:
      description: The version it had.
      type: str
cache_updated:
  description: C(apt-get update) ran before installing (or would, in check mode).
  returned: always
  type: bool
backups:
  description: Backup files made by this run.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.edgefleet.iotedge.plugins.module_utils._iotedge_host import (
    HOST_OPTIONS,
    HostStateError,
    converge,
    request_from_params,
)


def main():
    module = AnsibleModule(argument_spec=HOST_OPTIONS, supports_check_mode=True)
    try:
        outcome = converge(request_from_params(module.params, module.check_mode), module.run_command)
    except HostStateError as error:
        module.fail_json(msg=str(error))
    for warning in outcome.warnings:
        module.warn(warning)
    result = outcome.to_result()
    if module._diff and outcome.diff:
        result["diff"] = outcome.diff
    module.exit_json(**result)


if __name__ == "__main__":
    main()
