#!/usr/bin/python
# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: pki_verification_cert
short_description: Issue the proof-of-possession certificate for a DPS (or IoT Hub) CA verification code
version_added: 0.1.0
description:
  - DPS proves that you hold a CA's key by handing out a verification code; you answer with a certificate whose
    CN is that code, signed by the CA you uploaded. This module issues that certificate from a
    M(edgefleet.iotedge.pki_ca) directory and writes it atomically to O(path).
  - Only the certificate is written; its private key is thrown away, because DPS never needs it.
  - Idempotent - an existing certificate with the same code, signed by the same CA and valid for at least one more
    day is kept.
author: edgefleet developers (@edgefleet)
extends_documentation_fragment:
  - edgefleet.iotedge._attributes
  - edgefleet.iotedge._attributes.FILES
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
options:
  ca_path:
    description: A directory managed by M(edgefleet.iotedge.pki_ca).
    type: path
    required: true
  path:
    description: Where to write the verification certificate (PEM).
    type: path
    required: true
  verification_code:
    description: The code DPS returned for the CA certificate (generateVerificationCode).
    type: str
    required: true
  signer:
    description: The CA certificate you uploaded to DPS and are verifying, V(root) or V(intermediate).
    type: str
    choices: [root, intermediate]
    default: root
  key_type:
    description: Key type of the throw-away key of the verification certificate.
    type: str
    choices: [ec-p256, ec-p384, rsa-2048, rsa-3072, rsa-4096]
    default: ec-p256
  valid_days:
    description: Validity of the verification certificate, in days.
    type: int
    default: 30
  passphrase:
    description: Passphrase of the CA keys, when M(edgefleet.iotedge.pki_ca) encrypted them.
    type: raw
  force:
    description: Issue a new certificate even if the existing one fits.
    type: bool
    default: false
seealso:
  - module: edgefleet.iotedge.pki_ca
"""

EXAMPLES = r"""
- name: Answer the DPS verification code for the root CA
  edgefleet.iotedge.pki_verification_cert:
    ca_path: "{{ playbook_dir }}/pki/ca"
    path: "{{ playbook_dir }}/pki/verification.cert.pem"
    verification_code: "{{ dps_code.verification_code }}"
    passphrase: "{{ vault_pki_passphrase }}"
  delegate_to: localhost
"""

RETURN = r"""
path:
  description: Path of the verification certificate.
  returned: always
  type: str
thumbprint_sha1:
  description: SHA-1 thumbprint, uppercase hex; V(null) in check mode when a new one would be issued.
  returned: always
  type: str
thumbprint_sha256:
  description: SHA-256 thumbprint, uppercase hex.
  returned: always
  type: str
certificate:
  description: Subject, issuer, serial, dates and thumbprints of the certificate.
  returned: always
  type: dict
reasons:
  description: Why a new certificate was (or would be) issued.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.edgefleet.iotedge.plugins.module_utils._module import run_pki_core, secret_option
from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki_verification import (
    VerificationRequest,
    ensure_verification_certificate,
)


def main(module_class=AnsibleModule):
    """module_class: AnsibleModule, or its stand-in when the action plugin runs this in the controller's worker."""
    module = module_class(
        argument_spec={
            "ca_path": {"type": "path", "required": True},
            "path": {"type": "path", "required": True},
            "verification_code": {"type": "str", "required": True},
            "signer": {"type": "str", "default": "root", "choices": ["root", "intermediate"]},
            "key_type": {
                "type": "str",
                "default": "ec-p256",
                "choices": ["ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096"],
            },
            "valid_days": {"type": "int", "default": 30},
            "passphrase": secret_option(),
            "force": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    run_pki_core(module, ensure_verification_certificate, VerificationRequest(**module.params))


if __name__ == "__main__":
    main()
