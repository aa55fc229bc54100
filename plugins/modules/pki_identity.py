#!/usr/bin/python
# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: pki_identity
short_description: Ensure X.509 identity chains for a whole fleet of IoT Edge devices in one call
version_added: 0.1.0
description:
  - For every registration id in O(devices), ensures a private key and a leaf certificate signed by the CA in
    O(ca_path), ready for DPS X.509 attestation. One call handles the whole fleet.
  - "Leaf profile, as DPS and IoT Edge need it: CN = the registration id, C(CA:FALSE), extended key usage clientAuth,
    key usage digitalSignature (plus keyEncipherment for RSA keys), SHA-256 signature, random serial."
  - "Files per device: C(<path>/<id>/identity.cert.pem) (the leaf), C(identity.key.pem) (mode C(0600), unencrypted,
    because the IoT Edge key service reads it as a file) and C(identity.full-chain.cert.pem) (leaf, intermediate,
    root in that order: what IoT Edge's C(identity_cert) points at). Device directories are mode C(0700)."
  - A device is issued a new key and certificate only when files are missing or unreadable, the CN, issuer (CA
    rotated) or key type differ, the key no longer matches, or fewer than O(renew_before_days) of validity remain.
    A stale full-chain file or a key with the wrong mode is repaired without a new key.
  - Every registration id and option is validated, and the CA chain checked, before anything is written. The three
    files of a device are staged and renamed together, so a failure leaves either the old set or the new set.
  - A run holds a lock on O(path) (and a shared one on O(ca_path)), so runs started together wait for each other;
    it removes the temporary files an interrupted run left (see RV(temporaries_removed)).
  - "Rotation (O(staged=true)): a renewal or reissue of an identity that can still be read is written beside it, to
    C(<path>/<id>/next/), and the current files stay, so DPS can hold both certificates while the device switches.
    A usable identity already waiting there (issued by the current CA, not due itself) is kept by later runs.
    O(promote) then makes it the current identity and keeps the one it replaces in C(<path>/<id>/retired/<serial>/);
    nothing is deleted. Role C(edgefleet.iotedge.edge_pki) and C(provision_edge.yml) drive this for a fleet."
author: edgefleet developers (@edgefleet)
extends_documentation_fragment:
  - edgefleet.iotedge._attributes
  - edgefleet.iotedge._attributes.FILES
attributes:
  check_mode:
    support: full
    details: Check mode reports which devices would be created, renewed, reissued or repaired and writes nothing.
  diff_mode:
    support: full
    details: The diff lists changed devices with thumbprints, issuer and end of validity, never key material.
options:
  ca_path:
    description: A directory managed by M(edgefleet.iotedge.pki_ca). Its intermediate (or its root) signs identities.
    type: path
    required: true
  path:
    description: Output directory; one sub-directory per registration id.
    type: path
    required: true
  devices:
    description:
      - The fleet's registration ids, as strings or as dicts with a C(registration_id) key.
      - "An id must follow the DPS rules and is required to be lowercase: letters, digits, C(-), C(.), C(_), C(:),
        ending with a letter, a digit or C(-), at most 64 characters (it is the certificate CN)."
    type: list
    elements: raw
    required: true
  key_type:
    description: Key algorithm and size of device keys. Changing it reissues every identity.
    type: str
    choices: [ec-p256, ec-p384, rsa-2048, rsa-3072, rsa-4096]
    default: ec-p256
  valid_days:
    description: Validity of a newly issued identity, in days. Never extends past the signing CA's end of validity.
    type: int
    default: 365
  renew_before_days:
    description: Renew an identity when fewer than this many days of validity remain. Must be below O(valid_days).
    type: int
    default: 30
  generation:
    description:
      - IoT Edge generation of the devices. With V(1.1), any certificate in the chain ending on or after 2038-01-01
        is refused, because libiothsm cannot read it.
    type: str
    choices: ["1.1", "1.2+"]
    default: "1.2+"
  passphrase:
    description: Passphrase of the CA keys, when M(edgefleet.iotedge.pki_ca) encrypted them.
    type: raw
  state:
    description:
      - V(absent) removes the listed devices' identity files.
      - V(retired) moves each listed device's whole directory (identity, C(next/), C(retired/)) to
        C(<path>.retired/<id>/<UTC time>/), for a device taken out of the fleet, and copies its leaf to
        C(<path>.retired/<id>/identity.cert.pem) (the certificate a disabled enrollment keeps); nothing is deleted.
        A device without a directory is no change.
    type: str
    choices: [present, absent, retired]
    default: present
  staged:
    description:
      - Write a renewal or reissue of a readable identity to C(next/) instead of over the current files (see the
        rotation paragraph above). Identities created for the first time, or whose files are missing or unreadable,
        are written in place either way.
    type: bool
    default: false
  rotate:
    description:
      - Registration ids (among O(devices)) to rotate now even though their identity is not due; needs O(staged).
      - A device that already has an identity waiting in C(next/) keeps it.
    type: list
    elements: str
    default: []
  promote:
    description:
      - Registration ids (among O(devices)) whose identity waiting in C(next/) becomes the current one, because the
        device registered with it; needs O(staged). An id with nothing waiting is left as it is.
    type: list
    elements: str
    default: []
  csrs:
    description:
      - Devices (among O(devices)) that make their own key and send a certificate signing request; their private key
        never reaches the controller. Maps each registration id to its PEM CSR, or to V(null) when the device sent
        none in this run (a check-mode run, an unreachable host).
      - A CSR is signed only when its subject is exactly C(CN=<registration id>), its key is of O(key_type) and it is
        signed by that key. A certificate is issued for the CSR's key, written as C(identity.cert.pem) and
        C(identity.full-chain.cert.pem); no C(identity.key.pem) is written. A CSR with another key than the
        device's certificate (the device lost its key) reissues the certificate at once, not staged.
      - A bad CSR, or none from a device without a certificate yet, refuses that device alone (RV(refused)); the
        others are issued. A device with a certificate and no CSR keeps its certificate; a renewal waits for a CSR.
    type: dict
    default: {}
  next_csrs:
    description:
      - Devices of O(csrs) that keep a second, next key beside their current one
        (M(edgefleet.iotedge.identity_csr)'s O(edgefleet.iotedge.identity_csr#module:next_key)). Maps each
        registration id to the PEM CSR for that key, or to V(null).
      - A renewal staged in C(next/) (due, O(rotate), a CA rollover) is issued for the next key, so the device's key
        changes with its certificate; a waiting one for another key is issued again. The CSR is checked as in
        O(csrs), and must carry another key than the current one.
    type: dict
    default: {}
seealso:
  - module: edgefleet.iotedge.pki_ca
"""

EXAMPLES = r"""
- name: Ensure an identity chain for every edge gateway of the play
  edgefleet.iotedge.pki_identity:
    ca_path: "{{ playbook_dir }}/pki/ca"
    path: "{{ playbook_dir }}/pki/identities"
    devices: "{{ ansible_play_hosts | map('lower') | list }}"
    passphrase: "{{ vault_pki_passphrase }}"
  delegate_to: localhost
  run_once: true
  register: fleet_identities

- name: Identities for IoT Edge 1.1 gateways (chain must end before 2038)
  edgefleet.iotedge.pki_identity:
    ca_path: /srv/pki/legacy-ca
    path: /srv/pki/legacy-identities
    devices:
      - registration_id: plant-a-gw-01
      - registration_id: plant-a-gw-02
    key_type: rsa-2048
    generation: "1.1"
"""

RETURN = r"""
temporaries_removed:
  description:
    - Temporary files and directories that an interrupted run left in O(path) or in the listed devices' directories
      (they may hold a private key); removed by this run, or, in check mode, would be. Their removal counts as a change.
  returned: always
  type: list
  elements: str
identities:
  description: One entry per registration id.
  returned: always
  type: dict
  sample:
    gw-01:
      registration_id: gw-01
      changed: true
      action: create
      reasons: ["no identity yet"]
      cert_path: /srv/pki/identities/gw-01/identity.cert.pem
      key_path: /srv/pki/identities/gw-01/identity.key.pem
      chain_path: /srv/pki/identities/gw-01/identity.full-chain.cert.pem
      thumbprint_sha1: 5F0B1C9A0E0D34A1B8E3AF4C2D0B6C4E9C0F1A22
      thumbprint_sha256: 0E6F6D2B3C1A9F8E7D6C5B4A39281706F5E4D3C2B1A09F8E7D6C5B4A39281706
      not_after: "2027-11-26T08:30:00Z"
      issuer: CN=edgefleet Intermediate CA
  contains:
    action:
      description:
        - V(none), V(create), V(renew), V(reissue), V(repair), V(remove) or V(retire), for the current files;
          V(refused) for a device whose CSR was refused (RV(refused)).
      type: str
    key_origin:
      description:
        - V(device) for a device listed in O(csrs) (its C(key_path) is V(null)), V(controller) for the others.
      type: str
    rotation:
      description:
        - V(none); V(stage) (a new identity was written to C(next/)); V(staged) (one waits there from an earlier run);
          V(promote) (the waiting identity became the current one).
      type: str
    next:
      description:
        - The identity waiting in C(next/) - C(cert_path), C(key_path), C(chain_path), thumbprints, C(not_after),
          C(issuer), C(public_key_sha256) - when C(rotation) is V(stage) or V(staged).
      type: dict
    public_key_sha256:
      description:
        - SHA-256 of the leaf's public key (DER SubjectPublicKeyInfo), lowercase hex, by which a device that made its
          own keys finds the key a certificate is for; V(null) in check mode for new ones.
      type: str
    retired_path:
      description:
        - Where the replaced identity was kept, when C(rotation) is V(promote); with O(state=retired), where the
          device's directory went.
      type: str
    thumbprint_sha1:
      description: SHA-1 thumbprint of the leaf, uppercase hex (as DPS shows it); V(null) in check mode for new ones.
      type: str
    thumbprint_sha256:
      description: SHA-256 thumbprint of the leaf, uppercase hex.
      type: str
refused:
  description:
    - The devices of O(csrs) that got no certificate, each with the reason (the CSR's subject, key type or
      signature, or no CSR from a device without a certificate). Nothing was written for them.
  returned: always
  type: dict
  sample:
    gw-07: "csrs[gw-07]: the device's CSR asks for the subject 'CN=gw-01'; only CN=gw-07 is signed"
summary:
  description:
    - How many identities were created, renewed, reissued, repaired or left unchanged; with O(staged), how many were
      staged, how many rotations are under way (C(rotating)) and how many were promoted.
  returned: always
  type: dict
ca:
  description: Which CA certificate signs the identities and where the CA chain file is.
  returned: when O(state=present)
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.edgefleet.iotedge.plugins.module_utils._module import device_batch_options, run_pki_core
from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki_identity import (
    IdentityRequest,
    ensure_identities,
)


def main(module_class=AnsibleModule):
    """module_class: AnsibleModule, or its stand-in when the action plugin runs this in the controller's worker."""
    module = module_class(
        argument_spec={
            **device_batch_options(["present", "absent", "retired"]),
            "staged": {"type": "bool", "default": False},
            "rotate": {"type": "list", "elements": "str", "default": []},
            "promote": {"type": "list", "elements": "str", "default": []},
            "csrs": {"type": "dict", "default": {}},
            "next_csrs": {"type": "dict", "default": {}},
        },
        supports_check_mode=True,
    )
    run_pki_core(module, ensure_identities, IdentityRequest(**module.params))


if __name__ == "__main__":
    main()
