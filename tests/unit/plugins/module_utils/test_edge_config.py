"""The controller-side renderer of config.toml (1.2+) and config.yaml (1.1).

Every rendering variant goes through the runtime double's real parsers: ``iotedge config apply``
(lab/runtime/double/config_apply.py) for 1.2+, iotedged's settings loader (lab/runtime/double/iotedged.py) for 1.1.
"""

from __future__ import annotations

import io
import os
import random
import subprocess
import tomllib
import zlib
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import yaml

from ansible_collections.edgefleet.iotedge.plugins.module_utils import _edge_config
from ansible_collections.edgefleet.iotedge.plugins.module_utils._edge_config import (
    HEADER,
    SETTING_VARIABLES,
    SETTINGS,
    EdgeConfigError,
    EdgeConfigLibraryError,
    file_uri,
    render_edge_config,
)
from lab.runtime.double import config_apply, iotedged

CERT = "/var/aziot/certs/device-id.pem"
KEY = "/var/aziot/secrets/device-id.key.pem"
SCOPE = "0ne00C0FFEE"
EST_URL = "https://est.example.com/.well-known/est"
PIN_URI = "pkcs11:slot-id=0;object=device%20id?pin-value=s3cret-pin"
BASE_SLOT = "pkcs11:slot-id=0?pin-value=s3cret-pin"

BASE = {
    "generation": "1.2+",
    "registration_id": "edge-01",
    "iotedge_hostname": "edge-01",
    "dps_id_scope": SCOPE,
    "iotedge_identity_cert_path": CERT,
    "iotedge_identity_key_path": KEY,
}
BASE_1_1 = {
    **BASE,
    "generation": "1.1",
    "iotedge_identity_cert_path": "/var/iotedge/certs/device-id.pem",
    "iotedge_identity_key_path": "/var/iotedge/secrets/device-id.key.pem",
}
EST = {
    **BASE,
    "iotedge_identity_cert_method": "est",
    "iotedge_est_url": EST_URL,
    "iotedge_identity_cert_path": "",
    "iotedge_identity_key_path": "",
}
PKCS11 = {
    **BASE,
    "iotedge_identity_key_method": "pkcs11",
    "iotedge_identity_key_pkcs11_uri": PIN_URI,
    "iotedge_pkcs11_lib_path": "/usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so",
    "iotedge_pkcs11_base_slot": BASE_SLOT,
}
# What the role passes: every setting, most of them at their defaults.
ROLE_DEFAULTS = {
    "generation": "1.2+",
    "registration_id": "edge-01",
    "iotedge_hostname": "",
    "dps_global_endpoint": "https://global.azure-devices-provisioning.net",
    "dps_id_scope": SCOPE,
    "iotedge_identity_cert_method": "file",
    "iotedge_identity_cert_path": CERT,
    "iotedge_identity_key_method": "file",
    "iotedge_identity_key_path": KEY,
    "iotedge_identity_key_pkcs11_uri": "",
    "iotedge_pkcs11_lib_path": "",
    "iotedge_pkcs11_base_slot": "",
    "iotedge_est_url": "",
    "iotedge_est_trusted_certs": [],
    "iotedge_est_username": "",
    "iotedge_est_password": "",
    "iotedge_est_bootstrap_cert_path": "",
    "iotedge_est_bootstrap_key_path": "",
    "iotedge_est_bootstrap_key_pkcs11_uri": "",
    "iotedge_est_subject": {},
    "iotedge_est_expiry_days": None,
    "iotedge_est_auto_renew": False,
    "iotedge_est_auto_renew_rotate_key": True,
    "iotedge_est_auto_renew_threshold": "80%",
    "iotedge_est_auto_renew_retry": "4%",
    "iotedge_est_identity_auto_renew_rotate_key": True,
    "iotedge_est_identity_auto_renew_threshold": "80%",
    "iotedge_est_identity_auto_renew_retry": "4%",
    "iotedge_auto_reprovisioning_mode": "Dynamic",
    "iotedge_always_reprovision_on_startup": True,
    "iotedge_dynamic_reprovisioning": False,
    "iotedge_agent_image": "",
    "iotedge_trust_bundle_cert_path": "",
    "edge_ca": "quickstart",
    "iotedge_edge_ca_cert_path": "/var/aziot/certs/edge-ca.pem",
    "iotedge_edge_ca_key_path": "/var/aziot/secrets/edge-ca.key.pem",
    "iotedge_edge_ca_expiry_days": 90,
    "iotedge_edge_ca_renew_threshold": "80%",
    "iotedge_edge_ca_renew_retry": "4%",
}


class FakeHost(config_apply.Host):
    """As in tests/lab/test_double_config_apply.py: root, every service user is us, no systemctl."""

    def is_root(self) -> bool:
        return True

    def user(self, name: str) -> tuple[int, int]:
        return os.getuid(), os.getgid()

    def hostname(self) -> str:
        return "machine-name"

    def systemctl(self, verb: str, unit: str) -> subprocess.CompletedProcess:
        return subprocess.CompletedProcess([], 0, "", "")


def apply(tmp_path: Path, text: str) -> dict[str, dict]:
    """Run the double's ``iotedge config apply`` on the text; return the per-service files, parsed."""
    config = tmp_path / "config.toml"
    config.write_text(text)
    host = FakeHost(etc=tmp_path / "etc")
    out = io.StringIO()
    config_apply.apply(config, host, out)
    assert "Azure IoT Edge has been configured successfully!" in out.getvalue()
    return {
        service: tomllib.loads((tmp_path / "etc" / service / "config.d/00-super.toml").read_text())
        for service in ("keyd", "certd", "identityd", "tpmd", "edged")
    }


def load_1_1(text: str) -> dict:
    """The 1.1 double's settings loader (settings.rs checks); it raises on anything 1.1 refuses."""
    return iotedged.load_settings(text)


def failure(settings: dict) -> EdgeConfigError:
    with pytest.raises(EdgeConfigError) as raised:
        render_edge_config(settings)
    return raised.value


# ---- 1.2+: each variant through `iotedge config apply` ---------------------------------------------------------


def test_file_cert_and_file_key(tmp_path):
    text = render_edge_config(BASE)
    files = apply(tmp_path, text)
    identityd = files["identityd"]
    assert identityd["hostname"] == "edge-01"
    assert identityd["provisioning"] == {
        "source": "dps",
        "global_endpoint": "https://global.azure-devices-provisioning.net",
        "scope_id": SCOPE,
        "attestation": {
            "method": "x509",
            "registration_id": "edge-01",
            "identity_cert": "device-id",
            "identity_pk": "device-id",
        },
    }
    assert files["keyd"]["preloaded_keys"] == {"device-id": f"file://{KEY}"}
    assert files["keyd"]["aziot_keys"] == {"homedir_path": "/var/lib/aziot/keyd"}
    assert files["certd"]["preloaded_certs"]["device-id"] == f"file://{CERT}"
    assert config_apply.file_path(files["certd"]["preloaded_certs"]["device-id"]) == CERT
    assert files["edged"]["auto_reprovisioning_mode"] == "Dynamic"
    assert files["edged"]["agent"]["config"]["image"] == "mcr.microsoft.com/azureiotedge-agent:1.5"


def test_the_defaults_render_exactly_this():
    assert render_edge_config(BASE) == (
        HEADER + "\n"
        'hostname = "edge-01"\n'
        'auto_reprovisioning_mode = "Dynamic"\n'
        "\n"
        "[provisioning]\n"
        'source = "dps"\n'
        'global_endpoint = "https://global.azure-devices-provisioning.net"\n'
        'id_scope = "0ne00C0FFEE"\n'
        "\n"
        "[provisioning.attestation]\n"
        'method = "x509"\n'
        'registration_id = "edge-01"\n'
        'identity_cert = "file:///var/aziot/certs/device-id.pem"\n'
        'identity_pk = "file:///var/aziot/secrets/device-id.key.pem"\n'
        "\n"
        "[agent]\n"
        'name = "edgeAgent"\n'
        'type = "docker"\n'
        "\n"
        "[agent.config]\n"
        'image = "mcr.microsoft.com/azureiotedge-agent:1.5"\n'
    )


def test_the_file_says_ansible_manages_it_and_top_level_keys_come_before_any_table():
    text = render_edge_config({**BASE, "iotedge_trust_bundle_cert_path": "/etc/aziot/trust.pem"})
    lines = text.splitlines()
    assert lines[0].startswith("# ") and "Ansible (edgefleet.iotedge)" in lines[0]
    assert "overwritten" in lines[0]
    first_table = next(number for number, line in enumerate(lines) if line.startswith("["))
    for key in ("hostname", "trust_bundle_cert", "auto_reprovisioning_mode"):
        assert any(line.startswith(f"{key} = ") for line in lines[:first_table]), key


def test_the_role_defaults_render_like_the_minimal_settings(tmp_path):
    """The role passes every setting; unused ones at their defaults change nothing."""
    minimal = {key: value for key, value in BASE.items() if key != "iotedge_hostname"}
    assert render_edge_config(ROLE_DEFAULTS) == render_edge_config(minimal)
    apply(tmp_path, render_edge_config(ROLE_DEFAULTS))


def test_paths_become_percent_encoded_file_uris_that_the_runtime_reads_back(tmp_path):
    cert = "/var/aziot/certs/my device #1 [a]%.pem"
    key = "/var/aziot/secrets/ключ?.pem"
    text = render_edge_config({**BASE, "iotedge_identity_cert_path": cert, "iotedge_identity_key_path": key})
    files = apply(tmp_path, text)
    assert config_apply.file_path(files["certd"]["preloaded_certs"]["device-id"]) == cert
    assert config_apply.file_path(files["keyd"]["preloaded_keys"]["device-id"]) == key
    assert file_uri(cert) == "file:///var/aziot/certs/my%20device%20%231%20%5Ba%5D%25.pem"


def test_pkcs11_key_with_aziot_keys(tmp_path):
    files = apply(tmp_path, render_edge_config(PKCS11))
    assert files["keyd"]["aziot_keys"] == {
        "homedir_path": "/var/lib/aziot/keyd",
        "pkcs11_lib_path": "/usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so",
        "pkcs11_base_slot": BASE_SLOT,
    }
    # keyd writes the URI back in its own form: every byte but letters and digits percent-encoded.
    assert files["keyd"]["preloaded_keys"] == {"device-id": PIN_URI.replace("s3cret-pin", "s3cret%2Dpin")}
    assert files["certd"]["preloaded_certs"]["device-id"] == f"file://{CERT}"


def test_registration_id_omitted(tmp_path):
    text = render_edge_config({**BASE, "registration_id": ""})
    assert "registration_id" not in text
    assert render_edge_config({**BASE, "registration_id": None}) == text
    attestation = apply(tmp_path, text)["identityd"]["provisioning"]["attestation"]
    assert "registration_id" not in attestation
    assert attestation["identity_cert"] == "device-id"


def test_hostname_omitted_uses_the_machine_hostname(tmp_path):
    text = render_edge_config({**BASE, "iotedge_hostname": ""})
    assert "hostname" not in tomllib.loads(text)
    files = apply(tmp_path, text)
    assert files["identityd"]["hostname"] == "machine-name"
    assert files["edged"]["hostname"] == "machine-name"


@pytest.mark.parametrize("mode", ["Dynamic", "AlwaysOnStartup", "OnErrorOnly"])
def test_each_auto_reprovisioning_mode(tmp_path, mode):
    text = render_edge_config({**BASE, "iotedge_auto_reprovisioning_mode": mode})
    assert f'\nauto_reprovisioning_mode = "{mode}"\n' in text
    assert apply(tmp_path, text)["edged"]["auto_reprovisioning_mode"] == mode


def test_trust_bundle(tmp_path):
    text = render_edge_config({**BASE, "iotedge_trust_bundle_cert_path": "/etc/aziot/trust bundle.pem"})
    document = config_apply.parse(text)
    assert document["trust_bundle_cert"] == "file:///etc/aziot/trust%20bundle.pem"
    assert (
        config_apply.file_path(config_apply.check_url(document["trust_bundle_cert"])) == "/etc/aziot/trust bundle.pem"
    )
    apply(tmp_path, text)


def test_agent_image_and_endpoint(tmp_path):
    text = render_edge_config(
        {
            **BASE,
            "iotedge_agent_image": "registry.example.com:5000/edge/agent:1.5.44@sha256:" + "ab" * 32,
            "dps_global_endpoint": "https://127.0.0.1:18444/",
        }
    )
    files = apply(tmp_path, text)
    assert files["edged"]["agent"]["config"]["image"].startswith("registry.example.com:5000/edge/agent:1.5.44@")
    assert files["identityd"]["provisioning"]["global_endpoint"] == "https://127.0.0.1:18444/"


# EST issuance: the rendering, and what the double's `iotedge config apply` makes of it (aziotctl-common's apply.rs, whose
# test-files/apply EST cases tests/lab reproduces file by file).
def est_document(tmp_path: Path, settings: dict) -> tuple[dict, dict]:
    text = render_edge_config(settings)
    files = apply(tmp_path, text)
    document = config_apply.parse(text)
    assert document["provisioning"]["source"] == "dps"
    assert document["provisioning"]["id_scope"] == SCOPE
    assert document["provisioning"]["attestation"]["method"] == "x509"
    assert "identity_pk" not in document["provisioning"]["attestation"]
    assert files["identityd"]["provisioning"]["attestation"]["identity_cert"] == "device-id"
    return document, files


def test_est_without_auth(tmp_path):
    document, files = est_document(tmp_path, EST)
    assert files["certd"]["cert_issuance"]["est"] == {"urls": {"default": EST_URL}}
    assert files["certd"]["cert_issuance"]["device-id"] == {"method": "est", "url": EST_URL, "common_name": "edge-01"}
    assert files["identityd"]["provisioning"]["attestation"] == {
        "method": "x509",
        "identity_cert": "device-id",
        "identity_pk": "device-id",
        "registration_id": "edge-01",
    }
    assert document["provisioning"]["attestation"] == {
        "method": "x509",
        "registration_id": "edge-01",
        "identity_cert": {"method": "est", "common_name": "edge-01", "url": EST_URL},
    }
    assert document["cert_issuance"] == {"est": {"urls": {"default": EST_URL}}}
    assert "aziot_keys" not in document


def test_est_with_auth_trusted_certs_and_expiry(tmp_path):
    document, files = est_document(
        tmp_path,
        {
            **EST,
            "iotedge_est_username": "est-user",
            "iotedge_est_password": 'pa"ss\n[provisioning]\nsource = "manual" # x',
            "iotedge_est_trusted_certs": ["/etc/aziot/est/root.pem", "/etc/aziot/est/inter mediate.pem"],
            "iotedge_est_expiry_days": 365,
        },
    )
    assert document["provisioning"]["attestation"]["identity_cert"] == {
        "method": "est",
        "common_name": "edge-01",
        "url": EST_URL,
        "expiry_days": 365,
    }
    assert document["cert_issuance"] == {
        "est": {
            "trusted_certs": ["file:///etc/aziot/est/root.pem", "file:///etc/aziot/est/inter%20mediate.pem"],
            "auth": {"username": "est-user", "password": 'pa"ss\n[provisioning]\nsource = "manual" # x'},
            "urls": {"default": EST_URL},
        }
    }
    for uri in document["cert_issuance"]["est"]["trusted_certs"]:
        config_apply.file_path(config_apply.check_url(uri))
    assert files["certd"]["cert_issuance"]["est"] == {
        "trusted_certs": ["est-server-ca-1", "est-server-ca-2"],
        "username": "est-user",
        "password": 'pa"ss\n[provisioning]\nsource = "manual" # x',
        "urls": {"default": EST_URL},
    }
    assert files["certd"]["preloaded_certs"]["est-server-ca-2"] == "file:///etc/aziot/est/inter%20mediate.pem"
    assert files["certd"]["cert_issuance"]["device-id"]["expiry_days"] == 365


def test_est_with_bootstrap_identity(tmp_path):
    document, files = est_document(
        tmp_path,
        {
            **EST,
            "iotedge_est_bootstrap_cert_path": "/var/aziot/certs/est-bootstrap.pem",
            "iotedge_est_bootstrap_key_path": "/var/aziot/secrets/est-bootstrap.key.pem",
        },
    )
    auth = document["cert_issuance"]["est"]["auth"]
    assert auth == {
        "bootstrap_identity_cert": "file:///var/aziot/certs/est-bootstrap.pem",
        "bootstrap_identity_pk": "file:///var/aziot/secrets/est-bootstrap.key.pem",
    }
    config_apply.check_key_location(auth["bootstrap_identity_pk"])
    assert files["certd"]["cert_issuance"]["est"] == {
        "identity_cert": "est-id",
        "identity_pk": "est-id",
        "bootstrap_identity_cert": "est-bootstrap-id",
        "bootstrap_identity_pk": "est-bootstrap-id",
        "urls": {"default": EST_URL},
    }
    assert files["keyd"]["preloaded_keys"]["est-bootstrap-id"] == "file:///var/aziot/secrets/est-bootstrap.key.pem"
    assert files["keyd"]["principal"][1]["keys"] == ["est-bootstrap-id", "est-id", "est-id-temp"]


def test_est_with_auto_renew_and_an_http_url(tmp_path):
    document, files = est_document(
        tmp_path, {**EST, "iotedge_est_auto_renew": True, "iotedge_est_url": "http://est.internal:8085/.well-known/est"}
    )
    assert files["identityd"]["provisioning"]["attestation"]["identity_auto_renew"] == {
        "rotate_key": True,
        "threshold": "80%",
        "retry": "4%",
    }
    assert files["certd"]["principal"][0]["certs"] == ["device-id-temp", "device-id"]
    identity_cert = document["provisioning"]["attestation"]["identity_cert"]
    assert identity_cert["auto_renew"] == {"rotate_key": True, "threshold": "80%", "retry": "4%"}
    assert identity_cert["url"] == "http://est.internal:8085/.well-known/est"
    text = render_edge_config({**EST, "iotedge_est_auto_renew": True})
    assert "\n[provisioning.attestation.identity_cert.auto_renew]\n" in text


def test_est_with_a_pkcs11_key_store(tmp_path):
    document, _files = est_document(
        tmp_path,
        {
            **PKCS11,
            **{k: v for k, v in EST.items() if k.startswith("iotedge_est")},
            "iotedge_identity_cert_method": "est",
        },
    )
    assert document["aziot_keys"] == {
        "pkcs11_lib_path": "/usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so",
        "pkcs11_base_slot": BASE_SLOT,
    }
    assert isinstance(document["provisioning"]["attestation"]["identity_cert"], dict)


def test_est_with_a_subject_renewal_values_and_a_bootstrap_key_in_a_token(tmp_path):
    """The upstream shapes: a subject table (CN the registration id), auto_renew and identity_auto_renew values other
    than the runtime's, and the bootstrap key as a PKCS#11 URI with [aziot_keys]."""
    settings = {
        **EST,
        "iotedge_est_subject": {"o": "Contoso", "L": "AQ"},
        "iotedge_est_auto_renew": True,
        "iotedge_est_auto_renew_rotate_key": False,
        "iotedge_est_auto_renew_threshold": "50%",
        "iotedge_est_auto_renew_retry": "10%",
        "iotedge_est_identity_auto_renew_threshold": "7day",
        "iotedge_est_bootstrap_cert_path": "/var/aziot/certs/est-bootstrap.pem",
        "iotedge_est_bootstrap_key_pkcs11_uri": "pkcs11:token=edge;object=est-bootstrap?pin-value=1234",
        "iotedge_pkcs11_lib_path": "/usr/lib/softhsm/libsofthsm2.so",
        "iotedge_pkcs11_base_slot": "pkcs11:token=edge?pin-value=1234",
    }
    document, files = est_document(tmp_path, settings)
    identity_cert = document["provisioning"]["attestation"]["identity_cert"]
    assert (
        identity_cert["subject"] == {"CN": "edge-01", "O": "Contoso", "L": "AQ"} and "common_name" not in identity_cert
    )
    assert identity_cert["auto_renew"] == {"rotate_key": False, "threshold": "50%", "retry": "10%"}
    assert document["cert_issuance"]["est"]["identity_auto_renew"] == {
        "rotate_key": True,
        "threshold": "7day",
        "retry": "4%",
    }
    assert document["aziot_keys"]["pkcs11_lib_path"] == "/usr/lib/softhsm/libsofthsm2.so"
    # What the runtime makes of it: the registration id as CN with the rest, the bootstrap key in keyd's URI form.
    attestation = files["identityd"]["provisioning"]["attestation"]
    assert attestation["registration_id"] == {"CN": "edge-01", "L": "AQ", "O": "Contoso"}
    assert attestation["identity_auto_renew"] == {"rotate_key": False, "threshold": "50%", "retry": "10%"}
    assert files["certd"]["cert_issuance"]["est"]["identity_auto_renew"]["threshold"] == "7day"
    assert (
        files["keyd"]["preloaded_keys"]["est-bootstrap-id"] == "pkcs11:token=edge;object=est%2Dbootstrap?pin-value=1234"
    )
    assert files["keyd"]["principal"][1]["keys"] == ["est-bootstrap-id", "est-id", "est-id-temp"]


@pytest.mark.parametrize(
    "extra, variable, text",
    [
        ({"iotedge_est_subject": {"CN": "other"}}, "edgefleet_iotedge_est_subject", "sets CN"),
        ({"iotedge_est_subject": {"O=x": "y"}}, "edgefleet_iotedge_est_subject", "is not one"),
        ({"iotedge_est_subject": {"O": "a\nb"}}, "edgefleet_iotedge_est_subject", "without control characters"),
        ({"iotedge_est_subject": ["O=x"]}, "edgefleet_iotedge_est_subject", "must be a mapping"),
        (
            {"iotedge_est_auto_renew": True, "iotedge_est_auto_renew_threshold": "100%"},
            "edgefleet_iotedge_est_auto_renew_threshold",
            "not a renewal policy",
        ),
        (
            {"iotedge_est_identity_auto_renew_retry": "soon"},
            "edgefleet_iotedge_est_identity_auto_renew_retry",
            "not a renewal policy",
        ),
        (
            {
                "iotedge_est_bootstrap_cert_path": "/b.pem",
                "iotedge_est_bootstrap_key_path": "/b.key",
                "iotedge_est_bootstrap_key_pkcs11_uri": "pkcs11:token=t;object=b?pin-value=1",
            },
            "edgefleet_iotedge_est_bootstrap_key_pkcs11_uri",
            "Set one of them",
        ),
        (
            {
                "iotedge_est_bootstrap_cert_path": "/b.pem",
                "iotedge_est_bootstrap_key_pkcs11_uri": "pkcs11:token=t;object=b",
            },
            "edgefleet_iotedge_pkcs11_lib_path",
            "needs both",
        ),
    ],
)
def test_bad_est_shapes_name_the_variable(extra, variable, text):
    with pytest.raises(EdgeConfigError) as raised:
        render_edge_config({**EST, **extra})
    assert str(raised.value).startswith(variable + ":") and text in str(raised.value)


# ---- 1.1: each variant through iotedged's settings loader -----------------------------------------------------


def test_1_1_defaults_load_in_the_1_1_daemon():
    text = render_edge_config(BASE_1_1)
    assert text.startswith(HEADER)
    config = load_1_1(text)
    provisioning = config["provisioning"]
    assert provisioning["source"] == "dps"
    assert provisioning["global_endpoint"] == "https://global.azure-devices-provisioning.net"
    assert provisioning["scope_id"] == SCOPE
    assert provisioning["attestation"] == {
        "method": "x509",
        "registration_id": "edge-01",
        "identity_cert": "file:///var/iotedge/certs/device-id.pem",
        "identity_pk": "file:///var/iotedge/secrets/device-id.key.pem",
    }
    assert provisioning["always_reprovision_on_startup"] is True
    assert provisioning["dynamic_reprovisioning"] is False
    cert = iotedged.file_uri("provisioning.attestation.identity_cert", provisioning["attestation"]["identity_cert"])
    assert str(cert) == "/var/iotedge/certs/device-id.pem"
    # Everything else the 1.1 daemon needs (device-side.md 2; the 1.1 template).
    assert config["agent"] == {
        "name": "edgeAgent",
        "type": "docker",
        "env": {},
        "config": {"image": "mcr.microsoft.com/azureiotedge-agent:1.1", "auth": {}},
    }
    assert config["hostname"] == "edge-01"
    assert config["connect"] == {
        "management_uri": "unix:///var/run/iotedge/mgmt.sock",
        "workload_uri": "unix:///var/run/iotedge/workload.sock",
    }
    assert config["listen"] == {"management_uri": "fd://iotedge.mgmt.socket", "workload_uri": "fd://iotedge.socket"}
    assert config["homedir"] == "/var/lib/iotedge"
    assert config["moby_runtime"] == {"uri": "unix:///var/run/docker.sock", "network": "azure-iot-edge"}


def test_1_1_renders_exactly_this():
    assert render_edge_config(BASE_1_1) == (
        HEADER + "\n"
        "provisioning:\n"
        '  source: "dps"\n'
        '  global_endpoint: "https://global.azure-devices-provisioning.net"\n'
        '  scope_id: "0ne00C0FFEE"\n'
        "  attestation:\n"
        '    method: "x509"\n'
        '    registration_id: "edge-01"\n'
        '    identity_cert: "file:///var/iotedge/certs/device-id.pem"\n'
        '    identity_pk: "file:///var/iotedge/secrets/device-id.key.pem"\n'
        "  always_reprovision_on_startup: true\n"
        "  dynamic_reprovisioning: false\n"
        "agent:\n"
        '  name: "edgeAgent"\n'
        '  type: "docker"\n'
        "  env: {}\n"
        "  config:\n"
        '    image: "mcr.microsoft.com/azureiotedge-agent:1.1"\n'
        "    auth: {}\n"
        'hostname: "edge-01"\n'
        "connect:\n"
        '  management_uri: "unix:///var/run/iotedge/mgmt.sock"\n'
        '  workload_uri: "unix:///var/run/iotedge/workload.sock"\n'
        "listen:\n"
        '  management_uri: "fd://iotedge.mgmt.socket"\n'
        '  workload_uri: "fd://iotedge.socket"\n'
        'homedir: "/var/lib/iotedge"\n'
        "moby_runtime:\n"
        '  uri: "unix:///var/run/docker.sock"\n'
        '  network: "azure-iot-edge"\n'
    )


@pytest.mark.parametrize("always", [True, False])
@pytest.mark.parametrize("dynamic", [True, False])
def test_1_1_with_both_reprovisioning_flags(always, dynamic):
    config = load_1_1(
        render_edge_config(
            {
                **BASE_1_1,
                "iotedge_always_reprovision_on_startup": always,
                "iotedge_dynamic_reprovisioning": dynamic,
            }
        )
    )
    assert config["provisioning"]["always_reprovision_on_startup"] is always
    assert config["provisioning"]["dynamic_reprovisioning"] is dynamic


def test_1_1_registration_id_omitted_and_agent_image():
    config = load_1_1(
        render_edge_config({**BASE_1_1, "registration_id": "", "iotedge_agent_image": "myregistry.io/agent:1.1.19"})
    )
    assert "registration_id" not in config["provisioning"]["attestation"]
    assert config["agent"]["config"]["image"] == "myregistry.io/agent:1.1.19"


def test_1_1_ignores_what_only_1_2_uses():
    """The role passes every setting; the 1.2+ ones at any value do not change config.yaml."""
    with_others = {
        **ROLE_DEFAULTS,
        **BASE_1_1,
        "iotedge_auto_reprovisioning_mode": "OnErrorOnly",
        "iotedge_trust_bundle_cert_path": "/etc/aziot/trust.pem",
        "iotedge_pkcs11_lib_path": "/usr/lib/libp.so",
        "iotedge_est_url": "https://est.example.com",
    }
    assert render_edge_config(with_others) == render_edge_config(BASE_1_1)
    load_1_1(render_edge_config(with_others))


def test_1_1_strings_that_yaml_1_1_would_read_as_other_types_stay_strings():
    config = load_1_1(render_edge_config({**BASE_1_1, "dps_id_scope": "0123", "registration_id": "yes"}))
    assert config["provisioning"]["scope_id"] == "0123"
    assert config["provisioning"]["attestation"]["registration_id"] == "yes"


def test_1_2_ignores_what_only_1_1_uses():
    assert render_edge_config(
        {**BASE, "iotedge_always_reprovision_on_startup": "maybe", "iotedge_dynamic_reprovisioning": 7}
    ) == render_edge_config(BASE)


# ---- determinism -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("settings", [BASE, BASE_1_1, PKCS11, {**EST, "iotedge_est_auto_renew": True}])
def test_same_settings_same_bytes_whatever_the_key_order(settings):
    reversed_order = dict(reversed(list(settings.items())))
    assert render_edge_config(settings) == render_edge_config(dict(settings)) == render_edge_config(reversed_order)


# ---- bad input -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "variable", "words"),
    [
        ({**BASE, "registration_id": "Edge-01"}, "registration_id", "use 'edge-01'"),
        # '$' matches before a trailing newline: every pattern must match the whole value.
        ({**BASE, "registration_id": "edge-01\n"}, "registration_id", "line breaks"),
        ({**BASE, "iotedge_hostname": "edge-01\n"}, "iotedge_hostname", "not a DNS host name"),
        ({**BASE, "dps_id_scope": "0ne00C0FFEE\n"}, "dps_id_scope", "not a DPS ID scope"),
        ({**BASE, "iotedge_agent_image": "mcr.microsoft.com/azureiotedge-agent:1.5\n"}, "iotedge_agent_image", "image"),
        (
            {**BASE, "dps_global_endpoint": "https://global.azure-devices-provisioning.net\n"},
            "dps_global_endpoint",
            "whitespace",
        ),
        (
            {**BASE, "iotedge_identity_cert_path": "/var/aziot/certs/device-id.pem\n"},
            "iotedge_identity_cert_path",
            "control",
        ),
        ({**PKCS11, "iotedge_pkcs11_lib_path": "/usr/lib/libp.so\n"}, "iotedge_pkcs11_lib_path", "control"),
        ({**EST, "iotedge_est_url": "https://est.example.com\n"}, "iotedge_est_url", "whitespace"),
        ({**BASE, "registration_id": 'edge"01'}, "registration_id", "not valid for DPS"),
        ({**BASE, "registration_id": "edge\n01"}, "registration_id", "not valid for DPS"),
        ({**BASE, "registration_id": 'edge"]\n[provisioning]\nsource = "manual'}, "registration_id", "not valid"),
        ({**BASE, "registration_id": "x]\n[provisioning]"}, "registration_id", "not valid for DPS"),
        ({**BASE, "registration_id": "a" * 65}, "registration_id", "65 characters"),
        ({**BASE, "registration_id": 42}, "registration_id", "must be a string"),
        ({**BASE, "iotedge_hostname": "edge 01"}, "iotedge_hostname", "not a DNS host name"),
        ({**BASE, "iotedge_hostname": "-edge"}, "iotedge_hostname", "not a DNS host name"),
        ({**BASE, "iotedge_hostname": "a" * 64}, "iotedge_hostname", "not a DNS host name"),
        ({**BASE, "iotedge_hostname": ".".join(["a" * 63] * 4)}, "iotedge_hostname", "253"),
        ({**BASE, "iotedge_hostname": 'edge"\nhostname = "x'}, "iotedge_hostname", "not a DNS host name"),
        ({**BASE_1_1, "iotedge_hostname": ""}, "iotedge_hostname", "config.yaml needs a hostname"),
        ({**BASE, "dps_id_scope": ""}, "dps_id_scope", "az iot dps show"),
        ({**BASE, "dps_id_scope": None}, "dps_id_scope", "DPS overview page"),
        ({k: v for k, v in BASE.items() if k != "dps_id_scope"}, "dps_id_scope", "is not set"),
        ({**BASE, "dps_id_scope": '0ne"00'}, "dps_id_scope", "not a DPS ID scope"),
        (
            {**BASE, "dps_global_endpoint": "http://global.azure-devices-provisioning.net"},
            "dps_global_endpoint",
            "https",
        ),
        ({**BASE, "dps_global_endpoint": "https://"}, "dps_global_endpoint", "no host"),
        ({**BASE, "dps_global_endpoint": 'https://x"y'}, "dps_global_endpoint", "quotes"),
        ({**BASE, "dps_global_endpoint": "https://a b"}, "dps_global_endpoint", "whitespace"),
        ({**BASE, "dps_global_endpoint": "global.azure-devices-provisioning.net"}, "dps_global_endpoint", "https"),
        ({**BASE, "iotedge_identity_cert_path": "certs/device-id.pem"}, "iotedge_identity_cert_path", "absolute"),
        ({**BASE, "iotedge_identity_cert_path": ""}, "iotedge_identity_cert_path", "is not set"),
        ({**BASE, "iotedge_identity_cert_path": "/x\n/y"}, "iotedge_identity_cert_path", "control characters"),
        ({**BASE, "iotedge_identity_key_path": "file:///var/x.pem"}, "iotedge_identity_key_path", "absolute path"),
        ({**BASE_1_1, "iotedge_identity_key_path": "key.pem"}, "iotedge_identity_key_path", "absolute path"),
        ({**PKCS11, "generation": "1.1"}, "iotedge_identity_key_method", "1.2+"),
        ({**EST, "generation": "1.1"}, "iotedge_identity_cert_method", "1.2+"),
        ({**EST, "iotedge_est_url": ""}, "iotedge_est_url", "is not set"),
        ({**EST, "iotedge_est_url": "ftp://est.example.com"}, "iotedge_est_url", "https:// or http://"),
        ({**EST, "registration_id": ""}, "registration_id", "common name"),
        ({**PKCS11, "iotedge_identity_key_pkcs11_uri": "slot-id=0"}, "iotedge_identity_key_pkcs11_uri", "pkcs11:"),
        ({**PKCS11, "iotedge_identity_key_pkcs11_uri": ""}, "iotedge_identity_key_pkcs11_uri", "is not set"),
        ({**PKCS11, "iotedge_pkcs11_lib_path": ""}, "iotedge_pkcs11_lib_path", "needs both"),
        ({**PKCS11, "iotedge_pkcs11_base_slot": None}, "iotedge_pkcs11_base_slot", "needs both"),
        ({**PKCS11, "iotedge_pkcs11_lib_path": "libp.so"}, "iotedge_pkcs11_lib_path", "absolute path"),
        ({**PKCS11, "iotedge_pkcs11_base_slot": "slot-id=0"}, "iotedge_pkcs11_base_slot", "pkcs11:"),
        ({**BASE, "iotedge_hostnme": "x"}, "iotedge_hostnme", "not a setting"),
        ({**BASE, "edgefleet_dps_id_scope": SCOPE}, "dps_id_scope", "without the 'edgefleet_' prefix"),
        ({**EST, "iotedge_est_expiry_days": 0}, "iotedge_est_expiry_days", "greater than 0"),
        ({**EST, "iotedge_est_expiry_days": -3}, "iotedge_est_expiry_days", "greater than 0"),
        ({**EST, "iotedge_est_expiry_days": True}, "iotedge_est_expiry_days", "whole number"),
        ({**EST, "iotedge_est_auto_renew": "sometimes"}, "iotedge_est_auto_renew", "true or false"),
        ({**EST, "iotedge_est_username": "u"}, "iotedge_est_password", "Set both"),
        ({**EST, "iotedge_est_password": "p"}, "iotedge_est_username", "Set both"),
        ({**EST, "iotedge_est_bootstrap_cert_path": "/c.pem"}, "iotedge_est_bootstrap_key_path", "Set both"),
        ({**EST, "iotedge_est_trusted_certs": "/etc/est.pem"}, "iotedge_est_trusted_certs", "list of paths"),
        ({**EST, "iotedge_est_trusted_certs": ["est.pem"]}, "iotedge_est_trusted_certs", "absolute path"),
        ({**BASE, "iotedge_identity_cert_method": "EST"}, "iotedge_identity_cert_method", "file, est"),
        ({**BASE, "iotedge_auto_reprovisioning_mode": "dynamic"}, "iotedge_auto_reprovisioning_mode", "Dynamic"),
        (
            {**BASE, "iotedge_agent_image": "mcr.microsoft.com/azureiotedge-agent:1.5 --x"},
            "iotedge_agent_image",
            "image",
        ),
        ({**BASE, "iotedge_agent_image": 'a"\n[agent]'}, "iotedge_agent_image", "not a container image"),
        ({**BASE, "iotedge_trust_bundle_cert_path": "trust.pem"}, "iotedge_trust_bundle_cert_path", "absolute"),
        ({**BASE, "generation": "1.5"}, "generation", "1.2+, 1.1"),
        ({k: v for k, v in BASE.items() if k != "generation"}, "generation", "is not set"),
    ],
)
def test_bad_settings_name_the_variable_to_change(settings, variable, words):
    error = failure(settings)
    assert error.setting == variable
    # The derived identity paths are named by the directory variables the user sets.
    expected = SETTING_VARIABLES.get(variable, f"edgefleet_{variable}")
    assert error.variable == expected
    message = str(error)
    assert message.startswith(f"{expected}: ")
    assert words in message
    # "<problem>. <how to fix>"
    assert ". " in message[len(expected) + 2 :]


def test_an_unknown_setting_lists_the_others_too():
    message = str(failure({**BASE, "zz_extra": 1, "aa_extra": 2}))
    assert message.startswith("edgefleet_aa_extra: is not a setting")
    assert "unknown too: zz_extra" in message
    assert "iotedge_identity_cert_path" in message


@pytest.mark.parametrize(
    "settings",
    [
        {**PKCS11, "iotedge_identity_key_pkcs11_uri": "slot-id=0?pin-value=s3cret-pin"},
        {**PKCS11, "iotedge_identity_key_pkcs11_uri": "pkcs11:slot-id=0?pin-value=s3cret-pin x"},
        {**PKCS11, "iotedge_pkcs11_base_slot": "slot-id=0?pin-value=s3cret-pin"},
        {**PKCS11, "iotedge_identity_key_method": "pkcs-11", "iotedge_identity_key_pkcs11_uri": "s3cret-pin"},
        {**EST, "iotedge_est_password": "s3cret-pin"},
        {**EST, "iotedge_est_username": "s3cret-pin"},
        {**EST, "iotedge_est_username": "u", "iotedge_est_password": "s3cret-pin\x00"},
        {**EST, "iotedge_est_password": "s3cret-pin", "iotedge_est_username": "u", "iotedge_est_url": "ftp://x"},
        {**PKCS11, "generation": "1.1"},
    ],
)
def test_errors_never_repeat_secrets(settings):
    assert "s3cret-pin" not in str(failure(settings))


# ---- arbitrary text cannot add keys ----------------------------------------------------------------------------

NASTY = [
    '"',
    "'",
    "\\",
    "\n",
    "\r",
    "\t",
    "\x00",
    "\x1b",
    "\x7f",
    "[",
    "]",
    "[provisioning]",
    "[[principal]]",
    "#",
    "=",
    " = ",
    '"""',
    "'''",
    "\\u0022",
    "---",
    "...",
    ": ",
    "- ",
    "{",
    "}",
    "&a",
    "*a",
    "!!python/object",
    "%",
    "?",
    "é",
    "\u2028",
    "\ufeff",
    "\U0001f600",
    "\ud800",
    "yes",
    "0o17",
    "1e3",
    "null",
    "~",
]
ALPHABET = "abcz09.-_:/@ "


def random_strings(seed: int, count: int = 150) -> list[str]:
    rng = random.Random(seed)
    found = [*NASTY, "a" + '"\n[provisioning.attestation]\nidentity_pk = "file:///evil"\n#']
    for _count in range(count):
        length = rng.randint(1, 8)
        found.append("".join(rng.choice(NASTY) if rng.random() < 0.4 else rng.choice(ALPHABET) for _i in range(length)))
    return found


def key_paths(value, prefix=()) -> set[tuple]:
    if isinstance(value, dict):
        paths = {prefix}
        for key, item in value.items():
            paths |= key_paths(item, (*prefix, key))
        return paths
    return {prefix}


def lookup(document: dict, path: tuple):
    for key in path:
        document = document[key]
    return document


def as_path(uri: str) -> str:
    return config_apply.file_path(uri)


# (settings that make the field matter, field, where its value lands, how the value is written)
FREE_TEXT_FIELDS = [
    (BASE, "iotedge_agent_image", ("agent", "config", "image"), None),
    (BASE, "registration_id", ("provisioning", "attestation", "registration_id"), None),
    (BASE, "iotedge_hostname", ("hostname",), None),
    (BASE, "dps_id_scope", ("provisioning", "id_scope"), None),
    (BASE, "dps_global_endpoint", ("provisioning", "global_endpoint"), None),
    (BASE, "iotedge_identity_cert_path", ("provisioning", "attestation", "identity_cert"), as_path),
    (BASE, "iotedge_trust_bundle_cert_path", ("trust_bundle_cert",), as_path),
    (PKCS11, "iotedge_identity_key_pkcs11_uri", ("provisioning", "attestation", "identity_pk"), None),
    (PKCS11, "iotedge_pkcs11_lib_path", ("aziot_keys", "pkcs11_lib_path"), None),
    (
        {**EST, "iotedge_est_username": "u", "iotedge_est_password": "p"},
        "iotedge_est_password",
        ("cert_issuance", "est", "auth", "password"),
        None,
    ),
    (
        {**EST, "iotedge_est_username": "u", "iotedge_est_password": "p"},
        "iotedge_est_username",
        ("cert_issuance", "est", "auth", "username"),
        None,
    ),
    (EST, "iotedge_est_url", ("cert_issuance", "est", "urls", "default"), None),
]


@pytest.mark.parametrize(("base", "field", "where", "decode"), FREE_TEXT_FIELDS, ids=[f[1] for f in FREE_TEXT_FIELDS])
def test_arbitrary_text_either_fails_or_round_trips_through_tomllib(base, field, where, decode):
    expected_shape = key_paths(tomllib.loads(render_edge_config({**base, field: _valid_example(base, field)})))
    accepted = 0
    for index, text in enumerate(random_strings(seed=zlib.crc32(field.encode()) + 7)):
        value = "/" + text if decode is as_path or field == "iotedge_pkcs11_lib_path" else text
        if field.endswith("pkcs11_uri"):
            value = "pkcs11:" + text
        if field in ("dps_global_endpoint", "iotedge_est_url"):
            value = "https://h/" + text
        try:
            rendered = render_edge_config({**base, field: value})
        except EdgeConfigError as error:
            assert error.setting == field, (index, value, str(error))
            continue
        document = tomllib.loads(rendered)
        assert key_paths(document) == expected_shape, (index, value)
        written = lookup(document, where)
        assert (decode(written) if decode else written) == value, (index, value)
        accepted += 1
    # The fields that take any text (an EST user name or password) took most of it.
    if field in ("iotedge_est_password", "iotedge_est_username"):
        assert accepted > 100


def _valid_example(base: dict, field: str):
    return base.get(field) or {
        "iotedge_trust_bundle_cert_path": "/etc/aziot/trust.pem",
        "iotedge_agent_image": "mcr.microsoft.com/azureiotedge-agent:1.5",
        "dps_global_endpoint": "https://global.azure-devices-provisioning.net",
    }.get(field, "x")


FREE_TEXT_FIELDS_1_1 = [
    ("iotedge_agent_image", ("agent", "config", "image")),
    ("registration_id", ("provisioning", "attestation", "registration_id")),
    ("iotedge_hostname", ("hostname",)),
    ("dps_id_scope", ("provisioning", "scope_id")),
    ("dps_global_endpoint", ("provisioning", "global_endpoint")),
    ("iotedge_identity_cert_path", ("provisioning", "attestation", "identity_cert")),
    ("iotedge_identity_key_path", ("provisioning", "attestation", "identity_pk")),
]


@pytest.mark.parametrize(("field", "where"), FREE_TEXT_FIELDS_1_1, ids=[f[0] for f in FREE_TEXT_FIELDS_1_1])
def test_arbitrary_text_either_fails_or_round_trips_through_yaml(field, where):
    expected_shape = key_paths(yaml.safe_load(render_edge_config(BASE_1_1)))
    for index, text in enumerate(random_strings(seed=zlib.crc32(field.encode()) + 11)):
        value = text
        if field.endswith("_path"):
            value = "/" + text
        elif field == "dps_global_endpoint":
            value = "https://h/" + text
        try:
            rendered = render_edge_config({**BASE_1_1, field: value})
        except EdgeConfigError as error:
            assert error.setting == field, (index, value, str(error))
            continue
        document = yaml.safe_load(rendered)
        assert key_paths(document) == expected_shape, (index, value)
        written = lookup(document, where)
        if field.endswith("_path"):
            # The daemon takes it as a file URI (its Path() then normalises "/a/." and "/a/").
            assert iotedged.file_uri(field, written) == Path(value), (index, value)
            written = unquote(urlsplit(written).path)
        assert written == value, (index, value)
        load_1_1(rendered)


def test_yaml_escapes_every_string_it_is_given():
    """The YAML writer itself, with text the validators would refuse: still one value, never more keys."""
    for index, text in enumerate(random_strings(seed=5)):
        if "\ud800" in text:
            continue
        document = {"provisioning": {"source": "dps", "scope_id": text}, "hostname": text}
        parsed = yaml.safe_load(_edge_config._yaml_dump(document))
        assert parsed == document, (index, text)


# ---- missing libraries -----------------------------------------------------------------------------------------


def test_without_tomli_w_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setattr(_edge_config, "HAS_TOMLI_W", False)
    monkeypatch.setattr(
        _edge_config, "TOMLI_W_IMPORT_ERROR", "Traceback ...\nModuleNotFoundError: No module named 'tomli_w'\n"
    )
    with pytest.raises(EdgeConfigLibraryError, match=r"pip install tomli-w.*No module named 'tomli_w'"):
        render_edge_config(BASE)
    # 1.1 does not need it.
    load_1_1(render_edge_config(BASE_1_1))


def test_settings_cover_every_key_the_role_passes():
    assert set(ROLE_DEFAULTS) == set(SETTINGS)


# ---- the Edge CA ---------------------------------------------------------------------------------------------------

EDGE_CA_CERT = "/var/aziot/certs/edge-ca.pem"
EDGE_CA_KEY = "/var/aziot/secrets/edge-ca.key.pem"


def test_the_runtimes_own_edge_ca_with_its_defaults_writes_nothing(tmp_path):
    for settings in (BASE, {**BASE, "edge_ca": "quickstart", "iotedge_edge_ca_expiry_days": 90}):
        text = render_edge_config(settings)
        assert "edge_ca" not in text
        applied = apply(tmp_path, text)
        assert applied["certd"]["cert_issuance"]["aziot-edged-ca"] == {"method": "self_signed", "expiry_days": 90}


def test_the_fleet_edge_ca_is_preloaded_as_file_uris(tmp_path):
    text = render_edge_config(
        {**BASE, "edge_ca": "fleet", "iotedge_edge_ca_cert_path": EDGE_CA_CERT, "iotedge_edge_ca_key_path": EDGE_CA_KEY}
    )
    assert tomllib.loads(text)["edge_ca"] == {"cert": file_uri(EDGE_CA_CERT), "pk": file_uri(EDGE_CA_KEY)}
    applied = apply(tmp_path, text)
    assert applied["certd"]["preloaded_certs"]["aziot-edged-ca"] == file_uri(EDGE_CA_CERT)
    assert applied["keyd"]["preloaded_keys"]["aziot-edged-ca"] == file_uri(EDGE_CA_KEY)
    assert applied["edged"]["edge_ca"] == {"cert": "aziot-edged-ca", "key": "aziot-edged-ca"}


def test_a_quickstart_lifetime_and_renewal_of_ones_own(tmp_path):
    text = render_edge_config({**BASE, "iotedge_edge_ca_expiry_days": "30", "iotedge_edge_ca_renew_threshold": "7day"})
    assert tomllib.loads(text)["edge_ca"] == {
        "auto_generated_edge_ca_expiry_days": 30,
        "auto_renew": {"rotate_key": True, "threshold": "7day", "retry": "4%"},
    }
    applied = apply(tmp_path, text)
    assert applied["certd"]["cert_issuance"]["aziot-edged-ca"]["expiry_days"] == 30
    assert applied["edged"]["edge_ca"]["auto_renew"]["threshold"] == "7day"


def test_the_edge_ca_on_1_1():
    fleet = yaml.safe_load(
        render_edge_config(
            {
                **BASE_1_1,
                "edge_ca": "fleet",
                "iotedge_edge_ca_cert_path": "/var/iotedge/certs/edge-ca.pem",
                "iotedge_edge_ca_key_path": "/var/iotedge/secrets/edge-ca.key.pem",
            }
        )
    )
    assert fleet["certificates"] == {
        "device_ca_cert": "/var/iotedge/certs/edge-ca.pem",
        "device_ca_pk": "/var/iotedge/secrets/edge-ca.key.pem",
        "trusted_ca_certs": "/var/iotedge/certs/edge-ca.pem",
    }
    assert (
        iotedged.LegacyCa(
            load_1_1(
                render_edge_config(
                    {
                        **BASE_1_1,
                        "edge_ca": "fleet",
                        "iotedge_edge_ca_cert_path": "/var/iotedge/certs/edge-ca.pem",
                        "iotedge_edge_ca_key_path": "/var/iotedge/secrets/edge-ca.key.pem",
                    }
                )
            )
        ).configured
        is True
    )
    days = load_1_1(render_edge_config({**BASE_1_1, "iotedge_edge_ca_expiry_days": 30}))
    assert days["certificates"] == {"auto_generated_ca_lifetime_days": 30}
    assert "certificates" not in yaml.safe_load(render_edge_config(BASE_1_1))


@pytest.mark.parametrize(
    ("settings", "key", "message"),
    [
        ({**BASE, "edge_ca": "own"}, "edge_ca", "'own' is not one of quickstart, fleet"),
        (
            {**BASE, "edge_ca": "fleet", "iotedge_edge_ca_key_path": EDGE_CA_KEY},
            "iotedge_edge_ca_cert_path",
            "is not set",
        ),
        ({**BASE, "iotedge_edge_ca_expiry_days": 0}, "iotedge_edge_ca_expiry_days", "from 1 to 4294967295"),
        ({**BASE_1_1, "iotedge_edge_ca_expiry_days": 70000}, "iotedge_edge_ca_expiry_days", "from 1 to 65535"),
        ({**BASE, "iotedge_edge_ca_renew_threshold": "100%"}, "iotedge_edge_ca_renew_threshold", "below 100%"),
        ({**BASE, "iotedge_edge_ca_renew_retry": "4 hours"}, "iotedge_edge_ca_renew_retry", "not a renewal policy"),
        ({**BASE_1_1, "iotedge_edge_ca_renew_threshold": "50%"}, "iotedge_edge_ca_renew_threshold", "does not renew"),
    ],
)
def test_edge_ca_settings_the_runtime_would_refuse(settings, key, message):
    error = failure(settings)
    assert error.setting == key and message in str(error), str(error)
