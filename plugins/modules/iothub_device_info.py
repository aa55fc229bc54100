#!/usr/bin/python
# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: iothub_device_info
short_description: Read device identities and twins of an Azure IoT Hub, with the IoT Edge runtime's view
version_added: 0.1.0
description:
  - Returns the named devices (or every device of the hub) with status, authentication type and X.509
    thumbprints, the twin's tags and desired and reported properties (without C($metadata) and C($version)).
  - For IoT Edge devices also the module identities present and what C($edgeAgent) last reported about the
    runtime (deployment status and each module's runtime status).
  - Device ids the hub does not know are listed in RV(missing); that is not an error.
  - Symmetric keys of SAS devices are never returned.
author: edgefleet developers (@edgefleet)
extends_documentation_fragment:
  - edgefleet.iotedge._attributes
  - edgefleet.iotedge._cloud.HTTP
attributes:
  check_mode:
    support: full
    details: The module only reads; check mode changes nothing.
  diff_mode:
    support: none
options:
  connection_string:
    description:
      - Service connection string of the IoT hub, from one of its shared access policies
        (C(HostName=<hub>.azure-devices.net;SharedAccessKeyName=<policy>;SharedAccessKey=<key>)).
      - The policy needs the C(RegistryRead) right (C(registryRead), C(registryReadWrite) or C(iothubowner)).
      - If not set, the value of the E(EDGEFLEET_IOTHUB_CONNECTION_STRING) environment variable is used.
      - Never logged. Keep it in ansible-vault. A value that is not a string is refused.
    type: raw
  device_ids:
    description:
      - Device ids to read (case-sensitive). Omit to read every device of the hub.
      - Devices are read with paged twin queries (C(devices), then C(devices.modules) for IoT Edge devices)
        rather than several registry calls per device. Twin query results can lag behind the registry, so a value
        changed a moment ago may still show its previous value.
      - An id that cannot go into a query unchanged (for example one that contains a single quote), or that the
        query did not return, is read with the per-device registry calls; they decide whether it goes to
        RV(missing).
    type: list
    elements: str
requirements:
  - azure-iot-hub >= 2.7
  - six (imported by azure-iot-hub without being declared)
seealso:
  - module: edgefleet.iotedge.dps_registration_info
"""

EXAMPLES = r"""
- name: Read the gateways' hub devices
  edgefleet.iotedge.iothub_device_info:
    device_ids: [gw-01, gw-02]
  delegate_to: localhost
  run_once: true
  register: hub

- name: Every gateway runs the last deployment
  ansible.builtin.assert:
    that:
      - hub.missing == []
      - hub.devices | map(attribute='edge_agent.last_desired_status.code') | unique == [200]
  run_once: true
"""

RETURN = r"""
devices:
  description: One record per device found.
  returned: always
  type: list
  elements: dict
  contains:
    device_id:
      description: The device id.
      type: str
    status:
      description: V(enabled) or V(disabled).
      type: str
    status_reason:
      description: Why the device was disabled, if given.
      type: str
    authentication_type:
      description: V(selfSigned), V(certificateAuthority), V(sas) or V(none).
      type: str
    x509_thumbprints:
      description: C(primary) and C(secondary) SHA-1 thumbprints of self-signed X.509 devices.
      type: dict
    iot_edge:
      description: Whether the device has the IoT Edge capability.
      type: bool
    connection_state:
      description: V(Connected) or V(Disconnected).
      type: str
    last_activity_time:
      description: Last time the hub saw the device.
      type: str
    device_scope:
      description: The edge device's scope (C(ms-azure-iot-edge://...)).
      type: str
    etag:
      description: The device identity's etag.
      type: str
    tags:
      description: Twin tags.
      type: dict
    desired_properties:
      description: Twin desired properties without C($metadata) and C($version).
      type: dict
    reported_properties:
      description: Twin reported properties without C($metadata) and C($version).
      type: dict
    twin_version:
      description: The twin's version.
      type: int
    module_identities:
      description: Module ids on an IoT Edge device (for example C($edgeAgent), C($edgeHub)); V(null) otherwise.
      type: list
      elements: str
    edge_agent:
      description:
        - What C($edgeAgent) reports, for IoT Edge devices that have it; V(null) otherwise.
        - C(connection_state), C(last_desired_status) (C(code), C(description)), C(system_modules) and C(modules)
          (module name to runtime status), and all C(reported_properties).
      type: dict
  sample:
    - device_id: gw-01
      status: enabled
      status_reason: null
      authentication_type: certificateAuthority
      x509_thumbprints: {primary: null, secondary: null}
      iot_edge: true
      connection_state: Disconnected
      last_activity_time: "0001-01-01T00:00:00.000Z"
      device_scope: ms-azure-iot-edge://gw-01-638225507201234505
      etag: MQ==
      tags: {site: plant-1}
      desired_properties: {logLevel: info}
      reported_properties: {}
      twin_version: 2
      module_identities: [$edgeAgent, $edgeHub]
      edge_agent:
        connection_state: Connected
        last_desired_status: {code: 200, description: ""}
        system_modules: {edgeAgent: running, edgeHub: running}
        modules: {sensor: running}
        reported_properties: {}
missing:
  description: Requested device ids the hub does not know.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.edgefleet.iotedge.plugins.module_utils._iothub import (
    DeviceInfoRequest,
    device_info,
)
from ansible_collections.edgefleet.iotedge.plugins.module_utils._module import (
    iothub_argument_spec,
    iothub_client,
    run_cloud_core,
)


def main(module_class=AnsibleModule):
    """module_class: AnsibleModule, or its stand-in when the action plugin runs this in the controller's worker."""
    module = module_class(
        argument_spec={**iothub_argument_spec(), "device_ids": {"type": "list", "elements": "str"}},
        supports_check_mode=True,
    )
    params = module.params

    def call():
        registry = iothub_client(params)
        return device_info(registry, DeviceInfoRequest(device_ids=params["device_ids"] or []))

    run_cloud_core(module, call)


if __name__ == "__main__":
    main()
