# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# PRIVATE to the edgefleet.iotedge collection. Do not use this from other collections:
# it may change at any time.

"""Azure service connection strings (DPS and IoT Hub share the format). Errors never repeat the string."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from ansible_collections.edgefleet.iotedge.plugins.module_utils._http import ConfigurationError

# Where the modules read a connection string from when the option is not set.
DPS_CONNECTION_STRING_ENV = "EDGEFLEET_DPS_CONNECTION_STRING"
IOTHUB_CONNECTION_STRING_ENV = "EDGEFLEET_IOTHUB_CONNECTION_STRING"
REQUIRED_FIELDS = ("HostName", "SharedAccessKeyName", "SharedAccessKey")
# A DNS name or an IP address, with an optional port (the lab uses host:port); applied with fullmatch.
HOST_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::[0-9]{1,5})?")


@dataclass(frozen=True)
class ConnectionString:
    host_name: str
    key_name: str
    key: str = ""

    def __repr__(self) -> str:  # never show the key, even in a traceback
        return f"ConnectionString(host_name={self.host_name!r}, key_name={self.key_name!r}, key=<hidden>)"

    @property
    def text(self) -> str:
        return f"HostName={self.host_name};SharedAccessKeyName={self.key_name};SharedAccessKey={self.key}"


def parse_service_connection_string(
    text, *, field: str, service: str, where_to_find: str, example_host: str, check_fields=None
) -> ConnectionString:
    """``HostName=...;SharedAccessKeyName=...;SharedAccessKey=...`` -> ConnectionString.

    ``service`` names the kind ("DPS service"), ``where_to_find`` says where the user gets one, and
    ``check_fields(fields)`` may refuse a string of the wrong kind before the generic checks run.
    """
    if not isinstance(text, str) or not text.strip():
        raise ConfigurationError(f"{field}: missing; pass the {service} connection string ({where_to_find})")
    parts = {}
    for segment in text.strip().strip(";").split(";"):
        name, sep, value = segment.partition("=")
        if not sep or not name.strip():
            raise ConfigurationError(
                f"{field}: not a connection string (expected Key=Value pairs separated by ';', like "
                f"HostName={example_host};SharedAccessKeyName=<policy>;SharedAccessKey=<key>)"
            )
        parts[name.strip()] = value.strip()
    if check_fields is not None:
        check_fields(parts)
    missing = [name for name in REQUIRED_FIELDS if not parts.get(name)]
    if missing:
        raise ConfigurationError(
            f"{field}: lacks {', '.join(missing)}; the {service} connection string has HostName, "
            "SharedAccessKeyName and SharedAccessKey"
        )
    try:
        base64.b64decode(parts["SharedAccessKey"], validate=True)
    except (binascii.Error, ValueError):
        raise ConfigurationError(
            f"{field}: SharedAccessKey is not base64; copy the key again from the shared access policy"
        ) from None
    host = parts["HostName"]
    if not HOST_NAME.fullmatch(host):
        raise ConfigurationError(
            f"{field}: HostName must be a host name (with an optional :port), not a URL, without spaces or line breaks"
        )
    return ConnectionString(host_name=host, key_name=parts["SharedAccessKeyName"], key=parts["SharedAccessKey"])


__all__ = (
    "DPS_CONNECTION_STRING_ENV",
    "IOTHUB_CONNECTION_STRING_ENV",
    "ConnectionString",
    "parse_service_connection_string",
)
