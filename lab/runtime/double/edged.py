"""``aziot-edged``: the edge daemon of the double. Not implemented in this slice (see aziotd)."""

from __future__ import annotations

import sys

from edgefleet_iotedge_double import EDGE_VERSION
from edgefleet_iotedge_double.journal import log


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if "--version" in args:
        print(f"aziot-edged {EDGE_VERSION}")
        return 0
    log("INFO", "Starting Azure IoT Edge Daemon")
    log("INFO", f"Version - {EDGE_VERSION}")
    log("ERROR", "the edgefleet test double does not implement aziot-edged yet")
    return 1
