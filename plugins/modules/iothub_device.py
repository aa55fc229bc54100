#!/usr/bin/python
# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: iothub_device
short_description: Enable, disable or delete existing Azure IoT Hub device identities (retire a host's device)
version_added: 0.2.0
description:
  - Sets the status of existing IoT Hub device identities, or deletes them. Used when a fleet host is retired.
  - With O(state=present), each listed device the hub knows gets the status O(status). A status change writes
    back the identity exactly as it was read, with only its status and status reason changed, so its
    authentication (X.509 thumbprints, C(certificateAuthority) or SAS keys), its IoT Edge capability and its
    scopes stay as they are. Disabling sets the status reason to C(retired by edgefleet); enabling clears it.
  - With O(state=absent), each listed device is deleted. Devices that are already gone are fine.
  - Devices are never created. A listed device the hub does not know is reported with action V(missing); that is
    not an error.
  - Every write carries the etag that was read (If-Match). When the device changed in between (HTTP 412), it is read
    again and written once more; when it changes again the module fails naming it, after handling the others.
  - Keys and thumbprints are never returned; the diff shows the status of each device before and after.
author: edgefleet developers (@edgefleet)
extends_documentation_fragment:
  - edgefleet.iotedge._attributes
  - edgefleet.iotedge._cloud.HTTP
attributes:
  check_mode:
    support: full
    details: Reads the devices and reports what would be done; writes nothing.
  diff_mode:
    support: full
    details: The status of each changed device before and after (V(null) after a delete).
options:
  connection_string:
    description:
      - Service connection string of the IoT hub, from one of its shared access policies
        (C(HostName=<hub>.azure-devices.net;SharedAccessKeyName=<policy>;SharedAccessKey=<key>)).
      - The policy needs the C(RegistryRead) and C(RegistryWrite) rights (C(registryReadWrite) or
        C(iothubowner)).
      - If not set, the value of the E(EDGEFLEET_IOTHUB_CONNECTION_STRING) environment variable is used.
      - Never logged. Keep it in ansible-vault. A value that is not a string is refused.
    type: raw
  device_ids:
    description:
      - Device ids to act on (case-sensitive). Each is handled once, in the order given.
      - An empty list does nothing.
    type: list
    elements: str
    required: true
  status:
    description:
      - The status the listed devices get with O(state=present). A disabled device can no longer connect to the
        hub; its identity, twin and module identities are kept.
      - Ignored with O(state=absent).
    type: str
    choices: [enabled, disabled]
    default: disabled
  state:
    description:
      - V(present) keeps the devices and sets their status; V(absent) deletes them (with their twins and module
        identities).
    type: str
    choices: [present, absent]
    default: present
requirements:
  - azure-iot-hub >= 2.7
  - six (imported by azure-iot-hub without being declared)
seealso:
  - module: edgefleet.iotedge.iothub_device_info
"""

EXAMPLES = r"""
- name: Disable the hub devices of the retired gateways
  edgefleet.iotedge.iothub_device:
    device_ids: "{{ groups['retired'] }}"
    status: disabled
  delegate_to: localhost
  run_once: true
  register: retired

- name: Bring one back
  edgefleet.iotedge.iothub_device:
    device_ids: [gw-07]
    status: enabled
  delegate_to: localhost
  run_once: true

- name: Delete the devices for good
  edgefleet.iotedge.iothub_device:
    device_ids: "{{ groups['retired'] }}"
    state: absent
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
devices:
  description: One record per listed device, in the order given (each id once).
  returned: always
  type: list
  elements: dict
  contains:
    device_id:
      description: The device id.
      type: str
    status_before:
      description: V(enabled) or V(disabled) as read before any write; V(null) when the hub did not know the device.
      type: str
    status:
      description:
        - The status after the run (in check mode, the predicted one); V(null) after a delete or when the device is
          missing.
      type: str
    action:
      description:
        - V(none) (already as wanted), V(disable), V(enable), V(delete), or V(missing) (the hub does not know the
          device; nothing was done).
        - A write that another client made at the same time (seen after an HTTP 412) counts as done.
      type: str
  sample:
    - device_id: gw-01
      status_before: enabled
      status: disabled
      action: disable
    - device_id: gw-02
      status_before: disabled
      status: disabled
      action: none
    - device_id: gw-99
      status_before: null
      status: null
      action: missing
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.edgefleet.iotedge.plugins.module_utils._iothub_device import (
    STATES,
    STATUSES,
    DeviceStateRequest,
    ensure_device_state,
)
from ansible_collections.edgefleet.iotedge.plugins.module_utils._module import (
    iothub_argument_spec,
    iothub_client,
    run_cloud_core,
)


def main(module_class=AnsibleModule):
    """module_class: AnsibleModule, or its stand-in when the action plugin runs this in the controller's worker."""
    module = module_class(
        argument_spec={
            **iothub_argument_spec(),
            "device_ids": {"type": "list", "elements": "str", "required": True},
            "status": {"type": "str", "choices": list(STATUSES), "default": "disabled"},
            "state": {"type": "str", "choices": list(STATES), "default": "present"},
        },
        supports_check_mode=True,
    )
    params = module.params

    def call():
        registry = iothub_client(params)
        request = DeviceStateRequest(device_ids=params["device_ids"], status=params["status"], state=params["state"])
        return ensure_device_state(registry, request, check_mode=module.check_mode)

    run_cloud_core(module, call)


if __name__ == "__main__":
    main()
