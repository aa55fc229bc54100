"""Fault injection: make the next N matching requests fail the way a throttled or sick service does."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Any

SUPPORTED_STATUSES = (429, 500, 502, 503, 504)
# The fields a rule may have: anything else (a misspelt or a made-up field) is refused, never ignored.
RULE_FIELDS = frozenset(("match", "count", "action", "rate"))
MATCH_FIELDS = frozenset(("service", "method", "path", "operation"))
ACTION_FIELDS = frozenset(("status", "retryAfter", "delay", "drop", "afterProcessing"))


class FaultSpecError(ValueError):
    """A fault rule that cannot be applied; the message names the field."""


@dataclass
class FaultRule:
    """Match by service, method, path regex and/or operation name; act with a status, a delay or a drop."""

    rule_id: int
    remaining: int
    service: str | None = None
    method: str | None = None
    path: str | None = None
    operation: str | None = None
    status: int | None = None
    retry_after: int | None = None
    delay: float = 0.0
    drop: bool = False
    # Drop only after the service acted: the client never hears of a write that happened.
    after_processing: bool = False
    rate: float = 1.0
    seen: int = 0
    hits: int = 0
    _path_regex: re.Pattern[str] | None = field(default=None, repr=False)

    def matches(self, service: str, method: str, path: str, operation: str | None) -> bool:
        if self.remaining <= 0:
            return False
        if self.service and self.service != service:
            return False
        if self.method and self.method.upper() != method:
            return False
        if self.operation and self.operation != operation:
            return False
        return not (self._path_regex and not self._path_regex.search(path))

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.rule_id,
            "remaining": self.remaining,
            "hits": self.hits,
            "match": {"service": self.service, "method": self.method, "path": self.path, "operation": self.operation},
            "action": {
                "status": self.status,
                "retryAfter": self.retry_after,
                "delay": self.delay,
                "drop": self.drop,
                "afterProcessing": self.after_processing,
            },
            "rate": self.rate,
        }


class FaultInjector:
    """Thread-safe list of rules; the first rule that matches a request consumes one of its ``count``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []
        self._next_id = 1

    def add(self, spec: dict[str, Any]) -> FaultRule:
        """Add a rule from its JSON form: ``{"match": {...}, "count": N, "action": {...}}``."""
        if not isinstance(spec, dict):
            raise FaultSpecError("fault must be a JSON object")
        match = spec.get("match") or {}
        action = spec.get("action") or {}
        if not isinstance(match, dict) or not isinstance(action, dict):
            raise FaultSpecError("'match' and 'action' must be JSON objects")
        for where, given, known in (
            ("", spec, RULE_FIELDS),
            ("match.", match, MATCH_FIELDS),
            ("action.", action, ACTION_FIELDS),
        ):
            unknown = sorted(set(given) - known)
            if unknown:
                raise FaultSpecError(
                    f"unknown field(s) {', '.join(repr(where + name) for name in unknown)}; a rule has "
                    f"{', '.join(sorted(known))}"
                    + (" ('rate' is the share of matching requests hit)" if "probability" in unknown else "")
                )
        count = spec.get("count", 1)
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise FaultSpecError("'count' must be a positive integer")
        status = action.get("status")
        if status is not None and status not in SUPPORTED_STATUSES:
            raise FaultSpecError(f"'action.status' must be one of {list(SUPPORTED_STATUSES)}")
        delay = action.get("delay", 0.0)
        if not isinstance(delay, int | float) or isinstance(delay, bool) or not 0 <= delay <= 120:
            raise FaultSpecError("'action.delay' must be a number of seconds between 0 and 120")
        drop = bool(action.get("drop", False))
        after_processing = bool(action.get("afterProcessing", False))
        if after_processing and not drop:
            raise FaultSpecError("'action.afterProcessing' goes with 'drop': true")
        if status is None and not drop and not delay:
            raise FaultSpecError("'action' needs at least one of 'status', 'delay' or 'drop'")
        rate = spec.get("rate", 1.0)
        if not isinstance(rate, int | float) or isinstance(rate, bool) or not 0 < rate <= 1:
            raise FaultSpecError("'rate' must be a number in (0, 1]")
        retry_after = action.get("retryAfter")
        if status == 429 and retry_after is None:
            retry_after = 1
        path = match.get("path")
        try:
            path_regex = re.compile(path) if path else None
        except re.error as exc:
            raise FaultSpecError(f"'match.path' is not a valid regular expression: {exc}") from exc
        with self._lock:
            rule = FaultRule(
                rule_id=self._next_id,
                remaining=count,
                service=match.get("service"),
                method=match.get("method"),
                path=path,
                operation=match.get("operation"),
                status=status,
                retry_after=retry_after,
                delay=float(delay),
                drop=drop,
                after_processing=after_processing,
                rate=float(rate),
                _path_regex=path_regex,
            )
            self._next_id += 1
            self._rules.append(rule)
        return rule

    def take(self, service: str, method: str, path: str, operation: str | None) -> FaultRule | None:
        with self._lock:
            for rule in self._rules:
                if rule.matches(service, method, path, operation):
                    # A rate spreads hits evenly and deterministically: the k-th matching request is hit
                    # whenever floor(k * rate) grows, so exactly that share fails, in any run.
                    rule.seen += 1
                    if int(rule.seen * rule.rate) == int((rule.seen - 1) * rule.rate):
                        continue
                    rule.remaining -= 1
                    rule.hits += 1
                    return rule
        return None

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def to_list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [rule.to_dict() for rule in self._rules]
