"""Enrollment benchmark: N individual enrollments against the lab DPS emulator, two ways, in one run.

(a) edgefleet.iotedge.dps_enrollment with all devices in one call, executed as Ansible executes a module (a fresh
    Python process reading its arguments file): reads through the paged query, writes through the bulk API;
(b) one PUT per device with the same client and the same bodies (what a per-device loop over the REST API, the
    az CLI or the old SDK does), timed in-process, so it does not even pay for an interpreter start;
then (a) again over the same N enrollments, which must change nothing and read them with paged queries.

The emulator runs in its own process (python -m lab.cloud) so that its work does not share the client's GIL.
Ends with `enroll: bulk_requests=<n> single_requests=<m> speedup=<x> recheck_requests=<k>`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from _common import BIN, COLLECTIONS, REPO, replace_doc_section, run_module_process, timed

sys.path.insert(0, str(COLLECTIONS))

from cryptography.hazmat.primitives import serialization

from ansible_collections.edgefleet.iotedge.plugins.module_utils._dps_client import (
    DpsServiceClient,
    parse_connection_string,
)
from ansible_collections.edgefleet.iotedge.plugins.module_utils._dps_enrollment import build_specs, wire_record
from ansible_collections.edgefleet.iotedge.tests.unit.pki_factories import self_signed

MODULE = COLLECTIONS / "ansible_collections/edgefleet/iotedge/plugins/modules/dps_enrollment.py"
RECHECK_REQUEST_LIMIT = 25


class Lab:
    """The emulator in its own process; control-plane calls over HTTPS."""

    def __init__(self, state_dir: Path):
        info_file = state_dir / "cloud.json"
        self.process = subprocess.Popen(
            [str(BIN / "python"), "-m", "lab.cloud", "--state-dir", str(state_dir), "--info-file", str(info_file)],
            cwd=REPO,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        while not info_file.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the lab did not start: {self.process.stderr.read().decode()}")
            time.sleep(0.1)
        self.info = json.loads(info_file.read_text())
        self.context = ssl.create_default_context(cafile=self.info["ca_bundle"])

    def control(self, method: str, path: str):
        request = urllib.request.Request(f"{self.info['control_url']}{path}", method=method)
        with urllib.request.urlopen(request, context=self.context, timeout=60) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def dps_requests(self) -> int:
        return sum(1 for entry in self.control("GET", "/requests") if entry["service"] == "dps")

    def reset(self) -> None:
        self.control("POST", "/reset")

    def enrollment_count(self) -> int:
        return len(self.control("GET", "/state")["dps"]["enrollments"])

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)


def device_certificates(count: int) -> list[tuple[str, str]]:
    """(registration id, PEM) per device; self-signed keeps setup cheap, DPS compares thumbprints either way."""
    now = datetime.datetime.now(datetime.UTC)
    devices = []
    for number in range(1, count + 1):
        registration_id = f"bench-{number:04d}"
        certificate = self_signed(
            registration_id, not_before=now - datetime.timedelta(minutes=5), not_after=now + datetime.timedelta(days=30)
        )[0]
        devices.append((registration_id, certificate.public_bytes(serialization.Encoding.PEM).decode()))
    return devices


def enrollment_items(devices) -> list[dict]:
    return [{"registration_id": rid, "primary_certificate": pem} for rid, pem in devices]


def run_module(lab: Lab, devices) -> dict:
    arguments = {"enrollments": enrollment_items(devices), "initial_twin": {"tags": {"fleet": "bench"}}}
    connection = {
        "EDGEFLEET_DPS_CONNECTION_STRING": lab.info["dps"]["connection_string"],
        "EDGEFLEET_CA_BUNDLE": lab.info["ca_bundle"],
    }
    return run_module_process(MODULE, arguments, env=connection)


def put_one_by_one(lab: Lab, devices) -> int:
    """The baseline: the same bodies, one PUT each, through the same client (so TLS and SAS cost the same)."""
    client = DpsServiceClient(
        parse_connection_string(lab.info["dps"]["connection_string"]), ca_bundle=lab.info["ca_bundle"]
    )
    specs = build_specs(
        enrollment_items(devices),
        {
            "state": "present",
            "provisioning_status": "enabled",
            "iot_edge": True,
            "initial_twin": {"tags": {"fleet": "bench"}},
        },
    )
    for spec in specs:
        client.put_enrollment(wire_record(spec, None))
    return client.requests_sent


def measure(count: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="edgefleet-bench-enroll-") as work:
        lab = Lab(Path(work))
        try:
            devices = device_certificates(count)
            single_seconds, single_requests = timed(put_one_by_one, lab, devices)
            assert lab.enrollment_count() == count
            lab.reset()
            bulk_seconds, bulk = timed(run_module, lab, devices)
            bulk_requests = lab.dps_requests()
            assert bulk["changed"] and len(bulk["created"]) == count, "the bulk run did not create every enrollment"
            assert lab.enrollment_count() == count
            lab.control("DELETE", "/requests")
            recheck_seconds, recheck = timed(run_module, lab, devices)
            recheck_requests = lab.dps_requests()
            assert not recheck["changed"], "the re-run over unchanged enrollments reported a change"
        finally:
            lab.stop()
    return {
        "devices": count,
        "bulk_seconds": bulk_seconds,
        "bulk_requests": bulk_requests,
        "single_seconds": single_seconds,
        "single_requests": single_requests,
        "recheck_seconds": recheck_seconds,
        "recheck_requests": recheck_requests,
        "speedup": single_seconds / bulk_seconds,
    }


def doc_section(result: dict) -> str:
    today = datetime.date.today().isoformat()
    return (
        f"Measured {today} on {platform.machine()} with {os.cpu_count()} cores, Python {platform.python_version()}, "
        "against the lab DPS emulator in its own process on 127.0.0.1 (HTTPS). Command: `make bench` (or "
        "`.venv/bin/python benchmarks/run.py enroll`).\n\n"
        "| devices | method | HTTP requests | wall time | per device |\n"
        "| ---: | --- | ---: | ---: | ---: |\n"
        f"| {result['devices']} | (a) `dps_enrollment`, one call: paged read + bulk writes of 10 "
        f"| {result['bulk_requests']} | {result['bulk_seconds']:.2f} s "
        f"| {1000 * result['bulk_seconds'] / result['devices']:.2f} ms |\n"
        f"| {result['devices']} | (b) one PUT per device | {result['single_requests']} "
        f"| {result['single_seconds']:.2f} s | {1000 * result['single_seconds'] / result['devices']:.2f} ms |\n"
        f"| {result['devices']} | (a) again, nothing to change | {result['recheck_requests']} "
        f"| {result['recheck_seconds']:.2f} s | {1000 * result['recheck_seconds'] / result['devices']:.2f} ms |\n\n"
        f"Speedup of (a) over (b): **{result['speedup']:.1f}x**; the no-change re-run made "
        f"**{result['recheck_requests']}** requests (goal: at most {RECHECK_REQUEST_LIMIT}) and reported "
        "`changed=false`.\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--write-docs", action="store_true", help="write the results into docs/performance.md")
    args = parser.parse_args(argv)
    result = measure(args.devices)
    print(json.dumps(result, indent=2))
    if args.write_docs:
        replace_doc_section("enroll", doc_section(result))
    print(
        f"enroll: bulk_requests={result['bulk_requests']} single_requests={result['single_requests']} "
        f"speedup={result['speedup']:.1f} recheck_requests={result['recheck_requests']}"
    )
    return 0 if result["recheck_requests"] <= RECHECK_REQUEST_LIMIT else 1


if __name__ == "__main__":
    raise SystemExit(main())
