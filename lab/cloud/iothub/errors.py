"""IoT Hub errors as named constructors: ``iothub-errorcode`` header plus the ``Message``/``ExceptionMessage`` body."""

from __future__ import annotations

import datetime as dt

from lab.cloud.http import Response, ServiceError


class IotHubError(ServiceError):
    def __init__(self, status: int, name: str, code: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(status, name, message, headers)
        self.numeric_code = code

    def to_response(self, request_id: str, tracking_id: str, timestamp: str) -> Response:
        moment = dt.datetime.fromisoformat(timestamp[:19])
        body = {
            "Message": f"ErrorCode:{self.code};{self.message}",
            "ExceptionMessage": f"Tracking ID:{tracking_id}-G:0-TimeStamp:{moment.strftime('%m/%d/%Y %H:%M:%S')}",
        }
        return Response.json(self.status, body, {"iothub-errorcode": str(self.code), **self.headers})

    @classmethod
    def argument_invalid(cls, message: str) -> IotHubError:
        return cls(400, "ArgumentInvalid", 400004, message)

    @classmethod
    def unauthorized(cls, reason: str) -> IotHubError:
        return cls(401, "IotHubUnauthorizedAccess", 401002, f"Unauthorized: {reason}")

    @classmethod
    def device_not_found(cls, device_id: str) -> IotHubError:
        return cls(404, "DeviceNotFound", 404001, f"Device {device_id} not registered")

    @classmethod
    def module_not_found(cls, device_id: str, module_id: str) -> IotHubError:
        return cls(404, "ModuleNotFound", 404010, f"Module {module_id} on device {device_id} not registered")

    @classmethod
    def configuration_not_found(cls, configuration_id: str) -> IotHubError:
        return cls(404, "ConfigurationNotFound", 404301, f"Configuration {configuration_id} not found")

    @classmethod
    def route_not_found(cls, path: str) -> IotHubError:
        return cls(404, "NotFound", 404000, f"The resource {path} does not exist")

    @classmethod
    def method_not_allowed(cls, method: str, allowed: list[str]) -> IotHubError:
        return cls(405, "MethodNotAllowed", 405000, f"{method} is not allowed", {"Allow": ", ".join(allowed)})

    @classmethod
    def device_exists(cls, device_id: str) -> IotHubError:
        return cls(409, "DeviceAlreadyExists", 409001, f"A device with ID '{device_id}' is already registered")

    @classmethod
    def module_exists(cls, device_id: str, module_id: str) -> IotHubError:
        return cls(409, "ModuleAlreadyExistsOnDevice", 409301, f"Module {module_id} already exists on {device_id}")

    @classmethod
    def configuration_exists(cls, configuration_id: str) -> IotHubError:
        return cls(409, "ConfigurationAlreadyExists", 409401, f"Configuration {configuration_id} already exists")

    # Configuration codes: Microsoft's "Troubleshoot Azure IoT Hub error codes" (4004xx, 4043xx, 4094xx, 413101).
    @classmethod
    def invalid_target_condition(cls, message: str) -> IotHubError:
        return cls(400, "InvalidConfigurationTargetCondition", 400401, message)

    @classmethod
    def invalid_configuration_content(cls, message: str) -> IotHubError:
        return cls(400, "InvalidConfigurationContent", 400402, message)

    @classmethod
    def immutable_configuration_content(cls, configuration_id: str) -> IotHubError:
        return cls(
            400,
            "CannotModifyImmutableConfigurationContent",
            400403,
            f"Configuration {configuration_id}: content cannot be updated; only targetCondition, priority, labels and "
            "metrics can change. Delete and re-create it, or create a new id with a higher priority.",
        )

    @classmethod
    def invalid_custom_metric(cls, message: str) -> IotHubError:
        return cls(400, "InvalidConfigurationCustomMetricsQuery", 400404, message)

    @classmethod
    def configuration_count_limit(cls, limit: int) -> IotHubError:
        # The .NET SDK maps it to MessageTooLargeException (413); text as users quote it (azure-docs issue 94528).
        return cls(
            413,
            "ConfigurationCountLimitExceeded",
            413101,
            f"Number of deployments exceed the maximum quota {limit} for this IotHub.",
        )

    @classmethod
    def precondition_failed(cls, what: str) -> IotHubError:
        return cls(412, "PreconditionFailed", 412001, f"Precondition failed: the etag does not match {what}")

    @classmethod
    def throttled(cls, retry_after: int) -> IotHubError:
        return cls(429, "ThrottlingException", 429001, "Throttled", {"Retry-After": str(retry_after)})

    @classmethod
    def server_error(cls, status: int = 500) -> IotHubError:
        names = {500: "ServerError", 502: "BadGateway", 503: "ServiceUnavailable", 504: "GatewayTimeout"}
        return cls(status, names.get(status, "ServerError"), status * 1000 + 1, "Server error")

    @classmethod
    def not_implemented(cls, operation: str) -> IotHubError:
        return cls(501, "NotImplemented", 501000, f"The emulator does not implement {operation}")
