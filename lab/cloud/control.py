"""The control plane under ``/_emulator/`` on every lab port: health, reset, state, requests, faults, clock.

It needs no SAS (the lab listens on 127.0.0.1 only) and answers plain JSON, never a service's error envelope.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

from lab.cloud.clock import ManualClock
from lab.cloud.faults import FaultSpecError
from lab.cloud.http import Request, Response, ServiceError
from lab.cloud.runtime import LabRuntime

PREFIX = "/_emulator"
REPORT_PATH = re.compile(r"/_emulator/iothub/twins/(?P<device>[^/]+)(?:/modules/(?P<module>[^/]+))?/?")


def _error(status: int, message: str) -> Response:
    return Response.json(status, {"error": message})


class ControlPlane:
    def __init__(self, runtime: LabRuntime, describe: Any = None) -> None:
        self.runtime = runtime
        self.describe = describe or (lambda: {})

    def handle(self, request: Request, default_hub_host: str | None = None) -> Response:
        try:
            body = request.json_body()
        except (ValueError, UnicodeDecodeError):
            return _error(400, "the body is not valid JSON")
        path, method = request.path.rstrip("/"), request.method
        if path == f"{PREFIX}/health" and method == "GET":
            return Response.json(200, {"status": "ok", "services": self.describe()})
        if path == f"{PREFIX}/reset" and method == "POST":
            seed = (body or {}).get("seed") if isinstance(body, dict) else None
            if seed is not None and not isinstance(seed, int):
                return _error(400, "'seed' must be an integer")
            self.runtime.reset(seed)
            return Response.json(200, {"status": "reset"})
        if path == f"{PREFIX}/state" and method == "GET":
            return Response(
                200, json.dumps(self.runtime.state(), indent=2).encode(), {"Content-Type": "application/json"}
            )
        if path == f"{PREFIX}/requests":
            if method == "GET":
                return Response.json(200, list(self.runtime.request_log))
            if method == "DELETE":
                self.runtime.request_log.clear()
                return Response.empty(204)
        if path == f"{PREFIX}/faults":
            return self._faults(method, body)
        if path == f"{PREFIX}/clock" and method == "POST":
            return self._clock(body)
        if path == f"{PREFIX}/est" and method == "POST":
            return self._est(body)
        found = REPORT_PATH.fullmatch(request.path)
        if found and method == "PATCH":
            return self._report(request, body, found.group("device"), found.group("module"), default_hub_host)
        if found and method == "GET":
            return self._twin(request, found.group("device"), found.group("module"), default_hub_host)
        return _error(404, f"no control operation {method} {request.path}")

    def _faults(self, method: str, body: Any) -> Response:
        if method == "GET":
            return Response.json(200, self.runtime.faults.to_list())
        if method == "DELETE":
            self.runtime.faults.clear()
            return Response.empty(204)
        if method == "POST":
            try:
                rule = self.runtime.faults.add(body)
            except FaultSpecError as error:
                return _error(400, str(error))
            return Response.json(201, rule.to_dict())
        return _error(405, "use GET, POST or DELETE")

    def _est(self, body: Any) -> Response:
        """Lab-only: the EST server's certificate lifetime, and bootstrap identities as a manufacturer installs them."""
        est = self.runtime.est
        if est is None or not isinstance(body, dict):
            return _error(400, "send a JSON object: cert_validity_seconds and/or bootstrap_identity (and public_key)")
        answer: dict = {}
        seconds = body.get("cert_validity_seconds")
        if seconds is not None:
            if not isinstance(seconds, int) or isinstance(seconds, bool) or seconds < 60:
                return _error(400, "'cert_validity_seconds' must be an integer of at least 60")
            with self.runtime.lock:
                est.cert_validity = dt.timedelta(seconds=seconds)
            answer["cert_validity_seconds"] = seconds
        common_name = body.get("bootstrap_identity")
        if common_name is not None:
            if not isinstance(common_name, str) or not common_name or len(common_name) > 64:
                return _error(400, "'bootstrap_identity' must be a common name of 1 to 64 characters")
            public_key = body.get("public_key")
            if public_key is None:
                answer["cert"], answer["key"] = est.bootstrap_identity(common_name)
            else:
                # A key the device holds (in its HSM): only the certificate comes back.
                try:
                    answer["cert"] = est.bootstrap_certificate(common_name, public_key)
                except ValueError as error:
                    return _error(400, f"'public_key' must be a PEM EC or RSA public key: {error}")
        return Response.json(200, answer)

    def _clock(self, body: Any) -> Response:
        clock = self.runtime.clock
        if not isinstance(clock, ManualClock):
            return _error(409, "the lab runs on the system clock; start it with a ManualClock to move time")
        seconds = body.get("advance") if isinstance(body, dict) else None
        if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
            return _error(400, "'advance' must be a non-negative number of seconds")
        return Response.json(200, {"now": clock.advance(float(seconds)).isoformat()})

    def _twin(self, request: Request, device_id: str, module_id: str | None, default_hub_host: str | None) -> Response:
        """Lab-only: the twin a device or module reads over MQTT/AMQP (desired properties from deployments)."""
        hub = self.runtime.hub_by_host(request.query.get("hub") or default_hub_host)
        if hub is None:
            return _error(404, "unknown hub")
        with self.runtime.lock:
            try:
                device = hub.device(device_id)
                twin = device.module_twin_wire(hub.module(device_id, module_id)) if module_id else device.twin_wire()
            except ServiceError as error:
                return _error(error.status, error.message)
        return Response.json(200, twin)

    def _report(
        self, request: Request, body: Any, device_id: str, module_id: str | None, default_hub_host: str | None
    ) -> Response:
        """Lab-only: what a device or edgeAgent would send over MQTT/AMQP (reported properties, connection)."""
        hub = self.runtime.hub_by_host(request.query.get("hub") or default_hub_host)
        if hub is None:
            return _error(404, "unknown hub")
        if not isinstance(body, dict):
            return _error(400, 'body must be {"reported": {...}, "connectionState": "Connected"}')
        with self.runtime.lock:
            try:
                hub.report(device_id, module_id, body.get("reported"), body.get("connectionState"))
                device = hub.device(device_id)
                twin = device.module_twin_wire(hub.module(device_id, module_id)) if module_id else device.twin_wire()
            except ServiceError as error:
                return _error(error.status, error.message)
        return Response.json(200, twin)
