"""ensure_enrollment_group: read, compare managed fields (certificates by thumbprint), act; plus one lab round trip."""

from __future__ import annotations

import copy

import pytest
from cryptography import x509

from ansible_collections.edgefleet.iotedge.plugins.module_utils._dps_client import (
    DpsServiceClient,
    parse_connection_string,
)
from ansible_collections.edgefleet.iotedge.plugins.module_utils._dps_enrollment_group import (
    EnrollmentGroupRequest,
    ensure_enrollment_group,
)
from ansible_collections.edgefleet.iotedge.plugins.module_utils._http import ApiError, ConfigurationError, RetryPolicy
from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki import certificate_pem, fingerprints
from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki_ca import ensure_ca, load_ca
from ansible_collections.edgefleet.iotedge.tests.unit.pki_factories import ca_request


def info(cert):
    prints = fingerprints(cert)
    return {
        "subjectName": cert.subject.rfc4514_string(),
        "sha1Thumbprint": prints["sha1"],
        "sha256Thumbprint": prints["sha256"],
        "notAfterUtc": "2036-01-01T00:00:00.0000000Z",
    }


class FakeDps:
    """Stores groups the way DPS returns them: certificate info only, bookkeeping in the twin, new etag per write."""

    def __init__(self):
        self.groups = {}
        self.calls = []
        self._etag = 0

    def seed(self, body):
        return self._store(copy.deepcopy(body))

    def _store(self, body):
        self._etag += 1
        x509_attestation = body["attestation"]["x509"]
        for slot, value in (x509_attestation.get("signingCertificates") or {}).items():
            cert = x509.load_pem_x509_certificate(value["certificate"].encode())
            x509_attestation["signingCertificates"][slot] = {"info": info(cert)}
        twin = body.get("initialTwin")
        if twin is not None:
            twin.setdefault("tags", {})["$metadata"] = {"lastUpdated": "x"}
            twin["tags"]["version"] = 1
            twin.setdefault("properties", {}).setdefault("desired", {})["$version"] = 1
        body.setdefault("reprovisionPolicy", {"updateHubAssignment": True, "migrateDeviceData": True})
        body["etag"] = f"etag-{self._etag}"
        body["createdDateTimeUtc"] = "2026-01-01T00:00:00.0000000Z"
        self.groups[body["enrollmentGroupId"]] = body
        return body

    def get_enrollment_group(self, group_id):
        self.calls.append(("get", group_id))
        found = self.groups.get(group_id)
        return copy.deepcopy(found) if found else None

    def put_enrollment_group(self, body, etag=None):
        self.calls.append(("put", body["enrollmentGroupId"], etag))
        existing = self.groups.get(body["enrollmentGroupId"])
        assert (existing is None) == (etag is None), "create without If-Match, update with the etag read"
        if existing:
            assert etag == existing["etag"]
        self.last_body = copy.deepcopy(body)
        return copy.deepcopy(self._store(copy.deepcopy(body)))

    def delete_enrollment_group(self, group_id, etag="*"):
        self.calls.append(("delete", group_id, etag))
        assert etag == self.groups[group_id]["etag"]
        del self.groups[group_id]
        return True

    @property
    def writes(self):
        return [call for call in self.calls if call[0] != "get"]


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    base = tmp_path_factory.mktemp("pki")
    ensure_ca(ca_request(base / "ca"), check_mode=False)
    ensure_ca(ca_request(base / "next", intermediate_common_name="Next Intermediate CA"), check_mode=False)
    current, following = load_ca(str(base / "ca"), passphrase=None), load_ca(str(base / "next"), passphrase=None)
    return {
        "dir": base,
        "intermediate": current.intermediate_cert,
        "root": current.root_cert,
        "next": following.intermediate_cert,
        "pem": certificate_pem(current.intermediate_cert).decode(),
        "next_pem": certificate_pem(following.intermediate_cert).decode(),
        # A chain file: its first certificate is the one that counts.
        "chain_path": str(base / "ca/ca-chain.cert.pem"),
    }


def group_request(certs, **overrides):
    values = {
        "enrollment_group_id": "plant1-edge",
        "signing_certificate": certs["pem"],
        "initial_twin": {"tags": {"site": "plant1"}, "desired_properties": {"interval": 30}},
    }
    values.update(overrides)
    return EnrollmentGroupRequest(**values)


def existing_body(certs, **overrides):
    body = {
        "enrollmentGroupId": "plant1-edge",
        "attestation": {"type": "x509", "x509": {"signingCertificates": {"primary": {"certificate": certs["pem"]}}}},
        "capabilities": {"iotEdge": True},
        "provisioningStatus": "enabled",
        "initialTwin": {"tags": {"site": "plant1"}, "properties": {"desired": {"interval": 30}}},
    }
    body.update(overrides)
    return body


def test_check_mode_predicts_the_create_with_reads_only(certs):
    client = FakeDps()
    result = ensure_enrollment_group(client, group_request(certs), check_mode=True)
    assert result["changed"] is True and result["reasons"] == ["create"]
    assert client.calls == [("get", "plant1-edge")]
    primary = result["enrollment_group"]["attestation"]["signing_certificates"]["primary"]
    assert primary["sha256_thumbprint"] == fingerprints(certs["intermediate"])["sha256"]
    assert result["enrollment_group"]["iot_edge"] is True
    assert result["diff"]["before"] is None


def test_create_sends_the_pem_without_if_match_and_returns_the_stored_view(certs):
    client = FakeDps()
    result = ensure_enrollment_group(client, group_request(certs), check_mode=False)
    assert client.writes == [("put", "plant1-edge", None)]
    sent = client.last_body
    assert sent["attestation"]["x509"]["signingCertificates"]["primary"]["certificate"] == certs["pem"]
    assert sent["capabilities"] == {"iotEdge": True} and sent["provisioningStatus"] == "enabled"
    assert sent["initialTwin"] == {"tags": {"site": "plant1"}, "properties": {"desired": {"interval": 30}}}
    assert "allocationPolicy" not in sent and "iotHubs" not in sent
    view = result["enrollment_group"]
    assert view["etag"] == client.groups["plant1-edge"]["etag"]
    assert view["initial_twin"] == {"tags": {"site": "plant1"}, "desired_properties": {"interval": 30}}
    assert "PRIVATE KEY" not in repr(result) and "BEGIN CERTIFICATE" not in repr(result)


def test_same_group_is_not_changed_despite_twin_bookkeeping(certs):
    client = FakeDps()
    client.seed(existing_body(certs))
    for check_mode in (True, False):
        result = ensure_enrollment_group(client, group_request(certs), check_mode=check_mode)
        assert result["changed"] is False, result["reasons"]
    assert client.writes == []


def test_a_user_tag_named_version_is_compared(certs):
    client = FakeDps()
    client.seed(existing_body(certs))
    twin = {"tags": {"site": "plant1", "version": 2}, "desired_properties": {"interval": 30}}
    result = ensure_enrollment_group(client, group_request(certs, initial_twin=twin), check_mode=True)
    assert result["reasons"] == ["initial_twin"]


def test_update_carries_the_etag_and_keeps_unmanaged_fields(certs):
    client = FakeDps()
    etag = client.seed(existing_body(certs, allocationPolicy="static", iotHubs=["hub-a"]))["etag"]
    result = ensure_enrollment_group(
        client, group_request(certs, provisioning_status="disabled", initial_twin=None), check_mode=False
    )
    assert result["reasons"] == ["provisioning_status"]
    assert client.writes == [("put", "plant1-edge", etag)]
    sent = client.last_body
    assert sent["provisioningStatus"] == "disabled"
    assert sent["allocationPolicy"] == "static" and sent["iotHubs"] == ["hub-a"]
    assert sent["initialTwin"]["tags"]["site"] == "plant1"
    assert result["diff"]["before"]["provisioning_status"] == "enabled"
    assert result["diff"]["after"]["provisioning_status"] == "disabled"


def test_rotation_to_a_new_primary_is_detected_by_thumbprint(certs):
    client = FakeDps()
    client.seed(existing_body(certs))
    rotated = group_request(certs, signing_certificate=certs["next_pem"], secondary_signing_certificate=certs["pem"])
    predicted = ensure_enrollment_group(client, rotated, check_mode=True)
    assert predicted["reasons"] == ["primary signing certificate", "secondary signing certificate"]
    assert client.writes == []
    result = ensure_enrollment_group(client, rotated, check_mode=False)
    stored = client.groups["plant1-edge"]["attestation"]["x509"]["signingCertificates"]
    assert stored["primary"]["info"]["sha256Thumbprint"] == fingerprints(certs["next"])["sha256"]
    assert stored["secondary"]["info"]["sha256Thumbprint"] == fingerprints(certs["intermediate"])["sha256"]
    after = result["diff"]["after"]["attestation"]["signing_certificates"]
    assert after["primary"]["sha1_thumbprint"] == fingerprints(certs["next"])["sha1"]
    # Dropping the secondary again is a change too: the attestation is managed as a whole.
    dropped = ensure_enrollment_group(
        client, group_request(certs, signing_certificate=certs["next_pem"]), check_mode=False
    )
    assert dropped["reasons"] == ["secondary signing certificate"]


def test_signing_certificate_path_uses_the_first_certificate_of_a_chain(certs):
    client = FakeDps()
    request = group_request(certs, signing_certificate=None, signing_certificate_path=certs["chain_path"])
    ensure_enrollment_group(client, request, check_mode=False)
    stored = client.groups["plant1-edge"]["attestation"]["x509"]["signingCertificates"]["primary"]["info"]
    assert stored["sha256Thumbprint"] == fingerprints(certs["intermediate"])["sha256"]


def test_switch_to_a_ca_reference(certs):
    client = FakeDps()
    client.seed(existing_body(certs))
    request = group_request(certs, signing_certificate=None, ca_reference="fleet-root")
    result = ensure_enrollment_group(client, request, check_mode=False)
    assert result["reasons"] == ["ca references"]
    assert client.last_body["attestation"]["x509"] == {"caReferences": {"primary": "fleet-root"}}
    assert result["enrollment_group"]["attestation"] == {"type": "x509", "ca_references": {"primary": "fleet-root"}}
    assert ensure_enrollment_group(client, request, check_mode=False)["changed"] is False


def test_policies_and_hubs(certs):
    client = FakeDps()
    client.seed(existing_body(certs))
    request = group_request(
        certs,
        allocation_policy="geoLatency",
        iot_hubs=["hub-a.azure-devices.net"],
        reprovision_policy={"update_hub_assignment": False, "migrate_device_data": None},
        iot_edge=False,
    )
    result = ensure_enrollment_group(client, request, check_mode=False)
    assert result["reasons"] == ["iot_edge", "allocation_policy", "iot_hubs", "reprovision_policy"]
    assert client.last_body["reprovisionPolicy"] == {"updateHubAssignment": False, "migrateDeviceData": True}
    assert client.last_body["capabilities"] == {"iotEdge": False}
    assert ensure_enrollment_group(client, request, check_mode=False)["changed"] is False


def test_absent(certs):
    client = FakeDps()
    request = EnrollmentGroupRequest(enrollment_group_id="plant1-edge", state="absent")
    missing = ensure_enrollment_group(client, request, check_mode=False)
    assert missing["changed"] is False and client.writes == []
    etag = client.seed(existing_body(certs))["etag"]
    assert ensure_enrollment_group(client, request, check_mode=True)["changed"] is True
    assert client.writes == [] and "plant1-edge" in client.groups
    removed = ensure_enrollment_group(client, request, check_mode=False)
    assert removed["changed"] is True and removed["enrollment_group"] is None
    assert removed["diff"]["after"] is None and removed["diff"]["before"]["enrollment_group_id"] == "plant1-edge"
    assert client.writes == [("delete", "plant1-edge", etag)] and client.groups == {}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"enrollment_group_id": "Plant1"}, "enrollment_group_id: 'Plant1' has uppercase letters; use 'plant1'"),
        ({"enrollment_group_id": "a" * 129}, "enrollment_group_id: .* at most 128"),
        ({"enrollment_group_id": "plant 1"}, "enrollment_group_id: 'plant 1' is not valid"),
        ({"enrollment_group_id": "plant1."}, "enrollment_group_id: 'plant1.' is not valid"),
        ({"signing_certificate": None}, "signing_certificate: state=present needs"),
        ({"ca_reference": "fleet-root"}, "ca_reference: a group attests either"),
        ({"signing_certificate": "garbage"}, "signing_certificate: not a PEM certificate"),
        ({"signing_certificate_path": "/nonexistent.pem"}, "signing_certificate: give either"),
        ({"signing_certificate": None, "signing_certificate_path": "/nonexistent.pem"}, "signing_certificate_path: "),
        ({"signing_certificate": None, "secondary_signing_certificate": "x"}, "secondary_signing_certificate: not a"),
        ({"signing_certificate": None, "secondary_ca_reference": "b"}, "ca_reference: secondary_ca_reference needs"),
        ({"provisioning_status": "on"}, "provisioning_status: "),
        ({"allocation_policy": "random"}, "allocation_policy: "),
        ({"iot_hubs": "hub-a"}, "iot_hubs: "),
        ({"initial_twin": {"tag": {}}}, "initial_twin: unknown key"),
        ({"initial_twin": {"tags": {"$bad": 1}}}, "initial_twin.tags: key"),
        ({"reprovision_policy": {"update": True}}, "reprovision_policy: "),
        ({"state": "gone"}, "state: "),
    ],
)
def test_bad_input_raises_before_any_request(certs, overrides, message):
    client = FakeDps()
    with pytest.raises(ConfigurationError, match=r"^" + message):
        ensure_enrollment_group(client, group_request(certs, **overrides), check_mode=False)
    assert client.calls == []


def test_custom_allocation_without_a_webhook_is_refused_before_writing(certs):
    client = FakeDps()
    with pytest.raises(ConfigurationError, match=r"^allocation_policy: custom needs a webhook"):
        ensure_enrollment_group(client, group_request(certs, allocation_policy="custom"), check_mode=True)
    assert client.writes == []


# ---- one round trip through the real client and the lab ---------------------------------------------------------


def lab_client(lab) -> DpsServiceClient:
    """The real client against the in-process lab, retrying without waiting."""
    return DpsServiceClient(
        parse_connection_string(lab.dps_connection_string),
        ca_bundle=str(lab.ca_bundle),
        retry=RetryPolicy(sleep=lambda seconds: None),
    )


def test_lab_round_trip_create_idempotent_rotate_delete(lab, certs):
    lab.reset()
    client = lab_client(lab)
    lab.faults.add(
        {"match": {"service": "dps", "operation": "EnrollmentGroup_Get"}, "count": 1, "action": {"status": 503}}
    )
    created = ensure_enrollment_group(client, group_request(certs), check_mode=False)
    assert created["changed"] is True
    (stored,) = lab.state()["dps"]["enrollmentGroups"]
    assert stored["capabilities"] == {"iotEdge": True}
    primary = stored["attestation"]["x509"]["signingCertificates"]["primary"]["info"]
    assert primary["sha256Thumbprint"] == fingerprints(certs["intermediate"])["sha256"]
    assert stored["initialTwin"]["tags"] == {"site": "plant1"}
    assert ensure_enrollment_group(client, group_request(certs), check_mode=False)["changed"] is False

    rotated = ensure_enrollment_group(
        client, group_request(certs, signing_certificate=certs["next_pem"]), check_mode=False
    )
    assert rotated["changed"] is True
    (stored,) = lab.state()["dps"]["enrollmentGroups"]
    primary = stored["attestation"]["x509"]["signingCertificates"]["primary"]["info"]
    assert primary["sha256Thumbprint"] == fingerprints(certs["next"])["sha256"]
    assert stored["etag"] == rotated["enrollment_group"]["etag"]

    absent = EnrollmentGroupRequest(enrollment_group_id="plant1-edge", state="absent")
    assert ensure_enrollment_group(client, absent, check_mode=False)["changed"] is True
    assert lab.state()["dps"]["enrollmentGroups"] == []
    assert ensure_enrollment_group(client, absent, check_mode=False)["changed"] is False


@pytest.mark.parametrize("step", ["create", "update"])
def test_lab_a_write_whose_answer_was_lost_after_dps_acted_is_settled_by_reading_back(lab, certs, step):
    """The retried PUT meets 409 (create) or 412 (update, new etag): its own write, so the run goes on."""
    lab.reset()
    client = lab_client(lab)
    if step == "update":
        ensure_enrollment_group(client, group_request(certs), check_mode=False)
    lab.faults.add(
        {
            "match": {"service": "dps", "operation": "EnrollmentGroup_CreateOrUpdate"},
            "count": 1,
            "action": {"drop": True, "afterProcessing": True},
        }
    )
    wanted = group_request(certs, initial_twin={"tags": {"site": "plant2"}})
    result = ensure_enrollment_group(client, wanted, check_mode=False)
    assert result["changed"] is True
    assert [fault["hits"] for fault in lab.state()["faults"]] == [1]
    (stored,) = lab.state()["dps"]["enrollmentGroups"]
    assert stored["initialTwin"]["tags"] == {"site": "plant2"}
    assert result["enrollment_group"]["etag"] == stored["etag"]
    assert ensure_enrollment_group(client, wanted, check_mode=False)["changed"] is False


def test_lab_a_real_conflict_is_not_taken_for_a_lost_answer(lab, certs):
    """Another writer changed the group between our read and our write: the 412 stands."""
    lab.reset()
    client = lab_client(lab)
    ensure_enrollment_group(client, group_request(certs), check_mode=False)

    class Interleaved:
        """Reads through the real client; the first write is preceded by someone else's update."""

        def __init__(self):
            self.raced = False

        def __getattr__(self, name):
            return getattr(client, name)

        def put_enrollment_group(self, body, etag=None):
            if not self.raced:
                self.raced = True
                other = client.get_enrollment_group("plant1-edge")
                other["initialTwin"] = {"tags": {"site": "someone-else"}}
                client.put_enrollment_group(other, other["etag"])
            return client.put_enrollment_group(body, etag)

    with pytest.raises(ApiError) as conflict:
        ensure_enrollment_group(
            Interleaved(), group_request(certs, initial_twin={"tags": {"site": "x"}}), check_mode=False
        )
    assert conflict.value.status == 412
