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
    ensure_ca(ca_request(base / "third", root_common_name="Third Root CA"), check_mode=False)
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


# ---- a CA rollover: two names, the old and the new CA registered side by side --------------------------------------


def rollover(pki, ca, other, **overrides):
    """The request for CA ``ca`` during a rollover whose other CA is ``other`` (None: no rollover under way)."""
    values = {
        "certificate_path": str(pki / ca / "root.cert.pem"),
        "ca_path": str(pki / ca),
        "alternate_name": "fleet-root-rollover",
        "preserve_certificate_path": str(pki / other / "root.cert.pem") if other else None,
    }
    return request(pki, **{**values, **overrides})


def test_the_new_ca_of_a_rollover_goes_under_the_alternate_name_and_the_current_one_stays(pki):
    client = FakeManagement()
    current = ensure_dps_certificate(client, rollover(pki, "ca", "other"), check_mode=False)
    assert current["name"] == "fleet-root" and current["alternate"] is None
    staged = ensure_dps_certificate(client, rollover(pki, "other", "ca"), check_mode=False)
    assert staged["name"] == "fleet-root-rollover" and staged["certificate"]["is_verified"] is True
    assert staged["alternate"]["thumbprint"] == fingerprints(root(pki))["sha1"]
    assert client.records["fleet-root"]["properties"]["cert"] == root(pki), "the current CA was not replaced"
    writes = len(client.writes)
    # Both stay where they are on the next run, in either order.
    assert ensure_dps_certificate(client, rollover(pki, "other", "ca"), check_mode=False)["changed"] is False
    again = ensure_dps_certificate(client, rollover(pki, "ca", "other"), check_mode=False)
    assert again["changed"] is False and again["name"] == "fleet-root"
    assert len(client.writes) == writes


def test_after_the_rollover_the_new_ca_keeps_its_name_and_reports_the_old_one(pki):
    client = FakeManagement()
    client.seed("fleet-root", root(pki), True)
    client.seed("fleet-root-rollover", root(pki, "other"), True)
    promoted = ensure_dps_certificate(client, rollover(pki, "other", None), check_mode=False)
    assert promoted["changed"] is False and promoted["name"] == "fleet-root-rollover"
    assert promoted["alternate"]["thumbprint"] == fingerprints(root(pki))["sha1"]
    assert "etag" not in promoted["alternate"]
    assert client.writes == []


def test_the_next_rollover_uses_the_free_name_and_replaces_a_stale_one(pki):
    client = FakeManagement()
    client.seed("fleet-root-rollover", root(pki, "other"), True)
    # The current CA is under the alternate name; the new one takes the free name.
    staged = ensure_dps_certificate(client, rollover(pki, "ca", "other"), check_mode=False)
    assert staged["name"] == "fleet-root" and client.writes[0] == ("put", "fleet-root", None, False)
    # A stale CA (from the rollover before) under the name the new one needs is replaced with its etag; the name that
    # holds the CA to preserve is never written.
    client = FakeManagement()
    client.seed("fleet-root", root(pki, "other"), True)
    stale = client.seed("fleet-root-rollover", root(pki, "third"), True)
    replaced = ensure_dps_certificate(client, rollover(pki, "ca", "other"), check_mode=False)
    assert replaced["name"] == "fleet-root-rollover" and replaced["actions"] == [
        "replace certificate",
        "proof of possession",
    ]
    assert client.writes[0] == ("put", "fleet-root-rollover", stale["etag"], False)
    assert client.records["fleet-root"]["properties"]["cert"] == root(pki, "other")


def test_check_mode_names_the_name_it_would_use(pki):
    client = FakeManagement()
    client.seed("fleet-root", root(pki), True)
    predicted = ensure_dps_certificate(client, rollover(pki, "other", "ca"), check_mode=True)
    assert predicted["name"] == "fleet-root-rollover" and predicted["actions"] == ["create", "proof of possession"]
    assert client.writes == []


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"alternate_name": "fleet-root"}, "alternate_name: must differ from name"),
        ({"alternate_name": "bad name"}, "alternate_name: 'bad name' is not a DPS certificate name"),
    ],
)
def test_bad_alternate_name_raises_before_any_request(pki, overrides, message):
    client = FakeManagement()
    with pytest.raises(ConfigurationError, match=r"^" + message):
        ensure_dps_certificate(client, rollover(pki, "ca", "other", **overrides), check_mode=False)
    assert client.calls == []
