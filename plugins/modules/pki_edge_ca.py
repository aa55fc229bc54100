#!/usr/bin/python
# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: pki_edge_ca
short_description: Ensure an Edge CA certificate per IoT Edge device, issued by the fleet root CA, in one call
version_added: 0.2.0
description:
  - For every registration id in O(devices), ensures a key and an Edge CA certificate issued by the root CA of the
    M(edgefleet.iotedge.pki_ca) directory O(ca_path), in the device's directory under O(path) (beside its identity
    from M(edgefleet.iotedge.pki_identity)).
  - The Edge CA signs the server certificates of the device's modules (edgeHub), which downstream devices and
    modules verify up to the fleet root. Without one, the runtime makes its own self-signed "quickstart" Edge CA,
    which expires after 90 days unless renewed and which nothing else trusts.
  - "Profile, as the runtime makes its own: C(CA:TRUE) (critical) with path length 0, key usage digitalSignature and
    keyCertSign; CN C(<registration id>.ca) (it must differ from the device's hostname and id). With
    O(generation=1.1) the path length is 1: IoT Edge 1.1 issues a workload CA under it."
  - The root signs it, not the fleet intermediate, whose path length of 0 forbids a CA below it. During a CA rollover
    (a new CA in C(<ca_path>/next/)) the new root signs.
  - "Files per device: C(<path>/<id>/edge-ca.cert.pem), C(edge-ca.key.pem) (mode C(0600)) and
    C(edge-ca.full-chain.cert.pem) (Edge CA, then root: what the runtime's C([edge_ca] cert) or 1.1's
    C(certificates.device_ca_cert) points at)."
  - An Edge CA is issued again when files are missing or unreadable, it was issued by another root, its CN, key type
    or path length differ, the key does not match, or fewer than O(renew_before_days) remain; a stale chain file or
    a loose key mode is repaired without a new key.
author: edgefleet developers (@edgefleet)
extends_documentation_fragment:
  - edgefleet.iotedge._attributes
  - edgefleet.iotedge._attributes.FILES
attributes:
  check_mode:
    support: full
    details: Check mode reports which Edge CAs would be created, renewed, reissued or repaired and writes nothing.
  diff_mode:
    support: full
    details: The diff lists changed devices with subject, issuer, serial, thumbprint and end of validity, never keys.
options:
  ca_path:
    description: A directory managed by M(edgefleet.iotedge.pki_ca). Its root signs the Edge CAs.
    type: path
    required: true
  path:
    description: The identity directory of M(edgefleet.iotedge.pki_identity); one sub-directory per registration id.
    type: path
    required: true
  devices:
    description: The registration ids, as strings or as dicts with a C(registration_id) key.
    type: list
    elements: raw
    required: true
  key_type:
    description: Key algorithm and size of the Edge CA keys. Changing it reissues every Edge CA.
    type: str
    choices: [ec-p256, ec-p384, rsa-2048, rsa-3072, rsa-4096]
    default: ec-p256
  valid_days:
    description: Validity of a newly issued Edge CA, in days. Never extends past the root's end of validity.
    type: int
    default: 365
  renew_before_days:
    description: Issue a new Edge CA when fewer than this many days of validity remain. Must be below O(valid_days).
    type: int
    default: 30
  generation:
    description:
      - IoT Edge generation of the devices. V(1.1) gives path length 1 and refuses an Edge CA ending on or after
        2038-01-01 (libiothsm cannot read it).
    type: str
    choices: ["1.1", "1.2+"]
    default: "1.2+"
  passphrase:
    description: Passphrase of the CA keys, when M(edgefleet.iotedge.pki_ca) encrypted them.
    type: raw
  state:
    description: V(absent) removes the listed devices' Edge CA files (their identities stay).
    type: str
    choices: [present, absent]
    default: present
seealso:
  - module: edgefleet.iotedge.pki_ca
  - module: edgefleet.iotedge.pki_identity
  - name: Manage IoT Edge certificates
    description: The Edge CA certificate and its role on a device.
    link: https://learn.microsoft.com/azure/iot-edge/how-to-manage-device-certificates
"""

EXAMPLES = r"""
- name: Ensure an Edge CA for every device of the fleet
  edgefleet.iotedge.pki_edge_ca:
    ca_path: "{{ playbook_dir }}/pki/ca"
    path: "{{ playbook_dir }}/pki/identities"
    devices: "{{ groups['edge'] | map('lower') | list }}"
    passphrase: "{{ vault_pki_passphrase }}"
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
edge_cas:
  description:
    - Per registration id - C(cert_path), C(key_path), C(chain_path), C(action) (V(none), V(create), V(renew),
      V(reissue), V(repair) or V(remove)), C(reasons), C(changed) and, when present, C(subject), C(issuer), C(serial),
      C(not_after) and C(thumbprint_sha256).
  returned: always
  type: dict
summary:
  description: How many Edge CAs were created, renewed, reissued, repaired, removed or left unchanged.
  returned: always
  type: dict
issuer:
  description: Subject of the root that issued the Edge CAs (RFC 4514).
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.edgefleet.iotedge.plugins.module_utils._module import device_batch_options, run_pki_core
from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki_edge_ca import EdgeCaRequest, ensure_edge_cas


def main(module_class=AnsibleModule):
    """module_class: AnsibleModule, or its stand-in when the action plugin runs this in the controller's worker."""
    module = module_class(
        argument_spec=device_batch_options(["present", "absent"]),
        supports_check_mode=True,
    )
    run_pki_core(module, ensure_edge_cas, EdgeCaRequest(**module.params))


if __name__ == "__main__":
    main()
