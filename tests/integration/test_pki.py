"""The PKI modules and the edge_pki role through real ansible-playbook runs; state checked with openssl."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

DEVICES = ["gw-01", "gw-02", "gw-03"]


def openssl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)


def pem_subjects(path: Path) -> list[str]:
    """Subjects of every certificate in a PEM bundle, in file order."""
    blocks = re.findall(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\n", path.read_text(), re.S)
    return [
        subprocess.run(
            ["openssl", "x509", "-noout", "-subject", "-nameopt", "RFC2253"],
            input=block,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for block in blocks
    ]


def private_key_bodies(root: Path) -> list[str]:
    """Base64 lines of every private key under root: none of them may appear in any output."""
    lines = []
    for key in root.rglob("*.key.pem"):
        lines += [line for line in key.read_text().splitlines() if line and not line.startswith("-----")]
    return lines


def test_four_step_pattern_for_each_module(ansible_playbook, tmp_path):
    run = ansible_playbook("tests/integration/playbooks/pki_four_steps.yml", extra_vars={"pki_dir": str(tmp_path)})
    assert run.returncode == 0, run.output
    assert "failed=0" in run.stdout
    for device in DEVICES:
        result = openssl(
            "verify",
            "-CAfile",
            str(tmp_path / "ca/root.cert.pem"),
            "-untrusted",
            str(tmp_path / "ca/intermediate.cert.pem"),
            str(tmp_path / "identities" / device / "identity.cert.pem"),
        )
        assert result.returncode == 0 and result.stdout.strip().endswith(": OK"), result.stdout + result.stderr
    verification = openssl("x509", "-noout", "-subject", "-in", str(tmp_path / "verification.cert.pem"))
    assert verification.stdout.strip() == "subject=CN = 0A1B2C3D4E5F"
    assert (
        openssl(
            "verify",
            "-partial_chain",
            "-CAfile",
            str(tmp_path / "ca/root.cert.pem"),
            str(tmp_path / "verification.cert.pem"),
        ).returncode
        == 0
    )


def fleet_results(path: Path) -> dict:
    return json.loads(path.read_text())


def test_three_identities_verify_and_a_second_run_changes_nothing(ansible_playbook, tmp_path):
    results = tmp_path / "results.json"
    extra = {"pki_dir": str(tmp_path / "pki"), "devices": DEVICES, "results_file": str(results)}
    first = ansible_playbook("tests/integration/playbooks/pki_fleet.yml", extra_vars=extra)
    assert first.returncode == 0, first.output
    identities = fleet_results(results)["identities"]["identities"]
    assert sorted(identities) == DEVICES
    ca = tmp_path / "pki/ca"
    for device in DEVICES:
        directory = tmp_path / "pki/identities" / device
        verify = openssl(
            "verify",
            "-CAfile",
            str(ca / "root.cert.pem"),
            "-untrusted",
            str(ca / "intermediate.cert.pem"),
            str(directory / "identity.cert.pem"),
        )
        assert verify.returncode == 0, verify.stdout + verify.stderr
        text = openssl("x509", "-noout", "-text", "-in", str(directory / "identity.cert.pem")).stdout
        assert f"Subject: CN = {device}" in text
        assert "CA:FALSE" in text
        assert "TLS Web Client Authentication" in text
        assert "Signature Algorithm: ecdsa-with-SHA256" in text
        assert os.stat(directory / "identity.key.pem").st_mode & 0o777 == 0o600
        assert pem_subjects(directory / "identity.full-chain.cert.pem") == [
            f"subject=CN={device}",
            "subject=CN=edgefleet Intermediate CA",
            "subject=CN=edgefleet Root CA",
        ]
        fingerprint = openssl("x509", "-noout", "-fingerprint", "-sha1", "-in", str(directory / "identity.cert.pem"))
        assert fingerprint.stdout.split("=", 1)[1].strip().replace(":", "") == identities[device]["thumbprint_sha1"]

    second = ansible_playbook("tests/integration/playbooks/pki_fleet.yml", extra_vars=extra)
    assert second.returncode == 0, second.output
    again = fleet_results(results)["identities"]
    assert again["changed"] is False
    assert [again["identities"][d]["changed"] for d in DEVICES] == [False, False, False]
    assert second.recap("localhost")["changed"] == 0


def test_check_mode_on_an_empty_directory_reports_changed_and_creates_nothing(ansible_playbook, tmp_path):
    pki_dir, results = tmp_path / "pki", tmp_path / "results.json"
    run = ansible_playbook(
        "tests/integration/playbooks/pki_fleet.yml",
        "--check",
        extra_vars={"pki_dir": str(pki_dir), "devices": DEVICES, "results_file": str(results)},
    )
    assert run.returncode == 0, run.output
    predicted = fleet_results(results)
    assert predicted["ca"]["changed"] is True
    assert predicted["identities"]["changed"] is True
    assert predicted["identities"]["summary"]["created"] == 3
    assert not pki_dir.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


@pytest.mark.parametrize("verbosity", ["-v", "-vvv"])
def test_diff_never_shows_key_material_or_the_passphrase(ansible_playbook, tmp_path, verbosity):
    extra = {"pki_dir": str(tmp_path), "devices": DEVICES, "ca_passphrase": "Vault-Only-Passphrase-42"}
    runs = [
        ansible_playbook("tests/integration/playbooks/pki_fleet.yml", "--diff", verbosity, extra_vars=extra),
        # A key-type change reissues every identity: the diff then has before and after for each device.
        ansible_playbook(
            "tests/integration/playbooks/pki_fleet.yml",
            "--diff",
            verbosity,
            extra_vars=dict(extra, key_type="rsa-2048"),
        ),
    ]
    secrets = private_key_bodies(tmp_path)
    assert len(secrets) > 20
    for run in runs:
        assert run.returncode == 0, run.output
        assert "PRIVATE KEY" not in run.output
        assert "Vault-Only-Passphrase-42" not in run.output
        leaked = [line for line in secrets if line in run.output]
        assert leaked == []
    assert "thumbprint_sha256" in runs[1].stdout  # the diff is there, just without secrets


def test_bad_registration_id_fails_before_anything_is_written(ansible_playbook, tmp_path):
    run = ansible_playbook(
        "tests/integration/playbooks/pki_fleet.yml",
        extra_vars={"pki_dir": str(tmp_path), "devices": ["gw-01", "GW-02"]},
    )
    assert run.returncode != 0
    assert "devices[1]: registration id 'GW-02' has uppercase letters; use 'gw-02'" in run.output
    assert not (tmp_path / "identities").exists()


def test_role_publishes_each_hosts_identity(ansible_playbook, tmp_path):
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        "edge:\n  hosts:\n    Gateway-A:\n    gateway-b:\n      edgefleet_registration_id: plant1-gw-b\n"
        '  vars:\n    ansible_connection: local\n    ansible_python_interpreter: "{{ ansible_playbook_python }}"\n'
    )
    extra = {"edgefleet_pki_dir": str(tmp_path / "pki")}
    predicted = ansible_playbook(
        "tests/integration/playbooks/edge_pki_role.yml", "--check", inventory=inventory, extra_vars=extra
    )
    assert predicted.returncode == 0, predicted.output
    assert re.search(r"gateway-a\s+create\s+\S+\s+\(issued on apply\)", predicted.stdout), predicted.stdout
    assert not (tmp_path / "pki").exists()
    run = ansible_playbook("tests/integration/playbooks/edge_pki_role.yml", inventory=inventory, extra_vars=extra)
    assert run.returncode == 0, run.output
    # One directory per registration id, beside the lock file a run holds.
    assert sorted(os.listdir(tmp_path / "pki/identities")) == [".edgefleet.lock", "gateway-a", "plant1-gw-b"]
    summary = run.stdout[run.stdout.index("REGISTRATION ID") :]
    assert re.search(r"gateway-a\s+create\s+\d{4}-\d\d-\d\dT", summary)
    assert re.search(r"plant1-gw-b\s+create\s+", summary)
    second = ansible_playbook("tests/integration/playbooks/edge_pki_role.yml", inventory=inventory, extra_vars=extra)
    assert re.search(r"Gateway-A\s+: ok=\d+\s+changed=0", second.stdout), second.stdout
    assert re.search(r"gateway-b\s+: ok=\d+\s+changed=0", second.stdout)


def test_role_at_vvv_never_prints_the_passphrase_or_keys(ansible_playbook, tmp_path):
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        "edge:\n  hosts:\n    gw-1:\n    gw-2:\n  vars:\n    ansible_connection: local\n"
        '    ansible_python_interpreter: "{{ ansible_playbook_python }}"\n'
    )
    extra = {"edgefleet_pki_dir": str(tmp_path / "pki"), "edgefleet_pki_passphrase": "Role-Vault-Secret-7"}
    run = ansible_playbook(
        "tests/integration/playbooks/edge_pki_role.yml", "-vvv", "--diff", inventory=inventory, extra_vars=extra
    )
    assert run.returncode == 0, run.output
    assert "Role-Vault-Secret-7" not in run.output
    assert "PRIVATE KEY" not in run.output
    assert [line for line in private_key_bodies(tmp_path / "pki") if line in run.output] == []
    assert b"ENCRYPTED" in (tmp_path / "pki/ca/root.key.pem").read_bytes()
