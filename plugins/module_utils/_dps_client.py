# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# PRIVATE to the edgefleet.iotedge collection. Do not use this from other collections:
# it may change at any time.

"""A small client for the DPS service (data-plane) REST API, api-version 2021-10-01.

SAS tokens from a service connection string, JSON over HTTPS through `_http.JsonHttpClient` (retries live there),
and DPS's error envelope turned into `ApiError`. "Not found" comes back as None, not as an exception.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from urllib.parse import quote, quote_plus

from ansible_collections.edgefleet.iotedge.plugins.module_utils._connection_string import (
    DPS_CONNECTION_STRING_ENV,
    ConnectionString,
    parse_service_connection_string,
)
from ansible_collections.edgefleet.iotedge.plugins.module_utils._http import (
    ApiError,
    JsonHttpClient,
    RetryPolicy,
)

DPS_API_VERSION = "2021-10-01"
BULK_LIMIT = 10
QUERY_PAGE_SIZE = 100
TOKEN_TTL_SECONDS = 3600
# Renew a token this long before it expires, so a slow run never sends one that expires in flight.
TOKEN_RENEW_MARGIN = 300


def parse_connection_string(text, *, field: str = "connection_string") -> ConnectionString:
    """A DPS service connection string, or a ConfigurationError that names the field and never the key."""
    return parse_service_connection_string(
        text,
        field=field,
        service="DPS service",
        where_to_find="Azure portal: DPS > Shared access policies > provisioningserviceowner; or set "
        f"{DPS_CONNECTION_STRING_ENV}",
        example_host="<dps>.azure-devices-provisioning.net",
    )


def sas_token(resource: str, key: str, key_name: str | None, expiry: int) -> str:
    """``SharedAccessSignature sr=..&sig=..&se=..&skn=..`` over ``quote_plus(resource) + "\\n" + expiry``."""
    encoded_resource = quote_plus(resource)
    to_sign = f"{encoded_resource}\n{expiry}".encode()
    signature = base64.b64encode(hmac.new(base64.b64decode(key), to_sign, hashlib.sha256).digest()).decode()
    token = f"SharedAccessSignature sr={encoded_resource}&sig={quote(signature, safe='')}&se={expiry}"
    return f"{token}&skn={key_name}" if key_name else token


class SasTokenSource:
    """One token reused until it nears expiry (``clock`` is injectable for tests)."""

    def __init__(self, connection: ConnectionString, ttl: int = TOKEN_TTL_SECONDS, clock=time.time):
        self.connection = connection
        self.ttl = ttl
        self.clock = clock
        self._token = None
        self._expiry = 0

    def headers(self) -> dict:
        now = int(self.clock())
        if self._token is None or now >= self._expiry - TOKEN_RENEW_MARGIN:
            self._expiry = now + self.ttl
            self._token = sas_token(
                self.connection.host_name, self.connection.key, self.connection.key_name, self._expiry
            )
        return {"Authorization": self._token}


def dps_error(status, body, headers) -> ApiError:
    """ProvisioningServiceErrorDetails ``{errorCode, trackingId, message, ...}`` -> ApiError."""
    body = body if isinstance(body, dict) else {}
    code = body.get("errorCode")
    if code is None and headers is not None:
        code = headers.get("x-ms-error-code")
    message = body.get("message") or body.get("Message") or f"HTTP {status}"
    hint = {
        401: " (check the connection string's key and policy name, and that the policy has the rights needed)",
        403: " (the shared access policy lacks a right this call needs, e.g. EnrollmentWrite)",
        412: " (the record changed since it was read; re-run to compare again)",
        429: " (DPS is throttling this hub; retry later)",
    }.get(status, "")
    return ApiError(
        f"DPS answered {status}: {message}{hint}",
        status=status,
        error_code=code,
        tracking_id=body.get("trackingId"),
        details=body.get("info"),
    )


def _record_path(collection: str, record_id: str) -> str:
    return f"/{collection}/{quote(record_id, safe='')}"


class DpsServiceClient:
    """The DPS service operations the modules use. Enrollments are plain dicts in DPS's wire shape."""

    def __init__(
        self,
        connection: ConnectionString,
        *,
        ca_bundle=None,
        validate_certs=True,
        timeout=30,
        retry: RetryPolicy | None = None,
        api_version: str = DPS_API_VERSION,
    ):
        self.connection = connection
        self.api_version = api_version
        self.http = JsonHttpClient(
            f"https://{connection.host_name}",
            auth_headers=SasTokenSource(connection).headers,
            parse_error=dps_error,
            service_name="DPS",
            ca_bundle=ca_bundle,
            validate_certs=validate_certs,
            timeout=timeout,
            retry=retry,
        )

    @property
    def requests_sent(self) -> int:
        return self.http.requests_sent

    def _call(self, method, path, *, operation, body=None, headers=None, ok=(200,)):
        return self.http.request(
            method,
            path,
            operation=operation,
            body=body,
            headers=headers,
            ok=ok,
            query={"api-version": self.api_version},
        )

    def _get_or_none(self, path, operation):
        try:
            return self._call("GET", path, operation=operation).body
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    # ---- individual enrollments and groups ---------------------------------------------------------------

    def get_enrollment(self, registration_id: str):
        return self._get_or_none(_record_path("enrollments", registration_id), "IndividualEnrollment_Get")

    def get_enrollment_group(self, group_id: str):
        return self._get_or_none(_record_path("enrollmentGroups", group_id), "EnrollmentGroup_Get")

    def put_enrollment(self, enrollment: dict, etag: str | None = None) -> dict:
        return self._put("enrollments", enrollment["registrationId"], enrollment, etag, "IndividualEnrollment")

    def put_enrollment_group(self, group: dict, etag: str | None = None) -> dict:
        return self._put("enrollmentGroups", group["enrollmentGroupId"], group, etag, "EnrollmentGroup")

    def _put(self, collection, record_id, body, etag, kind):
        # No If-Match creates (409 if it exists); an etag updates only what was read (412 if it changed).
        headers = {"If-Match": etag} if etag else None
        return self._call(
            "PUT", _record_path(collection, record_id), operation=f"{kind}_CreateOrUpdate", body=body, headers=headers
        ).body

    def delete_enrollment(self, registration_id: str, etag: str = "*") -> bool:
        return self._delete("enrollments", registration_id, etag, "IndividualEnrollment_Delete")

    def delete_enrollment_group(self, group_id: str, etag: str = "*") -> bool:
        return self._delete("enrollmentGroups", group_id, etag, "EnrollmentGroup_Delete")

    def delete_registration(self, registration_id: str, etag: str = "*") -> bool:
        return self._delete("registrations", registration_id, etag, "DeviceRegistrationState_Delete")

    def _delete(self, collection, record_id, etag, operation) -> bool:
        """True when deleted, False when it was already gone."""
        try:
            self._call(
                "DELETE",
                _record_path(collection, record_id),
                operation=operation,
                headers={"If-Match": etag},
                ok=(200, 204),
            )
        except ApiError as error:
            if error.status == 404 or (error.status == 412 and etag == "*"):
                return False
            raise
        return True

    def bulk_enrollments(self, mode: str, enrollments: list) -> dict:
        """One bulk call (at most BULK_LIMIT items): ``{"isSuccessful", "errors": [{registrationId, errorCode, ...}]}``."""
        return self._bulk("enrollments", "enrollments", "IndividualEnrollment_RunBulkOperation", mode, enrollments)

    def _bulk(self, collection, key, operation, mode, items):
        if not 0 < len(items) <= BULK_LIMIT:
            raise ValueError(f"a bulk operation takes 1 to {BULK_LIMIT} items, got {len(items)}")
        body = self._call("POST", f"/{collection}", operation=operation, body={"mode": mode, key: items}).body
        return body if isinstance(body, dict) else {"isSuccessful": True, "errors": []}

    # ---- queries (paged) ---------------------------------------------------------------------------------

    def query_enrollments(self, page_size: int = QUERY_PAGE_SIZE) -> list:
        return self._query("/enrollments/query", {"query": "*"}, page_size, "IndividualEnrollment_Query")

    def query_enrollment_groups(self, page_size: int = QUERY_PAGE_SIZE) -> list:
        return self._query("/enrollmentGroups/query", {"query": "*"}, page_size, "EnrollmentGroup_Query")

    def query_registrations(self, group_id: str, page_size: int = QUERY_PAGE_SIZE) -> list:
        path = f"{_record_path('registrations', group_id)}/query"
        return self._query(path, None, page_size, "DeviceRegistrationState_Query")

    def _query(self, path, body, page_size, operation) -> list:
        records, continuation = [], None
        while True:
            headers = {"x-ms-max-item-count": str(page_size)}
            if continuation:
                headers["x-ms-continuation"] = continuation
            response = self._call("POST", path, operation=operation, body=body, headers=headers)
            records.extend(response.body or [])
            continuation = response.headers.get("x-ms-continuation")
            if not continuation:
                return records

    # ---- registration states ---------------------------------------------------------------------------

    def get_registration(self, registration_id: str):
        return self._get_or_none(_record_path("registrations", registration_id), "DeviceRegistrationState_Get")


__all__ = (
    "BULK_LIMIT",
    "DPS_API_VERSION",
    "ConnectionString",
    "DpsServiceClient",
    "SasTokenSource",
    "dps_error",
    "parse_connection_string",
    "sas_token",
)
