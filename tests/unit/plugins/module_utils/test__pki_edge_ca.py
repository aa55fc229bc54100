"""Edge CAs from the fleet root: profile per generation, files, idempotency, renewal rules, rollover, check mode."""

from __future__ import annotations

import datetime
import os

import pytest
from cryptography import x509

from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki import PkiError, signed_by
from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki_ca import ensure_ca, load_ca
from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki_edge_ca import EdgeCaRequest, ensure_edge_cas
from ansible_collections.edgefleet.iotedge.tests.unit.pki_factories import NOW, ca_request

DEVICES = ["gw-01", "gw-02"]


def run(ca_dir, out, *, check_mode=False, now=NOW, **overrides):
    values = {"ca_path": str(ca_dir), "path": str(out), "devices": list(DEVICES)}
    values.update(overrides)
    return ensure_edge_cas(EdgeCaRequest(**values), check_mode=check_mode, now=now)


def cert(path):
    return x509.load_pem_x509_certificate(path.read_bytes())


def snapshot(directory):
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_edge_ca_profile_files_and_chain(ca_dir, tmp_path):
    out = tmp_path / "ids"
    result = run(ca_dir, out)
    assert result["changed"] is True and result["summary"]["created"] == 2
    root = load_ca(str(ca_dir), passphrase=None).root_cert
    for device in DEVICES:
        edge_ca = cert(out / device / "edge-ca.cert.pem")
        assert edge_ca.subject.rfc4514_string() == f"CN={device}.ca"
        assert signed_by(edge_ca, root), "the root signs: the intermediate's pathlen 0 forbids a CA under it"
        constraints = edge_ca.extensions.get_extension_for_class(x509.BasicConstraints)
        assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
        usage = edge_ca.extensions.get_extension_for_class(x509.KeyUsage).value
        assert usage.key_cert_sign and usage.digital_signature and not usage.crl_sign
        assert os.stat(out / device / "edge-ca.key.pem").st_mode & 0o777 == 0o600
        assert (out / device / "edge-ca.full-chain.cert.pem").read_bytes() == (
            (out / device / "edge-ca.cert.pem").read_bytes() + (ca_dir / "root.cert.pem").read_bytes()
        )
        assert result["edge_cas"][device]["chain_path"] == str(out / device / "edge-ca.full-chain.cert.pem")
    before = snapshot(out)
    again = run(ca_dir, out, now=NOW + datetime.timedelta(days=1))
    assert again["changed"] is False and snapshot(out) == before


def test_1_1_gets_path_length_1_and_a_change_of_generation_reissues(ca_dir, tmp_path):
    out = tmp_path / "ids"
    run(ca_dir, out)
    legacy = run(ca_dir, out, generation="1.1", valid_days=100)
    assert legacy["edge_cas"]["gw-01"]["action"] == "reissue"
    assert legacy["edge_cas"]["gw-01"]["reasons"] == ["path length is 0, IoT Edge 1.1 needs 1"]
    assert (
        cert(out / "gw-01" / "edge-ca.cert.pem")
        .extensions.get_extension_for_class(x509.BasicConstraints)
        .value.path_length
        == 1
    )


def test_renewal_inside_renew_before_days_and_repairs_without_a_new_key(ca_dir, tmp_path):
    out = tmp_path / "ids"
    run(ca_dir, out, valid_days=40)
    key = (out / "gw-01" / "edge-ca.key.pem").read_bytes()
    (out / "gw-01" / "edge-ca.full-chain.cert.pem").write_bytes(b"stale")
    os.chmod(out / "gw-01" / "edge-ca.key.pem", 0o644)
    repaired = run(ca_dir, out, valid_days=40)
    assert repaired["edge_cas"]["gw-01"]["action"] == "repair"
    assert (out / "gw-01" / "edge-ca.key.pem").read_bytes() == key
    assert os.stat(out / "gw-01" / "edge-ca.key.pem").st_mode & 0o777 == 0o600
    due = run(ca_dir, out, valid_days=40, now=NOW + datetime.timedelta(days=15))
    assert {d: due["edge_cas"][d]["action"] for d in DEVICES} == {"gw-01": "renew", "gw-02": "renew"}
    assert (out / "gw-01" / "edge-ca.key.pem").read_bytes() != key


def test_a_ca_rollover_reissues_the_edge_cas_under_the_new_root(ca_dir, tmp_path):
    out = tmp_path / "ids"
    run(ca_dir, out)
    ensure_ca(ca_request(ca_dir, staged=True, force=True), check_mode=False, now=NOW)
    rolled = run(ca_dir, out)
    assert rolled["edge_cas"]["gw-01"]["reasons"] == ["not issued by the current root CA"]
    assert signed_by(cert(out / "gw-01" / "edge-ca.cert.pem"), load_ca(str(ca_dir / "next"), passphrase=None).root_cert)


def test_check_mode_predicts_and_writes_nothing(ca_dir, tmp_path):
    out = tmp_path / "ids"
    predicted = run(ca_dir, out, check_mode=True)
    assert predicted["changed"] is True and not out.exists()
    assert run(ca_dir, tmp_path / "x", check_mode=True, ca_path=str(tmp_path / "no-ca"))["summary"]["created"] == 2


def test_absent_removes_only_the_edge_ca_files(ca_dir, tmp_path):
    out = tmp_path / "ids"
    run(ca_dir, out)
    (out / "gw-01" / "identity.cert.pem").write_text("kept")
    removed = run(ca_dir, out, state="absent", devices=["gw-01"])
    assert removed["edge_cas"]["gw-01"]["action"] == "remove"
    assert sorted(p.name for p in (out / "gw-01").iterdir()) == ["identity.cert.pem"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"key_type": "dsa"}, "key_type: "),
        ({"renew_before_days": 400}, "renew_before_days: 400 is not below valid_days"),
        ({"generation": "2"}, "generation: "),
        ({"devices": ["Bad Id"]}, ""),
    ],
)
def test_bad_input_fails_before_writing(ca_dir, tmp_path, overrides, message):
    with pytest.raises(PkiError, match="^" + message):
        run(ca_dir, tmp_path / "ids", **overrides)
    assert not (tmp_path / "ids").exists()
