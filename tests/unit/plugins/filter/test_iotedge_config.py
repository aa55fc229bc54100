"""The edgefleet.iotedge.iotedge_config filter: the core's text, the core's message as AnsibleFilterError."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.edgefleet.iotedge.plugins.filter.iotedge_config import FilterModule, iotedge_config
from ansible_collections.edgefleet.iotedge.plugins.module_utils._edge_config import render_edge_config

ROOT = Path(__file__).resolve().parents[4]
SETTINGS = {
    "generation": "1.2+",
    "registration_id": "edge-01",
    "iotedge_hostname": "edge-01",
    "dps_id_scope": "0ne00C0FFEE",
    "iotedge_identity_cert_path": "/var/aziot/certs/device-id.pem",
    "iotedge_identity_key_path": "/var/aziot/secrets/device-id.key.pem",
}


def test_the_filter_is_exposed_under_its_name():
    assert FilterModule().filters() == {"iotedge_config": iotedge_config}


def test_the_filter_returns_the_core_text():
    assert iotedge_config(SETTINGS) == render_edge_config(SETTINGS)


def test_errors_are_filter_errors_with_the_core_message_and_no_secret():
    settings = {
        **SETTINGS,
        "iotedge_identity_cert_method": "est",
        "iotedge_est_url": "https://est.example.com",
        "iotedge_est_password": "hunter2-secret",
    }
    with pytest.raises(AnsibleFilterError) as raised:
        iotedge_config(settings)
    message = str(raised.value)
    assert message.startswith("edgefleet_iotedge_est_username: is not set but edgefleet_iotedge_est_password is.")
    assert "hunter2-secret" not in message
    assert raised.value.__cause__ is None


def test_a_non_dictionary_is_refused():
    with pytest.raises(AnsibleFilterError, match="expects a dictionary of settings, got a list"):
        iotedge_config([SETTINGS])


def ansible_copy(tmp_path: Path, settings: dict) -> subprocess.CompletedProcess:
    """``copy: content="{{ settings | edgefleet.iotedge.iotedge_config }}"`` through ansible itself (2.19 passes
    tagged strings and containers to filters)."""
    (tmp_path / "vars.json").write_text(json.dumps({"settings": settings}))
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp")}
    return subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible"),
            "localhost",
            "-i",
            "localhost,",
            "-c",
            "local",
            "-e",
            f"@{tmp_path / 'vars.json'}",
            "-e",
            f"ansible_python_interpreter={sys.executable}",
            "-m",
            "ansible.builtin.copy",
            "-a",
            f"dest={tmp_path / 'config.toml'} content={{{{ settings | edgefleet.iotedge.iotedge_config }}}}",
        ],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        cwd=tmp_path,
    )


@pytest.mark.skipif(not (Path(sys.executable).parent / "ansible").exists(), reason="needs ansible next to python")
def test_through_ansible(tmp_path):
    done = ansible_copy(tmp_path, SETTINGS)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "config.toml").read_text() == render_edge_config(SETTINGS)
    again = ansible_copy(tmp_path, SETTINGS)
    assert again.returncode == 0 and "CHANGED" not in again.stdout, again.stdout

    failed = ansible_copy(
        tmp_path,
        {**SETTINGS, "iotedge_identity_key_pkcs11_uri": "x?pin-value=s3cret", "iotedge_identity_key_method": "pkcs11"},
    )
    assert failed.returncode != 0
    output = failed.stdout + failed.stderr
    assert "edgefleet_iotedge_identity_key_pkcs11_uri: does not start with 'pkcs11:'" in output
    assert "s3cret" not in output
