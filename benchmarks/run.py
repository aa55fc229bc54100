"""Run the project's benchmarks: `python benchmarks/run.py [NAME ...] [--write-docs]` (default: all)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import deployment
import enroll
import lab_fleet
import pki
import rollout
import rotation
import scale

BENCHMARKS = {
    "pki": pki.main,
    "enroll": enroll.main,
    "lab": lab_fleet.main,
    "rollout": rollout.main,
    "rotation": rotation.main,
    "deployment": deployment.main,
    "scale": scale.main,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", choices=[*BENCHMARKS, []][:-1] or None, default=[])
    parser.add_argument("--write-docs", action="store_true", help="write the results into docs/performance.md")
    args = parser.parse_args()
    for name in args.names or list(BENCHMARKS):
        print(f"== {name}", flush=True)
        status = BENCHMARKS[name](["--write-docs"] if args.write_docs else [])
        if status:
            return status
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
