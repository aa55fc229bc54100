# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: enrollments_by_host
short_description: What a bulk write of individual enrollments did for each inventory host
version_added: 0.3.0
description:
  - For each of the hosts given that the DPS preflight accepted, in their order - C(kind) (V(individual)), its
    C(registration_id), the C(action) M(edgefleet.iotedge.dps_enrollment) took for it (V(none) when it was not in the
    write), the C(registration_status) DPS reported with it and the C(error) DPS gave when it refused the write
    (empty otherwise).
  - The role edgefleet.iotedge.dps_enrollment publishes it as C(edgefleet_enrollments); one Python pass where a Jinja
    loop over a thousand hosts took a large part of a second.
author: edgefleet developers (@edgefleet)
extends_documentation_fragment:
  - edgefleet.iotedge._fleet_hosts
options:
  _input:
    description: The result of M(edgefleet.iotedge.dps_enrollment) (its C(enrollments) and C(failures)).
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Publish the hosts' enrollments, by inventory host
  ansible.builtin.set_fact:
    edgefleet_enrollments: >-
      {{ written | edgefleet.iotedge.enrollments_by_host(dps_enrollment_preflight.hosts, ansible_play_hosts) }}
  run_once: true
"""

RETURN = r"""
_value:
  description: Inventory host -> C(kind), C(registration_id), C(action), C(registration_status), C(error).
  type: dict
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.edgefleet.iotedge.plugins.plugin_utils._fleet_hosts import accepted_hosts


def enrollments_by_host(result, preflight, hosts) -> dict:
    if not isinstance(result, dict) or not isinstance(preflight, dict) or not isinstance(hosts, list):
        raise AnsibleFilterError(
            "edgefleet.iotedge.enrollments_by_host: the input is the result of edgefleet.iotedge.dps_enrollment, "
            "preflight a dictionary of host -> settings with registration_id, hosts a list"
        )
    written = {item["registration_id"]: item for item in result.get("enrollments") or []}
    errors = {failure["registration_id"]: failure.get("error") or "" for failure in result.get("failures") or []}
    published = {}
    for host, settings in accepted_hosts(preflight, hosts):
        registration_id = settings["registration_id"]
        item = written.get(registration_id) or {}
        published[host] = {
            "kind": "individual",
            "registration_id": registration_id,
            "action": item.get("action", "none"),
            "registration_status": item.get("registration_status"),
            "error": errors.get(registration_id, ""),
        }
    return published


class FilterModule:
    def filters(self):
        return {"enrollments_by_host": enrollments_by_host}
