# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# PRIVATE to the edgefleet.iotedge collection. Do not use this from other collections:
# it may change at any time.

"""How an input value appears in an error message: quoted, cut short, and never when it looks like a secret.

A value is echoed so that the user sees which one is wrong; a connection string pasted into the wrong variable
must not be echoed in full, so anything that carries a key, a signature, a password or PEM material is named by
its kind and length only. Error messages can then always be shown, even from tasks that handle secrets.
"""

from __future__ import annotations

import re

# Markers of credentials: Azure connection strings and SAS tokens, PEM blocks, PKCS#11 PINs, URL passwords.
_SECRET_MARKERS = re.compile(
    r"sharedaccesskey|sharedaccesssignature|\bsig=|-----begin|pin-value|pin-source|password|secret|"
    r"[a-z][a-z0-9+.-]*://[^/\s:@]*:[^/\s@]*@",
    re.IGNORECASE,
)
# Longer values are cut: the start is enough to recognise a value, and a log line stays readable.
MAX_SHOWN = 80


def looks_secret(value: str) -> bool:
    return bool(_SECRET_MARKERS.search(value))


def shown(value, *, limit: int = MAX_SHOWN) -> str:
    """``repr`` of a value for an error message, unless it looks like a secret; long values are shortened."""
    if isinstance(value, str):
        if looks_secret(value):
            return f"a value that looks like a secret ({len(value)} characters, not shown)"
        if len(value) > limit:
            return repr(value[:limit]) + f"... ({len(value)} characters)"
        return repr(value)
    if isinstance(value, dict):
        return f"a dictionary of {len(value)} items"
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)} items"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


__all__ = ("MAX_SHOWN", "looks_secret", "shown")
