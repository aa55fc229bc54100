"""PKI benchmark: N device identities three ways, in one run, on the same CA.

(a) edgefleet.iotedge.pki_identity, one module call for the whole fleet, executed as Ansible executes a module
    (a fresh Python process reading its arguments file); the full `ansible localhost -m` run is reported too;
(b) a per-device openssl CLI loop like the upstream test scripts (genpkey, req, x509 -req, cat chain);
(c) a bare `cryptography` loop: key, certificate, three files per device, nothing else (the library's limit).

Prints per-device milliseconds and ratios and ends with `pki: vs_openssl=<x> vs_raw=<y>` for the first key type.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import BIN, COLLECTIONS, REPO, replace_doc_section, run_module_process, timed

sys.path.insert(0, str(COLLECTIONS))

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki_ca import (
    CaRequest,
    ensure_ca,
    load_ca,
)

MODULE = COLLECTIONS / "ansible_collections/edgefleet/iotedge/plugins/modules/pki_identity.py"


def make_ca(path: Path, key_type: str) -> None:
    request = CaRequest(
        path=str(path),
        root_common_name="Bench Root",
        intermediate=True,
        intermediate_common_name="Bench Inter",
        key_type=key_type,
        valid_days=3650,
        not_after=None,
        passphrase=None,
        state="present",
        generation="1.2+",
        force=False,
    )
    ensure_ca(request, check_mode=False)


def module_args(ca: Path, out: Path, devices: list[str], key_type: str) -> dict:
    return {"ca_path": str(ca), "path": str(out), "devices": devices, "key_type": key_type}


def run_module(ca: Path, out: Path, devices: list[str], key_type: str) -> dict:
    return run_module_process(MODULE, module_args(ca, out, devices, key_type))


def run_ansible_adhoc(ca: Path, out: Path, devices: list[str], key_type: str) -> None:
    """The same call through `ansible localhost -m`, with Ansible's own start-up and module packaging."""
    subprocess.run(
        [
            str(BIN / "ansible"),
            "localhost",
            "-m",
            "edgefleet.iotedge.pki_identity",
            "-a",
            json.dumps(module_args(ca, out, devices, key_type)),
        ],
        cwd=REPO,
        env=dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg")),
        capture_output=True,
        text=True,
        check=True,
    )


def run_openssl_loop(ca: Path, out: Path, devices: list[str], key_type: str) -> None:
    algorithm = (
        ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]
        if key_type == "ec-p256"
        else ["-algorithm", "RSA", "-pkeyopt", f"rsa_keygen_bits:{key_type[4:]}"]
    )
    chain_tail = (ca / "intermediate.cert.pem").read_bytes() + (ca / "root.cert.pem").read_bytes()
    extensions = out / "leaf.ext"
    out.mkdir(parents=True)
    extensions.write_text(
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n"
    )
    for device in devices:
        directory = out / device
        directory.mkdir()
        key, csr, cert = directory / "identity.key.pem", directory / "identity.csr.pem", directory / "identity.cert.pem"
        subprocess.run(["openssl", "genpkey", *algorithm, "-out", str(key)], check=True, capture_output=True)
        os.chmod(key, 0o600)
        subprocess.run(
            ["openssl", "req", "-new", "-key", str(key), "-subj", f"/CN={device}", "-out", str(csr)],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [
                "openssl",
                "x509",
                "-req",
                "-in",
                str(csr),
                "-CA",
                str(ca / "intermediate.cert.pem"),
                "-CAkey",
                str(ca / "intermediate.key.pem"),
                "-set_serial",
                str(int.from_bytes(os.urandom(8), "big")),
                "-days",
                "365",
                "-sha256",
                "-extfile",
                str(extensions),
                "-out",
                str(cert),
            ],
            check=True,
            capture_output=True,
        )
        with open(directory / "identity.full-chain.cert.pem", "wb") as chain:
            subprocess.run(["cat", str(cert)], stdout=chain, check=True)
            chain.write(chain_tail)


def run_raw_loop(ca: Path, out: Path, devices: list[str], key_type: str) -> None:
    loaded = load_ca(str(ca), passphrase=None)
    issuer, issuer_key = loaded.signer_cert, loaded.signer_key
    now = datetime.datetime.now(datetime.UTC)
    out.mkdir(parents=True)
    for device in devices:
        key = (
            ec.generate_private_key(ec.SECP256R1())
            if key_type == "ec-p256"
            else rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[4:]))
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device)]))
            .issuer_name(issuer.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(issuer_key, hashes.SHA256())
        )
        cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        directory = out / device
        directory.mkdir()
        (directory / "identity.key.pem").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        (directory / "identity.cert.pem").write_bytes(cert_pem)
        (directory / "identity.full-chain.cert.pem").write_bytes(cert_pem + loaded.chain_pem)


def measure(work: Path, key_type: str, count: int, rounds: int) -> dict:
    ca = work / f"ca-{key_type}"
    make_ca(ca, key_type)
    devices = [f"bench-{i:05d}" for i in range(count)]
    # The openssl loop is CPU-bound (four processes per device) and steady: one run, first, so that the writeback
    # of its files is over before the file-bound methods are timed.
    seconds = {"openssl": timed(run_openssl_loop, ca, work / f"openssl-{key_type}", devices, key_type)[0]}
    samples: dict[str, list[float]] = {"module": [], "module_recheck": [], "ansible_adhoc": [], "raw": []}
    # Interleaved rounds, the first one discarded, median per method: this disk's latency drifts.
    for round_number in range(rounds + 1):
        out = work / f"{key_type}-round{round_number}"
        measured = {
            "raw": timed(run_raw_loop, ca, out / "raw", devices, key_type)[0],
            "module": timed(run_module, ca, out / "module", devices, key_type)[0],
        }
        measured["module_recheck"], recheck = timed(run_module, ca, out / "module", devices, key_type)
        if recheck["changed"]:
            raise SystemExit("pki_identity changed something on the no-change re-run")
        measured["ansible_adhoc"] = timed(run_ansible_adhoc, ca, out / "adhoc", devices, key_type)[0]
        shutil.rmtree(out)
        if round_number:
            for name, value in measured.items():
                samples[name].append(value)
    seconds.update({name: statistics.median(values) for name, values in samples.items()})
    return {
        "key_type": key_type,
        "devices": count,
        "rounds": rounds,
        "ms_per_device": {name: 1000 * value / count for name, value in seconds.items()},
        "vs_openssl": seconds["openssl"] / seconds["module"],
        "vs_raw": seconds["module"] / seconds["raw"],
        "adhoc_vs_openssl": seconds["openssl"] / seconds["ansible_adhoc"],
    }


def openssl_version() -> str:
    return subprocess.run(["openssl", "version"], capture_output=True, text=True, check=True).stdout.strip()


def markdown(results: list[dict], work_dir: str | None) -> str:
    lines = [
        f"Files written under `{work_dir or tempfile.gettempdir()}`.",
        f"Measured {datetime.date.today().isoformat()} on {platform.machine()} with {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, `{openssl_version()}`. "
        "Command: `make bench` (or `.venv/bin/python benchmarks/run.py pki`).",
        "",
        "Median of the rounds shown (after one discarded warm-up round) for (a), its re-run, `ansible -m` and (c); "
        "one run of (b), first.",
        "",
        "| key type | devices | rounds | (a) module call | no-change re-run | `ansible -m` end to end | (b) openssl loop "
        "| (c) raw cryptography | vs_openssl = b/a | vs_raw = a/c |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        ms = r["ms_per_device"]
        lines.append(
            f"| {r['key_type']} | {r['devices']} | {r['rounds']} | {ms['module']:.2f} ms | {ms['module_recheck']:.2f} ms "
            f"| {ms['ansible_adhoc']:.2f} ms | {ms['openssl']:.2f} ms | {ms['raw']:.2f} ms "
            f"| **{r['vs_openssl']:.1f}x** | **{r['vs_raw']:.2f}x** |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=1000, help="identities per method for ec-p256")
    parser.add_argument("--rsa-devices", type=int, default=100, help="identities per method for rsa-2048 (0: skip)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per method after a warm-up (median)")
    parser.add_argument(
        "--work-dir",
        default="/dev/shm" if os.access("/dev/shm", os.W_OK) else None,
        help="where the files go (default: tmpfs /dev/shm, so the shared disk's drifting latency stays out)",
    )
    parser.add_argument("--write-docs", action="store_true", help="update the pki section of docs/performance.md")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="edgefleet-bench-pki-", dir=args.work_dir))
    try:
        plan = [("ec-p256", args.devices)] + ([("rsa-2048", args.rsa_devices)] if args.rsa_devices else [])
        results = [measure(work, key_type, count, args.rounds) for key_type, count in plan]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for r in results:
        ms = r["ms_per_device"]
        print(f"{r['key_type']} x{r['devices']}: " + ", ".join(f"{k}={v:.3f} ms/device" for k, v in ms.items()))
        print(
            f"{r['key_type']}: vs_openssl={r['vs_openssl']:.1f} vs_raw={r['vs_raw']:.2f} "
            f"(ansible -m end to end vs openssl: {r['adhoc_vs_openssl']:.1f})"
        )
    if args.write_docs:
        replace_doc_section("pki", markdown(results, args.work_dir))
    headline = results[0]
    print(f"pki: vs_openssl={headline['vs_openssl']:.1f} vs_raw={headline['vs_raw']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
