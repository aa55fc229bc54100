"""IoT Hub responses layer: authentication (policy SAS, device SAS, device X.509), parsing, JSON shaping."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lab.cloud.clock import Clock
from lab.cloud.http import Request, Response, RouteMatch, Router
from lab.cloud.iothub.backend import IotHubBackend
from lab.cloud.iothub.errors import IotHubError
from lab.cloud.iothub.routing import DEVICE_CREDENTIAL_OPERATIONS, ROUTES
from lab.cloud.sas import SasError, SasPolicy, parse_token, verify_policy_token, verify_resource_token
from lab.cloud.service import BaseService

ALL_RIGHTS = frozenset({"RegistryRead", "RegistryWrite", "ServiceConnect", "DeviceConnect"})


class DevicePrincipal:
    """A device calling with its own credentials (only allowed on its own module identities)."""

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id


def _json(request: Request) -> Any:
    try:
        return request.json_body()
    except (ValueError, UnicodeDecodeError) as exc:
        raise IotHubError.argument_invalid(f"The request body is not valid JSON: {exc}") from exc


def _int_param(value: str | None, name: str) -> int | None:
    if value in (None, ""):
        return None
    try:
        number = int(value)  # type: ignore[arg-type]
    except ValueError as exc:
        raise IotHubError.argument_invalid(f"'{name}' must be an integer") from exc
    if number < 1:
        raise IotHubError.argument_invalid(f"'{name}' must be positive")
    return number


class IotHubResponses(BaseService):
    name = "iothub"

    def __init__(
        self, backend: IotHubBackend, clock: Clock, policies: Mapping[str, SasPolicy], hosts: list[str]
    ) -> None:
        super().__init__(Router(ROUTES), clock)
        self.backend = backend
        self.policies = policies
        self.hosts = hosts

    # ---- pipeline hooks ------------------------------------------------------------------------------------

    def authorize(self, request: Request, match: RouteMatch) -> SasPolicy | DevicePrincipal:
        route, header = match.route, request.header("Authorization")
        device_id = match.params.get("device_id")
        device_allowed = route.operation in DEVICE_CREDENTIAL_OPERATIONS and device_id is not None
        try:
            if header:
                fields = parse_token(header)
                if "skn" not in fields and device_allowed:
                    resource = f"{fields['sr'].split('/devices/')[0]}/devices/{device_id}"
                    if fields["sr"].split("/devices/")[0].lower() not in {h.lower() for h in self.hosts}:
                        raise SasError("the token is for another hub")
                    verify_resource_token(header, resource, self.backend.device_keys(device_id), self.clock.now())
                    return DevicePrincipal(device_id)
                policy = verify_policy_token(header, self.policies, self.hosts, self.clock.now())
            elif device_allowed and self.backend.device_matches_certificate(device_id, request.client_chain):
                return DevicePrincipal(device_id)
            else:
                raise SasError("no SharedAccessSignature and no client certificate of this device")
        except SasError as error:
            raise IotHubError.unauthorized(str(error)) from error
        if route.permission and not set(route.permission.split("|")) & policy.rights:
            raise IotHubError.unauthorized(f"policy '{policy.name}' lacks {route.permission}")
        return policy

    def route_missing(self, request: Request, allowed: list[str]) -> IotHubError:
        if allowed:
            return IotHubError.method_not_allowed(request.method, allowed)
        return IotHubError.route_not_found(request.path)

    def api_version_missing(self) -> IotHubError:
        return IotHubError.argument_invalid("The 'api-version' query parameter is required")

    def internal_error(self, status: int = 500) -> IotHubError:
        return IotHubError.server_error(status)

    def throttled(self, retry_after: int) -> IotHubError:
        return IotHubError.throttled(retry_after)

    # ---- handlers ------------------------------------------------------------------------------------------

    def not_implemented(self, request: Request, _principal: Any, **_: str) -> Response:
        match = self.resolve(request)
        operation = match.route.operation if isinstance(match, RouteMatch) else request.path
        raise IotHubError.not_implemented(operation)

    def list_devices(self, request: Request, _principal: Any) -> Response:
        top = _int_param(request.query.get("top"), "top")
        return Response.json(200, [d.to_wire() for d in self.backend.list_devices(top)])

    def get_device(self, request: Request, _principal: Any, device_id: str) -> Response:
        return Response.json(200, self.backend.device(device_id).to_wire())

    def put_device(self, request: Request, _principal: Any, device_id: str) -> Response:
        device = self.backend.put_device(device_id, _json(request), request.header("If-Match"))
        return Response.json(200, device.to_wire())

    def delete_device(self, request: Request, _principal: Any, device_id: str) -> Response:
        self.backend.delete_device(device_id, request.header("If-Match"))
        return Response.empty(204)

    def list_modules(self, request: Request, _principal: Any, device_id: str) -> Response:
        return Response.json(200, [m.to_wire() for m in self.backend.list_modules(device_id)])

    def get_module(self, request: Request, _principal: Any, device_id: str, module_id: str) -> Response:
        return Response.json(200, self.backend.module(device_id, module_id).to_wire())

    def put_module(self, request: Request, _principal: Any, device_id: str, module_id: str) -> Response:
        # Always 200: aziot-identityd rejects 201 (protocols.md 4.5).
        module = self.backend.put_module(device_id, module_id, _json(request), request.header("If-Match"))
        return Response.json(200, module.to_wire())

    def delete_module(self, request: Request, _principal: Any, device_id: str, module_id: str) -> Response:
        self.backend.delete_module(device_id, module_id, request.header("If-Match"))
        return Response.empty(204)

    def get_twin(self, request: Request, _principal: Any, device_id: str) -> Response:
        return Response.json(200, self.backend.device(device_id).twin_wire())

    def _update_twin(self, request: Request, device_id: str, module_id: str | None, replace: bool) -> Response:
        self.backend.update_twin(device_id, module_id, _json(request), request.header("If-Match"), replace)
        device = self.backend.device(device_id)
        if module_id:
            return Response.json(200, device.module_twin_wire(self.backend.module(device_id, module_id)))
        return Response.json(200, device.twin_wire())

    def patch_twin(self, request: Request, _principal: Any, device_id: str) -> Response:
        return self._update_twin(request, device_id, None, replace=False)

    def replace_twin(self, request: Request, _principal: Any, device_id: str) -> Response:
        return self._update_twin(request, device_id, None, replace=True)

    def get_module_twin(self, request: Request, _principal: Any, device_id: str, module_id: str) -> Response:
        return Response.json(
            200, self.backend.device(device_id).module_twin_wire(self.backend.module(device_id, module_id))
        )

    def patch_module_twin(self, request: Request, _principal: Any, device_id: str, module_id: str) -> Response:
        return self._update_twin(request, device_id, module_id, replace=False)

    def replace_module_twin(self, request: Request, _principal: Any, device_id: str, module_id: str) -> Response:
        return self._update_twin(request, device_id, module_id, replace=True)

    def _configuration_wire(self, configuration_id: str) -> dict[str, Any]:
        return self.backend.configuration_wire(self.backend.configuration(configuration_id))

    def list_configurations(self, request: Request, _principal: Any) -> Response:
        top = _int_param(request.query.get("top"), "top")
        rows = self.backend.list_configurations(top)
        return Response.json(200, [self.backend.configuration_wire(r) for r in rows])

    def get_configuration(self, request: Request, _principal: Any, configuration_id: str) -> Response:
        return Response.json(200, self._configuration_wire(configuration_id))

    def put_configuration(self, request: Request, _principal: Any, configuration_id: str) -> Response:
        record, _created = self.backend.put_configuration(configuration_id, _json(request), request.header("If-Match"))
        return Response.json(200, self.backend.configuration_wire(record))

    def delete_configuration(self, request: Request, _principal: Any, configuration_id: str) -> Response:
        self.backend.delete_configuration(configuration_id, request.header("If-Match"))
        return Response.empty(204)

    def test_queries(self, request: Request, _principal: Any) -> Response:
        return Response.json(200, self.backend.test_queries(_json(request)))

    def apply_content(self, request: Request, _principal: Any, device_id: str) -> Response:
        self.backend.apply_configuration_content(device_id, _json(request))
        return Response.empty(204)

    def query(self, request: Request, _principal: Any) -> Response:
        size = _int_param(request.header("x-ms-max-item-count"), "x-ms-max-item-count")
        rows, token = self.backend.query(_json(request), size, request.header("x-ms-continuation"))
        headers = {"x-ms-item-type": "twin"}
        if token:
            headers["x-ms-continuation"] = token
        return Response.json(200, rows, headers)

    def device_statistics(self, request: Request, _principal: Any) -> Response:
        return Response.json(200, self.backend.statistics())

    def service_statistics(self, request: Request, _principal: Any) -> Response:
        connected = sum(1 for d in self.backend.devices.values() if d.connection_state == "Connected")
        return Response.json(200, {"connectedDeviceCount": connected})
