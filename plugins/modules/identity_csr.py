#!/usr/bin/python
# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: identity_csr
short_description: Make the device's identity key on the device and return a certificate signing request for it
version_added: 0.2.0
description:
  - Runs on the IoT Edge host. Makes the identity key in O(key_path) (mode C(0600)) when the host has none, then
    returns a certificate signing request with the subject C(CN=<registration_id>), signed by that key. The private
    key never leaves the host; M(edgefleet.iotedge.pki_identity) signs the CSR on the controller (its
    O(edgefleet.iotedge.pki_identity#module:csrs) option).
  - An existing key is never replaced, whatever its type, since a device keeps the key its certificate is for. Move the
    file away to have a new one made; the controller then reissues the certificate for the new key.
  - The key is made by the host's C(openssl) command (Debian's C(openssl) package), written to a temporary file
    beside O(key_path) and renamed into place, so an interrupted run leaves no partial key.
author: edgefleet developers (@edgefleet)
extends_documentation_fragment:
  - edgefleet.iotedge._attributes
attributes:
  check_mode:
    support: full
    details: A missing key is predicted as made, and no CSR is returned for it (there is no key to sign with yet).
  diff_mode:
    support: none
options:
  registration_id:
    description: The device's DPS registration id, the CSR's common name.
    type: str
    required: true
  key_path:
    description: Where the identity key is (or is made) on the host, an absolute path.
    type: path
    required: true
  key_type:
    description: Type of a new key; the controller refuses a CSR whose key is of another type than it expects.
    type: str
    choices: [ec-p256, ec-p384, rsa-2048, rsa-3072, rsa-4096]
    default: ec-p256
  owner:
    description:
      - The user that reads the key (C(aziotks) on IoT Edge 1.2 and later, C(iotedge) on 1.1). A key made before the
        runtime is installed (the user does not exist yet) belongs to C(root) until the provision phase hands it over.
    type: str
    default: ''
seealso:
  - module: edgefleet.iotedge.pki_identity
"""

EXAMPLES = r"""
- name: Make the identity key on the device and a CSR for it
  edgefleet.iotedge.identity_csr:
    registration_id: "{{ inventory_hostname | lower }}"
    key_path: /var/aziot/secrets/device-id.key.pem
    owner: aziotks
  register: device_csr

- name: Sign every host's CSR on the controller
  edgefleet.iotedge.pki_identity:
    ca_path: /srv/pki/ca
    path: /srv/pki/identities
    devices: "{{ ansible_play_hosts | map('lower') | list }}"
    csrs: >-
      {{ dict(ansible_play_hosts | map('lower')
         | zip(ansible_play_hosts | map('extract', hostvars, ['device_csr', 'csr']))) }}
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
csr:
  description: The PEM certificate signing request; V(null) in check mode when the key would be made.
  returned: always
  type: str
key_created:
  description: Whether the key was made by this run (or, in check mode, would be).
  returned: always
  type: bool
key_type:
  description: The type of the key on the host (V(null) when it is none the fleet PKI knows, or not made yet).
  returned: always
  type: str
public_key_sha256:
  description: SHA-256 of the key's public part (its DER SubjectPublicKeyInfo), lowercase hex.
  returned: always
  type: str
actions:
  description: What this run changed (or, in check mode, would change), one line each.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.edgefleet.iotedge.plugins.module_utils._identity_csr import (
    GENPKEY_OPTIONS,
    CsrError,
    CsrRequest,
    ensure_identity_csr,
)


def main():
    module = AnsibleModule(
        argument_spec={
            "registration_id": {"type": "str", "required": True},
            "key_path": {"type": "path", "required": True},
            "key_type": {"type": "str", "choices": list(GENPKEY_OPTIONS), "default": "ec-p256"},
            "owner": {"type": "str", "default": ""},
        },
        supports_check_mode=True,
    )
    request = CsrRequest(**module.params, check_mode=module.check_mode)
    try:
        result = ensure_identity_csr(request, module.run_command)
    except CsrError as error:
        module.fail_json(msg=str(error))
    if result["key_type"] not in (None, request.key_type) and not result["key_created"]:
        module.warn(
            f"{request.key_path} holds a {result['key_type']} key, not {request.key_type}: it is kept (a device keeps "
            "the key its certificate is for). Move it away to have a new one made"
        )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
