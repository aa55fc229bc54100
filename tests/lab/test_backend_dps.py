"""DPS backend without sockets: enrollments, etags, bulk, paging, attestation decisions, proof of possession."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from lab.cloud.clock import IdGenerator, ManualClock
from lab.cloud.dps.backend import DpsBackend, DpsSettings
from lab.cloud.dps.errors import ArmError, DpsError
from lab.cloud.dps.models import GROUP, INDIVIDUAL
from lab.cloud.iothub.backend import IotHubBackend
from lab.cloud.x509 import sha1_thumbprint

START = dt.datetime.now(dt.UTC)


@pytest.fixture
def hub() -> IotHubBackend:
    return IotHubBackend(ManualClock(START), IdGenerator(1), host_name="hub-a:1")


@pytest.fixture
def backend(hub: IotHubBackend) -> DpsBackend:
    dps = DpsBackend(ManualClock(START), IdGenerator(7), DpsSettings())
    dps.link_hub(hub)
    return dps


def test_create_get_and_info_only_certificate(backend, bodies, root, pki):
    leaf = pki.leaf("dev-1")
    created = backend.put_enrollment(INDIVIDUAL, "dev-1", bodies.x509_enrollment("dev-1", leaf.pem), None)
    wire = created.to_wire()
    info = wire["attestation"]["x509"]["clientCertificates"]["primary"]
    assert set(info) == {"info"}  # DPS returns info, never the PEM
    assert info["info"]["sha1Thumbprint"] == sha1_thumbprint(leaf.certificate)
    assert info["info"]["subjectName"] == "CN=dev-1"
    assert info["info"]["version"] == 3
    assert wire["provisioningStatus"] == "enabled" and wire["capabilities"] == {"iotEdge": False}
    # Sending the info-only shape back (as the az CLI does) keeps the stored certificate.
    updated = backend.put_enrollment(INDIVIDUAL, "dev-1", {**wire, "capabilities": {"iotEdge": True}}, wire["etag"])
    assert updated.attestation.x509.client_certificates["primary"].certificate == leaf.certificate
    assert updated.etag != created.etag and updated.created == created.created and updated.iot_edge


def test_etag_rules(backend, bodies, pki):
    body = bodies.x509_enrollment("dev-2", pki.leaf("dev-2").pem)
    first = backend.put_enrollment(INDIVIDUAL, "dev-2", body, None)
    with pytest.raises(DpsError) as conflict:
        backend.put_enrollment(INDIVIDUAL, "dev-2", body, None)
    assert (conflict.value.status, conflict.value.code) == (409, 409201)
    with pytest.raises(DpsError) as mismatch:
        backend.put_enrollment(INDIVIDUAL, "dev-2", body, "bogus")
    assert (mismatch.value.status, mismatch.value.code) == (412, 412201)
    second = backend.put_enrollment(INDIVIDUAL, "dev-2", body, "*")
    backend.put_enrollment(INDIVIDUAL, "dev-2", body, f'"{second.etag}"')  # quoted etags are accepted too
    with pytest.raises(DpsError):
        backend.delete_enrollment(INDIVIDUAL, "dev-2", first.etag)
    backend.delete_enrollment(INDIVIDUAL, "DEV-2", "*")  # ids are case-insensitive
    with pytest.raises(DpsError) as missing:
        backend.get_enrollment(INDIVIDUAL, "dev-2")
    assert (missing.value.status, missing.value.code) == (404, 404201)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"registrationId": "x"}, "'attestation' is required"),
        ({"registrationId": "bad id!", "attestation": {"type": "x509"}}, "is invalid"),
        (
            {
                "registrationId": "x",
                "attestation": {"type": "x509", "x509": {"clientCertificates": {"primary": {"certificate": "nope"}}}},
            },
            "not a valid certificate",
        ),
        ({"registrationId": "other", "attestation": {"type": "x509", "x509": {}}}, "differs from the URL"),
    ],
)
def test_validation_names_the_field(backend, body, fragment):
    url_id = "x" if "URL" in fragment else body["registrationId"]
    with pytest.raises(DpsError) as error:
        backend.put_enrollment(INDIVIDUAL, url_id, body, None)
    assert error.value.status == 400 and fragment in error.value.message


def test_bulk_modes_and_limits(backend, bodies, pki):
    items = [bodies.x509_enrollment(f"bulk-{i}", pki.leaf(f"bulk-{i}").pem) for i in range(3)]
    assert backend.bulk(INDIVIDUAL, {"mode": "create", "enrollments": items}) == {"isSuccessful": True, "errors": []}
    again = backend.bulk(INDIVIDUAL, {"mode": "create", "enrollments": items[:1]})
    assert again["isSuccessful"] is False and again["errors"][0]["registrationId"] == "bulk-0"
    assert again["errors"][0]["errorCode"] == 409201
    stale = dict(items[1], etag="stale")
    result = backend.bulk(INDIVIDUAL, {"mode": "updateIfMatchETag", "enrollments": [stale]})
    assert result["errors"][0]["errorCode"] == 412201
    assert backend.bulk(INDIVIDUAL, {"mode": "update", "enrollments": items})["isSuccessful"]
    assert backend.bulk(INDIVIDUAL, {"mode": "delete", "enrollments": items[:2]})["isSuccessful"]
    assert sorted(backend.enrollments) == ["bulk-2"]
    with pytest.raises(DpsError) as too_many:
        backend.bulk(INDIVIDUAL, {"mode": "create", "enrollments": items * 4})
    assert too_many.value.status == 400
    with pytest.raises(DpsError):
        backend.bulk(INDIVIDUAL, {"mode": "upsert", "enrollments": items})


def test_query_paging_and_token_scope(backend, bodies, pki, root):
    for i in range(5):
        backend.put_enrollment(INDIVIDUAL, f"q-{i}", bodies.x509_enrollment(f"q-{i}", pki.leaf(f"q-{i}").pem), None)
    backend.put_enrollment(GROUP, "g", bodies.group_enrollment("g", root.pem), None)
    seen, token = [], None
    while True:
        page, token = backend.query_enrollments(INDIVIDUAL, {"query": "*"}, 2, token)
        seen.extend(e.record_id for e in page)
        if not token:
            break
    assert seen == [f"q-{i}" for i in range(5)]
    _page, token = backend.query_enrollments(INDIVIDUAL, {"query": "*"}, 2, None)
    with pytest.raises(DpsError):
        backend.query_enrollments(GROUP, {"query": "*"}, 2, token)
    with pytest.raises(DpsError):
        backend.query_enrollments(INDIVIDUAL, {"query": "SELECT * FROM enrollments WHERE x = 1"}, 2, None)


def _register(backend, issued, registration_id=None):
    registration_id = registration_id or issued.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    chain = [issued.certificate, *issued.chain]
    return backend.register("0ne00C0FFEE", registration_id, {"registrationId": registration_id}, chain)


def test_self_signed_individual_assigns_and_creates_hub_device(backend, hub, bodies, pki):
    leaf = pki.leaf("edge-1")
    twin = {"tags": {"site": "lab"}, "properties": {"desired": {"interval": 5}}}
    body = bodies.x509_enrollment(
        "edge-1", leaf.pem, capabilities={"iotEdge": True}, initialTwin=twin, deviceId="edge-dev-1"
    )
    backend.put_enrollment(INDIVIDUAL, "edge-1", body, None)
    operation = _register(backend, leaf)
    assert operation.record.status == "assigned" and operation.record.substatus == "initialAssignment"
    assert operation.record.assigned_hub == "hub-a:1" and operation.record.device_id == "edge-dev-1"
    device = hub.device("edge-dev-1")
    assert device.iot_edge and set(device.modules) == {"$edgeAgent", "$edgeHub"}
    assert device.authentication["type"] == "selfSigned"
    assert device.authentication["x509Thumbprint"]["primaryThumbprint"] == sha1_thumbprint(leaf.certificate)
    assert device.twin.tags == {"site": "lab"} and device.twin.desired == {"interval": 5}
    wire = backend.get_enrollment(INDIVIDUAL, "edge-1").to_wire(backend.registration_for(backend.enrollments["edge-1"]))
    assert wire["registrationState"]["status"] == "assigned"
    # Registering again keeps the device and reports the reprovisioning substatus.
    again = _register(backend, leaf)
    assert again.record.substatus == "deviceDataMigrated"


def test_wrong_certificate_or_cn_is_unauthorized(backend, bodies, pki):
    backend.put_enrollment(INDIVIDUAL, "dev-x", bodies.x509_enrollment("dev-x", pki.leaf("dev-x").pem), None)
    impostor = pki.leaf("dev-x")  # same CN, different key and thumbprint
    with pytest.raises(DpsError) as error:
        _register(backend, impostor)
    assert (error.value.status, error.value.code) == (401, 401002)
    with pytest.raises(DpsError) as cn_error:
        _register(backend, impostor, "someone-else")
    assert "CN" in cn_error.value.info["reason"]
    with pytest.raises(DpsError) as unknown:
        _register(backend, pki.leaf("nobody"))
    assert unknown.value.status == 401


def test_group_needs_verified_ca_then_matches_by_chain(backend, hub, bodies, pki, root, intermediate):
    leaf = pki.leaf("grp-dev-1", intermediate)
    backend.put_enrollment(
        GROUP, "fleet", bodies.group_enrollment("fleet", root.pem, capabilities={"iotEdge": True}), None
    )
    with pytest.raises(DpsError) as unverified:
        _register(backend, leaf)
    assert "verified" in unverified.value.info["reason"]
    backend.put_certificate("root", {"certificate": root.pem, "isVerified": True}, None)
    operation = _register(backend, leaf)
    record = operation.record
    assert record.status == "assigned" and record.enrollment_group_id == "fleet"
    assert record.signing_certificate_info["subjectName"] == "CN=edgefleet test root"
    assert hub.device("grp-dev-1").authentication["type"] == "certificateAuthority"
    page, _token = backend.query_registrations("fleet", None, None)
    assert [r.registration_id for r in page] == ["grp-dev-1"]


def test_disabled_group_gives_disabled_status(backend, hub, bodies, pki, root, intermediate):
    backend.settings.require_verified_ca = False
    body = bodies.group_enrollment("off", root.pem, provisioningStatus="disabled")
    backend.put_enrollment(GROUP, "off", body, None)
    operation = _register(backend, pki.leaf("grp-off-1", intermediate))
    assert operation.record.status == "disabled"
    assert "grp-off-1" not in hub.devices


def test_broken_or_expired_chain_is_refused(backend, bodies, pki, root, intermediate):
    backend.settings.require_verified_ca = False
    backend.put_enrollment(GROUP, "g", bodies.group_enrollment("g", root.pem), None)
    leaf = pki.leaf("dev-broken", intermediate)
    stranger = pki.ca("stranger intermediate", root)
    with pytest.raises(DpsError, match="Unauthorized"):
        backend.register(
            "0ne00C0FFEE", "dev-broken", {"registrationId": "dev-broken"}, [leaf.certificate, stranger.certificate]
        )
    expired = pki.leaf("dev-old", intermediate, not_after=START - dt.timedelta(hours=1))
    with pytest.raises(DpsError) as error:
        _register(backend, expired)
    assert "expired" in error.value.info["reason"]
    with pytest.raises(DpsError) as scope:
        backend.register("0ne00BADBAD", "dev-broken", {"registrationId": "dev-broken"}, [leaf.certificate])
    assert scope.value.status == 401


def test_proof_of_possession(backend, root, pki):
    record = backend.put_certificate("root", {"certificate": root.pem}, None)
    assert record.is_verified is False
    with pytest.raises(ArmError) as needs_etag:
        backend.generate_verification_code("root", None)
    assert needs_etag.value.status == 412
    coded = backend.generate_verification_code("root", record.etag)
    code = coded.verification_code
    wrong_signer = pki.leaf(code)  # self-signed: CN right, signature wrong
    with pytest.raises(ArmError, match="not signed"):
        backend.verify_certificate("root", coded.etag, {"certificate": wrong_signer.pem})
    wrong_cn = pki.leaf("not-the-code", root)
    with pytest.raises(ArmError, match="verification code"):
        backend.verify_certificate("root", coded.etag, {"certificate": wrong_cn.pem})
    proof = pki.leaf(code, root)
    verified = backend.verify_certificate("root", coded.etag, {"certificate": proof.pem})
    assert verified.is_verified and verified.verification_code is None
    assert backend.to_state()["certificates"][0]["isVerified"] is True


def test_state_dump_keeps_pem_internally(backend, bodies, pki):
    leaf = pki.leaf("dump-1")
    backend.put_enrollment(INDIVIDUAL, "dump-1", bodies.x509_enrollment("dump-1", leaf.pem), None)
    state = backend.to_state()
    primary = state["enrollments"][0]["attestation"]["x509"]["clientCertificates"]["primary"]
    assert primary["certificate"].startswith("-----BEGIN CERTIFICATE-----")
    assert isinstance(
        x509.load_pem_x509_certificate(primary["certificate"].encode()).fingerprint(hashes.SHA256()), bytes
    )
