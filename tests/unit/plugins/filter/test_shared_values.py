"""edgefleet.iotedge.shared_values: which hosts share a value (the roles' duplicate registration id check)."""

from __future__ import annotations

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.edgefleet.iotedge.plugins.filter.shared_values import shared_values

HOSTVARS = {
    "edge-01": {"pre": {"registration_id": "edge-01"}},
    "Edge-01": {"pre": {"registration_id": "edge-01"}},
    "edge-02": {"pre": {"registration_id": "edge-02"}},
    "edge-03": {"pre": {"registration_id": "edge-01"}},
}


def test_only_values_several_hosts_have_are_returned_with_all_their_hosts():
    assert shared_values(HOSTVARS, list(HOSTVARS), "pre.registration_id") == {
        "edge-01": ["Edge-01", "edge-01", "edge-03"]
    }
    assert shared_values(HOSTVARS, ["edge-01", "edge-02"], "pre.registration_id") == {}


def test_a_host_without_the_value_is_named():
    with pytest.raises(AnsibleFilterError, match=r"edge-09 has no pre\.registration_id"):
        shared_values({**HOSTVARS, "edge-09": {}}, ["edge-01", "edge-09"], "pre.registration_id")
