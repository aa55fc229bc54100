"""The slice of the IoT Hub query language the lab needs: target conditions and ``SELECT * FROM devices``.

Supported: ``AND``/``OR``/``NOT``, parentheses, ``= != <> < > <= >=``, ``IN [..]``, string/number/boolean/null
literals and dotted paths such as ``tags.environment`` or ``properties.reported.x``. Anything else is a 400.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

TOKEN = re.compile(
    r"\s*(?:(?P<string>'(?:[^']|'')*'|\"(?:[^\"])*\")|(?P<number>-?\d+(?:\.\d+)?)"
    r"|(?P<op><>|!=|<=|>=|=|<|>)|(?P<punct>[()\[\],*])|(?P<word>[A-Za-z_$][\w$.\-]*))"
)
KEYWORDS = {"AND", "OR", "NOT", "IN", "TRUE", "FALSE", "NULL"}

Predicate = Callable[[dict[str, Any]], bool]


class QueryError(ValueError):
    """The query is outside the supported language; the message says where."""


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    position = 0
    text = text.rstrip()
    while position < len(text):
        found = TOKEN.match(text, position)
        if not found or found.end() == position:
            raise QueryError(f"unexpected text at {position}: {text[position : position + 20]!r}")
        kind = found.lastgroup or ""
        value = found.group(kind)
        if kind == "word" and value.upper() in KEYWORDS:
            kind, value = "keyword", value.upper()
        tokens.append((kind, value))
        position = found.end()
    return tokens


def _resolve(document: dict[str, Any], path: str) -> Any:
    current: Any = document
    for part in path.split("."):
        if not isinstance(current, dict) or part not in current:
            return None
        current = current[part]
    return current


def _compare(left: Any, op: str, right: Any) -> bool:
    if op == "=":
        return bool(left == right)
    if op in ("!=", "<>"):
        return bool(left != right)
    if left is None or right is None or type(left) is not type(right):
        return False
    return bool({"<": left < right, ">": left > right, "<=": left <= right, ">=": left >= right}[op])


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.index = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def take(self, kind: str | None = None, value: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if token is None or (kind and token[0] != kind) or (value and token[1] != value):
            raise QueryError(f"expected {value or kind} but found {token[1] if token else 'end of query'!r}")
        self.index += 1
        return token

    def parse(self) -> Predicate:
        predicate = self.or_expr()
        if self.peek() is not None:
            raise QueryError(f"unexpected {self.peek()[1]!r}")  # type: ignore[index]
        return predicate

    def or_expr(self) -> Predicate:
        parts = [self.and_expr()]
        while self.peek() == ("keyword", "OR"):
            self.take()
            parts.append(self.and_expr())
        return parts[0] if len(parts) == 1 else (lambda doc: any(p(doc) for p in parts))

    def and_expr(self) -> Predicate:
        parts = [self.not_expr()]
        while self.peek() == ("keyword", "AND"):
            self.take()
            parts.append(self.not_expr())
        return parts[0] if len(parts) == 1 else (lambda doc: all(p(doc) for p in parts))

    def not_expr(self) -> Predicate:
        if self.peek() == ("keyword", "NOT"):
            self.take()
            inner = self.not_expr()
            return lambda doc: not inner(doc)
        if self.peek() == ("punct", "("):
            self.take()
            inner = self.or_expr()
            self.take("punct", ")")
            return inner
        return self.comparison()

    def literal(self) -> Any:
        kind, value = self.take()
        if kind == "string":
            return value[1:-1].replace("''", "'") if value[0] == "'" else value[1:-1]
        if kind == "number":
            return float(value) if "." in value else int(value)
        if kind == "keyword" and value in ("TRUE", "FALSE", "NULL"):
            return {"TRUE": True, "FALSE": False, "NULL": None}[value]
        raise QueryError(f"expected a literal but found {value!r}")

    def comparison(self) -> Predicate:
        _kind, path = self.take("word")
        if self.peek() == ("keyword", "IN"):
            self.take()
            self.take("punct", "[")
            options = [self.literal()]
            while self.peek() == ("punct", ","):
                self.take()
                options.append(self.literal())
            self.take("punct", "]")
            return lambda doc: _resolve(doc, path) in options
        _kind, op = self.take("op")
        right = self.literal()
        return lambda doc: _compare(_resolve(doc, path), op, right)


def compile_condition(text: str) -> Predicate:
    """A predicate over a twin document; ``*`` (or empty) matches every document."""
    if not text or text.strip() == "*":
        return lambda _doc: True
    return _Parser(text).parse()


SELECT = re.compile(r"\s*SELECT\s+\*\s+FROM\s+(devices(?:\.modules)?)\s*(?:WHERE\s+(.+))?", re.IGNORECASE | re.DOTALL)


def compile_select(text: str) -> tuple[str, Predicate]:
    """``(collection, predicate)`` for ``SELECT * FROM devices|devices.modules [WHERE ...]``."""
    found = SELECT.fullmatch(text or "")
    if not found:
        raise QueryError("only 'SELECT * FROM devices' or 'devices.modules' [WHERE ...] is supported")
    return found.group(1).lower(), compile_condition(found.group(2) or "")
