"""The slice of the IoT Hub query language that deployments and their metrics use.

Supported: ``AND``/``OR``/``NOT``, parentheses, ``= != <> < > <= >=`` between a path and a literal or between two
paths (``properties.desired.$version = properties.reported.lastDesiredVersion``), ``IN [..]``, ``IS_DEFINED(path)``,
string/number/boolean/null literals, dotted paths such as ``tags.environment`` or ``properties.reported.x`` and the
``configurations.[[<id>]].status`` segment form; ``SELECT *`` or ``SELECT <path>, ...`` ``FROM devices`` or
``devices.modules`` with an optional ``WHERE``. Anything else is a ``QueryError``.

As in the hub, a path that is not in the document is *undefined*: every comparison with it is false (a missing
``tags.ring`` is neither ``= 'canary'`` nor ``!= 'canary'``), and values of different JSON types are never equal.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

SEGMENT = r"(?:\[\[(?:(?!\]\]).)*\]\]|[A-Za-z_$][\w$\-]*)"
TOKEN = re.compile(
    r"\s*(?:(?P<string>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")|(?P<number>-?\d+(?:\.\d+)?)"
    r"|(?P<op><>|!=|<=|>=|=|<|>)|(?P<punct>[()\[\],*])"
    rf"|(?P<word>{SEGMENT}(?:\.(?:{SEGMENT}|\d+))*))"
)
PATH_SEGMENTS = re.compile(r"\[\[((?:(?!\]\]).)*)\]\]|([^.]+)")
KEYWORDS = {"AND", "OR", "NOT", "IN", "TRUE", "FALSE", "NULL"}

Predicate = Callable[[dict[str, Any]], bool]
Operand = Callable[[dict[str, Any]], Any]


class QueryError(ValueError):
    """The query is outside the supported language; the message says where."""


class _Undefined:
    """A path the document does not have (distinct from a JSON ``null``)."""

    def __repr__(self) -> str:
        return "undefined"


UNDEFINED = _Undefined()


# The escapes of a string literal ("Expressions and conditions" in Microsoft's IoT Hub query language article):
# \' \" \\ and \uXXXX. Any other backslash is refused rather than read some other way.
_ESCAPE = re.compile(r"\\(?:u([0-9A-Fa-f]{4})|(.))", re.S)
BACKSLASH = "\\"
ESCAPES_HINT = r"use \' \" \\ or \uXXXX"


def _unescaped(body: str) -> str:
    def replace(found: re.Match) -> str:
        if found.group(1):
            return chr(int(found.group(1), 16))
        if found.group(2) in ("'", '"', "\\"):
            return found.group(2)
        raise QueryError(f"unknown escape {BACKSLASH}{found.group(2)} in a string literal ({ESCAPES_HINT})")

    return _ESCAPE.sub(replace, body)


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


def path_segments(path: str) -> list[str]:
    """``configurations.[[my.id]].status`` -> ``['configurations', 'my.id', 'status']``."""
    return [found[1] if found[1] is not None else found[2] for found in PATH_SEGMENTS.finditer(path)]


def resolve(document: dict[str, Any], path: str) -> Any:
    """The value at ``path`` or ``UNDEFINED``."""
    current: Any = document
    for part in path_segments(path):
        if not isinstance(current, dict) or part not in current:
            return UNDEFINED
        current = current[part]
    return current


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def _equal(left: Any, right: Any) -> bool:
    return _kind(left) == _kind(right) and left == right


def _compare(left: Any, op: str, right: Any) -> bool:
    if left is UNDEFINED or right is UNDEFINED:
        return False
    if op == "=":
        return _equal(left, right)
    if op in ("!=", "<>"):
        return not _equal(left, right)
    if _kind(left) != _kind(right) or _kind(left) not in ("number", "str"):
        return False
    return bool({"<": left < right, ">": left > right, "<=": left <= right, ">=": left >= right}[op])


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.index = 0

    def peek(self, offset: int = 0) -> tuple[str, str] | None:
        position = self.index + offset
        return self.tokens[position] if position < len(self.tokens) else None

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
            return _unescaped(value[1:-1])
        if kind == "number":
            return float(value) if "." in value else int(value)
        if kind == "keyword" and value in ("TRUE", "FALSE", "NULL"):
            return {"TRUE": True, "FALSE": False, "NULL": None}[value]
        raise QueryError(f"expected a literal but found {value!r}")

    def operand(self) -> Operand:
        """A path (read from the document) or a literal."""
        token = self.peek()
        if token is not None and token[0] == "word":
            self.take()
            path = token[1]
            return lambda doc: resolve(doc, path)
        value = self.literal()
        return lambda _doc: value

    def is_defined(self) -> Predicate:
        self.take("word")
        self.take("punct", "(")
        _kind, path = self.take("word")
        self.take("punct", ")")
        return lambda doc: resolve(doc, path) is not UNDEFINED

    def comparison(self) -> Predicate:
        token = self.peek()
        if (
            token is not None
            and token[0] == "word"
            and token[1].upper() == "IS_DEFINED"
            and self.peek(1)
            == (
                "punct",
                "(",
            )
        ):
            return self.is_defined()
        left = self.operand()
        if self.peek() == ("keyword", "IN"):
            self.take()
            self.take("punct", "[")
            options = [self.literal()]
            while self.peek() == ("punct", ","):
                self.take()
                options.append(self.literal())
            self.take("punct", "]")
            return lambda doc: any(_compare(left(doc), "=", option) for option in options)
        _kind, op = self.take("op")
        right = self.operand()
        return lambda doc: _compare(left(doc), op, right(doc))


def compile_condition(text: str) -> Predicate:
    """A predicate over a twin document; ``*`` (or empty) matches every document."""
    if not text or text.strip() == "*":
        return lambda _doc: True
    return _Parser(text).parse()


QUERY = re.compile(
    r"\s*SELECT\s+(?P<fields>.+?)\s+FROM\s+(?P<collection>devices(?:\.modules)?)(?:\s+WHERE\s+(?P<where>.+?))?\s*",
    re.IGNORECASE | re.DOTALL,
)
FIELD = re.compile(SEGMENT + r"(?:\." + SEGMENT + r")*")


@dataclass(frozen=True)
class Query:
    """``SELECT <fields> FROM <collection> [WHERE ...]``; ``fields`` is empty for ``*``."""

    collection: str
    fields: tuple[str, ...]
    predicate: Predicate

    def project(self, document: dict[str, Any]) -> dict[str, Any]:
        """The row the hub answers: the whole twin, or each selected field under its last name when defined."""
        if not self.fields:
            return document
        row = {}
        for path in self.fields:
            value = resolve(document, path)
            if value is not UNDEFINED:
                row[path_segments(path)[-1]] = value
        return row


def _fields(text: str) -> tuple[str, ...]:
    if text.strip() == "*":
        return ()
    fields = tuple(part.strip() for part in text.split(","))
    for field in fields:
        if not FIELD.fullmatch(field):
            raise QueryError(f"only '*' or property paths can be selected, not {field!r}")
    return fields


def parse_query(text: str) -> Query:
    found = QUERY.fullmatch(text or "")
    if not found:
        raise QueryError("only 'SELECT * | <paths> FROM devices | devices.modules [WHERE ...]' is supported")
    predicate = compile_condition(found.group("where") or "")
    return Query(found.group("collection").lower(), _fields(found.group("fields")), predicate)


def compile_select(text: str) -> tuple[str, Predicate]:
    """``(collection, predicate)`` for ``SELECT * FROM devices|devices.modules [WHERE ...]`` (whole twins only)."""
    query = parse_query(text)
    if query.fields:
        raise QueryError("only 'SELECT * FROM devices' or 'devices.modules' [WHERE ...] returns whole twins")
    return query.collection, query.predicate
