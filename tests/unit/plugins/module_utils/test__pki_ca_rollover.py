"""CA rollover: a new CA waits in next/ beside the current one, identities move to it, then it is promoted."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509

from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki import PkiError, signed_by
from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki_ca import ensure_ca, load_ca
from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki_identity import IdentityRequest, ensure_identities
from ansible_collections.edgefleet.iotedge.tests.unit.pki_factories import NOW, ca_request

DEVICES = ["gw-01", "gw-02"]
LATER = NOW + datetime.timedelta(hours=1)


def _snapshot(directory):
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def _identities(ca_dir, identity_dir, *, check_mode=False, **overrides):
    values = {"ca_path": str(ca_dir), "path": str(identity_dir), "devices": list(DEVICES), "staged": True}
    values.update(overrides)
    return ensure_identities(IdentityRequest(**values), check_mode=check_mode, now=LATER)


def _rollover(ca_dir, identity_dir, *, check_mode=False, now=LATER, **overrides):
    values = {"staged": True, "promote": True, "identity_path": str(identity_dir)}
    values.update(overrides)
    return ensure_ca(ca_request(ca_dir, **values), check_mode=check_mode, now=now)


@pytest.fixture
def fleet(tmp_path):
    """A CA and two identities issued by it."""
    ca_dir, identity_dir = tmp_path / "ca", tmp_path / "identities"
    ensure_ca(ca_request(ca_dir), check_mode=False, now=NOW)
    _identities(ca_dir, identity_dir)
    return ca_dir, identity_dir


def test_force_with_staged_writes_a_new_ca_to_next_and_leaves_the_current_one(fleet):
    ca_dir, identity_dir = fleet
    current = _snapshot(ca_dir)
    result = _rollover(ca_dir, identity_dir, force=True, promote=False)
    assert result["changed"] is True
    assert result["actions"][0].startswith("stage a new CA in next/") and "force=true" in result["actions"][0]
    assert {name: data for name, data in _snapshot(ca_dir).items() if not name.startswith("next/")} == current
    staged = load_ca(str(ca_dir / "next"), passphrase=None)
    old = load_ca(str(ca_dir), passphrase=None)
    assert staged.root_cert != old.root_cert and signed_by(staged.intermediate_cert, staged.root_cert)
    assert result["root"]["cert_path"] == str(ca_dir / "root.cert.pem")
    assert result["next"]["root"]["cert_path"] == str(ca_dir / "next/root.cert.pem")
    assert result["next"]["root"]["thumbprint_sha1"] != result["root"]["thumbprint_sha1"]
    assert result["diff"]["before"]["next"] is None and result["diff"]["after"]["next"]["root"]


def test_a_staged_rollover_is_kept_and_force_does_not_stage_another(fleet):
    ca_dir, identity_dir = fleet
    _rollover(ca_dir, identity_dir, force=True, promote=False)
    staged = _snapshot(ca_dir)
    again = _rollover(ca_dir, identity_dir, force=True, promote=False)
    assert again["changed"] is False and again["actions"] == []
    assert _snapshot(ca_dir) == staged
    assert again["next"]["root"]["cert_path"] == str(ca_dir / "next/root.cert.pem")


def test_identities_move_to_the_new_ca_in_next_and_wait_beside_the_current_ones(fleet):
    ca_dir, identity_dir = fleet
    _rollover(ca_dir, identity_dir, force=True, promote=False)
    result = _identities(ca_dir, identity_dir)
    new_ca, old_ca = load_ca(str(ca_dir / "next"), passphrase=None), load_ca(str(ca_dir), passphrase=None)
    for device in DEVICES:
        identity = result["identities"][device]
        assert identity["rotation"] == "stage"
        assert identity["reasons"] == ["not issued by the new CA of the rollover (ca_path/next/)"]
        staged = x509.load_pem_x509_certificate((identity_dir / device / "next/identity.cert.pem").read_bytes())
        current = x509.load_pem_x509_certificate((identity_dir / device / "identity.cert.pem").read_bytes())
        assert signed_by(staged, new_ca.signer_cert) and signed_by(current, old_ca.signer_cert)
        assert (identity_dir / device / "next/identity.full-chain.cert.pem").read_bytes().endswith(new_ca.chain_pem)
    assert result["ca"]["root_cert_path"] == str(ca_dir / "next/root.cert.pem")
    # A device added during the rollover starts on the new CA.
    added = _identities(ca_dir, identity_dir, devices=[*DEVICES, "gw-03"])["identities"]["gw-03"]
    assert (
        added["action"] == "create"
        and added["rotation"] == "none"
        and added["issuer"] == new_ca.signer_cert.subject.rfc4514_string()
    )


def test_promotion_waits_for_every_identity_then_retires_the_old_ca(fleet):
    ca_dir, identity_dir = fleet
    _rollover(ca_dir, identity_dir, force=True, promote=False)
    _identities(ca_dir, identity_dir)
    old_root = (ca_dir / "root.cert.pem").read_bytes()
    new_root = (ca_dir / "next/root.cert.pem").read_bytes()

    waiting = _rollover(ca_dir, identity_dir)
    assert waiting["changed"] is False and waiting["promoted"] is False
    assert waiting["waiting"] == DEVICES
    assert (ca_dir / "next/root.cert.pem").exists()

    _identities(ca_dir, identity_dir, promote=["gw-01"])
    assert _rollover(ca_dir, identity_dir)["waiting"] == ["gw-02"]

    _identities(ca_dir, identity_dir, promote=["gw-02"])
    predicted = _rollover(ca_dir, identity_dir, check_mode=True)
    assert predicted["changed"] is True and predicted["promoted"] is True
    assert (ca_dir / "next/root.cert.pem").exists(), "check mode promotes nothing"

    done = _rollover(ca_dir, identity_dir)
    assert done["promoted"] is True and done["next"] is None and done["waiting"] == []
    assert (ca_dir / "root.cert.pem").read_bytes() == new_root
    assert not (ca_dir / "next").exists()
    assert (ca_dir / done["retired_path"] / "root.cert.pem").read_bytes() == old_root
    assert (ca_dir / done["retired_path"] / "root.key.pem").exists()
    assert done["root"]["cert_path"] == str(ca_dir / "root.cert.pem")
    # The identities stay as they are: the CA that issued them is now the current one.
    assert _identities(ca_dir, identity_dir)["changed"] is False
    assert _rollover(ca_dir, identity_dir)["changed"] is False


def test_an_unreadable_identity_holds_the_promotion_and_a_device_without_one_does_not(fleet):
    ca_dir, identity_dir = fleet
    _rollover(ca_dir, identity_dir, force=True, promote=False)
    _identities(ca_dir, identity_dir, promote=[])
    _identities(ca_dir, identity_dir, promote=DEVICES)
    (identity_dir / "empty-device").mkdir()
    (identity_dir / "broken").mkdir()
    (identity_dir / "broken/identity.cert.pem").write_text("not a certificate")
    assert _rollover(ca_dir, identity_dir)["waiting"] == ["broken"]


def test_without_staged_a_forced_rotation_replaces_the_ca_in_place(fleet):
    ca_dir = fleet[0]
    result = ensure_ca(ca_request(ca_dir, force=True), check_mode=False, now=LATER)
    assert result["next"] is None and result["retired_path"]
    assert not (ca_dir / "next").exists()


def test_an_intermediate_only_change_is_not_a_rollover(fleet):
    ca_dir, identity_dir = fleet
    result = _rollover(ca_dir, identity_dir, intermediate_common_name="Renamed Intermediate", promote=False)
    assert result["next"] is None
    assert result["actions"][0].startswith("reissue intermediate")
    assert not (ca_dir / "next").exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"promote": True, "staged": False}, r"^promote: ends a CA rollover, which needs staged=true"),
        ({"promote": True, "identity_path": None}, r"^identity_path: needed with promote"),
    ],
)
def test_promote_needs_staged_and_identity_path(fleet, overrides, message):
    ca_dir, identity_dir = fleet
    with pytest.raises(PkiError, match=message):
        _rollover(ca_dir, identity_dir, **overrides)


def test_create_false_refuses_to_stage_a_new_root(fleet):
    ca_dir, identity_dir = fleet
    with pytest.raises(PkiError, match=r"^create: is false"):
        _rollover(ca_dir, identity_dir, force=True, promote=False, create=False)
    assert not (ca_dir / "next").exists()
