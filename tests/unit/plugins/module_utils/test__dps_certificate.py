"""ensure_dps_certificate: read, compare, act, with a fake management client that records every call."""

from __future__ import annotations

import pytest
from cryptography import x509

from ansible_collections.edgefleet.iotedge.plugins.module_utils._dps_certificate import (
    DpsCertificateRequest,
    ensure_dps_certificate,
)
from ansible_collections.edgefleet.iotedge.plugins.module_utils._http import ConfigurationError
from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki import PkiError, fingerprints, signed_by
from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki_ca import ensure_ca, load_ca
from ansible_collections.edgefleet.iotedge.tests.unit.pki_factories import ca_request

CODE = "4D3C2B1A0F9E8D7C6B5A4D3C2B1A0F9E8D7C6B5A4D3C2B1A"


class FakeManagement:
    """Keeps certificates like DPS does (etag per write, re-upload of another certificate drops verification)."""

    def __init__(self, records=None):
        self.records = dict(records or {})
        self.calls = []
        self.proofs = []
        self._etag = 0

    def _next_etag(self):
        self._etag += 1
        return f"etag-{self._etag}"

    def _record(self, name, cert, is_verified):
        return {
            "name": name,
            "etag": self._next_etag(),
            "properties": {
                "subject": cert.subject.rfc4514_string(),
                "thumbprint": fingerprints(cert)["sha1"],
                "isVerified": is_verified,
                "expiry": "Sat, 31 Dec 2039 23:59:59 GMT",
                "cert": cert,
            },
        }

    def seed(self, name, cert, is_verified):
        self.records[name] = self._record(name, cert, is_verified)
        return self.records[name]

    def get_certificate(self, name):
        self.calls.append(("get", name))
        return self.records.get(name)

    def create_or_update_certificate(self, name, pem, *, is_verified, etag=None):
        self.calls.append(("put", name, etag, is_verified))
        cert = x509.load_pem_x509_certificate(pem.encode())
        existing = self.records.get(name)
        assert (existing is None) == (etag is None), "create without If-Match, update with the etag read"
        if existing:
            assert etag == existing["etag"]
            same = existing["properties"]["cert"] == cert
            is_verified = is_verified or (same and existing["properties"]["isVerified"])
        self.records[name] = self._record(name, cert, is_verified)
        return self.records[name]

    def generate_verification_code(self, name, etag):
        self.calls.append(("generate", name, etag))
        assert etag == self.records[name]["etag"]
        self.records[name]["etag"] = self._next_etag()
        return {"name": name, "etag": self.records[name]["etag"], "properties": {"verificationCode": CODE}}

    def verify_certificate(self, name, etag, pem):
        self.calls.append(("verify", name, etag))
        record = self.records[name]
        assert etag == record["etag"]
        proof = x509.load_pem_x509_certificate(pem.encode())
        self.proofs.append(proof)
        assert signed_by(proof, record["properties"]["cert"])
        record["properties"]["isVerified"] = True
        record["etag"] = self._next_etag()
        return record

    def delete_certificate(self, name, etag):
        self.calls.append(("delete", name, etag))
        assert etag == self.records[name]["etag"]
        del self.records[name]
        return True

    @property
    def writes(self):
        return [call for call in self.calls if call[0] != "get"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    base = tmp_path_factory.mktemp("pki")
    ensure_ca(ca_request(base / "ca"), check_mode=False)
    ensure_ca(ca_request(base / "other", root_common_name="Other Root CA"), check_mode=False)
    return base


def request(pki, **overrides):
    values = {"name": "fleet-root", "certificate_path": str(pki / "ca/root.cert.pem"), "ca_path": str(pki / "ca")}
    values.update(overrides)
    return DpsCertificateRequest(**values)


def root(pki, name="ca"):
    return load_ca(str(pki / name), passphrase=None).root_cert


def test_check_mode_predicts_create_and_proof_with_reads_only(pki):
    client = FakeManagement()
    result = ensure_dps_certificate(client, request(pki), check_mode=True)
    assert result["changed"] is True
    assert result["actions"] == ["create", "proof of possession"]
    assert result["certificate"]["thumbprint"] == fingerprints(root(pki))["sha1"]
    assert result["certificate"]["is_verified"] is True
    assert result["certificate"]["subject"] == "CN=Test Root CA"
    assert client.writes == [] and client.records == {}
    assert result["diff"]["before"] is None and "etag" not in result["diff"]["after"]


def test_create_proves_possession_with_the_ca_key_then_changes_nothing(pki):
    client = FakeManagement()
    result = ensure_dps_certificate(client, request(pki), check_mode=False)
    assert result["changed"] is True
    assert [call[0] for call in client.writes] == ["put", "generate", "verify"]
    assert client.writes[0] == ("put", "fleet-root", None, False)
    (proof,) = client.proofs
    assert proof.subject.rfc4514_string() == f"CN={CODE}"
    assert client.records["fleet-root"]["properties"]["isVerified"] is True
    assert result["certificate"]["is_verified"] is True
    assert result["certificate"]["etag"] == client.records["fleet-root"]["etag"]

    client.calls.clear()
    again = ensure_dps_certificate(client, request(pki), check_mode=False)
    assert again["changed"] is False and client.writes == []
    assert again["diff"]["before"] == again["diff"]["after"]


def test_unverified_upload_of_the_same_certificate_is_only_proved(pki):
    client = FakeManagement()
    etag = client.seed("fleet-root", root(pki), is_verified=False)["etag"]
    result = ensure_dps_certificate(client, request(pki), check_mode=False)
    assert result["actions"] == ["proof of possession"]
    assert client.writes[0] == ("generate", "fleet-root", etag)
    assert [call[0] for call in client.writes] == ["generate", "verify"]


def test_a_different_certificate_is_replaced_with_the_etag_and_proved_again(pki):
    client = FakeManagement()
    seeded = client.seed("fleet-root", root(pki, "other"), is_verified=True)
    result = ensure_dps_certificate(client, request(pki), check_mode=False)
    assert result["actions"] == ["replace certificate", "proof of possession"]
    assert client.writes[0] == ("put", "fleet-root", seeded["etag"], False)
    assert result["diff"]["before"]["thumbprint"] == fingerprints(root(pki, "other"))["sha1"]
    assert result["diff"]["after"]["thumbprint"] == fingerprints(root(pki))["sha1"]
    assert client.records["fleet-root"]["properties"]["isVerified"] is True


def test_is_verified_uploads_as_verified_without_a_ca_key(pki):
    client = FakeManagement()
    result = ensure_dps_certificate(client, request(pki, ca_path=None, is_verified=True), check_mode=False)
    assert client.writes == [("put", "fleet-root", None, True)]
    assert result["certificate"]["is_verified"] is True
    client.seed("second", root(pki), is_verified=False)
    marked = ensure_dps_certificate(
        client, request(pki, name="second", ca_path=None, is_verified=True), check_mode=False
    )
    assert marked["actions"] == ["mark verified"]


def test_verify_false_uploads_and_leaves_it_unverified(pki):
    client = FakeManagement()
    result = ensure_dps_certificate(client, request(pki, ca_path=None, verify=False), check_mode=False)
    assert [call[0] for call in client.writes] == ["put"]
    assert result["certificate"]["is_verified"] is False
    client.calls.clear()
    assert (
        ensure_dps_certificate(client, request(pki, ca_path=None, verify=False), check_mode=False)["changed"] is False
    )


def test_intermediate_signer(pki):
    client = FakeManagement()
    intermediate = str(pki / "ca/intermediate.cert.pem")
    result = ensure_dps_certificate(
        client, request(pki, certificate_path=intermediate, signer="intermediate"), check_mode=False
    )
    assert result["certificate"]["subject"] == "CN=Test Intermediate CA" and result["certificate"]["is_verified"]


def test_absent(pki):
    client = FakeManagement()
    assert ensure_dps_certificate(client, request(pki, state="absent"), check_mode=False)["changed"] is False
    assert client.writes == []
    seeded = client.seed("fleet-root", root(pki), is_verified=True)
    predicted = ensure_dps_certificate(client, request(pki, state="absent"), check_mode=True)
    assert predicted["changed"] is True and client.writes == [] and "fleet-root" in client.records
    removed = ensure_dps_certificate(client, request(pki, state="absent"), check_mode=False)
    assert removed["changed"] is True and removed["certificate"] is None
    assert client.writes == [("delete", "fleet-root", seeded["etag"])] and client.records == {}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"name": "bad/name"}, "name: "),
        ({"certificate_path": None}, "certificate: give exactly one"),
        ({"certificate": "-----BEGIN CERTIFICATE-----\nxx"}, "certificate: give exactly one"),
        ({"certificate_path": None, "certificate": "not a pem"}, "certificate: not a PEM certificate"),
        ({"ca_path": None}, "ca_path: proof of possession"),
        ({"signer": "leaf"}, "signer: "),
        ({"state": "gone"}, "state: "),
        ({"certificate_path": "/nonexistent/root.cert.pem"}, "certificate_path: /nonexistent"),
    ],
)
def test_bad_input_raises_before_any_request(pki, overrides, message):
    client = FakeManagement()
    with pytest.raises(ConfigurationError, match=r"^" + message):
        ensure_dps_certificate(client, request(pki, **overrides), check_mode=False)
    assert client.calls == []


def test_a_ca_that_is_not_the_uploaded_certificate_is_refused_before_any_request(pki):
    client = FakeManagement()
    with pytest.raises(ConfigurationError, match=r"^signer: the root certificate in .* is not the certificate"):
        ensure_dps_certificate(client, request(pki, ca_path=str(pki / "other")), check_mode=False)
    with pytest.raises(ConfigurationError, match="use signer=root"):
        ensure_dps_certificate(client, request(pki, signer="intermediate"), check_mode=False)
    assert client.calls == []


def test_a_missing_ca_directory_fails_clearly(pki, tmp_path):
    client = FakeManagement()
    with pytest.raises(PkiError, match=r"^ca_path: .* is not a directory"):
        ensure_dps_certificate(client, request(pki, ca_path=str(tmp_path / "nope")), check_mode=False)
    assert client.calls == []
    # Check mode after a check-mode pki_ca: the CA does not exist yet, the prediction still works.
    predicted = ensure_dps_certificate(client, request(pki, ca_path=str(tmp_path / "nope")), check_mode=True)
    assert predicted["changed"] is True and client.writes == []


def test_check_mode_predicts_a_certificate_that_pki_ca_has_not_written_yet(pki, tmp_path):
    missing = request(pki, certificate_path=str(tmp_path / "ca/root.cert.pem"), ca_path=str(tmp_path / "ca"))
    client = FakeManagement()
    predicted = ensure_dps_certificate(client, missing, check_mode=True)
    assert predicted["changed"] is True
    assert predicted["actions"] == ["create", "proof of possession"]
    assert client.writes == []
    # A real run still refuses the missing file before any request.
    with pytest.raises(ConfigurationError, match=r"^certificate_path: .* does not exist; create it first"):
        ensure_dps_certificate(FakeManagement(), missing, check_mode=False)
