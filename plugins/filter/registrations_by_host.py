# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: registrations_by_host
short_description: Each inventory host's DPS registration state and whether IoT Hub has its device
version_added: 0.3.0
description:
  - For each of the hosts given that the DPS preflight accepted, in their order - its C(registration_id), the
    C(status), C(device_id) and C(assigned_hub) of its DPS registration state (V(not registered) and empty strings
    when DPS has none), the C(error) DPS recorded for it, and C(hub_device) - whether IoT Hub has a device of that id,
    or V(not checked) when the hub was not read.
  - The role edgefleet.iotedge.dps_enrollment publishes it as C(edgefleet_registrations) for the verification and the
    summary; one Python pass where a Jinja loop, testing each host against the hub's device list, took 1.5 s at a
    thousand hosts.
author: edgefleet developers (@edgefleet)
extends_documentation_fragment:
  - edgefleet.iotedge._fleet_hosts
options:
  _input:
    description: The result of M(edgefleet.iotedge.dps_registration_info) (its C(registrations)).
    type: dict
    required: true
  devices:
    description:
      - The C(devices) of M(edgefleet.iotedge.iothub_device_info), each with its C(device_id).
      - V(null) when the hub was not read; each host's C(hub_device) is then V(not checked).
    type: list
    elements: dict
"""

EXAMPLES = r"""
- name: Publish the hosts' cloud state, by inventory host
  ansible.builtin.set_fact:
    edgefleet_registrations: >-
      {{ registrations | edgefleet.iotedge.registrations_by_host(dps_enrollment_preflight.hosts, ansible_play_hosts,
                                                                 hub_devices.devices | default(none)) }}
  run_once: true
"""

RETURN = r"""
_value:
  description: Inventory host -> C(registration_id), C(status), C(device_id), C(assigned_hub), C(error), C(hub_device).
  type: dict
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.edgefleet.iotedge.plugins.plugin_utils._fleet_hosts import accepted_hosts

NOT_CHECKED = "not checked"


def registrations_by_host(result, preflight, hosts, devices=None) -> dict:
    if (
        not isinstance(result, dict)
        or not isinstance(preflight, dict)
        or not isinstance(hosts, list)
        or not isinstance(devices, (list, type(None)))
    ):
        raise AnsibleFilterError(
            "edgefleet.iotedge.registrations_by_host: the input is the result of "
            "edgefleet.iotedge.dps_registration_info, preflight a dictionary of host -> settings with registration_id, "
            "hosts a list, devices the devices of edgefleet.iotedge.iothub_device_info or null"
        )
    states = {state["registration_id"]: state for state in result.get("registrations") or []}
    hub_device_ids = None if devices is None else {device["device_id"] for device in devices}
    published = {}
    for host, settings in accepted_hosts(preflight, hosts):
        registration_id = settings["registration_id"]
        state = states.get(registration_id) or {}
        published[host] = {
            "registration_id": registration_id,
            "status": state.get("status", "not registered"),
            "device_id": state.get("device_id", ""),
            "assigned_hub": state.get("assigned_hub", ""),
            "error": state.get("error_message", ""),
            "hub_device": NOT_CHECKED if hub_device_ids is None else registration_id in hub_device_ids,
        }
    return published


class FilterModule:
    def filters(self):
        return {"registrations_by_host": registrations_by_host}
