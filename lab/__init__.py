"""Local stand-ins for Azure (``lab.cloud``) and, later, for edge devices.

Test tooling only: nothing under ``plugins/`` imports this package and it is excluded from the Galaxy artifact.
"""

from __future__ import annotations
