# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# PRIVATE to the edgefleet.iotedge collection. Do not use this from other collections:
# it may change at any time.

"""A small client for the DPS resource-manager certificate API (upload, proof of possession), api 2022-02-05.

Transport, retries and backoff are `_http.JsonHttpClient`'s, as for the DPS service API. Authentication is a
callable returning headers: a static bearer token (the lab, or a token from ``az account get-access-token``) or a
Microsoft Entra ID token from azure-identity, imported only when it is used.
"""

from __future__ import annotations

import re
import time
from urllib.parse import quote

from ansible_collections.edgefleet.iotedge.plugins.module_utils._http import (
    ApiError,
    CloudError,
    ConfigurationError,
    JsonHttpClient,
    RetryPolicy,
)
from ansible_collections.edgefleet.iotedge.plugins.module_utils._shown import shown

MANAGEMENT_API_VERSION = "2022-02-05"
DEFAULT_MANAGEMENT_URL = "https://management.azure.com"
MANAGEMENT_SCOPE = "https://management.azure.com/.default"
# Ask azure-identity for a new token this long before the current one expires.
TOKEN_RENEW_MARGIN = 300
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


class StaticBearerToken:
    """``Authorization: Bearer <token>`` for every request; the token is never shown."""

    def __init__(self, token: str):
        if not isinstance(token, str) or not token.strip():
            raise ConfigurationError("bearer_token: empty; give an ARM access token or leave it unset to use Entra ID")
        self._token = token.strip()

    def __repr__(self) -> str:
        return "StaticBearerToken(<hidden>)"

    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self._token}"}


def _import_azure_identity():
    try:
        from azure import identity
        from azure.core.exceptions import ClientAuthenticationError
    except ImportError:
        raise ConfigurationError(
            "azure-identity is not installed in the Python that runs this module; install it "
            "(pip install azure-identity) for Microsoft Entra ID sign-in, or give bearer_token "
            "(for example from 'az account get-access-token --query accessToken -o tsv')"
        ) from None
    return identity, ClientAuthenticationError


class EntraIdToken:
    """Tokens for ARM from azure-identity: a service principal's secret, or DefaultAzureCredential's chain."""

    def __init__(self, *, tenant_id=None, client_id=None, client_secret=None, clock=time.time, identity=None):
        given = {"tenant_id": tenant_id, "client_id": client_id, "client_secret": client_secret}
        if any(given.values()) and not all(given.values()):
            missing = ", ".join(name for name, value in given.items() if not value)
            raise ConfigurationError(
                f"{missing}: a service principal needs tenant_id, client_id and client_secret together (or set "
                "AZURE_TENANT_ID or AZURE_TENANT, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET or AZURE_SECRET); leave all three unset to use "
                "DefaultAzureCredential (managed identity, az login, ...)"
            )
        if identity is None:
            identity, self._auth_error = _import_azure_identity()
        else:
            self._auth_error = getattr(identity, "ClientAuthenticationError", Exception)
        if all(given.values()):
            self.credential = identity.ClientSecretCredential(tenant_id, client_id, client_secret)
            self.kind = "service principal"
        else:
            self.credential = identity.DefaultAzureCredential()
            self.kind = "DefaultAzureCredential"
        self.clock = clock
        self._token = None
        self._expires_on = 0

    def __repr__(self) -> str:
        return f"EntraIdToken({self.kind})"

    def headers(self) -> dict:
        if self._token is None or self.clock() >= self._expires_on - TOKEN_RENEW_MARGIN:
            try:
                access = self.credential.get_token(MANAGEMENT_SCOPE)
            except self._auth_error as error:
                # The library's own text says which credentials it tried and why each failed.
                raise CloudError(
                    f"Microsoft Entra ID sign-in ({self.kind}) failed: {error}. Check tenant_id, client_id and "
                    "client_secret (or AZURE_* variables), run 'az login', or give bearer_token"
                ) from None
            self._token, self._expires_on = access.token, access.expires_on
        return {"Authorization": f"Bearer {self._token}"}


def token_provider(*, bearer_token=None, tenant_id=None, client_id=None, client_secret=None):
    """The headers callable for the given credentials: a static token wins over Entra ID."""
    if bearer_token:
        return StaticBearerToken(bearer_token).headers
    return EntraIdToken(tenant_id=tenant_id, client_id=client_id, client_secret=client_secret).headers


class DpsManagementClient:
    """Certificate operations of one DPS. Certificates are plain dicts in ARM's CertificateResponse shape."""

    def __init__(
        self,
        resource_id: str,
        *,
        auth_headers,
        management_url: str = DEFAULT_MANAGEMENT_URL,
        ca_bundle=None,
        validate_certs=True,
        timeout=30,
        retry: RetryPolicy | None = None,
        api_version: str = MANAGEMENT_API_VERSION,
    ):
        if not isinstance(management_url, str) or not management_url.startswith("https://"):
            raise ConfigurationError(
                f"management_url: {shown(management_url)} must be an https:// URL (the bearer token must not travel "
                f"in clear text); the default is {DEFAULT_MANAGEMENT_URL}"
            )
        self.resource_id = resource_id
        self.api_version = api_version
        self.http = JsonHttpClient(
            management_url,
            auth_headers=auth_headers,
            parse_error=arm_error,
            service_name="DPS management",
            ca_bundle=ca_bundle,
            validate_certs=validate_certs,
            timeout=timeout,
            retry=retry,
        )

    @property
    def requests_sent(self) -> int:
        return self.http.requests_sent

    def _path(self, name: str, action: str = "") -> str:
        return f"{self.resource_id}/certificates/{quote(name, safe='')}{action}"

    def _call(self, method, path, *, operation, body=None, etag=None, ok=(200,)):
        headers = {"If-Match": etag} if etag else None
        return self.http.request(
            method,
            path,
            operation=operation,
            body=body,
            headers=headers,
            ok=ok,
            query={"api-version": self.api_version},
        )

    def get_certificate(self, name: str):
        """The CertificateResponse, or None when there is no certificate of that name."""
        try:
            return self._call("GET", self._path(name), operation="DpsCertificate_Get").body
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    def create_or_update_certificate(self, name: str, certificate_pem: str, *, is_verified: bool, etag=None) -> dict:
        """Upload; without an etag this creates (409 if it exists), with one it replaces what was read."""
        return self._call(
            "PUT",
            self._path(name),
            operation="DpsCertificate_CreateOrUpdate",
            body={"certificate": certificate_pem, "isVerified": bool(is_verified)},
            etag=etag,
        ).body

    def generate_verification_code(self, name: str, etag: str) -> dict:
        """VerificationCodeResponse: ``properties.verificationCode`` and a new ``etag`` for verify."""
        return self._call(
            "POST",
            self._path(name, "/generateVerificationCode"),
            operation="DpsCertificate_GenerateVerificationCode",
            etag=etag,
        ).body

    def verify_certificate(self, name: str, etag: str, verification_certificate_pem: str) -> dict:
        return self._call(
            "POST",
            self._path(name, "/verify"),
            operation="DpsCertificate_VerifyCertificate",
            body={"certificate": verification_certificate_pem},
            etag=etag,
        ).body

    def delete_certificate(self, name: str, etag: str) -> bool:
        """True when deleted, False when it was already gone."""
        try:
            self._call("DELETE", self._path(name), operation="DpsCertificate_Delete", etag=etag, ok=(200, 204))
        except ApiError as error:
            if error.status == 404:
                return False
            raise
        return True


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
    auth_headers = token_provider(
        bearer_token=params.get("bearer_token"),
        tenant_id=params.get("tenant_id"),
        client_id=params.get("client_id"),
        client_secret=params.get("client_secret"),
    )
    return DpsManagementClient(
        resource_id,
        auth_headers=auth_headers,
        management_url=params.get("management_url") or DEFAULT_MANAGEMENT_URL,
        **http_options,
    )


__all__ = (
    "CREDENTIAL_ENVIRONMENT",
    "DEFAULT_MANAGEMENT_URL",
    "MANAGEMENT_API_VERSION",
    "MANAGEMENT_SCOPE",
    "DpsManagementClient",
    "EntraIdToken",
    "StaticBearerToken",
    "arm_error",
    "dps_resource_id",
    "management_client",
    "token_provider",
)
