# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: fleet_report
short_description: The fleet report's rows, table and CSV from what each host, the PKI, DPS and IoT Hub say
version_added: 0.1.0
description:
  - One row per host - the identity certificate's end date and days left (read from the chain on the host), whether
    it is the one the fleet PKI issued and the one DPS holds, the DPS registration status, the hub device, edgeAgent
    and C(iotedge check) errors - and each host's problems.
  - C(edgefleet.iotedge.fleet_report) (C(playbooks/fleet_report.yml)) gathers the inputs; this filter only computes.
author: edgefleet developers (@edgefleet)
options:
  _input:
    description:
      - By inventory host - C(registration_id), C(chain_pem) (the host's chain, or empty with C(read_error)),
        C(issued_cert_path) (the leaf the fleet PKI issued, on the controller), C(enrollment)
        (M(edgefleet.iotedge.dps_enrollment_info)'s, V(group), or V(null)), C(hub_device)
        (M(edgefleet.iotedge.iothub_device_info)'s, V({}) for a missing device, V(null) when not read),
        C(edge_agent) and C(check_errors).
    type: dict
    required: true
  min_days:
    description: A certificate with fewer days left is a problem.
    type: int
    default: 30
  now:
    description: The time to count from (ISO 8601, UTC); the current time when unset.
    type: str
  enrollments:
    description:
      - Every individual enrollment of the DPS instance, as M(edgefleet.iotedge.dps_enrollment_info) returns them.
        Given, the result's C(unclaimed) lists those whose certificate was issued by the CA of the hosts' own
        enrollments but that no host claims any more (a host removed from inventory without being retired).
    type: list
    elements: dict
"""

EXAMPLES = r"""
- name: Build the report
  ansible.builtin.set_fact:
    report: "{{ report_inputs | edgefleet.iotedge.fleet_report(min_days=30) }}"
"""

RETURN = r"""
_value:
  description:
    - C(rows) (sorted by host), C(table) and C(csv) (text), C(below_threshold) and C(flagged) (hosts).
    - C(unclaimed) - with O(enrollments), each unclaimed enrollment's C(registration_id), C(issuer),
      C(provisioning_status) and C(registration_status); otherwise empty.
  type: dict
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.edgefleet.iotedge.plugins.module_utils._fleet_report import fleet_report as build
from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki import PkiError, parse_time, utcnow


def fleet_report(hosts, min_days=30, now=None, enrollments=None) -> dict:
    if not isinstance(hosts, dict):
        raise AnsibleFilterError("edgefleet.iotedge.fleet_report: the input is a dictionary of hosts")
    try:
        moment = parse_time(now, field="now") if now else utcnow()
    except PkiError as error:
        raise AnsibleFilterError(f"edgefleet.iotedge.fleet_report: {error}") from None
    if isinstance(min_days, bool) or not isinstance(min_days, int):
        raise AnsibleFilterError("edgefleet.iotedge.fleet_report: min_days is a whole number of days")
    if enrollments is not None and not isinstance(enrollments, list):
        raise AnsibleFilterError("edgefleet.iotedge.fleet_report: enrollments is a list (dps_enrollment_info's)")
    hosts = {str(host): dict(facts) for host, facts in hosts.items()}
    return build(hosts, min_days=min_days, now=moment, enrollments=enrollments)


class FilterModule:
    def filters(self):
        return {"fleet_report": fleet_report}
