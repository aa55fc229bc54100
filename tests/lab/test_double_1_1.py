"""The 1.1 double's settings checks (settings.rs wording) and libiothsm's 2038 limit."""

from __future__ import annotations

import datetime
import subprocess

import pytest

from lab.runtime.double.iotedged import LIBIOTHSM_LIMIT, SettingsError, chain_limits, load_settings

GOOD = """\
provisioning:
  source: "dps"
  global_endpoint: "https://127.0.0.1:18444/"
  scope_id: "0ne00C0FFEE"
  attestation:
    method: "x509"
    identity_cert: "file:///var/iotedge/certs/device-id.pem"
    identity_pk: "file:///var/iotedge/secrets/device-id.key.pem"
"""


def test_a_dps_x509_config_loads():
    config = load_settings(GOOD)
    assert config["provisioning"]["attestation"]["method"] == "x509"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (GOOD.replace("  scope_id", " scope_id"), "while parsing a block mapping"),
        (GOOD.replace('  scope_id: "0ne00C0FFEE"\n', ""), "missing field `scope_id`"),
        (
            GOOD.replace("  attestation:\n", '  registration_id: "gw"\n  attestation:\n'),
            "Provisioning registration_id has to be set only in attestation",
        ),
        (
            GOOD.split("  attestation:", maxsplit=1)[0],
            "Provisioning registration_id has to be set",
        ),
        (
            GOOD.replace('"file:///var/iotedge/certs/device-id.pem"', '"/var/iotedge/certs/device-id.pem"'),
            "File URI /var/iotedge/certs/device-id.pem is unsupported for 'provisioning.attestation.identity_cert'. "
            "Please check the config.yaml file.",
        ),
        (
            GOOD.replace('"file:///var/iotedge/secrets/device-id.key.pem"', '"file://host/x.pem"'),
            "File URI file://host/x.pem is unsupported for 'provisioning.attestation.identity_pk'.",
        ),
    ],
)
def test_what_1_1_refuses(text, message):
    with pytest.raises(SettingsError) as refused:
        load_settings(text)
    assert message in str(refused.value)


def test_the_placeholder_connection_string_is_the_documented_device_config_error():
    text = 'provisioning:\n  source: "manual"\n  device_connection_string: "<ADD DEVICE CONNECTION STRING HERE>"\n'
    with pytest.raises(ValueError, match="Edge device information is required"):
        load_settings(text)


def test_chain_limits_read_every_certificate_of_a_bundle(tmp_path):
    pems = []
    for name, days in (("leaf", 30), ("root", 5000)):
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                str(tmp_path / f"{name}.key"),
                "-out",
                str(tmp_path / f"{name}.pem"),
                "-subj",
                f"/CN={name}",
                "-days",
                str(days),
            ],
            check=True,
            capture_output=True,
        )
        pems.append((tmp_path / f"{name}.pem").read_text())
    limits = chain_limits("".join(pems))
    assert [subject for subject, _not_after in limits] == ["CN=leaf", "CN=root"]
    now = datetime.datetime.now(datetime.UTC)
    assert limits[0][1] < LIBIOTHSM_LIMIT <= limits[1][1]
    assert limits[0][1] > now
