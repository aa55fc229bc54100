"""Local stand-ins for Azure (``lab.cloud``) and for edge devices (``lab.fleet``); ``python -m lab`` runs both.

Test tooling only: nothing under ``plugins/`` imports this package and it is excluded from the Galaxy artifact.
"""

from __future__ import annotations
