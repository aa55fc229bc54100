"""``iotedge`` of the 1.1 generation: ``version``, ``list`` (``CONFIG`` header) and ``check`` (1.1 ids); 1.1 has no
``config`` or ``system``."""

from __future__ import annotations

import sys

from . import IOTEDGE_1_1_VERSION
from .iotedge import list_command


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args in (["version"], ["--version"], ["-V"]):
        print(f"iotedge {IOTEDGE_1_1_VERSION}")
        return 0
    if args == ["list"]:
        return list_command(header="CONFIG")
    if args[:1] == ["check"]:
        from . import check11

        return check11.main(args[1:])
    if args[:1] in (["config"], ["system"]):
        print(f"error: The subcommand '{args[0]}' wasn't recognized", file=sys.stderr)
        return 1
    command = " ".join(args) or "(none)"
    print(f"iotedge {command}: not implemented by the edgefleet test double yet", file=sys.stderr)
    return 2
