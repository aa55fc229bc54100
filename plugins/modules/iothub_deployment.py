#!/usr/bin/python
# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: iothub_deployment
short_description: Desired state of one Azure IoT Edge automatic deployment, with versioned ids
version_added: 0.2.0
description:
  - Manages one IoT Edge automatic deployment (an IoT Hub configuration with C(modulesContent)) from a deployment
    manifest, the C(deployment.json) format that the Azure CLI, Visual Studio Code and the portal use.
  - A deployment's content can never change once it is created; only its target condition, priority, labels and
    metrics can. So every content is a B(version) with its own id, C(<name>-<version>), where the version is the
    first 12 hexadecimal digits of the SHA-256 of the content (as JSON with sorted keys, so key order and formatting
    of the file do not matter). The labels C(edgefleet_deployment=<name>) and C(edgefleet_version=<version>) let the
    module find every version of O(name).
  - The same content again gives the same id. Its target condition, priority, labels and metrics are then updated in
    place (with the etag that was read); when they are as wanted nothing is written.
  - A new content creates a new version. Older versions of O(name) are then handled by O(remove_superseded).
  - With O(state=absent) every version of O(name) is deleted. Deleting a deployment does not remove its modules
    from the devices; they keep running what they run until another deployment applies to them.
  - Configuration writes count against the hub's quota of 20 configuration operations per minute per unit; a
    throttled call (HTTP 429) is retried after the time the hub asks for, within O(retry_budget_seconds).
author: edgefleet developers (@edgefleet)
extends_documentation_fragment:
  - edgefleet.iotedge._attributes
  - edgefleet.iotedge._cloud.HTTP
attributes:
  check_mode:
    support: full
    details:
      - Reads the hub and reports what would be created, updated and removed; writes nothing.
      - An older version is predicted as kept while the new version does not exist yet (it cannot have taken over),
        unless O(remove_superseded=always).
  diff_mode:
    support: full
    details:
      - Every version of O(name) before and after, with its target condition, priority, labels, metrics, layered
        and module names. The content itself is never shown (it may hold container registry credentials).
options:
  connection_string:
    description:
      - Service connection string of the IoT hub, from one of its shared access policies
        (C(HostName=<hub>.azure-devices.net;SharedAccessKeyName=<policy>;SharedAccessKey=<key>)).
      - The policy needs the C(RegistryRead) right (configurations and the twin queries that decide whether a new
        version has taken over) and C(RegistryWrite) (C(registryReadWrite) or C(iothubowner)).
      - If not set, the value of the E(EDGEFLEET_IOTHUB_CONNECTION_STRING) environment variable is used.
      - Never logged. Keep it in ansible-vault. A value that is not a string is refused.
    type: raw
  name:
    description:
      - The deployment's base name. The id of each version is C(<name>-<version>).
      - 1 to 115 lowercase letters, digits and inner C(-), C(_) or C(.) (ids are at most 128 characters).
    type: str
    required: true
  state:
    description:
      - V(present) makes the version of O(manifest) exist with the given settings; V(absent) deletes every version
        of O(name).
    type: str
    choices: [present, absent]
    default: present
  manifest:
    description:
      - 'The deployment manifest, either C({"modulesContent": {...}}) or C({"content": {"modulesContent": {...}}}).'
      - A manifest that also carries C(targetCondition), C(priority), C(labels) or C(metrics) is refused; give them
        with the options of the same meaning.
      - Container registry passwords in it (C($edgeAgent) C(runtime.settings.registryCredentials.<registry>.password))
        are masked in the module's output, also at C(-vvv), and enter the version id only through PBKDF2. The module's
        invocation line in the controller's system log is written before they are known; O(manifest_path) or
        C(no_log) on the task keep them out of it as well.
      - Mutually exclusive with O(manifest_path) and O(version); one of them is required with O(state=present).
    type: dict
  manifest_path:
    description:
      - A JSON or YAML file with the manifest, on the host that runs the module (usually the controller), in either
        form of O(manifest).
    type: path
  version:
    description:
      - A version of O(name) that IoT Hub holds (the 12 hexadecimal digits after C(<name>-) in its id, as
        RV(version) and M(edgefleet.iotedge.iothub_deployment_info) return them), used instead of a manifest - its
        content is read from the hub, so only its target condition, priority, labels and metrics are set.
      - This is how an older version comes back, for example a rollback - it gets a higher O(priority) than the version
        it replaces, and O(remove_superseded=never) keeps the newer one for a later attempt.
      - A version the hub does not hold is an error that lists the stored ones.
      - Mutually exclusive with O(manifest) and O(manifest_path).
    type: str
  layered:
    description:
      - Whether this is a layered deployment, which adds modules, routes or properties on top of the standard
        deployment of a device instead of replacing it.
      - A layered manifest names paths below C(properties.desired) (C(properties.desired.modules.<name>) in
        C($edgeAgent), C(properties.desired.routes.<name>) in C($edgeHub)) and never sets C($edgeAgent) or
        C($edgeHub) C(properties.desired) as a whole nor their C(systemModules). A standard manifest has C($edgeAgent)
        and C($edgeHub) C(properties.desired) and no such paths. The manifest is checked against this option before
        anything is sent.
      - A layered deployment applies to a device only on top of a standard one and only with a higher priority
        than that standard deployment.
      - Unset, it is V(false) for O(manifest) and O(manifest_path), and what the stored content is for O(version)
        (given with O(version), it must agree with it).
    type: bool
  target_condition:
    description:
      - The devices to target, in the IoT Hub query language, for example C(tags.environment='prod' AND
        tags.ring='canary'). Only IoT Edge devices are ever targeted. C(*) targets every IoT Edge device; an empty
        string targets none.
      - Mutually exclusive with O(target_tags); one of them is required with O(state=present).
    type: str
  target_tags:
    description:
      - The devices to target, by twin tags; the module writes the condition. A tag name is a path below C(tags)
        (C(ring), or C(location.site) for a nested tag); a value is a string, number or boolean, or a list of them
        (any of them matches, written with C(IN)).
      - Tags are joined with C(AND) in the order of their names. Strings are quoted with single quotes, a backslash
        or a single quote in them is escaped with a backslash and control characters as C(\\uXXXX), as the query
        language defines string literals. Numbers and booleans are written as such; the hub never finds the
        number C(3) equal to the string C('3').
      - A tag name whose parts are not identifiers (a letter or C(_) followed by letters, digits or C(_)) or are
        query keywords (such as C(group)) is refused; use O(target_condition) then.
      - For example, C(ring) V(canary) and C(site) V([plant-1, plant-2]) become
        C(tags.ring='canary' AND tags.site IN ['plant-1', 'plant-2']).
    type: dict
  priority:
    description:
      - Where several deployments target a device, the highest priority wins; between equal priorities the most
        recently created one wins.
      - A new version gets this priority; with the same priority as the version it replaces it wins by being newer.
        To go back to an older version that still exists, give it a higher priority.
    type: int
    default: 0
  labels:
    description:
      - Labels of the deployment (name to text), for example C(owner) or C(release).
      - The module adds C(edgefleet_deployment) and C(edgefleet_version); they cannot be given here. Labels that
        are not listed are removed from the current version.
    type: dict
    default: {}
  metrics:
    description:
      - Custom metrics, metric name to query, such as C(SELECT deviceId FROM devices.modules WHERE moduleId =
        '$edgeAgent' AND properties.reported.lastDesiredStatus.code = 200). The hub counts the rows of each query.
      - Metrics that are not listed are removed from the current version.
    type: dict
    default: {}
  remove_superseded:
    description:
      - What happens to older versions of O(name) when the version of O(manifest) exists.
      - V(when_taken_over) removes an older version once every device that both target applies the new version
        (its C($edgeAgent) twin lists the new version as C(Applied)); until then it is kept and RV(kept) says how
        many devices still wait and, when the older version outranks the new one, that the new one needs a higher
        priority. IoT Hub re-evaluates deployments within minutes, so a new version usually takes over in a later
        run. Devices that apply the older version but that the new one does not target do not hold it back; they
        are named in the reason and keep their modules.
      - V(always) removes older versions at once. V(never) keeps them (for example to roll back by priority).
    type: str
    choices: [when_taken_over, always, never]
    default: when_taken_over
requirements:
  - azure-iot-hub >= 2.7
  - six (imported by azure-iot-hub without being declared)
notes:
  - Deleting a deployment, retargeting it or removing a version does not remove modules from devices.
  - The hub allows 100 deployments per paid hub and 50 modules per deployment; a manifest with more than 50
    modules is refused before anything is sent.
seealso:
  - module: edgefleet.iotedge.iothub_deployment_info
  - name: Understand IoT Edge automatic deployments
    description: Priorities, layered deployments and the metrics the hub computes.
    link: https://learn.microsoft.com/azure/iot-edge/module-deployment-monitoring
"""

EXAMPLES = r"""
- name: Deploy the sensor stack to the canary ring
  edgefleet.iotedge.iothub_deployment:
    name: sensors
    manifest_path: deployments/sensors.json
    target_tags:
      environment: prod
      ring: canary
    priority: 10
    labels:
      release: "2024.06"
  delegate_to: localhost
  run_once: true
  register: sensors

- name: Widen the same version to every ring (updated in place, no new version)
  edgefleet.iotedge.iothub_deployment:
    name: sensors
    manifest_path: deployments/sensors.json
    target_tags:
      environment: prod
      ring: [canary, main]
    priority: 10
  delegate_to: localhost
  run_once: true

- name: Add a module with a layered deployment to the hosts that have a GPU
  edgefleet.iotedge.iothub_deployment:
    name: inference
    layered: true
    manifest:
      modulesContent:
        $edgeAgent:
          properties.desired.modules.inference:
            type: docker
            status: running
            restartPolicy: always
            settings:
              image: myregistry.azurecr.io/inference:1.4
        $edgeHub:
          properties.desired.routes.inference: FROM /messages/modules/inference/* INTO $upstream
    target_condition: "tags.environment='prod' AND tags.gpu=true"
    priority: 20
  delegate_to: localhost
  run_once: true

- name: Roll back - the version before, from the hub, above the new one, everywhere; the new one is kept
  edgefleet.iotedge.iothub_deployment:
    name: sensors
    version: 0b9e51c2aa10
    target_tags:
      environment: prod
      ring: [canary, main]
    priority: 110
    remove_superseded: never
  delegate_to: localhost
  run_once: true

- name: Remove every version of a deployment (modules stay on the devices)
  edgefleet.iotedge.iothub_deployment:
    name: sensors
    state: absent
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
name:
  description: The deployment's base name.
  returned: always
  type: str
  sample: sensors
id:
  description: The id of the version of the manifest; V(null) with O(state=absent).
  returned: always
  type: str
  sample: sensors-3f2a9c41d07b
version:
  description: The content version (12 hexadecimal digits of the content's SHA-256); V(null) with O(state=absent).
  returned: always
  type: str
  sample: 3f2a9c41d07b
layered:
  description: Whether the deployment is layered; V(null) with O(state=absent).
  returned: always
  type: bool
modules:
  description: The modules the manifest declares in C($edgeAgent) (without edgeAgent and edgeHub).
  returned: always
  type: list
  elements: str
  sample: [sensor, filter]
created:
  description: Ids created by this run (in check mode, that would be).
  returned: always
  type: list
  elements: str
updated:
  description: Ids whose target condition, priority, labels or metrics were updated in place.
  returned: always
  type: list
  elements: str
removed:
  description: Ids deleted by this run (older versions, or every version with O(state=absent)).
  returned: always
  type: list
  elements: str
kept:
  description: Older versions of O(name) that were kept, with the reason.
  returned: always
  type: list
  elements: dict
  contains:
    id:
      description: The version's id.
      type: str
    version:
      description: Its content version.
      type: str
    action:
      description: V(kept).
      type: str
    reason:
      description: Why it was kept, for example how many devices do not apply the new version yet.
      type: str
  sample:
    - id: sensors-0b9e51c2aa10
      version: 0b9e51c2aa10
      action: kept
      reason: "kept: 3 device(s) that both versions target do not apply sensors-3f2a9c41d07b yet (gw-01, gw-02, gw-03)"
superseded:
  description: Every older version of O(name) with what was done with it (V(removed) or V(kept)) and why.
  returned: always
  type: list
  elements: dict
configuration:
  description:
    - The configuration as IoT Hub answers it after the run (in check mode, as predicted), without C(content).
    - Has C(id), C(etag), C(targetCondition), C(priority), C(labels), C(createdTimeUtc), C(lastUpdatedTimeUtc),
      C(systemMetrics) (C(queries) and C(results) with C(targetedCount), C(appliedCount), C(reportedSuccessfulCount)
      and C(reportedFailedCount)) and C(metrics) (C(queries) and C(results)).
    - V(null) with O(state=absent).
  returned: always
  type: dict
  sample:
    id: sensors-3f2a9c41d07b
    etag: MTU=
    targetCondition: tags.environment='prod' AND tags.ring='canary'
    priority: 10
    labels: {edgefleet_deployment: sensors, edgefleet_version: 3f2a9c41d07b, release: "2024.06"}
    systemMetrics:
      results: {targetedCount: 1, appliedCount: 1, reportedSuccessfulCount: 1, reportedFailedCount: 0}
    metrics: {results: {}, queries: {}}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.edgefleet.iotedge.plugins.module_utils._deployment_manifest import manifest_secrets
from ansible_collections.edgefleet.iotedge.plugins.module_utils._iothub_deployment import (
    REMOVE_SUPERSEDED,
    STATES,
    DeploymentRequest,
    IoTHubDeployments,
    ensure_deployment,
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
            "name": {"type": "str", "required": True},
            "state": {"type": "str", "choices": list(STATES), "default": "present"},
            "manifest": {"type": "dict"},
            "manifest_path": {"type": "path"},
            "version": {"type": "str"},
            "layered": {"type": "bool"},
            "target_condition": {"type": "str"},
            "target_tags": {"type": "dict"},
            "priority": {"type": "int", "default": 0},
            "labels": {"type": "dict", "default": {}},
            "metrics": {"type": "dict", "default": {}},
            "remove_superseded": {"type": "str", "choices": list(REMOVE_SUPERSEDED), "default": "when_taken_over"},
        },
        mutually_exclusive=[["manifest", "manifest_path", "version"], ["target_condition", "target_tags"]],
        supports_check_mode=True,
    )
    params = module.params
    module.no_log_values.update(manifest_secrets(params["manifest"]))

    def call():
        request = DeploymentRequest(
            name=params["name"],
            state=params["state"],
            manifest=params["manifest"],
            manifest_path=params["manifest_path"],
            target_condition=params["target_condition"],
            target_tags=params["target_tags"],
            priority=params["priority"],
            labels=params["labels"],
            metrics=params["metrics"],
            layered=params["layered"],
            remove_superseded=params["remove_superseded"],
            version=params["version"],
        )
        client = iothub_client(params, IoTHubDeployments)
        return ensure_deployment(client, request, check_mode=module.check_mode)

    run_cloud_core(module, call)


if __name__ == "__main__":
    main()
