"""``iotedge``: the CLI of the runtime double. So far ``version`` and ``config apply``; the rest follows (lab/README.md)."""

from __future__ import annotations

import sys

from edgefleet_iotedge_double import EDGE_VERSION


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args in (["version"], ["--version"], ["-V"]):
        print(f"iotedge {EDGE_VERSION}")
        return 0
    if args[:2] == ["config", "apply"]:
        from edgefleet_iotedge_double import config_apply

        return config_apply.main(args[2:])
    command = " ".join(args) or "(none)"
    print(f"iotedge {command}: not implemented by the edgefleet test double yet", file=sys.stderr)
    return 2
