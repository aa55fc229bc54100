# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Action plugin of edgefleet.iotedge.pki_identity: runs the module in the worker process when it would run on this
controller anyway (plugin_utils/_controller_module.py), else executes it as usual."""

from __future__ import annotations

from ansible_collections.edgefleet.iotedge.plugins.modules import pki_identity
from ansible_collections.edgefleet.iotedge.plugins.plugin_utils._controller_module import ControllerModuleAction


class ActionModule(ControllerModuleAction):
    module_main = staticmethod(pki_identity.main)
