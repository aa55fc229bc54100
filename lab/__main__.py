"""``python -m lab up|down|status``: the whole lab - cloud emulators, edge hosts and an inventory for them.

    python -m lab up --hosts 3      # build the base image once, start the emulators and 3 hosts, write the inventory
    python -m lab status            # hosts, ports, emulator URLs (JSON)
    python -m lab down              # remove every container, process and file the lab made

Then: ansible-playbook -i .lab/inventory playbooks/provision_edge.yml
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lab.fleet import Lab, LabConfig, LabError
from lab.fleet.image import ImageBuildError
from lab.fleet.podman import PodmanError
from lab.fleet.ports import lab_ports

DEFAULTS = LabConfig()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m lab", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--state-dir", type=Path, default=DEFAULTS.state_dir, help="default: .lab in the checkout")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start (or converge) the lab; running it twice changes nothing")
    up.add_argument("--hosts", type=int, default=DEFAULTS.hosts, help=f"edge hosts (default {DEFAULTS.hosts})")
    up.add_argument("--host-prefix", default=DEFAULTS.host_prefix, help="host names are PREFIX-01, PREFIX-02, ...")
    up.add_argument("--container-prefix", default=DEFAULTS.container_prefix)
    up.add_argument(
        "--free-ports",
        action="store_true",
        help="free loopback ports instead of the fixed defaults, recorded in the state directory and kept by a later "
        "up of the same lab (what test suites, molecule and benchmarks use, so that two never meet)",
    )
    for name, default, text in (
        ("ssh-base-port", DEFAULTS.ssh_base_port, "sshd port of the first host"),
        ("dps-port", DEFAULTS.dps_port, "the DPS service API"),
        ("device-port", DEFAULTS.device_port, "the DPS device API"),
        ("hub-port", DEFAULTS.hub_port, "the IoT hub"),
        ("apt-port", DEFAULTS.apt_port, "the runtime double's apt repository"),
    ):
        up.add_argument(f"--{name}", type=int, help=f"{text} (default {default}, or a free one with --free-ports)")
    up.add_argument("--debian-mirror", help="for debootstrap (default: the mirror this machine's apt uses)")
    down = commands.add_parser("down", help="remove the lab's containers, processes and files")
    down.add_argument("--purge-image", action="store_true", help="also remove the cached base image")
    commands.add_parser("status", help="what runs, as JSON")
    return parser.parse_args(argv)


def log(line: str) -> None:
    """Progress goes to stderr; stdout carries only the JSON status."""
    print(f"lab: {line}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "up":
        if args.hosts < 0 or args.hosts > 99:
            print("lab: --hosts must be between 0 and 99", file=sys.stderr)
            return 2
        ports = lab_ports(args.state_dir, args.hosts) if args.free_ports else {}
        config = LabConfig(
            state_dir=args.state_dir,
            hosts=args.hosts,
            host_prefix=args.host_prefix,
            container_prefix=args.container_prefix,
            debian_mirror=args.debian_mirror,
            # An explicit port wins, then the lab's free ones, then the fixed defaults.
            **{
                name: getattr(args, name) or ports.get(name, getattr(DEFAULTS, name))
                for name in ("ssh_base_port", "dps_port", "device_port", "hub_port", "apt_port")
            },
        )
    else:
        config = LabConfig(state_dir=args.state_dir)
    lab = Lab(config, log=log)
    try:
        if args.command == "up":
            print(json.dumps(lab.up(), indent=2))
        elif args.command == "down":
            for line in lab.down(purge_image=args.purge_image):
                log(line)
        else:
            print(json.dumps(lab.status(), indent=2))
    except (LabError, ImageBuildError, PodmanError) as error:
        print(f"lab: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
