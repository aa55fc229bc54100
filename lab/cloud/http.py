"""Transport-neutral request/response types and the route table shared by every emulated service."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from email.message import Message
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from cryptography import x509


@dataclass
class Request:
    """One HTTP request as the services see it: path already percent-decoded, TLS client chain attached."""

    method: str
    raw_path: str
    path: str
    query: dict[str, str]
    headers: Message
    body: bytes
    request_id: str
    client_chain: list[x509.Certificate] = field(default_factory=list)

    @classmethod
    def build(
        cls,
        method: str,
        target: str,
        headers: Message,
        body: bytes,
        request_id: str,
        client_chain: list[x509.Certificate] | None = None,
    ) -> Request:
        parts = urlsplit(target)
        return cls(
            method=method.upper(),
            raw_path=parts.path,
            path=unquote(parts.path),
            query=dict(parse_qsl(parts.query, keep_blank_values=True)),
            headers=headers,
            body=body,
            request_id=request_id,
            client_chain=client_chain or [],
        )

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def json_body(self) -> Any:
        """Decoded JSON body; ``None`` for an empty body. Raises ``ValueError`` on malformed JSON."""
        if not self.body.strip():
            return None
        return json.loads(self.body.decode("utf-8"))


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
        merged = {"Content-Type": "application/json; charset=utf-8"}
        merged.update(headers or {})
        return cls(status, json.dumps(payload).encode(), merged)

    @classmethod
    def empty(cls, status: int = 204, headers: dict[str, str] | None = None) -> Response:
        return cls(status, b"", dict(headers or {}))


@dataclass(frozen=True)
class Route:
    """One row of a service's routing table; ``operation`` is the operationId from the service's swagger."""

    method: str
    template: str
    operation: str
    handler: str
    permission: str | None = None
    pattern: re.Pattern[str] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", self.template)
        object.__setattr__(self, "pattern", re.compile(f"{regex}/?", re.IGNORECASE))


@dataclass(frozen=True)
class RouteMatch:
    route: Route
    params: dict[str, str]


class Router:
    """Matches method + path against a table; tells "no such path" apart from "wrong method"."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = list(routes)

    def match(self, method: str, path: str) -> RouteMatch | list[str]:
        """A match, or the list of methods the path allows (empty when the path is unknown)."""
        allowed: list[str] = []
        for route in self.routes:
            found = route.pattern.fullmatch(path)
            if not found:
                continue
            if route.method == method:
                return RouteMatch(route, found.groupdict())
            allowed.append(route.method)
        return allowed


Handler = Callable[[Request, dict[str, str]], Response]


class ServiceError(Exception):
    """Base of every emulator error; each service renders its own envelope in ``to_response``."""

    def __init__(self, status: int, code: str | int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})

    def to_response(self, request_id: str, tracking_id: str, timestamp: str) -> Response:
        raise NotImplementedError


def strip_etag(value: str | None) -> str | None:
    """Clients send etags quoted (azure-iot-hub) or bare (DPS clients); compare them bare."""
    if value is None:
        return None
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    return value
