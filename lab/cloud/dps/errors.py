"""DPS errors as named constructors (Azurite style): same status, code and envelope as the real service.

Six-digit codes other than 401002/404201/404202 are inferred (protocols.md 1.8) and listed in lab/README.md.
"""

from __future__ import annotations

from typing import Any, ClassVar

from lab.cloud.http import Response, ServiceError


class DpsError(ServiceError):
    """ProvisioningServiceErrorDetails: ``{errorCode, trackingId, message, info, timestampUtc}`` + x-ms-error-code."""

    def __init__(
        self,
        status: int,
        code: int,
        message: str,
        info: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status, code, message, headers)
        self.info = info

    def to_response(self, request_id: str, tracking_id: str, timestamp: str) -> Response:
        body: dict[str, Any] = {
            "errorCode": self.code,
            "trackingId": tracking_id,
            "message": self.message,
            "info": self.info,
            "timestampUtc": timestamp,
        }
        return Response.json(self.status, body, {"x-ms-error-code": str(self.code), **self.headers})

    # 400
    @classmethod
    def bad_request(cls, message: str) -> DpsError:
        return cls(400, 400004, message)

    @classmethod
    def too_many_bulk_items(cls, count: int) -> DpsError:
        return cls(400, 400004, f"A bulk operation accepts at most 10 items; got {count}.")

    # 401
    @classmethod
    def unauthorized(cls, reason: str) -> DpsError:
        # The real service says only "Unauthorized access"; the emulator adds the reason in ``info``.
        return cls(401, 401002, "Unauthorized access", info={"reason": reason})

    # 404
    @classmethod
    def enrollment_not_found(cls, registration_id: str) -> DpsError:
        return cls(404, 404201, f"Enrollment with registration id '{registration_id}' was not found.")

    @classmethod
    def enrollment_group_not_found(cls, group_id: str) -> DpsError:
        return cls(404, 404202, f"Enrollment group '{group_id}' was not found.")

    @classmethod
    def registration_not_found(cls, registration_id: str) -> DpsError:
        return cls(404, 404203, f"Device registration '{registration_id}' was not found.")

    @classmethod
    def operation_not_found(cls, operation_id: str) -> DpsError:
        return cls(404, 404204, f"Operation '{operation_id}' was not found.")

    @classmethod
    def route_not_found(cls, path: str) -> DpsError:
        return cls(404, 404000, f"The requested resource '{path}' does not exist.")

    # 405
    @classmethod
    def method_not_allowed(cls, method: str, allowed: list[str]) -> DpsError:
        return cls(405, 405000, f"Method {method} is not allowed here.", headers={"Allow": ", ".join(allowed)})

    # 409
    @classmethod
    def already_exists(cls, kind: str, record_id: str) -> DpsError:
        return cls(409, 409201, f"{kind} '{record_id}' already exists; send If-Match to update it.")

    # 412
    @classmethod
    def etag_mismatch(cls, record_id: str) -> DpsError:
        return cls(412, 412201, f"Precondition failed: the etag does not match the current '{record_id}'.")

    # 415
    @classmethod
    def unsupported_media_type(cls, content_type: str | None) -> DpsError:
        return cls(415, 415000, f"Content-Type must be application/json; got {content_type!r}.")

    # 429 / 5xx
    @classmethod
    def throttled(cls, retry_after: int) -> DpsError:
        return cls(429, 429001, "Request was throttled.", headers={"Retry-After": str(retry_after)})

    @classmethod
    def server_error(cls, status: int = 500) -> DpsError:
        messages = {500: "Internal server error.", 502: "Bad gateway.", 503: "Service unavailable.", 504: "Timeout."}
        return cls(status, status * 1000 + 1, messages.get(status, "Server error."))

    @classmethod
    def not_implemented(cls, operation: str) -> DpsError:
        return cls(501, 501000, f"The emulator does not implement {operation}.")


class ArmError(ServiceError):
    """Resource-manager ErrorDetails ``{code, httpStatusCode, message, details}`` for the certificate API."""

    _REASONS: ClassVar[dict[int, str]] = {
        400: "BadRequest",
        401: "Unauthorized",
        404: "NotFound",
        409: "Conflict",
        412: "PreconditionFailed",
    }

    def to_response(self, request_id: str, tracking_id: str, timestamp: str) -> Response:
        body = {
            "code": str(self.code),
            "httpStatusCode": self._REASONS.get(self.status, str(self.status)),
            "message": self.message,
            "details": None,
        }
        return Response.json(self.status, body, {"x-ms-error-code": str(self.code), **self.headers})

    @classmethod
    def bad_request(cls, message: str) -> ArmError:
        return cls(400, "BadRequest", message)

    @classmethod
    def invalid_authentication(cls, reason: str) -> ArmError:
        return cls(401, "InvalidAuthenticationToken", f"The access token is invalid: {reason}.")

    @classmethod
    def certificate_not_found(cls, name: str) -> ArmError:
        return cls(404, "CertificateNotFound", f"Certificate '{name}' was not found.")

    @classmethod
    def resource_not_found(cls, path: str) -> ArmError:
        return cls(404, "ResourceNotFound", f"The resource '{path}' was not found.")

    @classmethod
    def certificate_exists(cls, name: str) -> ArmError:
        return cls(409, "CertificateAlreadyExists", f"Certificate '{name}' exists; send If-Match to update it.")

    @classmethod
    def if_match_required(cls, operation: str) -> ArmError:
        return cls(412, "PreconditionFailed", f"{operation} requires an If-Match header with the certificate etag.")

    @classmethod
    def etag_mismatch(cls, name: str) -> ArmError:
        return cls(412, "PreconditionFailed", f"The etag does not match certificate '{name}'.")

    @classmethod
    def verification_failed(cls, reason: str) -> ArmError:
        return cls(400, "InvalidVerificationCertificate", f"Proof of possession failed: {reason}.")
