"""`lab up --free-ports`: free loopback ports, kept by a later `up` of the same lab."""

from __future__ import annotations

import json
import random
import socket

from lab.fleet import ports as lab_port_choice
from lab.fleet.ports import PORT_RANGE, free_port_run, lab_ports


def test_ports_are_free_distinct_in_range_and_kept_for_the_same_lab(tmp_path):
    chosen = lab_ports(tmp_path, 3)
    ssh = chosen["ssh_base_port"]
    everything = [
        ssh,
        ssh + 1,
        ssh + 2,
        *(chosen[name] for name in ("dps_port", "device_port", "hub_port", "apt_port")),
    ]
    assert len(set(everything)) == len(everything)
    assert all(PORT_RANGE[0] <= port < PORT_RANGE[1] for port in everything)
    assert json.loads((tmp_path / "ports.json").read_text())["ssh_ports"] == 3
    assert lab_ports(tmp_path, 3) == chosen  # a restart keeps them
    assert lab_ports(tmp_path, 2) == chosen  # fewer hosts fit in the run
    grown = lab_ports(tmp_path, 5)  # more hosts need a new run; the services keep theirs
    assert (
        grown["dps_port"] == chosen["dps_port"] and json.loads((tmp_path / "ports.json").read_text())["ssh_ports"] == 5
    )


def test_a_port_in_use_is_never_chosen(monkeypatch):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        taken = busy.getsockname()[1]
        busy.listen()
        starts = iter([taken - 1, taken + 10])
        monkeypatch.setattr(lab_port_choice, "PORT_RANGE", (taken - 5, taken + 50))
        rng = random.Random()
        monkeypatch.setattr(rng, "randrange", lambda low, high: next(starts))
        assert free_port_run(3, rng=rng) == taken + 10
