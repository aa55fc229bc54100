#!/usr/bin/python
# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: dps_registration_info
short_description: Read device registration states of an IoT Hub Device Provisioning Service
version_added: 0.1.0
description:
  - Returns what DPS recorded when devices registered - status, assigned hub, device id, error - for the named
    registration ids (one GET each) or for every device of one enrollment group (paged query).
  - Ids with no registration state (never registered, or unknown) are listed in RV(missing); that is not an error.
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
  registration_ids:
    description: Registration ids to read (for X.509 devices, the certificate's CN).
    type: list
    elements: str
  enrollment_group_id:
    description: Read the registrations of every device that registered through this enrollment group.
    type: str
notes:
  - Exactly one of O(registration_ids) and O(enrollment_group_id) is required.
  - The shared access policy needs the C(RegistrationStatusRead) right.
seealso:
  - module: edgefleet.iotedge.dps_enrollment_info
"""

EXAMPLES = r"""
- name: Read the registration of every gateway in the inventory
  edgefleet.iotedge.dps_registration_info:
    registration_ids: "{{ ansible_play_hosts | map('lower') | list }}"
  delegate_to: localhost
  run_once: true
  register: registrations

- name: Every gateway is assigned to a hub
  ansible.builtin.assert:
    that:
      - registrations.summary.assigned == ansible_play_hosts | length
  run_once: true

- name: Read the registrations of one enrollment group
  edgefleet.iotedge.dps_registration_info:
    enrollment_group_id: plant-1
  delegate_to: localhost
  run_once: true
  register: group_registrations
"""

RETURN = r"""
registrations:
  description: One record per registration state found.
  returned: always
  type: list
  elements: dict
  contains:
    registration_id:
      description: The registration id.
      type: str
    device_id:
      description: The device id DPS created in the hub.
      type: str
    status:
      description: V(unassigned), V(assigning), V(assigned), V(failed) or V(disabled).
      type: str
    substatus:
      description: How the last assignment treated the device's data, for example V(initialAssignment).
      type: str
    assigned_hub:
      description: Host name of the hub the device was assigned to.
      type: str
    error_code:
      description: DPS's error code when the registration failed.
      type: int
    error_message:
      description: DPS's error message when the registration failed.
      type: str
    etag:
      description: The registration state's etag.
      type: str
    created:
      description: Creation time (UTC, ISO 8601).
      type: str
    updated:
      description: Last update time (UTC, ISO 8601).
      type: str
  sample:
    - registration_id: gw-01
      device_id: gw-01
      status: assigned
      substatus: initialAssignment
      assigned_hub: fleet-hub.azure-devices.net
      error_code: null
      error_message: null
      etag: IjEyMDA4NmYyLTAwMDAtMDMwMC0wMDAwLTYzMGE1YTBmMDAwMCI=
      created: "2026-01-01T00:00:00.0000000Z"
      updated: "2026-01-01T00:00:00.0000000Z"
summary:
  description: How many registrations have each status, and C(total).
  returned: always
  type: dict
  sample: {unassigned: 0, assigning: 0, assigned: 3, failed: 0, disabled: 0, total: 3}
missing:
  description: Requested registration ids with no registration state in DPS.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.edgefleet.iotedge.plugins.module_utils._dps_info import (
    RegistrationInfoRequest,
    registration_info,
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
            "registration_ids": {"type": "list", "elements": "str"},
            "enrollment_group_id": {"type": "str"},
        },
        mutually_exclusive=[("registration_ids", "enrollment_group_id")],
        required_one_of=[("registration_ids", "enrollment_group_id")],
        supports_check_mode=True,
    )
    params = module.params
    request = RegistrationInfoRequest(
        registration_ids=params["registration_ids"] or [],
        enrollment_group_id=params["enrollment_group_id"],
    )
    run_cloud_core(module, lambda: registration_info(dps_client(params), request))


if __name__ == "__main__":
    main()
