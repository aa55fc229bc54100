"""``aziotd <service>``: the identity-service daemons of the double (keyd, certd, identityd, tpmd).

Not implemented in this slice: a service that systemd starts says so in the journal and exits with failure,
so nothing looks provisioned that is not.
"""

from __future__ import annotations

import sys

from edgefleet_iotedge_double import IDENTITY_SERVICE_VERSION
from edgefleet_iotedge_double.journal import log


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    service = args[0] if args else "aziotd"
    if "--version" in args:
        print(f"{service} {IDENTITY_SERVICE_VERSION}")
        return 0
    log("ERROR", f"{service} {IDENTITY_SERVICE_VERSION}: the edgefleet test double does not implement it yet")
    return 1
