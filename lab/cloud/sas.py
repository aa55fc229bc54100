"""Shared access signatures as DPS and IoT Hub check them (protocols.md 1.2)."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import quote, quote_plus, unquote

PREFIX = "SharedAccessSignature "


class SasError(Exception):
    """The token is missing, malformed, expired, unknown or wrongly signed; the message says which."""


@dataclass(frozen=True)
class SasPolicy:
    name: str
    key: str
    rights: frozenset[str]


def parse_token(header: str | None) -> dict[str, str]:
    """Fields of ``SharedAccessSignature sr=..&sig=..&se=..&skn=..`` (any order), URL-decoded.

    ``sr_raw`` keeps sr exactly as sent, because that is the text some clients signed.
    """
    if not header:
        raise SasError("the Authorization header is missing")
    if not header.startswith(PREFIX):
        raise SasError("the Authorization header is not a SharedAccessSignature")
    fields: dict[str, str] = {}
    for part in header[len(PREFIX) :].strip().split("&"):
        name, sep, value = part.partition("=")
        if not sep:
            raise SasError(f"malformed token field {name!r}")
        if name == "sr":
            fields["sr_raw"] = value
        fields[name] = unquote(value)
    missing = [name for name in ("sr", "sig", "se") if name not in fields]
    if missing:
        raise SasError(f"the token lacks {', '.join(missing)}")
    return fields


def _signature(key: str, resource: str, expiry: str) -> bytes:
    try:
        secret = base64.b64decode(key)
    except (binascii.Error, ValueError) as exc:
        raise SasError("the signing key is not base64") from exc
    return hmac.new(secret, f"{resource}\n{expiry}".encode(), hashlib.sha256).digest()


def _check_signature_and_expiry(fields: Mapping[str, str], key: str, now: dt.datetime) -> None:
    try:
        expiry = int(fields["se"])
    except ValueError as exc:
        raise SasError("'se' is not an integer") from exc
    if expiry <= int(now.timestamp()):
        raise SasError("the token has expired")
    try:
        presented = base64.b64decode(fields["sig"], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SasError("'sig' is not base64") from exc
    decoded = fields["sr"]
    # Clients differ in how they encode sr before signing; accept any of the encodings seen in SDKs.
    candidates = {
        fields.get("sr_raw", decoded),
        quote_plus(decoded),
        quote_plus(decoded.lower()),
        quote(decoded, safe=""),
    }
    candidates |= {quote(decoded.lower(), safe="")}
    if not any(hmac.compare_digest(_signature(key, c, fields["se"]), presented) for c in candidates):
        raise SasError("the signature does not match")


def verify_policy_token(
    header: str | None, policies: Mapping[str, SasPolicy], hosts: Iterable[str], now: dt.datetime
) -> SasPolicy:
    """Check a service token signed with a shared access policy (``skn``) for one of ``hosts``."""
    fields = parse_token(header)
    allowed = {host.lower() for host in hosts}
    if fields["sr"].lower().rstrip("/") not in allowed:
        raise SasError(f"the token is for resource {fields['sr']!r}, not this service")
    policy = policies.get(fields.get("skn", ""))
    if policy is None:
        raise SasError(f"unknown shared access policy {fields.get('skn')!r}")
    _check_signature_and_expiry(fields, policy.key, now)
    return policy


def verify_resource_token(header: str | None, resource: str, keys: Iterable[str], now: dt.datetime) -> None:
    """Check a token without ``skn`` (a device's own SAS) for ``resource`` against the device's keys."""
    fields = parse_token(header)
    if fields["sr"].lower().rstrip("/") != resource.lower():
        raise SasError(f"the token is for resource {fields['sr']!r}, not {resource!r}")
    errors = []
    for key in keys:
        try:
            _check_signature_and_expiry(fields, key, now)
            return
        except SasError as error:
            errors.append(str(error))
    raise SasError(errors[0] if errors else "the device has no symmetric keys")


def make_token(resource: str, key: str, policy: str | None, expiry: int) -> str:
    """A token the way the Python SDKs build one (quote_plus of the resource, ``quote`` of the signature)."""
    encoded = quote_plus(resource)
    signature = quote(base64.b64encode(_signature(key, encoded, str(expiry))).decode())
    token = f"{PREFIX}sr={encoded}&sig={signature}&se={expiry}"
    return f"{token}&skn={policy}" if policy else token


def connection_string(host_name: str, policy: SasPolicy) -> str:
    return f"HostName={host_name};SharedAccessKeyName={policy.name};SharedAccessKey={policy.key}"


def derived_key(label: str, seed: int) -> str:
    """A well-known, reproducible development key (like Azurite's): never a secret outside the lab."""
    return base64.b64encode(hashlib.sha256(f"edgefleet-lab/{label}/{seed}".encode()).digest()).decode()
