# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: iotedge_settings
short_description: The runtime configuration's settings, read from the inventory variables of the same names
version_added: 0.1.0
description:
  - Returns, for the current host, every setting of the P(edgefleet.iotedge.iotedge_config#filter) filter whose
    inventory variable (the setting's name with the C(edgefleet_) prefix, for example C(edgefleet_dps_id_scope) for
    C(dps_id_scope)) is defined, templated.
  - The settings the role derives (the identity file paths) have no variable of their own and are left to the caller.
  - So a new option of the configuration is added in the role's argument spec and defaults, the renderer and
    docs/variables.md, and nowhere else.
author: edgefleet developers (@edgefleet)
options: {}
notes:
  - The result can hold secrets (an EST password, a PKCS#11 PIN in a URI); a task that shows it needs C(no_log).
"""

EXAMPLES = r"""
- name: Render the configuration from the inventory
  ansible.builtin.set_fact:
    config: "{{ lookup('edgefleet.iotedge.iotedge_settings') | combine(derived) | edgefleet.iotedge.iotedge_config }}"
  no_log: true
"""

RETURN = r"""
_raw:
  description: One dictionary of the settings, keyed by setting name.
  type: list
  elements: dict
"""

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

from ansible_collections.edgefleet.iotedge.plugins.module_utils._edge_config import setting_variables


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        if terms:
            raise AnsibleLookupError("edgefleet.iotedge.iotedge_settings takes no terms: it reads the host's variables")
        variables = variables or {}
        settings = {
            name: variables[variable] for name, variable in setting_variables().items() if variable in variables
        }
        return [self._templar.template(settings)]
