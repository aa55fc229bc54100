# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# PRIVATE to the edgefleet.iotedge collection. Do not use this from other collections.

from __future__ import annotations


class ModuleDocFragment:
    # Standard attributes of a module that manages state.
    DOCUMENTATION = r"""
options: {}
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
"""

    # Attributes of a module that runs on the controller and writes files there.
    FILES = r"""
options: {}
attributes:
  safe_file_operations:
    description:
      - Writes go to a temporary file beside the target and are renamed into place, so a failure leaves the previous
        file, never a half-written one.
    support: full
"""
