#!/usr/bin/python
# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: fleet_report_chart
short_description: Draw the fleet report's days left per host as a PNG chart
version_added: 0.1.0
description:
  - Draws the rows of the P(edgefleet.iotedge.fleet_report#filter) filter as a horizontal bar chart of the days left
    on each host's identity certificate, hosts below O(min_days) in red and a host without a chain as an empty grey
    bar, and writes it to O(dest) where it differs.
  - Runs on the controller (C(delegate_to=localhost)) and needs C(matplotlib) there; without it the module warns and
    writes nothing.
author: edgefleet developers (@edgefleet)
extends_documentation_fragment:
  - edgefleet.iotedge._attributes
attributes:
  check_mode:
    support: full
    details: Says whether the chart would be written.
  diff_mode:
    support: none
options:
  rows:
    description: The report's C(rows) (C(host) and C(days_left) are read).
    type: list
    elements: dict
    required: true
  dest:
    description: The PNG file to write; its directory must exist.
    type: path
    required: true
  min_days:
    description: The threshold drawn on the chart.
    type: int
    default: 30
"""

EXAMPLES = r"""
- name: Draw the days left of every host
  edgefleet.iotedge.fleet_report_chart:
    rows: "{{ report.rows }}"
    dest: fleet-report/fleet-report.png
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
written:
  description: Whether a chart was drawn (V(false) without matplotlib).
  returned: always
  type: bool
dest:
  description: The chart's path.
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.edgefleet.iotedge.plugins.module_utils._fleet_report import ChartUnavailable, ensure_chart


def main():
    module = AnsibleModule(
        argument_spec={
            "rows": {"type": "list", "elements": "dict", "required": True},
            "dest": {"type": "path", "required": True},
            "min_days": {"type": "int", "default": 30},
        },
        supports_check_mode=True,
    )
    dest = module.params["dest"]
    try:
        changed = ensure_chart(module.params["rows"], module.params["min_days"], dest, check_mode=module.check_mode)
    except ChartUnavailable as error:
        module.warn(str(error))
        module.exit_json(changed=False, written=False, dest=dest)
    except (KeyError, TypeError) as error:
        module.fail_json(
            msg=f"rows: each row needs host and days_left, as the fleet_report filter gives them ({error})"
        )
    except OSError as error:
        module.fail_json(msg=f"dest: could not write {dest} ({error.strerror or error})")
    module.exit_json(changed=changed, written=True, dest=dest)


if __name__ == "__main__":
    main()
