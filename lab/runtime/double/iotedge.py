"""``iotedge``: the CLI of the runtime double. This slice: ``version``; the rest follows (lab/README.md)."""

from __future__ import annotations

import sys

from edgefleet_iotedge_double import EDGE_VERSION


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args in (["version"], ["--version"], ["-V"]):
        print(f"iotedge {EDGE_VERSION}")
        return 0
    command = " ".join(args) or "(none)"
    print(f"iotedge {command}: not implemented by the edgefleet test double yet", file=sys.stderr)
    return 2
