# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: identity_files
short_description: Where edgefleet.iotedge.pki_identity keeps one device's identity (and Edge CA) files
version_added: 0.1.0
description:
  - Returns the paths of the key, the leaf certificate and the full chain that M(edgefleet.iotedge.pki_identity)
    writes for a registration id under its O(edgefleet.iotedge.pki_identity#module:path). The file names are the
    module's own, so the roles never spell them.
  - The roles use it where the fact C(edgefleet_identities) (set by the edge_pki role from the module's
    return) is not there, for example a run with C(--tags provision) only.
author: edgefleet developers (@edgefleet)
options:
  _input:
    description: The identity directory, the module's O(edgefleet.iotedge.pki_identity#module:path).
    type: path
    required: true
  registration_id:
    description: The device's registration id.
    type: str
    required: true
"""

EXAMPLES = r"""
- name: Push the chain that pki_identity wrote for this host
  ansible.builtin.copy:
    src: "{{ (edgefleet_pki_identity_dir | edgefleet.iotedge.identity_files(edgefleet_registration_id)).chain_path }}"
    dest: /var/aziot/certs/device-id.pem
    mode: "0644"
"""

RETURN = r"""
_value:
  description:
    - C(cert_path) (the leaf), C(key_path) and C(chain_path) (leaf, intermediate, root).
    - C(next), the same three paths of a rotation's new identity, which waits there until the device registered with
      it (M(edgefleet.iotedge.pki_identity) with O(edgefleet.iotedge.pki_identity#module:staged=true)). The files
      exist only while a rotation is under way.
    - C(edge_ca), the same three paths of the device's Edge CA (M(edgefleet.iotedge.pki_edge_ca); C(chain_path) is
      the Edge CA then the fleet root).
  type: dict
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki_edge_ca import edge_ca_files
from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki_identity import identity_files as paths_of


def identity_files(identity_dir, registration_id) -> dict:
    if not isinstance(identity_dir, str) or not isinstance(registration_id, str):
        raise AnsibleFilterError("edgefleet.iotedge.identity_files: the directory and the registration id are text")
    return {**paths_of(identity_dir, registration_id), "edge_ca": edge_ca_files(identity_dir, registration_id)}


class FilterModule:
    def filters(self):
        return {"identity_files": identity_files}
