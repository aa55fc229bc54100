"""edgefleet.iotedge.identity_files: the roles find a device's files where pki_identity wrote them, by its names."""

from __future__ import annotations

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.edgefleet.iotedge.plugins.filter.identity_files import identity_files
from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki_edge_ca import EdgeCaRequest, ensure_edge_cas
from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki_identity import IdentityRequest, ensure_identities
from ansible_collections.edgefleet.iotedge.tests.unit.pki_factories import NOW


def test_the_paths_are_those_pki_identity_writes_and_returns(ca_dir, tmp_path):
    result = ensure_identities(
        IdentityRequest(ca_path=str(ca_dir), path=str(tmp_path / "ids"), devices=["edge-01"]), check_mode=False, now=NOW
    )
    paths = identity_files(str(tmp_path / "ids"), "edge-01")
    next_paths = paths.pop("next")
    edge_ca_paths = paths.pop("edge_ca")
    returned = result["identities"]["edge-01"]
    assert paths == {name: returned[name] for name in ("cert_path", "key_path", "chain_path")}
    assert all((tmp_path / "ids" / "edge-01" / path.rsplit("/", 1)[-1]).is_file() for path in paths.values())
    rotating = ensure_identities(
        IdentityRequest(
            ca_path=str(ca_dir), path=str(tmp_path / "ids"), devices=["edge-01"], staged=True, rotate=["edge-01"]
        ),
        check_mode=False,
        now=NOW,
    )
    staged = rotating["identities"]["edge-01"]["next"]
    assert next_paths == {name: staged[name] for name in ("cert_path", "key_path", "chain_path")}
    edge_ca = ensure_edge_cas(
        EdgeCaRequest(ca_path=str(ca_dir), path=str(tmp_path / "ids"), devices=["edge-01"]), check_mode=False, now=NOW
    )["edge_cas"]["edge-01"]
    assert edge_ca_paths == {name: edge_ca[name] for name in ("cert_path", "key_path", "chain_path")}
    assert all(path.is_file() for path in map(type(tmp_path), edge_ca_paths.values()))


def test_values_that_are_not_text_are_refused():
    with pytest.raises(AnsibleFilterError, match="are text"):
        identity_files(["/pki"], "edge-01")
