"""The DPS resource-manager certificate client, against the in-process lab emulator (real HTTPS)."""

from __future__ import annotations

import datetime
import sys
import types

import pytest

from ansible_collections.edgefleet.iotedge.plugins.module_utils._dps_management import (
    MANAGEMENT_SCOPE,
    DpsManagementClient,
    EntraIdToken,
    StaticBearerToken,
    arm_error,
    dps_resource_id,
    management_client,
    token_provider,
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
from lab.cloud import CloudLab

RESOURCE = "/subscriptions/sub-1/resourceGroups/rg-iot/providers/Microsoft.Devices/provisioningServices/dps-1"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with CloudLab.start(tmp_path_factory.mktemp("cloud")) as started:
        yield started


@pytest.fixture
def cloud(lab):
    lab.reset()
    return lab


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    path = tmp_path_factory.mktemp("pki") / "ca"
    ensure_ca(ca_request(path), check_mode=False)
    return load_ca(str(path), passphrase=None)


def client_for(cloud, token=None, retry=None) -> DpsManagementClient:
    return DpsManagementClient(
        cloud.management_resource_id,
        auth_headers=StaticBearerToken(token or cloud.management_token).headers,
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


def test_static_token_is_never_shown():
    provider = StaticBearerToken("secret-token-value")
    assert provider.headers() == {"Authorization": "Bearer secret-token-value"}
    assert "secret-token-value" not in repr(provider)


def test_http_management_url_is_refused_before_any_request():
    with pytest.raises(ConfigurationError, match=r"^management_url: "):
        DpsManagementClient(RESOURCE, auth_headers=dict, management_url="http://management.azure.com")


class FakeCredential:
    def __init__(self, *args):
        self.args = args
        self.scopes = []

    def get_token(self, scope):
        self.scopes.append(scope)
        return types.SimpleNamespace(token=f"token-{len(self.scopes)}", expires_on=1000 + 3600 * len(self.scopes))


class FakeAuthError(Exception):
    pass


def fake_identity(fail=False):
    class Failing(FakeCredential):
        def get_token(self, scope):
            raise FakeAuthError("EnvironmentCredential: not configured")

    credential = Failing if fail else FakeCredential
    return types.SimpleNamespace(
        ClientSecretCredential=credential, DefaultAzureCredential=credential, ClientAuthenticationError=FakeAuthError
    )


def test_entra_id_service_principal_token_is_cached_until_near_expiry():
    now = [1000.0]
    provider = EntraIdToken(
        tenant_id="t", client_id="c", client_secret="s", identity=fake_identity(), clock=lambda: now[0]
    )
    assert provider.kind == "service principal" and provider.credential.args == ("t", "c", "s")
    assert provider.headers() == {"Authorization": "Bearer token-1"}
    now[0] = 1000 + 3600 - 301
    assert provider.headers() == {"Authorization": "Bearer token-1"}
    now[0] = 1000 + 3600 - 299
    assert provider.headers() == {"Authorization": "Bearer token-2"}
    assert provider.credential.scopes == [MANAGEMENT_SCOPE, MANAGEMENT_SCOPE]


def test_entra_id_without_a_service_principal_uses_default_credential():
    provider = EntraIdToken(identity=fake_identity())
    assert provider.kind == "DefaultAzureCredential" and provider.credential.args == ()


def test_half_a_service_principal_names_what_is_missing():
    with pytest.raises(ConfigurationError, match=r"^client_secret: a service principal needs"):
        EntraIdToken(tenant_id="t", client_id="c", identity=fake_identity())


def test_sign_in_failure_becomes_a_cloud_error_with_the_reason():
    provider = EntraIdToken(identity=fake_identity(fail=True))
    with pytest.raises(CloudError, match=r"DefaultAzureCredential.*EnvironmentCredential: not configured"):
        provider.headers()


def test_missing_azure_identity_gives_an_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "azure.identity", None)
    with pytest.raises(ConfigurationError, match=r"azure-identity is not installed.*pip install azure-identity"):
        token_provider()


def test_bearer_token_wins_over_entra_id():
    headers = token_provider(bearer_token="abc", tenant_id="t")
    assert headers() == {"Authorization": "Bearer abc"}


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


def test_unknown_dps_is_a_404_with_a_hint(cloud):
    other = cloud.management_resource_id.rsplit("/", 1)[0] + "/other-dps"
    client = DpsManagementClient(
        other,
        auth_headers=StaticBearerToken(cloud.management_token).headers,
        management_url=cloud.dps_url,
        ca_bundle=str(cloud.ca_bundle),
    )
    with pytest.raises(ApiError) as failure:
        client.create_or_update_certificate("root", "x", is_verified=True)
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
