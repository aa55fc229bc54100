"""Rotation benchmark: every host's identity rolled by playbooks/provision_edge.yml, against the first rollout.

On a fresh lab of n hosts (default 20; the rollout benchmark's lab directory, ports and container names):

- the first run of playbooks/provision_edge.yml (the baseline: the same hosts, the same playbook);
- a run with `edgefleet_identity_rotate=true` for every host: new identities staged, both certificates in each
  individual enrollment, each host switched and registered again, the new identities promoted and the old
  certificates dropped (docs/lifecycle.md); every host must end on a new certificate, with nothing left in next/;
- its no-change re-run (must report changed=0 for every host).

rotation_vs_first = rotation run / first run, both measured in the same run. Ends with `rotation: hosts=<n>
first_seconds=<s> rotation_seconds=<r> rotation_vs_first=<x> rerun_seconds=<t>` (one line).
"""

from __future__ import annotations

import sys

from _common import REPO
from rollout import (
    PROVISION,
    STATE_DIR,
    BenchmarkError,
    every_host_ran,
    fleet_benchmark_main,
    fleet_measured,
    fresh_lab,
    lab,
    no_change,
    other_containers,
    playbook,
)

IDENTITIES = STATE_DIR / "pki" / "identities"


def serials() -> dict[str, int]:
    """Each host's current identity serial on the controller (lab hosts are named after their registration ids)."""
    from cryptography import x509

    return {
        path.parent.name: x509.load_pem_x509_certificate(path.read_bytes()).serial_number
        for path in IDENTITIES.glob("*/identity.cert.pem")
    }


def measure(hosts: int, forks: int) -> dict:
    others = other_containers()
    try:
        fresh_lab(hosts)
        first_seconds, first = playbook(PROVISION, forks, f"{hosts}-hosts-rotation-first")
        every_host_ran("the first run", hosts, first)
        before = serials()
        rotation_seconds, rotation = playbook(
            PROVISION, forks, f"{hosts}-hosts-rotation", "-e", "edgefleet_identity_rotate=true"
        )
        every_host_ran("the rotation", hosts, rotation)
        after = serials()
        unrotated = sorted(host for host in before if after.get(host) == before[host])
        waiting = sorted(path.parent.name for path in IDENTITIES.glob("*/next"))
        if len(before) != hosts or unrotated or waiting:
            raise BenchmarkError(f"the rotation left hosts on their old identity: {unrotated}, in next/: {waiting}")
        rerun_seconds, rerun = playbook(PROVISION, forks, f"{hosts}-hosts-rotation-rerun")
        no_change("the re-run after the rotation", hosts, rerun)
    finally:
        lab("down")
    return {
        "hosts": hosts,
        "forks": forks,
        "first_seconds": first_seconds,
        "rotation_seconds": rotation_seconds,
        "rotation_vs_first": rotation_seconds / first_seconds,
        "rerun_seconds": rerun_seconds,
        "other_containers": max(len(others), len(other_containers())),
    }


def doc_section(result: dict, command: str) -> str:
    return (
        fleet_measured(result, command)
        + "| hosts | first rollout | rotation of every identity | rotation_vs_first | re-run after it |\n"
        "| ---: | ---: | ---: | ---: | ---: |\n"
        f"| {result['hosts']} | {result['first_seconds']:.1f} s | {result['rotation_seconds']:.1f} s "
        f"| **{result['rotation_vs_first']:.2f}x** | {result['rerun_seconds']:.1f} s |\n"
    )


def final_line(result: dict) -> str:
    return (
        f"rotation: hosts={result['hosts']} first_seconds={result['first_seconds']:.1f} "
        f"rotation_seconds={result['rotation_seconds']:.1f} rotation_vs_first={result['rotation_vs_first']:.2f} "
        f"rerun_seconds={result['rerun_seconds']:.1f}"
    )


def main(argv: list[str] | None = None) -> int:
    return fleet_benchmark_main("rotation", __doc__, argv, measure, doc_section, final_line)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "benchmarks"))
    raise SystemExit(main())
