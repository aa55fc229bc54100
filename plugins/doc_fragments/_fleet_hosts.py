# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# PRIVATE to the edgefleet.iotedge collection. Do not use this from other collections.

from __future__ import annotations


class ModuleDocFragment:
    # The options of the filters that publish a fleet fact by inventory host (plugin_utils/_fleet_hosts.py).
    DOCUMENTATION = r"""
options:
  preflight:
    description: Host -> its settings with C(registration_id), the C(hosts) of a role's preflight.
    type: dict
    required: true
  hosts:
    description: The hosts to publish, in this order (C(ansible_play_hosts)); those the preflight did not accept are left out.
    type: list
    elements: str
    required: true
"""
