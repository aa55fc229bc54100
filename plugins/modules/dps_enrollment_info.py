#!/usr/bin/python
# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: dps_enrollment_info
short_description: Read individual enrollments or enrollment groups of an IoT Hub Device Provisioning Service
version_added: 0.1.0
description:
  - Returns DPS enrollments as snake_case records - the named ones (one GET each), or all of them through the paged
    query when no ids are given.
  - Certificates are reported by DPS's certificate C(info) (subject, thumbprints, validity), never as PEM text.
    Symmetric keys of non-X.509 enrollments are not returned.
  - Ids that DPS does not know are listed in RV(missing); that is not an error.
author: edgefleet developers (@edgefleet)
extends_documentation_fragment:
  - edgefleet.iotedge._attributes
  - edgefleet.iotedge._cloud.DPS
  - edgefleet.iotedge._cloud.HTTP
attributes:
  check_mode:
    support: full
    details: The module only reads; check mode changes nothing.
  diff_mode:
    support: none
options:
  kind:
    description:
      - Which records to read, V(individual) enrollments or enrollment V(group)s.
      - Defaults to V(group) when O(enrollment_group_ids) is given, otherwise V(individual).
    type: str
    choices: [individual, group]
  registration_ids:
    description:
      - Registration ids of the individual enrollments to read (for X.509, the certificate's CN).
      - Omit to read every individual enrollment.
    type: list
    elements: str
  enrollment_group_ids:
    description:
      - Ids of the enrollment groups to read. Omit (with O(kind=group)) to read every group.
    type: list
    elements: str
notes:
  - The shared access policy needs the C(EnrollmentRead) right.
seealso:
  - module: edgefleet.iotedge.dps_registration_info
"""

EXAMPLES = r"""
- name: Read the enrollments of three gateways
  edgefleet.iotedge.dps_enrollment_info:
    registration_ids: [gw-01, gw-02, gw-03]
  delegate_to: localhost
  register: enrollments

- name: Fail when one of them is not enrolled
  ansible.builtin.assert:
    that: enrollments.missing == []

- name: Read every enrollment group
  edgefleet.iotedge.dps_enrollment_info:
    kind: group
    connection_string: "{{ vault_dps_connection_string }}"
  delegate_to: localhost
  register: groups
"""

RETURN = r"""
kind:
  description: What was read, V(individual) or V(group).
  returned: always
  type: str
enrollments:
  description: Individual enrollments (empty when O(kind=group)).
  returned: always
  type: list
  elements: dict
  contains:
    registration_id:
      description: The registration id.
      type: str
    device_id:
      description: The device id the enrollment sets; V(null) means DPS uses the registration id.
      type: str
    provisioning_status:
      description: V(enabled) or V(disabled).
      type: str
    iot_edge:
      description: Whether devices get the IoT Edge capability.
      type: bool
    attestation_type:
      description: V(x509), V(symmetricKey) or V(tpm).
      type: str
    certificates:
      description:
        - The C(primary) and C(secondary) client certificates (V(null) when a slot is empty), each with C(subject),
          C(issuer), C(thumbprint_sha1), C(thumbprint_sha256), C(serial_number), C(not_before) and C(not_after).
      type: dict
    registration_state:
      description: The device's registration (see M(edgefleet.iotedge.dps_registration_info)); V(null) before it registers.
      type: dict
    allocation_policy:
      description: V(hashed), V(geoLatency), V(static) or V(custom); V(null) when the DPS default applies.
      type: str
    iot_hubs:
      description: Hubs the device may be assigned to; V(null) means all linked hubs.
      type: list
      elements: str
    iot_hub_host_name:
      description: The hub a static allocation uses, if set.
      type: str
    initial_twin:
      description: C(tags) and C(desired_properties) given to a new device; V(null) when not set.
      type: dict
    reprovision_policy:
      description: C(update_hub_assignment) and C(migrate_device_data).
      type: dict
    etag:
      description: The record's etag.
      type: str
    created:
      description: Creation time (UTC, ISO 8601).
      type: str
    updated:
      description: Last update time (UTC, ISO 8601).
      type: str
  sample:
    - registration_id: gw-01
      device_id: null
      provisioning_status: enabled
      iot_edge: true
      attestation_type: x509
      certificates:
        primary:
          subject: CN=gw-01
          issuer: CN=Fleet Intermediate CA
          thumbprint_sha1: 4A0C5F0E7B1D1C6B8A9E2D3F4A5B6C7D8E9F0A1B
          thumbprint_sha256: 0F1E2D3C4B5A69788796A5B4C3D2E1F00F1E2D3C4B5A69788796A5B4C3D2E1F0
          serial_number: 5F3A
          not_before: "2026-01-01T00:00:00.0000000Z"
          not_after: "2027-01-01T00:00:00.0000000Z"
        secondary: null
      registration_state: null
      allocation_policy: hashed
      iot_hubs: null
      iot_hub_host_name: null
      initial_twin: {tags: {site: plant-1}, desired_properties: {}}
      reprovision_policy: {update_hub_assignment: true, migrate_device_data: true}
      etag: IjQ5MDAwMDAwLTAwMDAtMDAwMC0wMDAwLTAwMDAwMDAwMDAwMSI=
      created: "2026-01-01T00:00:00.0000000Z"
      updated: "2026-01-01T00:00:00.0000000Z"
enrollment_groups:
  description:
    - Enrollment groups (empty when O(kind=individual)), with the same fields as RV(enrollments) except
      C(registration_id), C(device_id) and C(registration_state).
    - C(certificates) holds the signing certificates; C(ca_references) the names of verified DPS CA certificates.
  returned: always
  type: list
  elements: dict
  contains:
    enrollment_group_id:
      description: The group's id.
      type: str
    certificates:
      description: The C(primary) and C(secondary) signing certificates, as in RV(enrollments).
      type: dict
    ca_references:
      description: C(primary) and C(secondary) names of CA certificates registered in DPS.
      type: dict
missing:
  description: Requested ids DPS does not know.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.edgefleet.iotedge.plugins.module_utils._dps_info import (
    EnrollmentInfoRequest,
    enrollment_info,
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
            "kind": {"type": "str", "choices": ["individual", "group"]},
            "registration_ids": {"type": "list", "elements": "str"},
            "enrollment_group_ids": {"type": "list", "elements": "str"},
        },
        mutually_exclusive=[("registration_ids", "enrollment_group_ids")],
        supports_check_mode=True,
    )
    params = module.params
    request = EnrollmentInfoRequest(
        kind=params["kind"],
        registration_ids=params["registration_ids"] or [],
        enrollment_group_ids=params["enrollment_group_ids"] or [],
    )
    run_cloud_core(module, lambda: enrollment_info(dps_client(params), request))


if __name__ == "__main__":
    main()
