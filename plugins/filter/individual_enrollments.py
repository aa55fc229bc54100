# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: individual_enrollments
short_description: The individual enrollments of the play's hosts, for edgefleet.iotedge.dps_enrollment in bulk
version_added: 0.3.0
description:
  - For each of the hosts given that the DPS preflight accepted, in their order, the enrollment to write - its
    registration id, its certificate as primary, and its initial twin.
  - While a host's identity rotates (a new certificate waits at C(next_certificate_path)), the new certificate is the
    primary and the current one the secondary, so that DPS accepts the device before, during and after its switch.
  - One Python pass, where a Jinja loop over a thousand hosts took a large part of a second.
author: edgefleet developers (@edgefleet)
options:
  _input:
    description:
      - Host -> its settings (C(registration_id), C(certificate_path), C(next_certificate_path), C(twin)), the C(hosts)
        of the dps_enrollment role's preflight.
    type: dict
    required: true
  hosts:
    description: The hosts to enroll (C(ansible_play_hosts)); those the preflight did not accept are left out.
    type: list
    elements: str
    required: true
"""

EXAMPLES = r"""
- name: Ensure one individual enrollment per host, in bulk
  edgefleet.iotedge.dps_enrollment:
    enrollments: "{{ dps_enrollment_preflight.hosts | edgefleet.iotedge.individual_enrollments(ansible_play_hosts) }}"
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
_value:
  description: The items of the C(enrollments) option of M(edgefleet.iotedge.dps_enrollment).
  type: list
  elements: dict
"""

import os

from ansible.errors import AnsibleFilterError

from ansible_collections.edgefleet.iotedge.plugins.plugin_utils._fleet_hosts import accepted_hosts


def individual_enrollments(preflight, hosts) -> list:
    if not isinstance(preflight, dict) or not isinstance(hosts, list):
        raise AnsibleFilterError(
            "edgefleet.iotedge.individual_enrollments: the input is the dps_enrollment preflight's hosts (a dictionary "
            "by host), hosts a list"
        )
    enrollments = []
    for settings in dict(accepted_hosts(preflight, hosts)).values():
        enrollment = {"registration_id": settings["registration_id"]}
        if os.path.isfile(settings["next_certificate_path"]):
            enrollment["primary_certificate_path"] = settings["next_certificate_path"]
            enrollment["secondary_certificate_path"] = settings["certificate_path"]
        else:
            enrollment["primary_certificate_path"] = settings["certificate_path"]
        if settings.get("twin"):
            enrollment["initial_twin"] = settings["twin"]
        enrollments.append(enrollment)
    return enrollments


class FilterModule:
    def filters(self):
        return {"individual_enrollments": individual_enrollments}
