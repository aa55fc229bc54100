"""Glue between the route table, authentication, the responses layer and a service's error envelope."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from lab.cloud.clock import Clock, iso_utc
from lab.cloud.faults import FaultRule
from lab.cloud.http import Request, Response, Route, RouteMatch, Router, ServiceError

LOG = logging.getLogger(__name__)


class BaseService:
    """One emulated endpoint. Subclasses give ``name``, ``routes``, ``authorize`` and the error constructors."""

    name = "service"

    def __init__(self, router: Router, clock: Clock) -> None:
        self.router = router
        self.clock = clock

    # Subclass hooks -------------------------------------------------------------------------------------------

    def authorize(self, request: Request, match: RouteMatch) -> Any:
        raise NotImplementedError

    def route_missing(self, request: Request, allowed: list[str]) -> ServiceError:
        raise NotImplementedError

    def api_version_missing(self) -> ServiceError:
        raise NotImplementedError

    def internal_error(self, status: int = 500) -> ServiceError:
        raise NotImplementedError

    def throttled(self, retry_after: int) -> ServiceError:
        raise NotImplementedError

    def requires_api_version(self, route: Route) -> bool:
        return True

    def unsupported_api_version(self, version: str) -> ServiceError | None:
        """The service's refusal of an api-version it does not publish, or None to accept it."""
        return None

    # Pipeline -------------------------------------------------------------------------------------------------

    def resolve(self, request: Request) -> RouteMatch | list[str]:
        return self.router.match(request.method, request.path)

    def render(self, error: ServiceError, request: Request) -> Response:
        return error.to_response(request.request_id, uuid.uuid4().hex, iso_utc(self.clock.now()))

    def handle(self, request: Request, match: RouteMatch | list[str]) -> Response:
        try:
            if not isinstance(match, RouteMatch):
                raise self.route_missing(request, match)
            if self.requires_api_version(match.route):
                version = request.query.get("api-version")
                if not version:
                    raise self.api_version_missing()
                refusal = self.unsupported_api_version(version)
                if refusal is not None:
                    raise refusal
            principal = self.authorize(request, match)
            handler = getattr(self, match.route.handler)
            return handler(request, principal, **match.params)
        except ServiceError as error:
            return self.render(error, request)
        except Exception:  # a bug in the emulator must still answer in the service's shape
            LOG.exception("%s: unhandled error for %s %s", self.name, request.method, request.path)
            return self.render(self.internal_error(), request)

    def fault_response(self, request: Request, rule: FaultRule) -> Response:
        status = rule.status or 500
        error = self.throttled(rule.retry_after or 1) if status == 429 else self.internal_error(status)
        if rule.retry_after is not None and status != 429:
            error.headers["Retry-After"] = str(rule.retry_after)
        return self.render(error, request)
