"""Per-port request pipeline: control plane, or route -> fault injection -> service (auth, handler, errors)."""

from __future__ import annotations

import time
import uuid

from lab.cloud.control import PREFIX, ControlPlane
from lab.cloud.http import Request, Response, RouteMatch
from lab.cloud.runtime import LabRuntime
from lab.cloud.service import BaseService


class ServiceDispatcher:
    """Implements ``httpserver.Dispatcher`` for one port; ``services`` are tried by path prefix, last is default."""

    def __init__(
        self,
        runtime: LabRuntime,
        control: ControlPlane,
        services: list[tuple[str, BaseService]],
        hub_host: str | None = None,
    ) -> None:
        self.runtime = runtime
        self.control = control
        self.services = services
        self.hub_host = hub_host

    def new_request_id(self) -> str:
        return str(uuid.uuid4())

    def _service_for(self, path: str) -> BaseService:
        for prefix, service in self.services:
            if prefix and path.startswith(prefix):
                return service
        return self.services[-1][1]

    def dispatch(self, request: Request) -> Response | None:
        if request.path == PREFIX or request.path.startswith(PREFIX + "/"):
            return self.control.handle(request, self.hub_host)
        service = self._service_for(request.path)
        match = service.resolve(request)
        operation = match.route.operation if isinstance(match, RouteMatch) else None
        response: Response | None = None
        rule = self.runtime.faults.take(service.name, request.method, request.path, operation)
        if rule is not None:
            if rule.delay:
                time.sleep(rule.delay)
            if rule.drop and rule.after_processing:
                with self.runtime.lock:
                    service.handle(request, match)
                self._log(service.name, request, operation, None)
                return None
            if rule.drop:
                self._log(service.name, request, operation, None)
                return None
            if rule.status:
                response = service.fault_response(request, rule)
        if response is None:
            with self.runtime.lock:
                response = service.handle(request, match)
        self._log(service.name, request, operation, response.status)
        return response

    def _log(self, service: str, request: Request, operation: str | None, status: int | None) -> None:
        query = "&".join(f"{k}={v}" for k, v in request.query.items())
        self.runtime.log_request(
            service, request.method, request.path, query, operation, status, request.header("If-Match")
        )
