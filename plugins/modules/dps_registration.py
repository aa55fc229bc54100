#!/usr/bin/python
# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: dps_registration
short_description: Delete device registration records from an IoT Hub Device Provisioning Service
version_added: 0.2.0
description:
  - Deletes the registration records DPS keeps for the named registration ids, for example of a retired device (a
    record counts against the DPS instance's quota). Records are written by DPS when a device registers; this module
    never creates one, so O(state) has the one value V(absent).
  - Each record is read first, for the diff and for the etag the delete sends. An id without a record is no change.
  - Deleting the record does not stop the device from registering again; disable its enrollment for that
    (M(edgefleet.iotedge.dps_enrollment) with O(edgefleet.iotedge.dps_enrollment#module:provisioning_status=disabled)).
author: edgefleet developers (@edgefleet)
extends_documentation_fragment:
  - edgefleet.iotedge._attributes
  - edgefleet.iotedge._cloud.DPS
  - edgefleet.iotedge._cloud.HTTP
attributes:
  check_mode:
    support: full
    details: Check mode reads the records and reports which would be deleted.
  diff_mode:
    support: full
    details: The diff shows each deleted record's status, device id, hub and last update.
options:
  registration_ids:
    description: Registration ids whose records to delete (for X.509 devices, the certificate's CN).
    type: list
    elements: str
    required: true
  state:
    description: V(absent) deletes the records.
    type: str
    choices: [absent]
    default: absent
notes:
  - The shared access policy needs the C(RegistrationStatusWrite) right (and C(RegistrationStatusRead)).
seealso:
  - module: edgefleet.iotedge.dps_registration_info
  - module: edgefleet.iotedge.dps_enrollment
"""

EXAMPLES = r"""
- name: Delete the registration records of the retired gateways
  edgefleet.iotedge.dps_registration:
    registration_ids: [plant-a-gw-07, plant-a-gw-09]
    state: absent
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
registrations:
  description: One entry per registration id, in the order given.
  returned: always
  type: list
  elements: dict
  contains:
    registration_id:
      description: The registration id.
      type: str
    action:
      description: V(delete) (deleted, or would be in check mode) or V(none) (no record).
      type: str
    before:
      description: The record as it was (as M(edgefleet.iotedge.dps_registration_info) returns it), or V(null).
      type: dict
summary:
  description: How many records were deleted and how many were already absent.
  returned: always
  type: dict
  sample: {deleted: 1, absent: 0}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.edgefleet.iotedge.plugins.module_utils._dps_registration import (
    RegistrationRequest,
    ensure_registrations,
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
            "registration_ids": {"type": "list", "elements": "str", "required": True},
            "state": {"type": "str", "choices": ["absent"], "default": "absent"},
        },
        supports_check_mode=True,
    )
    request = RegistrationRequest(registration_ids=module.params["registration_ids"], state=module.params["state"])
    run_cloud_core(
        module, lambda: ensure_registrations(dps_client(module.params), request, check_mode=module.check_mode)
    )


if __name__ == "__main__":
    main()
