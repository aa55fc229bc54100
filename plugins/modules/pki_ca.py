#!/usr/bin/python
# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: pki_ca
short_description: Ensure the fleet's root CA and intermediate CA exist in a PKI directory
version_added: 0.1.0
description:
  - Creates a self-signed root CA and, by default, an intermediate CA signed by it, in one directory on the
    machine the module runs on (normally the Ansible controller).
  - Files are C(root.cert.pem), C(root.key.pem), C(intermediate.cert.pem), C(intermediate.key.pem) and
    C(ca-chain.cert.pem) (intermediate then root). Keys are mode C(0600) and encrypted when O(passphrase) is given.
  - Root profile is C(CA:TRUE) (critical) with keyCertSign and cRLSign. Intermediate profile is C(CA:TRUE, pathlen:0).
  - The CA is issued again only when it is missing, its common name or key type differ from the request, it has
    expired, it ends after O(not_after), it ends past what IoT Edge O(generation) accepts, or O(force=true). Replaced
    files are moved to C(retired/<UTC time>/) inside O(path), never deleted.
  - An intermediate that the root did not sign, a key that does not match its certificate, or a wrong passphrase is
    an error, raised before anything is written.
  - A run holds a lock file (C(.edgefleet.lock)) in O(path) from its first read to its last write, so two runs
    started together create one CA; temporary files an interrupted run left in O(path) are removed.
  - The CA can be an input instead of something the module makes - where every run starts with an empty directory
    (AWX/AAP execution environments, CI), a new CA per run would be a different fleet CA each time. Point O(path) at
    the directory that holds it (a mounted volume), or hand its files in as text with O(root_cert_content),
    O(root_key_content), O(intermediate_cert_content) and O(intermediate_key_content); and set O(create=false) so
    that a CA that is not there is an error instead of a new CA.
author: edgefleet developers (@edgefleet)
extends_documentation_fragment:
  - edgefleet.iotedge._attributes
  - edgefleet.iotedge._attributes.FILES
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details: The diff shows subjects, serials, dates and thumbprints, never key material.
options:
  path:
    description: Directory that holds the CA. Created with mode C(0700) if missing.
    type: path
    required: true
  root_common_name:
    description: Common name of the root CA certificate.
    type: str
    default: edgefleet Root CA
  intermediate:
    description:
      - Whether to keep an intermediate CA that signs device identities.
      - With V(false) identities are signed by the root and an existing intermediate is retired.
    type: bool
    default: true
  intermediate_common_name:
    description: Common name of the intermediate CA certificate.
    type: str
    default: edgefleet Intermediate CA
  key_type:
    description: Key algorithm and size of both CA keys.
    type: str
    choices: [ec-p256, ec-p384, rsa-2048, rsa-3072, rsa-4096]
    default: ec-p256
  valid_days:
    description: Validity of a newly issued CA certificate, in days from now. The intermediate never outlives the root.
    type: int
    default: 3650
  not_after:
    description:
      - Absolute latest end of validity (C(YYYY-MM-DD) or C(YYYY-MM-DDTHH:MM:SSZ)), applied on top of O(valid_days).
      - A CA that ends later than this is issued again.
    type: str
  generation:
    description:
      - IoT Edge generation the CA serves. With V(1.1) a CA ending on or after 2038-01-01 is refused (libiothsm
        cannot read it); for every generation a CA ending after 2049-12-31 is refused.
    type: str
    choices: ["1.1", "1.2+"]
    default: "1.2+"
  passphrase:
    description:
      - Passphrase that encrypts both CA keys at rest. Required to use keys that were created with one.
      - A passphrase for existing unencrypted keys is refused unless O(reencrypt=true) - changing how existing keys
        are encrypted is an explicit step.
      - Must be a string; a list or a number is refused (it would otherwise become its text).
    type: raw
  reencrypt:
    description:
      - Allow changing how the existing CA keys are encrypted, so that they match O(passphrase) - encrypt
        unencrypted keys with it, or (with O(previous_passphrase)) decrypt them with the previous passphrase and
        encrypt them with the new one, or store them unencrypted when O(passphrase) is empty.
      - The key files as they were are copied to C(retired/<time>/) first, so nothing is lost.
      - Keys that already match are left alone, so the option may stay on for later runs.
    type: bool
    default: false
  previous_passphrase:
    description:
      - With O(reencrypt=true), the passphrase the keys are encrypted with now, when O(passphrase) is a new one.
    type: raw
  force:
    description:
      - Issue a new root and intermediate even if the current ones are fine (CA rotation).
      - Refused with O(create=false) and with a CA that is handed in (O(root_cert_content)).
    type: bool
    default: false
  create:
    description:
      - Whether the module may make a new root CA key.
      - With V(false) the CA is an input. The module fails, before anything is written (also in check mode), when
        the root certificate or key is neither in O(path) nor handed in, when the intermediate pair is missing
        while O(intermediate=true), or when it would issue the root again (O(force=true), a root common name or key
        type that differs from the request, an expired root, one ending after O(not_after) or past what
        O(generation) accepts). The message lists the missing files and how to provide the CA.
      - What still happens with V(false) - none of it makes a new root key - renewing or reissuing an existing
        intermediate under the same root (expired, ends after O(not_after), other common name or key type),
        re-encrypting keys (O(reencrypt)), retiring the intermediate (O(intermediate=false)), rewriting
        C(ca-chain.cert.pem), setting key modes and removing temporaries an interrupted run left.
      - V(true) keeps the behaviour of a local controller whose directory persists - create the CA when it is
        missing, rotate it when the request asks for it.
    type: bool
    default: true
  root_cert_content:
    description:
      - The root CA certificate as PEM text, to install as C(root.cert.pem) in O(path) - for a CA kept in a
        credential or in an ansible-vault-encrypted file of the project
        (V({{ lookup('ansible.builtin.file', 'files/ca/root.cert.pem'\) }}) decrypts a vaulted file).
      - Given together with O(root_key_content). A handed-in CA is the truth - files in O(path) that differ are
        replaced (the previous ones kept in C(retired/<time>/)), it is never reissued or re-encrypted, and a
        reason to reissue it (another common name or key type than requested, expired, after O(not_after), past
        O(generation)'s limit) is an error.
      - Checked before anything is written - one self-signed CA certificate, the key matches, the intermediate
        was issued by it.
    type: str
  root_key_content:
    description:
      - The root CA key as PEM text (the DPS proof of possession signs with it); installed as C(root.key.pem), mode
        C(0600), exactly as given.
      - An encrypted key must open with O(passphrase); an unencrypted one is refused when O(passphrase) is set
        (keys handed in are never re-encrypted).
    type: raw
  intermediate_cert_content:
    description:
      - The intermediate CA certificate as PEM text (issued by the root handed in); installed as
        C(intermediate.cert.pem). With O(root_cert_content) only, an intermediate in O(path) issued by that root
        is kept; with O(create=false) a missing one is an error.
    type: str
  intermediate_key_content:
    description: The intermediate CA key as PEM text; installed as C(intermediate.key.pem), mode C(0600), exactly as given.
    type: raw
  staged:
    description:
      - CA rollover. When the root would be issued again (O(force=true), expired, another common name or key type,
        after O(not_after) or past O(generation)'s limit), the new root and intermediate are written to C(next/) inside
        O(path) and the current CA stays as it is - devices chained to it keep working while their identities are
        reissued under the new one.
      - While C(next/) holds a CA, M(edgefleet.iotedge.pki_identity) issues every identity with it, and O(force) does
        not stage another one. The current CA is read and left alone; C(next/) is kept as requested.
      - An intermediate reissued under the same root needs no rollover and is replaced in place as without this option.
        A CA handed in (O(root_cert_content)) is never staged.
    type: bool
    default: false
  promote:
    description:
      - End a CA rollover. The CA in C(next/) becomes the current one (the current files move to
        C(retired/<UTC time>/), never deleted) once every identity in O(identity_path) is issued by it; until then
        nothing is promoted and RV(waiting) lists the devices still on the old CA.
      - Needs O(staged=true) and O(identity_path). Without a CA in C(next/) it does nothing.
    type: bool
    default: false
  identity_path:
    description:
      - The M(edgefleet.iotedge.pki_identity) directory (its O(edgefleet.iotedge.pki_identity#module:path)) whose
        identities decide whether O(promote) may end the rollover. A device directory without an identity file does
        not count; one that cannot be read counts as still on the old CA.
    type: path
  state:
    description: V(absent) removes the CA files (not the C(retired/) directory).
    type: str
    choices: [present, absent]
    default: present
notes:
  - Rotating the CA makes every identity it signed invalid; run M(edgefleet.iotedge.pki_identity) afterwards and it
    reissues them. With O(staged=true) the old CA stays valid meanwhile (a rollover), which is what a fleet enrolled
    through DPS needs - see the rollover example.
  - O(path) must be writable even when nothing changes (the run's lock file). A CA on a read-only mount is handed in
    as content instead (V({{ lookup('ansible.builtin.file', '/mnt/ca/root.key.pem'\) }})) with O(path) on a
    writable directory.
seealso:
  - module: edgefleet.iotedge.pki_identity
  - module: edgefleet.iotedge.pki_verification_cert
"""

EXAMPLES = r"""
- name: Ensure the fleet CA exists (keys encrypted with a vaulted passphrase)
  edgefleet.iotedge.pki_ca:
    path: "{{ playbook_dir }}/pki/ca"
    root_common_name: Contoso Edge Root CA
    intermediate_common_name: Contoso Edge Intermediate CA
    passphrase: "{{ vault_pki_passphrase }}"
  delegate_to: localhost
  run_once: true

- name: A CA for IoT Edge 1.1 gateways must end before 2038
  edgefleet.iotedge.pki_ca:
    path: /srv/pki/legacy-ca
    key_type: rsa-2048
    generation: "1.1"
    not_after: "2037-12-31"

- name: Use the fleet CA kept in ansible-vault-encrypted project files; never make a new one
  edgefleet.iotedge.pki_ca:
    path: "{{ playbook_dir }}/pki/ca"
    create: false
    root_cert_content: "{{ lookup('ansible.builtin.file', 'files/ca/root.cert.pem') }}"
    root_key_content: "{{ lookup('ansible.builtin.file', 'files/ca/root.key.pem') }}"
    intermediate_cert_content: "{{ lookup('ansible.builtin.file', 'files/ca/intermediate.cert.pem') }}"
    intermediate_key_content: "{{ lookup('ansible.builtin.file', 'files/ca/intermediate.key.pem') }}"
    passphrase: "{{ vault_pki_passphrase }}"
  delegate_to: localhost
  run_once: true

- name: Roll the fleet CA over - stage a new one beside the current one (identities are then reissued under it)
  edgefleet.iotedge.pki_ca:
    path: "{{ playbook_dir }}/pki/ca"
    staged: true
    force: true
  delegate_to: localhost
  run_once: true

- name: End the rollover once every identity is issued by the new CA
  edgefleet.iotedge.pki_ca:
    path: "{{ playbook_dir }}/pki/ca"
    staged: true
    promote: true
    identity_path: "{{ playbook_dir }}/pki/identities"
  delegate_to: localhost
  run_once: true

- name: Change the CA keys' passphrase (the old key files are kept under retired/)
  edgefleet.iotedge.pki_ca:
    path: "{{ playbook_dir }}/pki/ca"
    passphrase: "{{ vault_pki_passphrase_2027 }}"
    previous_passphrase: "{{ vault_pki_passphrase }}"
    reencrypt: true
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
path:
  description: The CA directory.
  returned: always
  type: str
actions:
  description: What was (or, in check mode, would be) done and why.
  returned: always
  type: list
  elements: str
  sample: ["create root", "create intermediate"]
root:
  description: The root CA certificate.
  returned: when O(state=present)
  type: dict
  contains:
    cert_path:
      description: Path of the root certificate.
      type: str
    key_path:
      description: Path of the root key.
      type: str
    subject:
      description: Subject in RFC 4514 form.
      type: str
    issuer:
      description: Issuer in RFC 4514 form.
      type: str
    serial:
      description: Serial number, uppercase hex.
      type: str
    not_before:
      description: Start of validity, UTC.
      type: str
    not_after:
      description: End of validity, UTC.
      type: str
      sample: "2036-11-24T08:30:00Z"
    thumbprint_sha1:
      description: SHA-1 fingerprint, uppercase hex without separators (as DPS shows it).
      type: str
    thumbprint_sha256:
      description: SHA-256 fingerprint, uppercase hex without separators.
      type: str
intermediate:
  description: The intermediate CA certificate, with the same keys as RV(root); V(null) when O(intermediate=false).
  returned: when O(state=present)
  type: dict
chain_path:
  description: Path of C(ca-chain.cert.pem) (intermediate, then root).
  returned: when O(state=present)
  type: str
signer:
  description: Which CA signs identities, V(intermediate) or V(root).
  returned: when O(state=present)
  type: str
retired_path:
  description: Directory the replaced CA files were moved to, when the CA was rotated.
  returned: always
  type: str
next:
  description:
    - The CA a rollover staged in C(next/) (O(staged=true)), with the same keys as the result's RV(root),
      RV(intermediate), RV(chain_path), RV(signer) and RV(path); V(null) when no rollover is under way.
  returned: always
  type: dict
waiting:
  description: With O(promote=true), the devices of O(identity_path) whose identity the new CA has not issued yet.
  returned: always
  type: list
  elements: str
promoted:
  description: Whether this run made the staged CA the current one.
  returned: always
  type: bool
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.edgefleet.iotedge.plugins.module_utils._module import run_pki_core, secret_option
from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki_ca import CaRequest, ensure_ca


def main(module_class=AnsibleModule):
    """module_class: AnsibleModule, or its stand-in when the action plugin runs this in the controller's worker."""
    module = module_class(
        argument_spec={
            "path": {"type": "path", "required": True},
            "root_common_name": {"type": "str", "default": "edgefleet Root CA"},
            "intermediate": {"type": "bool", "default": True},
            "intermediate_common_name": {"type": "str", "default": "edgefleet Intermediate CA"},
            "key_type": {
                "type": "str",
                "default": "ec-p256",
                "choices": ["ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096"],
            },
            "valid_days": {"type": "int", "default": 3650},
            "not_after": {"type": "str"},
            "generation": {"type": "str", "default": "1.2+", "choices": ["1.1", "1.2+"]},
            "passphrase": secret_option(),
            "reencrypt": {"type": "bool", "default": False},
            "previous_passphrase": secret_option(),
            "force": {"type": "bool", "default": False},
            "create": {"type": "bool", "default": True},
            "root_cert_content": {"type": "str"},
            "root_key_content": secret_option(),
            "intermediate_cert_content": {"type": "str"},
            "intermediate_key_content": secret_option(),
            "staged": {"type": "bool", "default": False},
            "promote": {"type": "bool", "default": False},
            "identity_path": {"type": "path"},
            "state": {"type": "str", "default": "present", "choices": ["present", "absent"]},
        },
        supports_check_mode=True,
    )
    run_pki_core(module, ensure_ca, CaRequest(**module.params))


if __name__ == "__main__":
    main()
