"""DPS responses layer: parse the HTTP request, call the backend, shape the JSON (and headers) DPS returns."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

from lab.cloud.clock import Clock
from lab.cloud.dps.backend import DpsBackend
from lab.cloud.dps.errors import ArmError, DpsError
from lab.cloud.dps.models import GROUP, INDIVIDUAL
from lab.cloud.dps.routing import DEVICE_ROUTES, MANAGEMENT_ROUTES, SERVICE_ROUTES
from lab.cloud.http import Request, Response, RouteMatch, Router
from lab.cloud.sas import SasError, SasPolicy, verify_policy_token
from lab.cloud.service import BaseService

ALL_RIGHTS = frozenset(
    {
        "ServiceConfig",
        "EnrollmentRead",
        "EnrollmentWrite",
        "DeviceConnect",
        "RegistrationStatusRead",
        "RegistrationStatusWrite",
    }
)
HSTS = {"Strict-Transport-Security": "max-age=31536000; includeSubDomains"}


def _json_body(request: Request, required: bool = True) -> Any:
    content_type = request.header("Content-Type")
    if request.body.strip() and (not content_type or "json" not in content_type.lower()):
        raise DpsError.unsupported_media_type(content_type)
    try:
        body = request.json_body()
    except (ValueError, UnicodeDecodeError) as exc:
        raise DpsError.bad_request(f"The request body is not valid JSON: {exc}.") from exc
    if required and body is None:
        raise DpsError.bad_request("A JSON request body is required.")
    return body


def _page_headers(request: Request) -> tuple[int | None, str | None]:
    raw = request.header("x-ms-max-item-count")
    try:
        size = int(raw) if raw else None
    except ValueError as exc:
        raise DpsError.bad_request("'x-ms-max-item-count' must be an integer.") from exc
    return size, request.header("x-ms-continuation") or None


def _paged(items: list[dict[str, Any]], item_type: str, size: int | None, token: str | None) -> Response:
    headers = {"x-ms-item-type": item_type}
    if size is not None:
        headers["x-ms-max-item-count"] = str(size)
    if token:
        headers["x-ms-continuation"] = token
    return Response.json(200, items, headers)


class DpsServiceResponses(BaseService):
    """The DPS service (enrollment management) API, authenticated with shared access policies."""

    name = "dps"

    def __init__(self, backend: DpsBackend, clock: Clock, policies: Mapping[str, SasPolicy], hosts: list[str]) -> None:
        super().__init__(Router(SERVICE_ROUTES), clock)
        self.backend = backend
        self.policies = policies
        self.hosts = hosts

    def authorize(self, request: Request, match: RouteMatch) -> SasPolicy:
        route = match.route
        try:
            policy = verify_policy_token(request.header("Authorization"), self.policies, self.hosts, self.clock.now())
        except SasError as error:
            raise DpsError.unauthorized(str(error)) from error
        if route.permission and route.permission not in policy.rights:
            raise DpsError.unauthorized(f"policy '{policy.name}' lacks the {route.permission} right")
        return policy

    def route_missing(self, request: Request, allowed: list[str]) -> DpsError:
        if allowed:
            return DpsError.method_not_allowed(request.method, allowed)
        return DpsError.route_not_found(request.path)

    def api_version_missing(self) -> DpsError:
        return DpsError.bad_request("The 'api-version' query parameter is required.")

    def internal_error(self, status: int = 500) -> DpsError:
        return DpsError.server_error(status)

    def throttled(self, retry_after: int) -> DpsError:
        return DpsError.throttled(retry_after)

    # Individual enrollments and groups share the handlers below through ``kind``.

    def _get(self, kind: str, record_id: str) -> Response:
        enrollment = self.backend.get_enrollment(kind, record_id)
        return Response.json(200, enrollment.to_wire(self.backend.registration_for(enrollment)))

    def _put(self, kind: str, request: Request, record_id: str) -> Response:
        enrollment = self.backend.put_enrollment(kind, record_id, _json_body(request), request.header("If-Match"))
        return Response.json(200, enrollment.to_wire(self.backend.registration_for(enrollment)))

    def _delete(self, kind: str, request: Request, record_id: str) -> Response:
        self.backend.delete_enrollment(kind, record_id, request.header("If-Match"))
        return Response.empty(204)

    def _query(self, kind: str, request: Request) -> Response:
        size, token = _page_headers(request)
        rows, next_token = self.backend.query_enrollments(kind, _json_body(request), size, token)
        items = [row.to_wire(self.backend.registration_for(row)) for row in rows]
        return _paged(items, kind, size, next_token)

    def get_enrollment(self, request: Request, _principal: Any, record_id: str) -> Response:
        return self._get(INDIVIDUAL, record_id)

    def put_enrollment(self, request: Request, _principal: Any, record_id: str) -> Response:
        return self._put(INDIVIDUAL, request, record_id)

    def delete_enrollment(self, request: Request, _principal: Any, record_id: str) -> Response:
        return self._delete(INDIVIDUAL, request, record_id)

    def enrollment_attestation(self, request: Request, _principal: Any, record_id: str) -> Response:
        return Response.json(200, self.backend.get_enrollment(INDIVIDUAL, record_id).attestation.to_wire())

    def query_enrollments(self, request: Request, _principal: Any) -> Response:
        return self._query(INDIVIDUAL, request)

    def bulk_enrollments(self, request: Request, _principal: Any) -> Response:
        return Response.json(200, self.backend.bulk(INDIVIDUAL, _json_body(request)))

    def get_group(self, request: Request, _principal: Any, record_id: str) -> Response:
        return self._get(GROUP, record_id)

    def put_group(self, request: Request, _principal: Any, record_id: str) -> Response:
        return self._put(GROUP, request, record_id)

    def delete_group(self, request: Request, _principal: Any, record_id: str) -> Response:
        return self._delete(GROUP, request, record_id)

    def group_attestation(self, request: Request, _principal: Any, record_id: str) -> Response:
        return Response.json(200, self.backend.get_enrollment(GROUP, record_id).attestation.to_wire())

    def query_groups(self, request: Request, _principal: Any) -> Response:
        return self._query(GROUP, request)

    def bulk_groups(self, request: Request, _principal: Any) -> Response:
        return Response.json(200, self.backend.bulk(GROUP, _json_body(request)))

    def get_registration(self, request: Request, _principal: Any, record_id: str) -> Response:
        return Response.json(200, self.backend.get_registration(record_id).to_service_wire())

    def delete_registration(self, request: Request, _principal: Any, record_id: str) -> Response:
        self.backend.delete_registration(record_id, request.header("If-Match"))
        return Response.empty(204)

    def query_registrations(self, request: Request, _principal: Any, record_id: str) -> Response:
        size, token = _page_headers(request)
        rows, next_token = self.backend.query_registrations(record_id, size, token)
        return _paged([row.to_service_wire() for row in rows], "deviceRegistration", size, next_token)


class DpsDeviceResponses(BaseService):
    """The device registration API (global endpoint); identity comes only from the TLS client chain."""

    name = "dps-device"

    def __init__(self, backend: DpsBackend, clock: Clock) -> None:
        super().__init__(Router(DEVICE_ROUTES), clock)
        self.backend = backend

    def authorize(self, request: Request, match: RouteMatch) -> None:
        # X.509 attestation is decided in the backend, where the enrollments are.
        if not request.client_chain and request.header("Authorization"):
            raise DpsError.unauthorized("symmetric-key and TPM attestation are not supported by the emulator")

    def route_missing(self, request: Request, allowed: list[str]) -> DpsError:
        if allowed:
            return DpsError.method_not_allowed(request.method, allowed)
        return DpsError.route_not_found(request.path)

    def api_version_missing(self) -> DpsError:
        return DpsError.bad_request("The 'api-version' query parameter is required.")

    def internal_error(self, status: int = 500) -> DpsError:
        return DpsError.server_error(status)

    def throttled(self, retry_after: int) -> DpsError:
        return DpsError.throttled(retry_after)

    def render(self, error: Any, request: Request) -> Response:
        response = super().render(error, request)
        response.headers.update(HSTS)
        return response

    def register(self, request: Request, _principal: Any, idScope: str, registrationId: str) -> Response:
        operation = self.backend.register(idScope, registrationId, _json_body(request), request.client_chain)
        host = request.header("Host") or "localhost"
        location = f"https://{host}/{idScope}/registrations/{registrationId}/register"
        headers = {"Location": location, "Retry-After": str(self.backend.settings.retry_after), **HSTS}
        return Response.json(202, {"operationId": operation.operation_id, "status": "assigning"}, headers)

    def operation_status(
        self,
        request: Request,
        _principal: Any,
        idScope: str,
        registrationId: str,
        operationId: str,
    ) -> Response:
        done, operation = self.backend.operation_status(idScope, registrationId, operationId, request.client_chain)
        if not done:
            # aziot-identityd fails to parse an answer without registrationState, even while assigning.
            body = {
                "operationId": operation.operation_id,
                "status": "assigning",
                "registrationState": {"registrationId": operation.registration_id, "status": "assigning"},
            }
            return Response.json(202, body, {"Retry-After": str(self.backend.settings.retry_after), **HSTS})
        body = {
            "operationId": operation.operation_id,
            "status": operation.record.status,
            "registrationState": operation.record.to_device_wire(),
        }
        return Response.json(200, body, HSTS)

    def status_lookup(self, request: Request, _principal: Any, idScope: str, registrationId: str) -> Response:
        _json_body(request, required=False)
        record = self.backend.status_lookup(idScope, registrationId, request.client_chain)
        return Response.json(200, record.to_device_wire(), HSTS)


# The published versions of Microsoft.Devices/provisioningServices/certificates (Microsoft Learn, "Microsoft.Devices
# (IoT Hub Device Provisioning Services) resource types"), newest first.
CERTIFICATE_API_VERSIONS = (
    "2023-03-01-preview",
    "2022-12-12",
    "2022-02-05",
    "2021-10-15",
    "2020-09-01-preview",
    "2020-03-01",
    "2020-01-01",
    "2018-01-22",
    "2017-11-15",
    "2017-08-21-preview",
)


class DpsManagementResponses(BaseService):
    """The resource-manager certificate API (upload, proof of possession), authenticated with a bearer token."""

    name = "dps-management"

    def __init__(self, backend: DpsBackend, clock: Clock, bearer_token: str) -> None:
        super().__init__(Router(MANAGEMENT_ROUTES), clock)
        self.backend = backend
        self.bearer_token = bearer_token

    def authorize(self, request: Request, match: RouteMatch) -> None:
        header = request.header("Authorization") or ""
        scheme, _space, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise ArmError.invalid_authentication("a 'Bearer' Authorization header is required")
        if not hmac.compare_digest(token.strip().encode(), self.bearer_token.encode()):
            raise ArmError.invalid_authentication("the token is not the lab's management token")

    def route_missing(self, request: Request, allowed: list[str]) -> ArmError:
        return ArmError.resource_not_found(request.path)

    def api_version_missing(self) -> ArmError:
        return ArmError(400, "MissingApiVersionParameter", "The api-version query parameter is required.")

    def unsupported_api_version(self, version: str) -> ArmError | None:
        if version in CERTIFICATE_API_VERSIONS:
            return None
        return ArmError(
            400,
            "NoRegisteredProviderFound",
            f"No registered resource provider found for API version '{version}' and type "
            f"'provisioningServices/certificates'. The supported api-versions are "
            f"'{', '.join(CERTIFICATE_API_VERSIONS)}'.",
        )

    def internal_error(self, status: int = 500) -> ArmError:
        return ArmError(status, "InternalServerError", "Internal server error.")

    def throttled(self, retry_after: int) -> ArmError:
        return ArmError(429, "TooManyRequests", "Too many requests.", {"Retry-After": str(retry_after)})

    def _scope(self, request: Request, dpsName: str) -> str:
        if dpsName.lower() != self.backend.settings.dps_name.lower():
            raise ArmError.resource_not_found(request.path)
        return request.path.split("/certificates")[0]

    def _body(self, request: Request) -> Any:
        try:
            return request.json_body()
        except (ValueError, UnicodeDecodeError) as exc:
            raise ArmError.bad_request(f"The request body is not valid JSON: {exc}.") from exc

    def list_certificates(self, request: Request, _principal: Any, dpsName: str, **_: str) -> Response:
        prefix = self._scope(request, dpsName)
        return Response.json(200, {"value": [c.to_wire(prefix) for c in self.backend.list_certificates()]})

    def get_certificate(self, request: Request, _principal: Any, dpsName: str, name: str, **_: str) -> Response:
        prefix = self._scope(request, dpsName)
        return Response.json(200, self.backend.get_certificate(name).to_wire(prefix))

    def put_certificate(self, request: Request, _principal: Any, dpsName: str, name: str, **_: str) -> Response:
        prefix = self._scope(request, dpsName)
        record = self.backend.put_certificate(name, self._body(request), request.header("If-Match"))
        return Response.json(200, record.to_wire(prefix))

    def delete_certificate(self, request: Request, _principal: Any, dpsName: str, name: str, **_: str) -> Response:
        self._scope(request, dpsName)
        self.backend.delete_certificate(name, request.header("If-Match"))
        return Response.empty(200)

    def generate_verification_code(
        self, request: Request, _principal: Any, dpsName: str, name: str, **_: str
    ) -> Response:
        prefix = self._scope(request, dpsName)
        record = self.backend.generate_verification_code(name, request.header("If-Match"))
        body = record.to_wire(prefix)
        body["properties"]["verificationCode"] = record.verification_code
        return Response.json(200, body)

    def verify(self, request: Request, _principal: Any, dpsName: str, name: str, **_: str) -> Response:
        prefix = self._scope(request, dpsName)
        record = self.backend.verify_certificate(name, request.header("If-Match"), self._body(request))
        return Response.json(200, record.to_wire(prefix))
