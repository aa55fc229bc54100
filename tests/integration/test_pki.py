"""The PKI modules and the edge_pki role through real ansible-playbook runs; state checked with openssl."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from existing_ca import existing_ca, openssl

DEVICES = ["gw-01", "gw-02", "gw-03"]


def verify_identity(ca_dir: Path, certificate: Path) -> subprocess.CompletedProcess:
    """`openssl verify` of an identity leaf against the fleet root, with the intermediate as the untrusted link."""
    return openssl(
        "verify",
        "-CAfile",
        str(ca_dir / "root.cert.pem"),
        "-untrusted",
        str(ca_dir / "intermediate.cert.pem"),
        str(certificate),
    )


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
        result = verify_identity(tmp_path / "ca", tmp_path / "identities" / device / "identity.cert.pem")
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
        verify = verify_identity(ca, directory / "identity.cert.pem")
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


# ---- the fleet CA as an input (AWX/AAP: every job starts with an empty ~/.edgefleet/pki) -------------------------

EDGE_INVENTORY = (
    "edge:\n  hosts:\n    gw-1:\n    gw-2:\n  vars:\n    ansible_connection: local\n"
    '    ansible_python_interpreter: "{{ ansible_playbook_python }}"\n'
)


def test_role_with_create_disabled_and_no_ca_fails_naming_the_variable_and_writes_nothing(ansible_playbook, tmp_path):
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(EDGE_INVENTORY)
    pki_dir = tmp_path / "pki"
    extra = {"edgefleet_pki_dir": str(pki_dir), "edgefleet_pki_ca_create": False}
    expected = (
        f"edgefleet_pki_ca_create: is false and the fleet CA in {pki_dir}/ca (edgefleet_pki_ca_dir) is not complete "
        "(root.cert.pem, root.key.pem, intermediate.cert.pem, intermediate.key.pem missing there)"
    )
    for args in ((), ("--check",)):
        run = ansible_playbook(
            "tests/integration/playbooks/edge_pki_role.yml", *args, inventory=inventory, extra_vars=extra
        )
        assert run.returncode != 0
        assert expected in run.output, run.output
        assert "edgefleet_pki_ca_root_cert_content" in run.output
        assert not pki_dir.exists()
    # Without the preflight, pki_ca itself refuses, and the role names its variable.
    (pki_dir / "ca").mkdir(parents=True)
    run = ansible_playbook("tests/integration/playbooks/edge_pki_converge.yml", inventory=inventory, extra_vars=extra)
    assert run.returncode != 0
    assert f"edgefleet_pki_ca_create: is false and the fleet CA in {pki_dir}/ca is not complete" in run.output, (
        run.output
    )
    assert [p.name for p in pki_dir.rglob("*")] == ["ca"]


def test_a_file_error_of_the_ca_or_the_identities_names_the_role_variable(ansible_playbook, tmp_path):
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(EDGE_INVENTORY)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    cases = [
        ({"edgefleet_pki_ca_dir": str(blocker / "ca")}, f"edgefleet_pki_ca_dir: {blocker}/ca"),
        (
            {"edgefleet_pki_dir": str(tmp_path / "pki"), "edgefleet_pki_identity_dir": str(blocker / "ids")},
            f"edgefleet_pki_identity_dir: {blocker}/ids",
        ),
    ]
    for extra, expected in cases:
        run = ansible_playbook("tests/integration/playbooks/edge_pki_role.yml", inventory=inventory, extra_vars=extra)
        assert run.returncode != 0
        assert f"{expected}: Not a directory; check the path and its permissions" in run.output, run.output


def test_the_dps_ca_upload_names_the_role_variable_of_what_it_refuses(ansible_playbook, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    resource_id = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Devices/provisioningServices/dps"
    cases = [
        (
            {"edgefleet_pki_ca_dir": str(blocker / "ca"), "edgefleet_dps_resource_id": resource_id},
            f"edgefleet_pki_ca_dir: {blocker}/ca/root.cert.pem: Not a directory",
        ),
        (
            {"edgefleet_pki_dir": str(tmp_path / "pki"), "edgefleet_dps_resource_id": "dps"},
            "edgefleet_dps_resource_id: 'dps' is not a DPS resource id",
        ),
    ]
    for extra, expected in cases:
        run = ansible_playbook(
            "tests/integration/playbooks/dps_enrollment_ca.yml",
            extra_vars={**extra, "edgefleet_dps_management_token": "not-a-real-token"},
        )
        assert run.returncode != 0
        assert expected in run.output, run.output
        assert "not-a-real-token" not in run.output


def _vault(*args: str, stdin: str | None = None) -> str:
    completed = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-vault"), *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


@pytest.mark.parametrize("passphrase", [None, "Ca-Passphrase-5150"])
def test_role_installs_a_ca_handed_in_through_vault_and_signs_under_it(ansible_playbook, tmp_path, passphrase):
    ca = existing_ca(tmp_path / "existing", passphrase)
    handed_keys = {
        "root": ca["root.key.enc" if passphrase else "root.key"].read_text(),
        "intermediate": ca["intermediate.key.enc" if passphrase else "intermediate.key"].read_text(),
    }
    secrets = [line for name in ("root.key", "intermediate.key") for line in ca[name].read_text().splitlines()]
    secrets += [line for text in handed_keys.values() for line in text.splitlines()]
    secrets = [line for line in secrets if line and not line.startswith("-----")]
    vault_password = tmp_path / "vault-password"
    vault_password.write_text("Vault-Password-8086\n")
    # The intermediate key: an ansible-vault-encrypted file of the project, read with the file lookup.
    project_key = tmp_path / "project/files/ca/intermediate.key.pem"
    project_key.parent.mkdir(parents=True)
    project_key.write_text(handed_keys["intermediate"])
    _vault("encrypt", "--vault-password-file", str(vault_password), str(project_key))
    assert project_key.read_text().startswith("$ANSIBLE_VAULT;")
    # The root key: an inline !vault value, as `ansible-vault encrypt_string` prints it.
    inline = _vault(
        "encrypt_string",
        "--vault-password-file",
        str(vault_password),
        "--stdin-name",
        "edgefleet_pki_ca_root_key_content",
        stdin=handed_keys["root"],
    )
    assert "!vault |" in inline
    inventory = tmp_path / "inventory"
    (inventory / "group_vars/edge").mkdir(parents=True)
    (inventory / "hosts.yml").write_text(EDGE_INVENTORY)
    (inventory / "group_vars/edge/vault.yml").write_text(inline)
    pki_dir = tmp_path / "pki"
    settings = {
        "edgefleet_pki_dir": str(pki_dir),
        "edgefleet_pki_ca_create": False,
        "edgefleet_pki_root_common_name": "Contoso Fleet Root",
        "edgefleet_pki_intermediate_common_name": "Contoso Fleet Issuing",
        "edgefleet_pki_ca_root_cert_content": ca["root.pem"].read_text(),
        "edgefleet_pki_ca_intermediate_cert_content": f"{{{{ lookup('ansible.builtin.file', '{ca['intermediate.pem']}') }}}}",
        "edgefleet_pki_ca_intermediate_key_content": f"{{{{ lookup('ansible.builtin.file', '{project_key}') }}}}",
    }
    if passphrase:
        settings["edgefleet_pki_passphrase"] = passphrase
    (inventory / "group_vars/edge/ca.yml").write_text(json.dumps(settings))
    vault_args = ("--vault-password-file", str(vault_password))

    run = ansible_playbook(
        "tests/integration/playbooks/edge_pki_role.yml", "-vvv", "--diff", *vault_args, inventory=inventory
    )
    assert run.returncode == 0, run.output
    ca_dir = pki_dir / "ca"
    assert os.stat(ca_dir).st_mode & 0o777 == 0o700
    expected = {
        "root.cert.pem": ca["root.pem"],
        "intermediate.cert.pem": ca["intermediate.pem"],
    }
    for name, source in expected.items():
        assert (ca_dir / name).read_text() == source.read_text()
        assert os.stat(ca_dir / name).st_mode & 0o777 == 0o644
    for label in ("root", "intermediate"):
        installed = ca_dir / f"{label}.key.pem"
        assert installed.read_text() == handed_keys[label], label  # exactly as handed in, decrypted from vault
        assert os.stat(installed).st_mode & 0o777 == 0o600
    for device in ("gw-1", "gw-2"):
        verify = verify_identity(ca_dir, pki_dir / "identities" / device / "identity.cert.pem")
        assert verify.returncode == 0 and verify.stdout.strip().endswith(": OK"), verify.stdout + verify.stderr
        assert pem_subjects(pki_dir / "identities" / device / "identity.full-chain.cert.pem") == [
            f"subject=CN={device}",
            "subject=CN=Contoso Fleet Issuing",
            "subject=CN=Contoso Fleet Root",
        ]
    secrets += private_key_bodies(pki_dir)
    assert len(secrets) > 10
    assert "PRIVATE KEY" not in run.output
    assert [line for line in secrets if line in run.output] == []
    for secret in ("Vault-Password-8086", "Ca-Passphrase-5150"):
        assert secret not in run.output
    assert not (ca_dir / "retired").exists()

    files = {p: p.read_bytes() for p in pki_dir.rglob("*") if p.is_file()}
    second = ansible_playbook("tests/integration/playbooks/edge_pki_role.yml", "-vvv", *vault_args, inventory=inventory)
    assert second.returncode == 0, second.output
    for host in ("gw-1", "gw-2"):
        assert second.recap(host)["changed"] == 0, second.stdout
    assert {p: p.read_bytes() for p in pki_dir.rglob("*") if p.is_file()} == files
    assert [line for line in secrets if line in second.output] == []
