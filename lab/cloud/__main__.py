"""``python -m lab.cloud --state-dir DIR``: run the DPS and IoT Hub emulators until interrupted."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from lab.cloud.runtime import LabSettings
from lab.cloud.server import INFO_FILE, CloudLab


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m lab.cloud", description=__doc__)
    parser.add_argument("--state-dir", required=True, type=Path, help="where the CA, server certs and cloud.json go")
    parser.add_argument("--info-file", type=Path, help=f"where to write the JSON description (default DIR/{INFO_FILE})")
    parser.add_argument("--seed", type=int, default=0, help="seed for ids and the well-known development keys")
    parser.add_argument("--dps-port", type=int, default=0, help="DPS service + management API port (0 = free)")
    parser.add_argument("--device-port", type=int, default=0, help="DPS device (global endpoint) port (0 = free)")
    parser.add_argument("--hub-port", type=int, action="append", default=[], help="IoT hub port, once per hub")
    parser.add_argument("--hubs", type=int, default=1, help="number of IoT hubs linked to the DPS")
    parser.add_argument("--id-scope", default=LabSettings.id_scope)
    parser.add_argument("--assigning-polls", type=int, default=0, help="polls answered 'assigning' before the result")
    parser.add_argument(
        "--no-require-verified-ca",
        action="store_true",
        help="accept CA-signed devices whose chain does not reach a proof-of-possession verified certificate",
    )
    parser.add_argument("--verbose", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    settings = LabSettings(
        seed=args.seed,
        id_scope=args.id_scope,
        hub_count=max(args.hubs, len(args.hub_port), 1),
        require_verified_ca=not args.no_require_verified_ca,
        assigning_polls=args.assigning_polls,
        dps_port=args.dps_port,
        device_port=args.device_port,
        hub_ports=list(args.hub_port),
    )
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    with CloudLab.start(args.state_dir, settings) as cloud:
        info = cloud.write_info(args.info_file)
        print(info, flush=True)
        stopped.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
