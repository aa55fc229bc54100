# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# PRIVATE to the edgefleet.iotedge collection. Do not use this from other collections:
# it may change at any time.

"""DPS certificates (upload, proof of possession) over Azure's own SDK, azure-mgmt-iothubprovisioningservices.

The SDK's IotDpsClient and azure-core's pipeline send the requests, authenticate (bearer-token policy with its own
token cache) and parse ARM's answers; its retries are switched off because every call runs inside
`_http.RetryPolicy`, the one place for retries (one budget per module run, every Retry-After form). SDK exceptions
become the collection's typed errors. Credentials: a static bearer token (the lab, or ``az account
get-access-token``), a service principal, or azure-identity's DefaultAzureCredential chain.
"""

from __future__ import annotations

import base64
import re
import time
from types import SimpleNamespace

from ansible_collections.edgefleet.iotedge.plugins.module_utils._http import (
    RETRYABLE_STATUSES,
    ApiError,
    CloudError,
    ConfigurationError,
    Retryable,
    RetryPolicy,
    TransportError,
)
from ansible_collections.edgefleet.iotedge.plugins.module_utils._shown import shown

# Pinned rather than the SDK's default, so that an SDK upgrade never changes the wire format under a fleet. A stable
# version of provisioningServices/certificates (Microsoft Learn, "Microsoft.Devices resource types": 2022-12-12),
# whose upload body is the resource shape ``{"properties": {"certificate", "isVerified"}}`` the SDK 2.x sends.
MANAGEMENT_API_VERSION = "2022-12-12"
DEFAULT_MANAGEMENT_URL = "https://management.azure.com"
# A static token says nothing of its lifetime; azure-core asks for it again after this many seconds.
STATIC_TOKEN_SECONDS = 3600
# Where a service principal's credentials are read from when the options are not set, first name first: the names
# azure-identity reads, then the ones AWX's and AAP's "Microsoft Azure Resource Manager" credential injects (those
# of azure.azcollection).
CREDENTIAL_ENVIRONMENT = {
    "tenant_id": ["AZURE_TENANT_ID", "AZURE_TENANT"],
    "client_id": ["AZURE_CLIENT_ID"],
    "client_secret": ["AZURE_CLIENT_SECRET", "AZURE_SECRET"],
}

# Applied with fullmatch; a name is one path segment without whitespace, '?' or '#'.
RESOURCE_ID_PATTERN = re.compile(
    r"/subscriptions/(?P<subscription>[^/\s?#]+)/resourceGroups/(?P<group>[^/\s?#]+)"
    r"/providers/Microsoft\.Devices/provisioningServices/(?P<name>[^/\s?#]+)",
    re.IGNORECASE,
)
_PLAIN_NAME = re.compile(r"[^/\s?#]+")


def dps_resource_id(*, subscription_id=None, resource_group=None, dps_name=None, resource_id=None) -> str:
    """The DPS's ARM resource id, from ``resource_id`` or from its three parts (ConfigurationError otherwise)."""
    parts = {"subscription_id": subscription_id, "resource_group": resource_group, "dps_name": dps_name}
    if resource_id:
        if any(parts.values()):
            raise ConfigurationError(
                "resource_id: give either resource_id or subscription_id, resource_group and dps_name, not both"
            )
        text = resource_id.rstrip("/")
        if not RESOURCE_ID_PATTERN.fullmatch(text):
            raise ConfigurationError(
                f"resource_id: {shown(resource_id)} is not a DPS resource id; expected /subscriptions/<id>/resourceGroups/"
                "<group>/providers/Microsoft.Devices/provisioningServices/<name> (Azure portal: DPS > JSON view)"
            )
        return text
    missing = [name for name, value in parts.items() if not value]
    if missing:
        raise ConfigurationError(
            f"{missing[0]}: missing; give subscription_id, resource_group and dps_name (lacking "
            f"{', '.join(missing)}), or the DPS's full resource_id"
        )
    for name, value in parts.items():
        if not _PLAIN_NAME.fullmatch(value):
            raise ConfigurationError(
                f"{name}: {shown(value)} must be a plain name, without '/', '?', '#', spaces or line breaks"
            )
    return (
        f"/subscriptions/{subscription_id}/resourceGroups/{resource_group}"
        f"/providers/Microsoft.Devices/provisioningServices/{dps_name}"
    )


def arm_error(status, body, headers) -> ApiError:
    """ARM error bodies ``{"error": {"code", "message"}}`` or a bare ``{code, message}`` -> ApiError."""
    body = body if isinstance(body, dict) else {}
    detail = body.get("error") if isinstance(body.get("error"), dict) else body
    code = detail.get("code")
    if code is None and headers is not None:
        code = headers.get("x-ms-error-code")
    message = detail.get("message") or f"HTTP {status}"
    hint = {
        401: " (the token is missing, expired or for another tenant; check bearer_token or the Entra ID credentials)",
        403: " (the identity lacks a role on the DPS that allows certificate writes, e.g. Contributor)",
        404: " (check subscription_id, resource_group and dps_name, or resource_id)",
        412: " (the certificate changed since it was read; re-run to compare again)",
        429: " (Azure Resource Manager is throttling; retry later)",
    }.get(status, "")
    tracking_id = None
    if headers is not None:
        tracking_id = headers.get("x-ms-correlation-request-id") or headers.get("x-ms-request-id")
    return ApiError(
        f"DPS management API answered {status}: {message}{hint}",
        status=status,
        error_code=code,
        tracking_id=tracking_id,
        details=detail.get("details"),
    )


def _import_failure(package: str, exc: ImportError, alternative: str = "") -> ConfigurationError:
    return ConfigurationError(
        f"{package} is not installed in the Python that runs this module ({exc}); install it on the controller "
        f"(pip install {package}){alternative}"
    )


def load_management_sdk():
    """IotDpsClient and the azure-core pieces, imported on first use so a missing library is reported cleanly."""
    try:
        from azure.core import MatchConditions
        from azure.core.credentials import AccessToken
        from azure.core.exceptions import (
            ClientAuthenticationError,
            HttpResponseError,
            ServiceRequestError,
            ServiceResponseError,
        )
        from azure.mgmt.iothubprovisioningservices import IotDpsClient
    except ImportError as exc:
        raise _import_failure("azure-mgmt-iothubprovisioningservices", exc) from None
    return SimpleNamespace(
        client=IotDpsClient,
        match_conditions=MatchConditions,
        access_token=AccessToken,
        auth_error=ClientAuthenticationError,
        http_error=HttpResponseError,
        transport_errors=(ServiceRequestError, ServiceResponseError),
    )


class StaticBearerToken:
    """An azure-core TokenCredential that hands out one given ARM access token; the token is never shown."""

    def __init__(self, token: str, *, clock=time.time):
        if not isinstance(token, str) or not token.strip():
            raise ConfigurationError("bearer_token: empty; give an ARM access token or leave it unset to use Entra ID")
        self._token = token.strip()
        self.clock = clock

    def __repr__(self) -> str:
        return "StaticBearerToken(<hidden>)"

    def get_token(self, *scopes, **kwargs):
        access_token = load_management_sdk().access_token
        return access_token(self._token, int(self.clock()) + STATIC_TOKEN_SECONDS)


def _import_azure_identity():
    try:
        from azure import identity
    except ImportError as exc:
        raise _import_failure(
            "azure-identity",
            exc,
            " for Microsoft Entra ID sign-in, or give bearer_token (for example from "
            "'az account get-access-token --query accessToken -o tsv')",
        ) from None
    return identity


def entra_id_credential(*, tenant_id=None, client_id=None, client_secret=None, identity=None):
    """A service principal's ClientSecretCredential, or DefaultAzureCredential when none of the three is given."""
    given = {"tenant_id": tenant_id, "client_id": client_id, "client_secret": client_secret}
    if any(given.values()) and not all(given.values()):
        missing = ", ".join(name for name, value in given.items() if not value)
        raise ConfigurationError(
            f"{missing}: a service principal needs tenant_id, client_id and client_secret together (or set "
            "AZURE_TENANT_ID or AZURE_TENANT, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET or AZURE_SECRET); leave all three "
            "unset to use DefaultAzureCredential (managed identity, az login, ...)"
        )
    identity = identity or _import_azure_identity()
    if all(given.values()):
        return identity.ClientSecretCredential(tenant_id, client_id, client_secret)
    return identity.DefaultAzureCredential()


def credential_for(*, bearer_token=None, tenant_id=None, client_id=None, client_secret=None):
    """The TokenCredential for the given options: a static token wins over Entra ID."""
    if bearer_token:
        return StaticBearerToken(bearer_token)
    return entra_id_credential(tenant_id=tenant_id, client_id=client_id, client_secret=client_secret)


def _body_of(response):
    try:
        return response.json()
    except ValueError:
        return None


def _raw_json(pipeline_response, _deserialized, _headers):
    """The answer as ARM sent it (a dict in CertificateResponse's wire shape), not the SDK's model."""
    return _body_of(pipeline_response.http_response)


class DpsManagementClient:
    """Certificate operations of one DPS. Certificates are plain dicts in ARM's CertificateResponse shape."""

    def __init__(
        self,
        resource_id: str,
        *,
        credential,
        management_url: str = DEFAULT_MANAGEMENT_URL,
        ca_bundle=None,
        validate_certs=True,
        timeout=30,
        retry: RetryPolicy | None = None,
        sdk=None,
    ):
        if not isinstance(management_url, str) or not management_url.startswith("https://"):
            raise ConfigurationError(
                f"management_url: {shown(management_url)} must be an https:// URL (the bearer token must not travel "
                f"in clear text); the default is {DEFAULT_MANAGEMENT_URL}"
            )
        parts = RESOURCE_ID_PATTERN.fullmatch(resource_id)
        if parts is None:
            raise ConfigurationError(f"resource_id: {shown(resource_id)} is not a DPS resource id")
        self.resource_id = resource_id
        self.resource_group, self.dps_name = parts["group"], parts["name"]
        self.management_url = management_url.rstrip("/")
        self.credential = credential
        self.retry = retry or RetryPolicy()
        self.requests_sent = 0
        self.sdk = sdk or load_management_sdk()
        self.operations = self.sdk.client(
            credential,
            parts["subscription"],
            base_url=self.management_url,
            api_version=MANAGEMENT_API_VERSION,
            # A sovereign cloud's ARM takes tokens for its own audience (https://management.chinacloudapi.cn/.default).
            credential_scopes=[f"{self.management_url}/.default"],
            retry_total=0,
            # A redirect would carry the bearer token to another address: refused, as before the SDK.
            permit_redirects=False,
            connection_verify=ca_bundle if (ca_bundle and validate_certs) else bool(validate_certs),
            connection_timeout=timeout,
            read_timeout=timeout,
            raw_request_hook=self._count_request,
        ).dps_certificate

    def _count_request(self, _request) -> None:
        self.requests_sent += 1

    def _failure(self, exc, operation: str):
        """An SDK exception -> a typed error to raise, or Retryable for a transient one."""
        response = getattr(exc, "response", None)
        if isinstance(exc, self.sdk.http_error) and response is not None:
            error = arm_error(response.status_code, _body_of(response), response.headers)
            error.operation = operation
            if response.status_code in RETRYABLE_STATUSES:
                return Retryable(error, headers=response.headers)
            return error
        if isinstance(exc, self.sdk.auth_error):
            # No answer from ARM: the credential could not get a token. Its own text says which sources it tried.
            return CloudError(
                f"Microsoft Entra ID sign-in ({type(self.credential).__name__}) failed: {exc}. Check "
                "tenant_id, client_id and client_secret (or the AZURE_* variables), run 'az login', or give "
                "bearer_token"
            )
        reason = f"{type(exc).__name__}: {exc}"
        if "CERTIFICATE_VERIFY_FAILED" in reason or "SSLCertVerificationError" in reason:
            return TransportError(
                f"DPS management {operation}: the server certificate of {self.management_url} is not trusted "
                f"({reason}); set ca_bundle to the CA that issued it"
            )
        return Retryable(TransportError(f"DPS management {operation}: no answer from {self.management_url} ({reason})"))

    def _call(self, operation: str, method_name: str, *args, **kwargs):
        method = getattr(self.operations, method_name)
        expected = (self.sdk.http_error, self.sdk.auth_error, *self.sdk.transport_errors)

        def attempt():
            try:
                return method(
                    *args,
                    resource_group_name=self.resource_group,
                    provisioning_service_name=self.dps_name,
                    cls=_raw_json,
                    **kwargs,
                )
            except expected as exc:
                failure = self._failure(exc, operation)
                raise failure from None

        return self.retry.run(attempt, f"DPS management {operation}")

    def _etag(self, etag):
        return {"etag": etag, "match_condition": self.sdk.match_conditions.IfNotModified}

    def get_certificate(self, name: str):
        """The CertificateResponse, or None when there is no certificate of that name."""
        try:
            return self._call("DpsCertificate_Get", "get", certificate_name=name)
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    def create_or_update_certificate(self, name: str, certificate_pem: str, *, is_verified: bool, etag=None) -> dict:
        """Upload; without an etag this creates (409 if it exists), with one it replaces what was read."""
        body = {"properties": {"certificate": _base64_der(certificate_pem), "isVerified": bool(is_verified)}}
        return self._call(
            "DpsCertificate_CreateOrUpdate",
            "create_or_update",
            certificate_name=name,
            certificate_description=body,
            **(self._etag(etag) if etag else {}),
        )

    def generate_verification_code(self, name: str, etag: str) -> dict:
        """VerificationCodeResponse: ``properties.verificationCode`` and a new ``etag`` for verify."""
        return self._call(
            "DpsCertificate_GenerateVerificationCode",
            "generate_verification_code",
            certificate_name=name,
            **self._etag(etag),
        )

    def verify_certificate(self, name: str, etag: str, verification_certificate_pem: str) -> dict:
        return self._call(
            "DpsCertificate_VerifyCertificate",
            "verify_certificate",
            certificate_name=name,
            request={"certificate": verification_certificate_pem},
            **self._etag(etag),
        )

    def delete_certificate(self, name: str, etag: str) -> bool:
        """True when deleted, False when it was already gone."""
        try:
            self._call("DpsCertificate_Delete", "delete", certificate_name=name, **self._etag(etag))
        except ApiError as error:
            if error.status == 404:
                return False
            raise
        return True


def _base64_der(certificate_pem: str) -> str:
    """ARM's ``properties.certificate``: the certificate's DER in base64, as in a .cer file."""
    from cryptography import x509  # optional at import time; run_cloud_core checks it
    from cryptography.hazmat.primitives import serialization

    try:
        certificate = x509.load_pem_x509_certificate(certificate_pem.encode())
    except ValueError as exc:
        raise ConfigurationError(f"certificate: not a PEM certificate ({exc})") from None
    return base64.b64encode(certificate.public_bytes(serialization.Encoding.DER)).decode("ascii")


def management_client(params, **http_options) -> DpsManagementClient:
    """A DpsManagementClient from dps_certificate's options (ConfigurationError on a bad combination).

    ``http_options`` are ca_bundle, validate_certs, timeout and retry (see _module.http_options).
    """
    resource_id = dps_resource_id(
        subscription_id=params.get("subscription_id"),
        resource_group=params.get("resource_group"),
        dps_name=params.get("dps_name"),
        resource_id=params.get("resource_id"),
    )
    credential = credential_for(
        bearer_token=params.get("bearer_token"),
        tenant_id=params.get("tenant_id"),
        client_id=params.get("client_id"),
        client_secret=params.get("client_secret"),
    )
    return DpsManagementClient(
        resource_id,
        credential=credential,
        management_url=params.get("management_url") or DEFAULT_MANAGEMENT_URL,
        **http_options,
    )


__all__ = (
    "CREDENTIAL_ENVIRONMENT",
    "DEFAULT_MANAGEMENT_URL",
    "MANAGEMENT_API_VERSION",
    "DpsManagementClient",
    "StaticBearerToken",
    "arm_error",
    "credential_for",
    "dps_resource_id",
    "entra_id_credential",
    "load_management_sdk",
    "management_client",
)
