#!/usr/bin/python
# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: iothub_deployment_info
short_description: Read Azure IoT Edge automatic deployments with their metrics, and which one each device applies
version_added: 0.2.0
description:
  - Returns the IoT Edge deployments of an IoT hub (configurations with C(modulesContent)), only the versions
    of one deployment name made by M(edgefleet.iotedge.iothub_deployment), or the deployments with the given ids.
  - Each deployment comes with a summary of its content (module names and images, layered or not), its priority,
    target condition and labels, the system metrics the hub computes and the results of its custom metrics. The
    content itself is never returned (it may hold container registry credentials).
  - With O(devices=true), also every IoT Edge device that one of those deployments targets, from its C($edgeAgent)
    module twin (one paged twin query) - which of them target and apply to it, and what edgeAgent last reported
    (C(lastDesiredVersion), C(lastDesiredStatus), the runtime status of each module).
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
  name:
    description:
      - Only the versions of this deployment name (as O(edgefleet.iotedge.iothub_deployment#module:name) gives it),
        oldest first.
      - Mutually exclusive with O(ids). Without both, every IoT Edge deployment of the hub is returned.
    type: str
  ids:
    description:
      - Only these deployment ids (any deployment, also those made by other tools). Ids the hub does not know are
        listed in RV(missing); that is not an error.
    type: list
    elements: str
  devices:
    description:
      - Also return RV(devices), the IoT Edge devices that the returned deployments target.
      - Twin query results can lag behind the hub's latest evaluation by a few seconds.
    type: bool
    default: false
requirements:
  - azure-iot-hub >= 2.7
  - six (imported by azure-iot-hub without being declared)
seealso:
  - module: edgefleet.iotedge.iothub_deployment
  - module: edgefleet.iotedge.iothub_device_info
"""

EXAMPLES = r"""
- name: Read the versions of the sensors deployment and the devices they target
  edgefleet.iotedge.iothub_deployment_info:
    name: sensors
    devices: true
  delegate_to: localhost
  run_once: true
  register: sensors

- name: Every targeted device applies the newest version and reports success
  ansible.builtin.assert:
    that:
      - newest.system_metrics.targetedCount == newest.system_metrics.reportedSuccessfulCount
      - sensors.devices | rejectattr('in_sync') | list == []
  vars:
    newest: "{{ sensors.deployments | last }}"
  run_once: true
"""

RETURN = r"""
deployments:
  description: One record per deployment (the versions of O(name) oldest first, otherwise by id).
  returned: always
  type: list
  elements: dict
  contains:
    id:
      description: The deployment id.
      type: str
    name:
      description: The name given to M(edgefleet.iotedge.iothub_deployment), or V(null) for a deployment it did not make.
      type: str
    version:
      description: The content version, or V(null) for a deployment it did not make.
      type: str
    layered:
      description: Whether the deployment is layered.
      type: bool
    modules:
      description: The modules the deployment declares in C($edgeAgent) (without edgeAgent and edgeHub).
      type: list
      elements: str
    images:
      description: Module name to the image the deployment names for it.
      type: dict
    priority:
      description: The priority.
      type: int
    target_condition:
      description: The target condition.
      type: str
    labels:
      description: The labels.
      type: dict
    created_time_utc:
      description: When the deployment was created.
      type: str
    last_updated_time_utc:
      description: When its settings last changed.
      type: str
    etag:
      description: The configuration's etag.
      type: str
    system_metrics:
      description:
        - The system metrics as the hub computes them, C(targetedCount) (IoT Edge devices the target condition
          selects), C(appliedCount) (devices it applies to), C(reportedSuccessfulCount) and C(reportedFailedCount)
          (devices whose edgeAgent reported the deployment's desired version with status code 200, or another code).
      type: dict
      sample: {targetedCount: 4, appliedCount: 4, reportedSuccessfulCount: 3, reportedFailedCount: 1}
    metrics:
      description: Custom metric name to result (the number of rows its query returns).
      type: dict
    metric_queries:
      description: Custom metric name to query.
      type: dict
missing:
  description: Requested ids the hub does not know.
  returned: always
  type: list
  elements: str
devices:
  description: The IoT Edge devices that one of the returned deployments targets, by device id.
  returned: when O(devices=true)
  type: list
  elements: dict
  contains:
    device_id:
      description: The device id.
      type: str
    deployments:
      description: Each returned deployment that targets the device, to V(Applied) or V(Targeted) (targeted, but
        another deployment wins).
      type: dict
    applied:
      description: The ids of the returned deployments that apply to the device.
      type: list
      elements: str
    desired_version:
      description: The C($version) of C($edgeAgent)'s desired properties (changes with every applied change).
      type: int
    last_desired_version:
      description: The desired version edgeAgent last processed (C(lastDesiredVersion)); V(null) until it reports.
      type: int
    last_desired_status:
      description: C(code) and C(description) edgeAgent reported for it (C(lastDesiredStatus), 200 is success).
      type: dict
    in_sync:
      description: Whether edgeAgent has processed the current desired properties.
      type: bool
    connection_state:
      description: C(Connected) or C(Disconnected), as the module twin shows it.
      type: str
    system_modules:
      description: Runtime status of edgeAgent and edgeHub as reported.
      type: dict
    modules:
      description: Module name to its reported runtime status (C(running), C(backoff), C(failed)...).
      type: dict
  sample:
    - device_id: gw-01
      deployments: {sensors-3f2a9c41d07b: Applied}
      applied: [sensors-3f2a9c41d07b]
      desired_version: 4
      last_desired_version: 4
      last_desired_status: {code: 200, description: ""}
      in_sync: true
      connection_state: Connected
      system_modules: {edgeAgent: running, edgeHub: running}
      modules: {sensor: running}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.edgefleet.iotedge.plugins.module_utils._iothub_deployment import (
    DeploymentInfoRequest,
    IoTHubDeployments,
    deployment_info,
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
            "name": {"type": "str"},
            "ids": {"type": "list", "elements": "str"},
            "devices": {"type": "bool", "default": False},
        },
        mutually_exclusive=[["name", "ids"]],
        supports_check_mode=True,
    )
    params = module.params

    def call():
        client = iothub_client(params, IoTHubDeployments)
        request = DeploymentInfoRequest(name=params["name"], ids=params["ids"] or [], devices=params["devices"])
        return deployment_info(client, request)

    run_cloud_core(module, call)


if __name__ == "__main__":
    main()
