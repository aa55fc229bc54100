# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# PRIVATE to the edgefleet.iotedge collection. Do not use this from other collections:
# it may change at any time.

"""The walk that the fleet-fact filters (by_host, enrollments_by_host, individual_enrollments) share."""

from __future__ import annotations


def accepted_hosts(preflight: dict, hosts: list):
    """(host, its settings) for each of ``hosts`` that a role's preflight accepted (a key of its ``hosts``), in the
    order of ``hosts``: a host it refused has failed, or fails before any write, and is left out."""
    for host in hosts:
        settings = preflight.get(host)
        if settings is not None:
            yield host, settings
