#!/usr/bin/python
# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: dps_enrollment
short_description: Manage many Azure IoT Hub DPS individual enrollments (X.509) in one call
version_added: 0.1.0
description:
  - Ensures that a list of individual enrollments exists (or not) in a Device Provisioning Service, as desired state.
  - Reads the current enrollments (one GET each for up to 10, the paged query for more), compares only the options you
    manage - certificates by thumbprint, because DPS returns certificate C(info) and never the PEM - and writes what
    differs through the bulk API, 10 enrollments per request. Updates carry the etag that was read
    (C(updateIfMatchETag)), so a concurrent change is refused rather than overwritten.
  - Throttling (429 with C(Retry-After)), 5xx answers and dropped connections are retried with jittered backoff
    within O(max_retries) and O(retry_budget_seconds). A bulk item that fails is read again before it counts as a
    failure - a write whose answer was lost is already in place.
  - Options left unset keep what DPS has (or DPS's default on create). O(provisioning_status), O(iot_edge) and the
    certificates (primary and secondary) are always managed.
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
    details: The diff shows the managed view of each changed enrollment (thumbprints, never certificates or keys).
options:
  enrollments:
    description:
      - The enrollments. Each item may set any of the shared options (O(state), O(provisioning_status), O(iot_edge),
        O(initial_twin), O(allocation_policy), O(iot_hubs), O(reprovision_policy)) to override the module-level value.
    type: list
    elements: dict
    required: true
    suboptions:
      registration_id:
        description:
          - The registration id. For X.509 it is the device certificate's CN, so the module refuses a certificate whose
            CN differs. Lowercase letters, digits and C(- . _ :), at most 64 characters.
        type: str
        required: true
      device_id:
        description: IoT Hub device id to assign. DPS uses the registration id when unset.
        type: str
      primary_certificate:
        description: The device's X.509 certificate (PEM). A full chain is fine; its first certificate is used.
        type: str
      primary_certificate_path:
        description: A file holding the device certificate, for example the chain that P(edgefleet.iotedge.pki_identity#module) wrote.
        type: path
      secondary_certificate:
        description:
          - A second device certificate (PEM), for rotation. The certificates are managed as a whole - an enrollment
            listed without a secondary loses the secondary it has.
        type: str
      secondary_certificate_path:
        description: A file holding the secondary device certificate.
        type: path
      state:
        description: Overrides O(state) for this enrollment.
        type: str
        choices: [present, absent]
      provisioning_status:
        description: Overrides O(provisioning_status) for this enrollment.
        type: str
        choices: [enabled, disabled]
      iot_edge:
        description: Overrides O(iot_edge) for this enrollment.
        type: bool
      initial_twin:
        description: Overrides O(initial_twin) for this enrollment.
        type: dict
      allocation_policy:
        description: Overrides O(allocation_policy) for this enrollment.
        type: str
        choices: [hashed, geoLatency, static, custom]
      iot_hubs:
        description: Overrides O(iot_hubs) for this enrollment.
        type: list
        elements: str
      reprovision_policy:
        description: Overrides O(reprovision_policy) for this enrollment.
        type: dict
  state:
    description: Whether the enrollments should exist.
    type: str
    choices: [present, absent]
    default: present
  provisioning_status:
    description: V(disabled) makes DPS refuse the device's registration.
    type: str
    choices: [enabled, disabled]
    default: enabled
  iot_edge:
    description: Create the hub device as an IoT Edge device (capabilities.iotEdge).
    type: bool
    default: true
  initial_twin:
    description:
      - Initial device twin DPS writes when it creates the device in IoT Hub. Each key given replaces that part.
    type: dict
    suboptions:
      tags:
        description:
          - Twin tags, for example the ones deployments target. V({}) removes every tag the enrollment has.
          - Checked against IoT Hub's twin rules before any request, at every depth - keys without C(.), C($),
            spaces or control characters (at most 1 KB), strings of at most 4 KB, no V(null), objects nested at
            most 10 deep, 8 KB in all.
        type: dict
      desired_properties:
        description: Desired properties; V({}) removes them. The same rules as O(initial_twin.tags), 32 KB in all.
        type: dict
  allocation_policy:
    description: How DPS picks a hub among O(iot_hubs). Unset keeps the DPS default.
    type: str
    choices: [hashed, geoLatency, static, custom]
  iot_hubs:
    description: Host names of the linked IoT hubs the devices may be assigned to.
    type: list
    elements: str
  reprovision_policy:
    description: What DPS does when a provisioned device registers again.
    type: dict
    suboptions:
      update_hub_assignment:
        description: Move the device to the hub the allocation picks now.
        type: bool
        default: true
      migrate_device_data:
        description: Copy the twin to the new hub (otherwise reset it to O(initial_twin)).
        type: bool
        default: true
  fail_on_item_errors:
    description:
      - Fail when DPS refuses some of the writes (the others are applied either way).
      - V(false) reports them in RV(failures) instead, so that a play acting for many hosts fails just the hosts
        concerned.
    type: bool
    default: true
seealso:
  - module: edgefleet.iotedge.pki_identity
  - module: edgefleet.iotedge.dps_enrollment_info
  - module: edgefleet.iotedge.dps_enrollment_group
"""

EXAMPLES = r"""
- name: Enroll two devices explicitly, one disabled
  edgefleet.iotedge.dps_enrollment:
    enrollments:
      - registration_id: gw-berlin-01
        primary_certificate_path: ~/.edgefleet/pki/identities/gw-berlin-01/identity.cert.pem
      - registration_id: gw-berlin-02
        primary_certificate_path: ~/.edgefleet/pki/identities/gw-berlin-02/identity.cert.pem
        provisioning_status: disabled
    iot_hubs:
      - contoso-hub.azure-devices.net
    allocation_policy: static
  delegate_to: localhost

- name: Remove a decommissioned gateway's enrollment
  edgefleet.iotedge.dps_enrollment:
    enrollments:
      - registration_id: gw-berlin-02
    state: absent
  delegate_to: localhost
"""

RETURN = r"""
enrollments:
  description: One entry per requested enrollment, in the order given.
  returned: always
  type: list
  elements: dict
  contains:
    registration_id:
      description: The registration id.
      type: str
    action:
      description: V(create), V(update), V(delete) or V(none) (in check mode, what would be done).
      type: str
    changed:
      description: Whether this enrollment was (or would be) written.
      type: bool
    enrollment:
      description:
        - The managed view after the run (V(null) when absent) - registration_id, device_id, provisioning_status,
          iot_edge, primary_thumbprint and secondary_thumbprint (SHA-256), initial_twin, allocation_policy, iot_hubs,
          reprovision_policy.
      type: dict
    registration_status:
      description:
        - The device's registration state in DPS as read with the enrollment (V(assigned), V(failed), ...), or
          V(null) when it never registered or the enrollment was created by this run.
        - Deleting an individual enrollment also deletes its registration state, so a device whose enrollment was
          re-created keeps its hub assignment but is unknown to DPS until it reprovisions
          (C(iotedge system reprovision)); the roles use this to repair it.
      type: str
created:
  description: Registration ids created.
  returned: always
  type: list
  elements: str
updated:
  description: Registration ids updated.
  returned: always
  type: list
  elements: str
deleted:
  description: Registration ids deleted.
  returned: always
  type: list
  elements: str
failures:
  description:
    - The writes DPS refused (each with registration_id, action, error_code and error), after a re-read showed that
      they had not happened anyway. With O(fail_on_item_errors=true) the module fails when there is one.
  returned: always
  type: list
  elements: dict
http_requests:
  description: HTTP requests sent to DPS, retries included.
  returned: always
  type: int
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.edgefleet.iotedge.plugins.module_utils._dps_enrollment import (
    ALLOCATION_POLICIES,
    PROVISIONING_STATUSES,
    SHARED_OPTIONS,
    STATES,
    ensure_enrollments,
)
from ansible_collections.edgefleet.iotedge.plugins.module_utils._module import (
    dps_argument_spec,
    dps_client,
    run_cloud_core,
)

TWIN_OPTIONS = {"tags": {"type": "dict"}, "desired_properties": {"type": "dict"}}
REPROVISION_OPTIONS = {
    "update_hub_assignment": {"type": "bool", "default": True},
    "migrate_device_data": {"type": "bool", "default": True},
}


def main(module_class=AnsibleModule):
    """module_class: AnsibleModule, or its stand-in when the action plugin runs this in the controller's worker."""
    item_options = {
        "registration_id": {"type": "str", "required": True},
        "device_id": {"type": "str"},
        "primary_certificate": {"type": "str"},
        "primary_certificate_path": {"type": "path"},
        "secondary_certificate": {"type": "str"},
        "secondary_certificate_path": {"type": "path"},
        "state": {"type": "str", "choices": list(STATES)},
        "provisioning_status": {"type": "str", "choices": list(PROVISIONING_STATUSES)},
        "iot_edge": {"type": "bool"},
        "initial_twin": {"type": "dict"},
        "allocation_policy": {"type": "str", "choices": list(ALLOCATION_POLICIES)},
        "iot_hubs": {"type": "list", "elements": "str"},
        "reprovision_policy": {"type": "dict"},
    }
    module = module_class(
        argument_spec={
            **dps_argument_spec(),
            "enrollments": {
                "type": "list",
                "elements": "dict",
                "required": True,
                "options": item_options,
                "mutually_exclusive": [
                    ["primary_certificate", "primary_certificate_path"],
                    ["secondary_certificate", "secondary_certificate_path"],
                ],
            },
            "state": {"type": "str", "choices": list(STATES), "default": "present"},
            "provisioning_status": {"type": "str", "choices": list(PROVISIONING_STATUSES), "default": "enabled"},
            "iot_edge": {"type": "bool", "default": True},
            "initial_twin": {"type": "dict", "options": TWIN_OPTIONS},
            "allocation_policy": {"type": "str", "choices": list(ALLOCATION_POLICIES)},
            "iot_hubs": {"type": "list", "elements": "str"},
            "reprovision_policy": {"type": "dict", "options": REPROVISION_OPTIONS},
            "fail_on_item_errors": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    defaults = {name: module.params[name] for name in SHARED_OPTIONS}
    run_cloud_core(
        module,
        lambda: ensure_enrollments(
            dps_client(module.params),
            module.params["enrollments"],
            defaults,
            check_mode=module.check_mode,
            fail_on_item_errors=module.params["fail_on_item_errors"],
        ),
    )


if __name__ == "__main__":
    main()
