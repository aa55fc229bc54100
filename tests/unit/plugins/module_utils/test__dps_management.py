"""The DPS resource-manager certificate client, against the in-process lab emulator (real HTTPS)."""

from __future__ import annotations

import datetime
import sys
import time
import types

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError

from ansible_collections.edgefleet.iotedge.plugins.module_utils._dps_management import (
    MANAGEMENT_API_VERSION,
    STATIC_TOKEN_SECONDS,
    DpsManagementClient,
    StaticBearerToken,
    arm_error,
    credential_for,
    dps_resource_id,
    entra_id_credential,
    management_client,
)
from ansible_collections.edgefleet.iotedge.plugins.module_utils._http import (
    ApiError,
    CloudError,
    ConfigurationError,
    RetriesExhaustedError,
    RetryPolicy,
)
from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki import certificate_pem, fingerprints
from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki_ca import ensure_ca, load_ca
from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki_verification import (
    issue_verification_certificate,
)
from ansible_collections.edgefleet.iotedge.tests.unit.pki_factories import ca_request

RESOURCE = "/subscriptions/sub-1/resourceGroups/rg-iot/providers/Microsoft.Devices/provisioningServices/dps-1"


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    path = tmp_path_factory.mktemp("pki") / "ca"
    ensure_ca(ca_request(path), check_mode=False)
    return load_ca(str(path), passphrase=None)


def client_for(cloud, token=None, retry=None, credential=None) -> DpsManagementClient:
    return DpsManagementClient(
        cloud.management_resource_id,
        credential=credential or StaticBearerToken(token or cloud.management_token),
        management_url=cloud.dps_url,
        ca_bundle=str(cloud.ca_bundle),
        retry=retry or RetryPolicy(sleep=lambda seconds: None),
    )


def root_pem(ca) -> str:
    return certificate_pem(ca.root_cert).decode()


def stored(cloud, name):
    return next((c for c in cloud.state()["dps"]["certificates"] if c["name"] == name), None)


# ---- resource ids and credentials ----------------------------------------------------------------------------


def test_resource_id_from_parts_and_from_a_full_id():
    assert dps_resource_id(subscription_id="sub-1", resource_group="rg-iot", dps_name="dps-1") == RESOURCE
    assert dps_resource_id(resource_id=RESOURCE + "/") == RESOURCE


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"subscription_id": "sub-1", "resource_group": "rg-iot"}, "dps_name: missing"),
        ({}, "subscription_id: missing"),
        ({"resource_id": "/subscriptions/x/resourceGroups/y"}, "resource_id: "),
        ({"resource_id": RESOURCE, "dps_name": "dps-1"}, "resource_id: give either"),
        ({"subscription_id": "sub-1", "resource_group": "rg/../x", "dps_name": "d"}, "resource_group: "),
    ],
)
def test_bad_resource_ids_name_the_option(kwargs, message):
    with pytest.raises(ConfigurationError, match=r"^" + message):
        dps_resource_id(**kwargs)


def test_static_token_is_a_token_credential_that_is_never_shown():
    credential = StaticBearerToken("secret-token-value", clock=lambda: 1000.0)
    token = credential.get_token("https://management.azure.com/.default")
    assert (token.token, token.expires_on) == ("secret-token-value", 1000 + STATIC_TOKEN_SECONDS)
    assert "secret-token-value" not in repr(credential)


def test_http_management_url_is_refused_before_any_request():
    with pytest.raises(ConfigurationError, match=r"^management_url: "):
        DpsManagementClient(RESOURCE, credential=StaticBearerToken("t"), management_url="http://management.azure.com")


class FakeCredential:
    """An azure-identity credential that hands out the lab's token, or fails to sign in."""

    def __init__(self, *args, token="unused", failure=None):
        self.args = args
        self.token = token
        self.failure = failure
        self.scopes = []

    def get_token(self, *scopes, **kwargs):
        self.scopes.append(scopes)
        if self.failure:
            raise ClientAuthenticationError(self.failure)
        return AccessToken(self.token, int(time.time()) + 3600)


def fake_identity():
    return types.SimpleNamespace(ClientSecretCredential=FakeCredential, DefaultAzureCredential=FakeCredential)


def test_a_service_principal_gets_a_client_secret_credential():
    credential = entra_id_credential(tenant_id="t", client_id="c", client_secret="s", identity=fake_identity())
    assert credential.args == ("t", "c", "s")


def test_entra_id_without_a_service_principal_uses_default_credential():
    assert entra_id_credential(identity=fake_identity()).args == ()


def test_half_a_service_principal_names_what_is_missing():
    with pytest.raises(ConfigurationError, match=r"^client_secret: a service principal needs"):
        entra_id_credential(tenant_id="t", client_id="c", identity=fake_identity())


def test_missing_azure_identity_gives_an_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "azure.identity", None)
    with pytest.raises(ConfigurationError, match=r"azure-identity is not installed.*pip install azure-identity"):
        credential_for()


def test_missing_management_sdk_gives_an_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "azure.mgmt.iothubprovisioningservices", None)
    with pytest.raises(ConfigurationError, match=r"pip install azure-mgmt-iothubprovisioningservices"):
        DpsManagementClient(RESOURCE, credential=StaticBearerToken("t"))


def test_bearer_token_wins_over_entra_id():
    assert isinstance(credential_for(bearer_token="abc", tenant_id="t"), StaticBearerToken)


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        ({"error": {"code": "CertificateNotFound", "message": "gone"}}, "CertificateNotFound", "gone"),
        (
            {"code": "PreconditionFailed", "httpStatusCode": "PreconditionFailed", "message": "etag"},
            "PreconditionFailed",
            "etag",
        ),
        (None, "X1", "HTTP 500"),
    ],
)
def test_arm_error_shapes(body, code, message):
    error = arm_error(500, body, {"x-ms-error-code": "X1", "x-ms-request-id": "req-1"})
    assert error.error_code == code and message in str(error)
    assert error.tracking_id == "req-1"


# ---- against the emulator -------------------------------------------------------------------------------------


def test_upload_generate_verify_delete(cloud, ca):
    client = client_for(cloud)
    assert client.get_certificate("root") is None
    created = client.create_or_update_certificate("root", root_pem(ca), is_verified=False)
    assert created["properties"]["thumbprint"] == fingerprints(ca.root_cert)["sha1"]
    assert created["properties"]["isVerified"] is False
    code = client.generate_verification_code("root", created["etag"])
    proof = issue_verification_certificate(
        ca,
        verification_code=code["properties"]["verificationCode"],
        signer="root",
        key_type="ec-p256",
        valid_days=2,
        now=datetime.datetime.now(datetime.UTC),
    )
    verified = client.verify_certificate("root", code["etag"], certificate_pem(proof).decode())
    assert verified["properties"]["isVerified"] is True
    assert stored(cloud, "root")["isVerified"] is True
    assert client.delete_certificate("root", verified["etag"]) is True
    assert stored(cloud, "root") is None
    assert client.delete_certificate("root", verified["etag"]) is False


def test_the_wire_is_arm_s_certificate_resource_at_the_pinned_api_version(cloud, ca):
    client = client_for(cloud)
    created = client.create_or_update_certificate("root", root_pem(ca), is_verified=True)
    log = [r for r in cloud.runtime.request_log if r["operation"] == "DpsCertificate_CreateOrUpdate"]
    assert [r["query"] for r in log] == [f"api-version={MANAGEMENT_API_VERSION}"]
    assert created["properties"]["isVerified"] is True
    assert stored(cloud, "root")["info"]["sha1Thumbprint"] == fingerprints(ca.root_cert)["sha1"]


def test_an_entra_id_credential_is_asked_once_for_the_management_audience(cloud, ca):
    credential = FakeCredential(token=cloud.management_token)
    client = client_for(cloud, credential=credential)
    assert client.get_certificate("root") is None
    client.create_or_update_certificate("root", root_pem(ca), is_verified=False)
    assert client.get_certificate("root")["properties"]["isVerified"] is False
    assert credential.scopes == [(f"{cloud.dps_url}/.default",)] and client.requests_sent == 3


def test_a_failed_sign_in_is_a_cloud_error_with_the_reason_and_no_request(cloud):
    waits = []
    credential = FakeCredential(failure="EnvironmentCredential: not configured")
    client = client_for(cloud, credential=credential, retry=RetryPolicy(sleep=waits.append))
    with pytest.raises(CloudError, match=r"^Microsoft Entra ID sign-in \(FakeCredential\) failed: .*not configured"):
        client.get_certificate("root")
    assert client.requests_sent == 0 and waits == [] and len(credential.scopes) == 1


def test_update_needs_the_current_etag(cloud, ca):
    client = client_for(cloud)
    created = client.create_or_update_certificate("root", root_pem(ca), is_verified=False)
    with pytest.raises(ApiError) as conflict:
        client.create_or_update_certificate("root", root_pem(ca), is_verified=True)
    assert conflict.value.status == 409
    with pytest.raises(ApiError) as stale:
        client.create_or_update_certificate("root", root_pem(ca), is_verified=True, etag="AAAAAAAAAAA=")
    assert stale.value.status == 412 and stale.value.error_code == "PreconditionFailed"
    updated = client.create_or_update_certificate("root", root_pem(ca), is_verified=True, etag=created["etag"])
    assert updated["properties"]["isVerified"] is True and updated["etag"] != created["etag"]


@pytest.mark.parametrize("status", [429, 503])
def test_transient_faults_are_retried(cloud, ca, status):
    cloud.faults.add(
        {
            "match": {"service": "dps-management", "operation": "DpsCertificate_CreateOrUpdate"},
            "count": 2,
            "action": {"status": status, "retryAfter": 0} if status == 429 else {"status": status},
        }
    )
    waits = []
    client = client_for(cloud, retry=RetryPolicy(sleep=waits.append))
    created = client.create_or_update_certificate("root", root_pem(ca), is_verified=True)
    assert created["properties"]["isVerified"] is True
    assert client.requests_sent == 3 and len(waits) == 2
    assert stored(cloud, "root")["isVerified"] is True


def test_retries_run_out_with_the_last_error(cloud):
    cloud.faults.add(
        {"match": {"service": "dps-management"}, "count": 10, "action": {"status": 503}},
    )
    client = client_for(cloud, retry=RetryPolicy(max_retries=2, sleep=lambda seconds: None))
    with pytest.raises(RetriesExhaustedError) as failure:
        client.get_certificate("root")
    assert failure.value.last_error.status == 503
    assert client.requests_sent == 3


def test_wrong_token_is_a_401_that_is_not_retried(cloud):
    client = client_for(cloud, token="not-the-lab-token")
    with pytest.raises(ApiError) as failure:
        client.get_certificate("root")
    assert failure.value.status == 401
    assert failure.value.error_code == "InvalidAuthenticationToken"
    assert "bearer_token" in str(failure.value)
    assert "not-the-lab-token" not in str(failure.value)
    assert client.requests_sent == 1


def test_unknown_dps_is_a_404_with_a_hint(cloud, ca):
    other = cloud.management_resource_id.rsplit("/", 1)[0] + "/other-dps"
    client = DpsManagementClient(
        other,
        credential=StaticBearerToken(cloud.management_token),
        management_url=cloud.dps_url,
        ca_bundle=str(cloud.ca_bundle),
    )
    with pytest.raises(ApiError) as failure:
        client.create_or_update_certificate("root", root_pem(ca), is_verified=True)
    assert failure.value.status == 404 and "dps_name" in str(failure.value)


def test_management_client_from_module_params(cloud):
    params = {
        "resource_id": cloud.management_resource_id,
        "bearer_token": cloud.management_token,
        "management_url": cloud.dps_url,
    }
    client = management_client(
        params, ca_bundle=str(cloud.ca_bundle), validate_certs=True, timeout=10, retry=RetryPolicy()
    )
    assert client.get_certificate("nothing-here") is None


# ---- a write whose answer is lost after DPS acted ----------------------------------------------------------------


@pytest.mark.parametrize(
    "operation",
    ["DpsCertificate_CreateOrUpdate", "DpsCertificate_GenerateVerificationCode", "DpsCertificate_VerifyCertificate"],
)
def test_upload_and_proof_go_on_when_an_answer_is_lost_after_dps_acted(cloud, ca, tmp_path, operation):
    """The retry meets 409 or 412 (its own write): the certificate is read back and the run goes on."""
    from ansible_collections.edgefleet.iotedge.plugins.module_utils._dps_certificate import (
        DpsCertificateRequest,
        ensure_dps_certificate,
    )

    cloud.faults.add(
        {
            "match": {"service": "dps-management", "operation": operation},
            "count": 1,
            "action": {"drop": True, "afterProcessing": True},
        }
    )
    request = DpsCertificateRequest(name="fleet-root", certificate=root_pem(ca), ca_path=ca.path, verify=True)
    result = ensure_dps_certificate(client_for(cloud), request, check_mode=False)
    assert result["changed"] is True
    assert result["certificate"]["is_verified"] is True
    assert [f["hits"] for f in cloud.state()["faults"]] == [1]
    record = stored(cloud, "fleet-root")
    assert record["isVerified"] is True and record["info"]["sha1Thumbprint"] == fingerprints(ca.root_cert)["sha1"]
    assert ensure_dps_certificate(client_for(cloud), request, check_mode=False)["changed"] is False


def test_a_conflict_that_is_not_our_own_write_still_fails(cloud, ca):
    """Someone else's certificate under the name: the 409 is real, the upload is not taken for done."""
    from ansible_collections.edgefleet.iotedge.plugins.module_utils._http import settle_lost_write

    client = client_for(cloud)
    client.create_or_update_certificate("fleet-root", root_pem(ca), is_verified=False)
    with pytest.raises(ApiError) as conflict:
        settle_lost_write(
            lambda: client.create_or_update_certificate("fleet-root", root_pem(ca), is_verified=True),
            lambda: client.get_certificate("fleet-root"),
            lambda record: record["properties"]["isVerified"],
        )
    assert conflict.value.status == 409
