#!/usr/bin/python
# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: iothub_device_tags
short_description: Keep the twin tags of Azure IoT Hub devices in step with inventory
version_added: 0.2.0
description:
  - Sets the tags of existing device twins to the ones inventory gives each device, many devices at once.
  - An enrollment's initial twin reaches IoT Hub only when the device first registers. After that, a host that
    moves to another inventory group (for example from C(ring=canary) to C(ring=main)) keeps its old tags until
    something writes the new ones; automatic deployments target devices by these tags.
  - The twins are read with as few twin queries as the query length allows (C(deviceId IN [...]), paged). Device
    ids that cannot go into a query unchanged, and ids the query does not return, are read one by one.
  - Only twins whose tags differ are written, each with a JSON merge patch of its tags and the etag it was read
    with (If-Match). Desired properties are never sent. When a twin changed in between (HTTP 412) it is read again
    and written once more; when it changes again the module fails naming it, after handling the others.
  - Nested tag values are set exactly. A merge patch merges nested objects, so the patch also removes (sets to
    V(null)) every nested key that the wanted value lacks.
  - Devices are never created. A listed device the hub does not know yet is reported with action V(missing); that
    is not an error (its enrollment's initial twin gives it its tags when it registers).
  - Tags are checked against IoT Hub's twin rules before anything is read or written. Keys are at most 1 KB
    without C(.), C($), spaces or control characters; strings at most 4 KB; integers within plus or minus 2^52;
    objects nest at most 10 levels; a twin's tags take at most 8 KB as IoT Hub counts them, checked for the tags
    each twin would have after the change before the first write.
author: edgefleet developers (@edgefleet)
extends_documentation_fragment:
  - edgefleet.iotedge._attributes
  - edgefleet.iotedge._cloud.HTTP
attributes:
  check_mode:
    support: full
    details: Reads the twins and reports the tags each would get; writes nothing.
  diff_mode:
    support: full
    details: The tags of each changed device before and after.
options:
  connection_string:
    description:
      - Service connection string of the IoT hub, from one of its shared access policies
        (C(HostName=<hub>.azure-devices.net;SharedAccessKeyName=<policy>;SharedAccessKey=<key>)).
      - The policy needs the C(ServiceConnect) right to query and update twins (C(service) or C(iothubowner)).
      - If not set, the value of the E(EDGEFLEET_IOTHUB_CONNECTION_STRING) environment variable is used.
      - Never logged. Keep it in ansible-vault. A value that is not a string is refused.
    type: raw
  devices:
    description:
      - Device id (case-sensitive) -> the tags that device must have, a dictionary that may be nested, as in
        C(edgefleet_dps_twin_tags).
      - V({}) for a device that must have no tags of its own (what that removes depends on O(purge)).
      - An empty dictionary does nothing.
    type: dict
    required: true
  purge:
    description:
      - Which top-level tag keys of each twin this module owns, and so removes when a device's wanted tags lack them.
      - V(managed) owns every key that appears in any listed device's tags, plus the keys in O(managed_keys). A key
        that another listed device has (or that O(managed_keys) names) is removed from a twin whose wanted tags
        lack it. Other keys, set by other tools, are kept.
      - V(none) only sets the keys listed for each device and removes nothing.
      - V(all) makes each twin's tags exactly the wanted ones.
      - In every mode, a listed key's value is set exactly, nested objects included.
    type: str
    choices: [managed, none, all]
    default: managed
  managed_keys:
    description:
      - With O(purge=managed), more top-level tag keys that this module owns although no listed device has them,
        so that they are removed from every listed twin (for example a tag that inventory stopped using).
      - Only valid with O(purge=managed).
    type: list
    elements: str
    default: []
requirements:
  - azure-iot-hub >= 2.7
  - six (imported by azure-iot-hub without being declared)
notes:
  - Twin queries can lag a little behind the registry. A twin whose query row is stale is written with a stale
    etag, refused (412), read again and written; a device the query does not return yet is read directly.
seealso:
  - module: edgefleet.iotedge.iothub_device_info
  - module: edgefleet.iotedge.dps_enrollment
"""

EXAMPLES = r"""
# group_vars/canary.yml has edgefleet_dps_twin_tags {ring: canary}, group_vars/main.yml {ring: main}.
- name: Collect the tags each edge host must have, by device id
  ansible.builtin.set_fact:
    wanted_tags: >-
      {{ wanted_tags | default({}) | combine({
           (hostvars[item].edgefleet_registration_id | default(item | lower)):
           (hostvars[item].edgefleet_dps_twin_tags | default({}))}) }}
  loop: "{{ groups['edge'] }}"
  delegate_to: localhost
  run_once: true

- name: Move the twins' tags with the hosts
  edgefleet.iotedge.iothub_device_tags:
    devices: "{{ wanted_tags }}"
  delegate_to: localhost
  run_once: true
  register: twin_tags

- name: Also drop a tag that inventory no longer uses
  edgefleet.iotedge.iothub_device_tags:
    devices: "{{ wanted_tags }}"
    managed_keys: [wave]
  delegate_to: localhost
  run_once: true

- name: Set one nested tag and leave every other tag alone
  edgefleet.iotedge.iothub_device_tags:
    devices:
      gw-07:
        site: {name: plant-2, floor: 3}
    purge: none
  delegate_to: localhost
"""

RETURN = r"""
devices:
  description: One record per listed device, in the order given.
  returned: always
  type: list
  elements: dict
  contains:
    device_id:
      description: The device id.
      type: str
    action:
      description:
        - V(none) (the tags are already as wanted), V(update) (the tags were written, or would be in check mode), or
          V(missing) (the hub does not know the device; nothing was done).
        - A write that another client made at the same time (seen after an HTTP 412) counts as done.
      type: str
    tags_before:
      description: The twin's tags as read before any write; V(null) when the device is missing.
      type: dict
    tags:
      description:
        - The twin's tags after the run (in check mode, the predicted ones); V(null) when the device is missing.
      type: dict
  sample:
    - device_id: gw-01
      action: update
      tags_before: {ring: canary, site: {name: plant-1}}
      tags: {ring: main, site: {name: plant-1}}
    - device_id: gw-02
      action: none
      tags_before: {ring: main}
      tags: {ring: main}
    - device_id: gw-99
      action: missing
      tags_before: null
      tags: null
summary:
  description: How many listed devices got each action.
  returned: always
  type: dict
  contains:
    none:
      description: Devices whose tags were already as wanted.
      type: int
    update:
      description: Devices whose tags were written (or would be, in check mode).
      type: int
    missing:
      description: Devices the hub does not know.
      type: int
  sample: {none: 1, update: 1, missing: 1}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.edgefleet.iotedge.plugins.module_utils._iothub_device_tags import (
    PURGE_MODES,
    DeviceTagsRequest,
    ensure_device_tags,
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
            "devices": {"type": "dict", "required": True},
            "purge": {"type": "str", "choices": list(PURGE_MODES), "default": "managed"},
            # Tag names, not secrets (validate-modules asks about any option named like *key*).
            "managed_keys": {"type": "list", "elements": "str", "default": [], "no_log": False},
        },
        supports_check_mode=True,
    )
    params = module.params

    def call():
        registry = iothub_client(params)
        request = DeviceTagsRequest(
            devices=params["devices"], purge=params["purge"], managed_keys=params["managed_keys"]
        )
        return ensure_device_tags(registry, request, check_mode=module.check_mode)

    run_cloud_core(module, call)


if __name__ == "__main__":
    main()
