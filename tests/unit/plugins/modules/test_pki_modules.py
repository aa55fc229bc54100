"""The PKI module entry points, executed as Ansible executes them: a new interpreter and an arguments file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

COLLECTION = Path(__file__).resolve().parents[4]
MODULES = COLLECTION / "plugins" / "modules"


def run_module(name: str, tmp_path: Path, **args) -> dict:
    args_file = tmp_path / f"{name}-args.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    completed = subprocess.run(
        [sys.executable, str(MODULES / f"{name}.py"), str(args_file)],
        env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)),
        capture_output=True,
        text=True,
        check=False,
    )
    return json.loads(completed.stdout)


@pytest.fixture
def ca_path(tmp_path):
    result = run_module("pki_ca", tmp_path, path=str(tmp_path / "ca"), passphrase="module-secret")
    assert result["changed"] is True, result
    return tmp_path / "ca"


def test_guard_rail_becomes_a_clean_failure(tmp_path, ca_path):
    result = run_module(
        "pki_identity",
        tmp_path,
        ca_path=str(ca_path),
        path=str(tmp_path / "ids"),
        devices=["ok-1", "Bad_ID"],
        passphrase="module-secret",
    )
    assert result["failed"] is True
    assert result["msg"] == "devices[1]: registration id 'Bad_ID' has uppercase letters; use 'bad_id' " + (
        "(DPS compares ids case-insensitively and the device id keeps the CN's case)"
    )
    assert "exception" not in result
    assert not (tmp_path / "ids").exists()


def test_passphrase_is_masked_and_diff_only_in_diff_mode(tmp_path, ca_path):
    common = {"ca_path": str(ca_path), "path": str(tmp_path / "ids"), "devices": ["gw-1"]}
    plain = run_module("pki_identity", tmp_path, passphrase="module-secret", **common)
    assert "diff" not in plain
    assert plain["invocation"]["module_args"]["passphrase"] == "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"
    assert "module-secret" not in json.dumps(plain)
    with_diff = run_module(
        "pki_identity", tmp_path, passphrase="module-secret", key_type="ec-p384", _ansible_diff=True, **common
    )
    assert with_diff["diff"]["after"]["identities"]["gw-1"]["action"] == "reissue"
    assert "PRIVATE" not in json.dumps(with_diff)


def test_wrong_passphrase_message(tmp_path, ca_path):
    result = run_module("pki_ca", tmp_path, path=str(ca_path), passphrase="not-it")
    assert result["failed"] is True
    assert result["msg"].startswith("passphrase: cannot decrypt ")


def test_unwritable_output_is_reported_with_the_path(tmp_path, ca_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    result = run_module(
        "pki_identity",
        tmp_path,
        ca_path=str(ca_path),
        path=str(blocker / "ids"),
        devices=["gw-1"],
        passphrase="module-secret",
    )
    assert result["failed"] is True
    assert str(blocker) in result["msg"] and "check the path and its permissions" in result["msg"]


def test_verification_cert_module(tmp_path, ca_path):
    result = run_module(
        "pki_verification_cert",
        tmp_path,
        ca_path=str(ca_path),
        path=str(tmp_path / "v.pem"),
        verification_code="ABC123",
        passphrase="module-secret",
    )
    assert result["changed"] is True and result["certificate"]["subject"] == "CN=ABC123"


@pytest.mark.parametrize(
    ("module", "option", "args"),
    [
        ("pki_ca", "passphrase", {}),
        ("pki_ca", "previous_passphrase", {"reencrypt": True}),
        ("pki_identity", "passphrase", {"devices": ["gw-1"]}),
        ("pki_verification_cert", "passphrase", {"verification_code": "ABC123"}),
    ],
)
def test_a_secret_that_is_not_text_fails_and_changes_nothing(tmp_path, ca_path, module, option, args):
    """Ansible would turn ['module-secret'] into the text "['module-secret']" and re-key the CA with it."""
    files = {p.name: p.read_bytes() for p in ca_path.iterdir() if p.is_file()}
    paths = {"pki_ca": {"path": str(ca_path)}, "pki_identity": {"ca_path": str(ca_path), "path": str(tmp_path / "i")}}
    paths["pki_verification_cert"] = {"ca_path": str(ca_path), "path": str(tmp_path / "proof.pem")}
    result = run_module(module, tmp_path, **paths[module], **args, **{option: ["module-secret"]})
    assert result["failed"] is True
    assert result["msg"].startswith(f"{option}: must be a string, got a list.")
    assert "module-secret" not in json.dumps(result)
    assert {p.name: p.read_bytes() for p in ca_path.iterdir() if p.is_file()} == files
    assert not (tmp_path / "i").exists() and not (tmp_path / "proof.pem").exists()


def test_a_ca_handed_in_is_installed_and_its_keys_are_masked(tmp_path, ca_path):
    contents = {
        "root_cert_content": (ca_path / "root.cert.pem").read_text(),
        "root_key_content": (ca_path / "root.key.pem").read_text(),
        "intermediate_cert_content": (ca_path / "intermediate.cert.pem").read_text(),
        "intermediate_key_content": (ca_path / "intermediate.key.pem").read_text(),
    }
    target = tmp_path / "job" / "ca"
    result = run_module(
        "pki_ca", tmp_path, path=str(target), create=False, passphrase="module-secret", _ansible_diff=True, **contents
    )
    assert result["changed"] is True, result
    arguments = result["invocation"]["module_args"]
    assert (
        arguments["root_key_content"] == arguments["intermediate_key_content"] == "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"
    )
    key_lines = [
        line
        for name in ("root_key_content", "intermediate_key_content")
        for line in contents[name].splitlines()
        if not line.startswith("-----")
    ]
    assert [line for line in key_lines if line in json.dumps(result)] == []
    assert (target / "root.key.pem").read_text() == contents["root_key_content"]
    refused = run_module("pki_ca", tmp_path, path=str(tmp_path / "empty"), create=False)
    assert refused["failed"] is True and refused["msg"].startswith("create: is false and the fleet CA in ")
    assert not (tmp_path / "empty").exists()


def test_a_ca_key_that_is_not_text_fails_naming_the_option(tmp_path, ca_path):
    result = run_module("pki_ca", tmp_path, path=str(tmp_path / "job"), root_key_content=["module-secret"])
    assert result["failed"] is True
    assert result["msg"].startswith("root_key_content: must be a string, got a list.")
    assert "module-secret" not in json.dumps(result)
