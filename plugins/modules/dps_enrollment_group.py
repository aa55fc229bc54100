#!/usr/bin/python
# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: dps_enrollment_group
short_description: Manage an Azure IoT Hub DPS enrollment group with X.509 attestation
version_added: 0.1.0
description:
  - Ensures that one enrollment group exists (or not) in a Device Provisioning Service, as desired state. Every device
    whose certificate chains to the group's CA provisions through it.
  - The group's CA is either a signing certificate uploaded inline (O(signing_certificate) or
    O(signing_certificate_path)), or a reference (O(ca_reference)) to a certificate registered and verified with
    M(edgefleet.iotedge.dps_certificate).
  - Reads the group, compares only the options you manage - certificates by SHA-256 thumbprint, because DPS returns
    certificate C(info) and never the PEM - and writes only when something differs. An update carries the etag
    that was read, so a concurrent change is refused (HTTP 412) rather than overwritten.
  - Options left unset (O(initial_twin), O(allocation_policy), O(iot_hubs), O(reprovision_policy)) keep what DPS
    has, or DPS's default on create. The attestation, O(provisioning_status) and O(iot_edge) are always managed, so
    leaving out a secondary certificate removes one that DPS has.
  - Throttling (429 with C(Retry-After)), 5xx answers and dropped connections are retried with jittered backoff
    within O(max_retries) and O(retry_budget_seconds).
author: edgefleet developers (@edgefleet)
extends_documentation_fragment:
  - edgefleet.iotedge._attributes
  - edgefleet.iotedge._cloud.DPS
  - edgefleet.iotedge._cloud.HTTP
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details: The diff shows the managed view of the group (thumbprints, never certificates, keys or the connection string).
options:
  enrollment_group_id:
    description:
      - Id of the enrollment group. Lowercase letters, digits and C(- . _ :), at most 128 characters, ending with a
        letter, a digit or C(-).
    type: str
    required: true
    aliases: [name]
  state:
    description: Whether the group should exist. Deleting a group keeps its devices in IoT Hub.
    type: str
    choices: [present, absent]
    default: present
  signing_certificate:
    description:
      - The group's CA certificate (PEM text), usually the intermediate or root of an M(edgefleet.iotedge.pki_ca)
        directory. When the text holds several certificates, the first one is used.
      - With O(state=present) give exactly one of O(signing_certificate), O(signing_certificate_path) or
        O(ca_reference).
    type: str
  signing_certificate_path:
    description: A PEM file holding the group's CA certificate; its first certificate is used.
    type: path
  secondary_signing_certificate:
    description: A second CA certificate (PEM text), for CA rotation. Needs a primary signing certificate.
    type: str
  secondary_signing_certificate_path:
    description: A PEM file holding the second CA certificate.
    type: path
  ca_reference:
    description:
      - Name of a CA certificate registered in DPS with M(edgefleet.iotedge.dps_certificate). Devices must chain to it,
        and DPS accepts them only once it is verified.
    type: str
  secondary_ca_reference:
    description: Name of a second registered CA certificate, for CA rotation. Needs O(ca_reference).
    type: str
  provisioning_status:
    description: Whether devices may provision through the group.
    type: str
    choices: [enabled, disabled]
    default: enabled
  iot_edge:
    description: Whether the devices are IoT Edge devices (C(capabilities.iotEdge)).
    type: bool
    default: true
  initial_twin:
    description:
      - The twin a device gets when IoT Hub creates it. Both keys are managed together; an omitted key means empty.
      - Unset keeps the group's current initial twin.
    type: dict
    suboptions:
      tags:
        description:
          - Twin tags. V({}) removes every tag the group has.
          - Checked against IoT Hub's twin rules before any request, at every depth - keys without C(.), C($),
            spaces or control characters (at most 1 KB), strings of at most 4 KB, no V(null), objects nested at
            most 10 deep, 8 KB in all.
        type: dict
      desired_properties:
        description: Desired properties; V({}) removes them. The same rules as O(initial_twin.tags), 32 KB in all.
        type: dict
  allocation_policy:
    description:
      - How DPS picks the IoT hub. Unset keeps the current policy (DPS's default on create).
      - V(custom) needs a webhook that this module does not set; configure it in the portal first.
    type: str
    choices: [hashed, geoLatency, static, custom]
  iot_hubs:
    description: Host names of the linked IoT hubs the group may assign devices to. Unset keeps the current list.
    type: list
    elements: str
  reprovision_policy:
    description: What happens to a device's hub and data when it provisions again. Unset keeps the current policy.
    type: dict
    suboptions:
      update_hub_assignment:
        description: Let DPS move a reprovisioned device to another hub.
        type: bool
        default: true
      migrate_device_data:
        description: Copy the twin to the new hub (V(false) resets it to the initial twin).
        type: bool
        default: true
seealso:
  - module: edgefleet.iotedge.dps_certificate
  - module: edgefleet.iotedge.dps_enrollment
  - module: edgefleet.iotedge.pki_ca
"""

EXAMPLES = r"""
- name: Ensure the fleet's enrollment group (signing certificate uploaded inline)
  edgefleet.iotedge.dps_enrollment_group:
    enrollment_group_id: plant1-edge
    signing_certificate_path: "{{ playbook_dir }}/pki/ca/intermediate.cert.pem"
    initial_twin:
      tags:
        site: plant1
      desired_properties:
        telemetryInterval: 30
    connection_string: "{{ vault_dps_connection_string }}"
  delegate_to: localhost
  run_once: true

- name: Ensure a group that references a verified CA certificate
  edgefleet.iotedge.dps_enrollment_group:
    enrollment_group_id: plant2-edge
    ca_reference: fleet-root
    allocation_policy: static
    iot_hubs: [plant2-hub.azure-devices.net]
  delegate_to: localhost
  run_once: true

- name: Remove a group
  edgefleet.iotedge.dps_enrollment_group:
    enrollment_group_id: plant1-edge
    state: absent
  delegate_to: localhost
"""

RETURN = r"""
enrollment_group:
  description: The managed view of the group after the run (predicted in check mode); V(null) when absent.
  returned: always
  type: dict
  contains:
    enrollment_group_id:
      description: Id of the group.
      type: str
    attestation:
      description:
        - C(type) (V(x509)) and either C(signing_certificates) (per slot C(primary) / C(secondary) -
          C(subject), C(sha1_thumbprint), C(sha256_thumbprint), C(not_after)) or C(ca_references) (per slot the
          certificate name).
      type: dict
    provisioning_status:
      description: V(enabled) or V(disabled).
      type: str
    iot_edge:
      description: Whether the devices are IoT Edge devices.
      type: bool
    initial_twin:
      description: C(tags) and C(desired_properties), without DPS's bookkeeping; V(null) when the group has none.
      type: dict
    allocation_policy:
      description: The allocation policy, V(null) when DPS uses its default.
      type: str
    iot_hubs:
      description: The hubs the group may assign to, V(null) for all linked hubs.
      type: list
      elements: str
    reprovision_policy:
      description: C(update_hub_assignment) and C(migrate_device_data).
      type: dict
    etag:
      description: The group's etag in DPS (the current one in check mode).
      type: str
  sample:
    enrollment_group_id: plant1-edge
    attestation:
      type: x509
      signing_certificates:
        primary:
          subject: CN=edgefleet Intermediate CA
          sha1_thumbprint: 6A0C4C3E0E4F0D7B6F7C1D2E3F405162738495A6
          sha256_thumbprint: 0F1E2D3C4B5A69788796A5B4C3D2E1F00F1E2D3C4B5A69788796A5B4C3D2E1F0
          not_after: "2030-01-01T00:00:00.0000000Z"
    provisioning_status: enabled
    iot_edge: true
    initial_twin:
      tags:
        site: plant1
      desired_properties: {}
    allocation_policy: null
    iot_hubs: null
    reprovision_policy:
      update_hub_assignment: true
      migrate_device_data: true
    etag: IjEyMDA4NmYyLTAwMDAtMDMwMC0wMDAwLTYzMGE1YTBmMDAwMCI=
reasons:
  description: What differs (for example V(create), V(primary signing certificate), V(initial_twin), V(delete)).
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.edgefleet.iotedge.plugins.module_utils._dps_enrollment_group import (
    ALLOCATION_POLICIES,
    EnrollmentGroupRequest,
    ensure_enrollment_group,
)
from ansible_collections.edgefleet.iotedge.plugins.module_utils._module import (
    dps_argument_spec,
    dps_client,
    run_cloud_core,
)


def main(module_class=AnsibleModule):
    """module_class: AnsibleModule, or its stand-in when the action plugin runs this in the controller's worker."""
    module = module_class(
        argument_spec={
            **dps_argument_spec(),
            "enrollment_group_id": {"type": "str", "required": True, "aliases": ["name"]},
            "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
            "signing_certificate": {"type": "str"},
            "signing_certificate_path": {"type": "path"},
            "secondary_signing_certificate": {"type": "str"},
            "secondary_signing_certificate_path": {"type": "path"},
            "ca_reference": {"type": "str"},
            "secondary_ca_reference": {"type": "str"},
            "provisioning_status": {"type": "str", "choices": ["enabled", "disabled"], "default": "enabled"},
            "iot_edge": {"type": "bool", "default": True},
            "initial_twin": {
                "type": "dict",
                "options": {"tags": {"type": "dict"}, "desired_properties": {"type": "dict"}},
            },
            "allocation_policy": {"type": "str", "choices": list(ALLOCATION_POLICIES)},
            "iot_hubs": {"type": "list", "elements": "str"},
            "reprovision_policy": {
                "type": "dict",
                "options": {
                    "update_hub_assignment": {"type": "bool", "default": True},
                    "migrate_device_data": {"type": "bool", "default": True},
                },
            },
        },
        mutually_exclusive=[
            ["signing_certificate", "signing_certificate_path", "ca_reference"],
            ["secondary_signing_certificate", "secondary_signing_certificate_path", "secondary_ca_reference"],
            ["signing_certificate", "secondary_ca_reference"],
            ["signing_certificate_path", "secondary_ca_reference"],
            ["ca_reference", "secondary_signing_certificate"],
            ["ca_reference", "secondary_signing_certificate_path"],
        ],
        required_if=[
            ["state", "present", ["signing_certificate", "signing_certificate_path", "ca_reference"], True],
        ],
        supports_check_mode=True,
    )
    request = EnrollmentGroupRequest.from_params(module.params)
    run_cloud_core(
        module, lambda: ensure_enrollment_group(dps_client(module.params), request, check_mode=module.check_mode)
    )


if __name__ == "__main__":
    main()
