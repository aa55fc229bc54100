"""edgefleet.iotedge.unclaimed_enrollments: what provision_edge.yml retires with edgefleet_retire_unclaimed."""

from __future__ import annotations

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.edgefleet.iotedge.plugins.filter.unclaimed_enrollments import unclaimed_enrollments

FLEET = "CN=edgefleet Intermediate CA"


def listed(registration_id: str, issuer: str) -> dict:
    return {
        "registration_id": registration_id,
        "certificates": {"primary": {"issuer": issuer}, "secondary": None},
        "provisioning_status": "enabled",
        "registration_state": {"status": "assigned"},
    }


def test_the_fleet_ca_is_read_off_the_claimed_enrollments():
    enrollments = [listed("edge-01", FLEET), listed("edge-03", FLEET), listed("sensor-1", "CN=another CA")]
    found = unclaimed_enrollments(enrollments, claimed=["edge-01", "EDGE-02"])
    assert [item["registration_id"] for item in found] == ["edge-03"]
    # Claimed ids are compared without case, as DPS compares registration ids.
    assert unclaimed_enrollments(enrollments, claimed=["EDGE-01", "edge-03"]) == []


def test_with_no_claimed_enrollment_nothing_is_the_fleets():
    """No host's own enrollment says which CA is the fleet's: nothing may be taken for unclaimed."""
    assert unclaimed_enrollments([listed("edge-03", FLEET)], claimed=["edge-01"]) == []


@pytest.mark.parametrize(("enrollments", "claimed"), [({}, []), ([], "edge-01")])
def test_wrong_types_are_refused(enrollments, claimed):
    with pytest.raises(AnsibleFilterError, match="unclaimed_enrollments"):
        unclaimed_enrollments(enrollments, claimed=claimed)
