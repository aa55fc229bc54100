"""The runtime double's Edge CA: what `config apply` makes of [edge_ca] and trust_bundle_cert (aziot-edge 1.5.44's
apply.rs and test-files/config: dps-x509, ca-certs, ca-quickstart, ca-quickstart-custom), what keyd, certd and the
edge daemon do with it (the Edge CA, its renewal, the workload API's trust bundle and server certificates), what
`iotedge check` says of it, and 1.1's device CA and workload CA."""

from __future__ import annotations

import datetime
import json
import subprocess
import tomllib
from pathlib import Path

import pytest

from lab.runtime.double import aziotd, check, check11, edged, iotedged, x509
from lab.runtime.double.config_apply import ApplyError, parse, service_files, validate

UIDS = {"aziotks": 5554, "aziotcs": 5555, "aziotid": 5556, "aziottpm": 5557, "iotedge": 5558}
DPS = """\
hostname = "my-device"

[provisioning]
source = "dps"
global_endpoint = "https://global.azure-devices-provisioning.net/"
id_scope = "0ab1234C5D6"

[provisioning.attestation]
method = "x509"
identity_cert = "file:///var/secrets/device-id.pem"
identity_pk = "file:///var/secrets/device-id.key.pem"
"""


def files(extra: str = "", top: str = "") -> dict[str, str]:
    source = top + DPS + extra
    return service_files(validate(source, parse(source), "machine"), UIDS)


def refused(extra: str, top: str = "") -> str:
    with pytest.raises(ApplyError) as raised:
        files(extra, top)
    return str(raised.value)


# ---- config apply ----------------------------------------------------------------------------------------------


def test_without_edge_ca_the_quickstart_ca_is_issued_by_certd_for_90_days_and_renewed():
    written = files()
    assert written["certd"].splitlines()[2:14] == [
        "",
        'homedir_path = "/var/lib/aziot/certd"',
        "[cert_issuance.aziot-edged-ca]",
        'method = "self_signed"',
        "expiry_days = 90",
        "",
        "[cert_issuance.aziot-edged-ca-temp]",
        'method = "self_signed"',
        "expiry_days = 90",
        "",
        "[preloaded_certs]",
        'aziot-edged-trust-bundle = ["aziot-edged-ca"]',
    ]
    keyd = tomllib.loads(written["keyd"])
    assert keyd["principal"] == [
        {"uid": 5556, "keys": ["aziot_identityd_master_id", "device-id"]},
        {"uid": 5555, "keys": ["aziot-edged-ca", "aziot-edged-ca-temp"]},
        {"uid": 5558, "keys": ["aziot-edged-ca", "iotedge_master_encryption_id", "aziot-edged-ca-temp"]},
    ]
    certd = tomllib.loads(written["certd"])
    assert certd["principal"] == [
        {"uid": 5558, "certs": ["aziot-edged-ca", "aziot-edged/module/*", "aziot-edged-ca-temp"]}
    ]
    edged_lines = written["edged"].splitlines()
    # The quickstart CA's renewal table comes before [agent]; edged names no cert or key of its own.
    assert edged_lines[2:14] == [
        "",
        'hostname = "my-device"',
        'trust_bundle_cert = "aziot-edged-trust-bundle"',
        'auto_reprovisioning_mode = "Dynamic"',
        'homedir = "/var/lib/aziot/edged"',
        "allow_elevated_docker_permissions = true",
        "",
        "[edge_ca.auto_renew]",
        "rotate_key = true",
        'threshold = "80%"',
        'retry = "4%"',
        "",
    ]
    assert tomllib.loads(written["edged"])["edge_ca"] == {
        "auto_renew": {"rotate_key": True, "threshold": "80%", "retry": "4%"}
    }
    identityd = tomllib.loads(written["identityd"])
    assert identityd["prefer_module_identity_cache"] is False


def test_a_preloaded_edge_ca_and_a_trust_bundle():
    written = files(
        '\n[edge_ca]\ncert = "file:///var/aziot/certs/edge-ca.pem"\npk = "file:///var/aziot/secrets/edge-ca.key.pem"\n',
        top='trust_bundle_cert = "file:///var/aziot/certs/trust-bundle.pem"\n',
    )
    keyd = tomllib.loads(written["keyd"])
    assert keyd["preloaded_keys"] == {
        "aziot-edged-ca": "file:///var/aziot/secrets/edge-ca.key.pem",
        "device-id": "file:///var/secrets/device-id.key.pem",
    }
    # No issuance, so no certd principal in keyd and no temporary credentials for the edge daemon.
    assert keyd["principal"] == [
        {"uid": 5556, "keys": ["aziot_identityd_master_id", "device-id"]},
        {"uid": 5558, "keys": ["aziot-edged-ca", "iotedge_master_encryption_id"]},
    ]
    assert "\n\n[cert_issuance]\n\n[preloaded_certs]\n" in written["certd"]
    certd = tomllib.loads(written["certd"])
    assert certd["preloaded_certs"] == {
        "aziot-edged-ca": "file:///var/aziot/certs/edge-ca.pem",
        "aziot-edged-trust-bundle": ["aziot-edged-ca", "trust-bundle-user"],
        "device-id": "file:///var/secrets/device-id.pem",
        "trust-bundle-user": "file:///var/aziot/certs/trust-bundle.pem",
    }
    assert list(certd["preloaded_certs"]) == sorted(certd["preloaded_certs"])
    assert certd["principal"] == [{"uid": 5558, "certs": ["aziot-edged-ca", "aziot-edged/module/*"]}]
    # [edge_ca] follows [watchdog] and has no renewal: the runtime cannot renew a preloaded Edge CA.
    assert (
        '[watchdog]\nmax_retries = "infinite"\n\n[edge_ca]\ncert = "aziot-edged-ca"\nkey = "aziot-edged-ca"\n\n'
        in (written["edged"])
    )
    assert "auto_renew" not in written["edged"]


def test_a_self_signed_edge_ca_with_its_own_name_lifetime_and_renewal():
    written = files(
        '\n[edge_ca]\nmethod = "self_signed"\ncommon_name = "edge-01 CA"\nexpiry_days = 365\n\n'
        '[edge_ca.auto_renew]\nrotate_key = false\nthreshold = "1440min"\nretry = "90min"\n'
    )
    certd = tomllib.loads(written["certd"])
    assert certd["cert_issuance"] == {
        "aziot-edged-ca": {"method": "self_signed", "expiry_days": 365, "common_name": "edge-01 CA"},
        "aziot-edged-ca-temp": {"method": "self_signed", "expiry_days": 365, "common_name": "edge-01 CA"},
    }
    edged_config = tomllib.loads(written["edged"])
    # Policies are written back as the runtime serialises them (whole days as Nday).
    assert edged_config["edge_ca"] == {
        "cert": "aziot-edged-ca",
        "key": "aziot-edged-ca",
        "auto_renew": {"rotate_key": False, "threshold": "1day", "retry": "90min"},
    }
    # Without key rotation the edge daemon needs no temporary key.
    assert tomllib.loads(written["keyd"])["principal"][-1]["keys"] == ["aziot-edged-ca", "iotedge_master_encryption_id"]


def test_a_quickstart_lifetime_of_its_own():
    written = files("\n[edge_ca]\nauto_generated_edge_ca_expiry_days = 30\n")
    assert tomllib.loads(written["certd"])["cert_issuance"]["aziot-edged-ca"] == {
        "method": "self_signed",
        "expiry_days": 30,
    }


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('\n[edge_ca]\ncert = "file:///var/aziot/certs/edge-ca.pem"\n', "untagged enum EdgeCa"),
        ('\n[edge_ca]\ncert = "/var/edge-ca.pem"\npk = "file:///k.pem"\n', "untagged enum EdgeCa"),
        ('\n[edge_ca]\nmethod = "self_signed"\nexpiry_days = 0\n', "untagged enum EdgeCa"),
        ('\n[edge_ca]\nmethod = "acme"\n', "untagged enum EdgeCa"),
        (
            "\n[edge_ca]\nauto_generated_edge_ca_expiry_days = 90\n\n[edge_ca.auto_renew]\nrotate_key = true\n"
            'threshold = "100%"\nretry = "4%"\n',
            "untagged enum EdgeCa",
        ),
        ('\n[edge_ca]\nmethod = "est"\n', 'method = "est" (Edge CA issued by EST or a local CA) is not implemented'),
        ('\n[edge_ca]\nmethod = "local_ca"\n', "is not implemented by the edgefleet test double"),
        (
            '\n[edge_ca]\nmethod = "self_signed"\n\n[edge_ca.subject]\nCN = "x"\nO = "y"\n',
            "edge_ca.subject (a full subject) is not implemented",
        ),
        (
            '\n[agent]\nname = "edgeAgent"\n\n[agent.config]\nimage = "i"\n\n[agent.config.createOptions]\nUser = "x"\n',
            "only an empty table is written back",
        ),
    ],
)
def test_what_is_refused_names_the_place(extra, message):
    failure = refused(extra)
    assert failure.startswith("could not parse config file: TOML parse error at line "), failure
    assert message in failure


def test_a_relative_trust_bundle_is_refused():
    assert "relative URL without a base" in refused("", top='trust_bundle_cert = "/var/aziot/certs/bundle.pem"\n')


# ---- keyd, certd and the edge daemon ---------------------------------------------------------------------------


@pytest.fixture
def runtime(tmp_path, monkeypatch):
    """keyd, certd and the edge daemon's Edge CA over in-process calls, with homes and configs under tmp_path."""
    etc = tmp_path / "etc"
    monkeypatch.setattr(aziotd, "ETC", etc)
    monkeypatch.setattr(aziotd, "KEYD_KEYS", tmp_path / "keyd" / "keys")
    monkeypatch.setattr(aziotd, "CERTD_CERTS", tmp_path / "certd" / "certs")
    for home in ("keyd", "certd"):
        (tmp_path / home).mkdir()
    daemons = {aziotd.KEYD_SOCKET: aziotd.keyd, aziotd.CERTD_SOCKET: aziotd.certd}

    def call(path, request, timeout=300):
        return json.loads(json.dumps(daemons[path](json.loads(json.dumps(request)))))

    monkeypatch.setattr(aziotd, "call", call)
    monkeypatch.setattr(edged, "call", call)
    monkeypatch.setattr(edged, "log", lambda level, message: logged.append((level, message)))
    logged: list = []

    def configure(extra: str = "", top: str = "") -> dict:
        written = files(extra, top)
        for service in ("keyd", "certd", "edged"):
            path = etc / service / "config.d" / "00-super.toml"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(written[service])
        return tomllib.loads(written["edged"])

    return type("Runtime", (), {"configure": staticmethod(configure), "logged": logged, "home": tmp_path})


def openssl_verify(tmp_path: Path, ca_pem: str, chain_pem: str) -> str:
    (tmp_path / "ca.pem").write_text(ca_pem)
    (tmp_path / "chain.pem").write_text(chain_pem)
    return subprocess.run(
        [
            "openssl",
            "verify",
            "-CAfile",
            tmp_path / "ca.pem",
            "-untrusted",
            tmp_path / "chain.pem",
            tmp_path / "chain.pem",
        ],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()


def test_the_quickstart_edge_ca_is_made_once_and_issues_server_certificates(runtime, tmp_path):
    settings = runtime.configure("\n[edge_ca]\nauto_generated_edge_ca_expiry_days = 30\n")
    edge_ca = edged.EdgeCa.from_settings(settings, "edge-01")
    edge_ca.ensure()
    assert ("INFO", "Requesting new Edge CA certificate...") in runtime.logged
    ca_pem = edge_ca.certificate()
    assert x509.subject_common_name(ca_pem) == "aziot-edge CA edge-01"
    not_before, not_after = x509.validity(ca_pem)
    assert (not_after - not_before).days == 30
    assert (runtime.home / "keyd/keys/aziot-edged-ca.pem").stat().st_mode & 0o777 == 0o600
    extensions = subprocess.run(
        ["openssl", "x509", "-noout", "-ext", "basicConstraints,keyUsage"],
        input=ca_pem,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "CA:TRUE, pathlen:0" in extensions and "Certificate Sign" in extensions

    runtime.logged.clear()
    edged.EdgeCa.from_settings(settings, "edge-01").ensure()
    assert runtime.logged == [("INFO", "Using existing Edge CA certificate")]
    assert edge_ca.certificate() == ca_pem

    issued = edge_ca.server_certificate("$edgeHub", "1", "edge-01.local")
    assert issued["privateKey"]["type"] == "key" and "PRIVATE KEY" in issued["privateKey"]["bytes"]
    assert issued["certificate"].endswith(ca_pem)
    assert openssl_verify(tmp_path, ca_pem, issued["certificate"]).endswith(": OK")
    sans = subprocess.run(
        ["openssl", "x509", "-noout", "-ext", "subjectAltName,extendedKeyUsage"],
        input=issued["certificate"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "DNS:edge-01.local, DNS:edgeHub" in sans and "TLS Web Server Authentication" in sans
    assert (runtime.home / "certd/certs/aziot-edged%2Fmodule%2FedgeHub%3A1%3Aserver.pem").is_file()
    assert edge_ca.trust_bundle() == ca_pem


def test_a_preloaded_edge_ca_is_used_as_given_and_not_renewed(runtime, tmp_path):
    key = tmp_path / "edge-ca.key.pem"
    x509.new_key(key)
    ca_pem = x509.issue(
        x509.new_csr(key.read_text(), "edge-01.ca", x509.EDGE_CA_EXTENSIONS),
        signer_key_pem=key.read_text(),
        issuer_cert_pem=None,
        days=400,
    )
    (tmp_path / "edge-ca.pem").write_text(ca_pem)
    (tmp_path / "bundle.pem").write_text(ca_pem)
    settings = runtime.configure(
        f'\n[edge_ca]\ncert = "file://{tmp_path}/edge-ca.pem"\npk = "file://{key}"\n',
        top=f'trust_bundle_cert = "file://{tmp_path}/bundle.pem"\n',
    )
    edge_ca = edged.EdgeCa.from_settings(settings, "edge-01")
    edge_ca.ensure()
    assert runtime.logged == [
        ("INFO", "Using existing Edge CA certificate"),
        ("WARN", "Auto renewal of the Edge CA is not configured. Edge CA will not be automatically renewed"),
    ]
    assert not (runtime.home / "keyd/keys").exists(), "no key made for a preloaded Edge CA"
    assert edge_ca.due() is False
    # The trust bundle is the Edge CA, then the user's bundle.
    assert edge_ca.trust_bundle() == ca_pem + ca_pem
    issued = edge_ca.server_certificate("edgeHub", "1", "edge-01")
    assert openssl_verify(tmp_path, ca_pem, issued["certificate"]).endswith(": OK")


def test_renewal_follows_the_policy_and_rotates_the_key(runtime):
    settings = runtime.configure(
        "\n[edge_ca]\nauto_generated_edge_ca_expiry_days = 10\n\n"
        '[edge_ca.auto_renew]\nrotate_key = true\nthreshold = "3day"\nretry = "1day"\n'
    )
    edge_ca = edged.EdgeCa.from_settings(settings, "edge-01")
    edge_ca.ensure()
    before_cert, before_key = edge_ca.certificate(), edge_ca.key()
    now = datetime.datetime.now(datetime.UTC)
    assert edge_ca.due(now) is False
    assert edge_ca.due(now + datetime.timedelta(days=7, hours=1)) is True
    edge_ca.renew()
    assert ("INFO", "Edge CA was renewed") in runtime.logged
    assert edge_ca.certificate() != before_cert and edge_ca.key() != before_key
    assert x509.subject_common_name(edge_ca.certificate()) == "aziot-edge CA edge-01"
    assert not (runtime.home / "keyd/keys/aziot-edged-ca-temp.pem").exists()


def test_a_percentage_threshold_counts_the_share_of_the_lifetime_used(runtime):
    settings = runtime.configure()
    edge_ca = edged.EdgeCa.from_settings(settings, "edge-01")
    edge_ca.ensure()
    not_before, not_after = x509.validity(edge_ca.certificate())
    assert edge_ca.due(not_before + (not_after - not_before) * 0.79) is False
    assert edge_ca.due(not_before + (not_after - not_before) * 0.81) is True


# ---- iotedge check -----------------------------------------------------------------------------------------------


def test_certs_preloaded_reports_the_edge_ca_validity_as_aziotctl_does(runtime, tmp_path, monkeypatch):
    key = tmp_path / "k.pem"
    x509.new_key(key)
    short = x509.issue(
        x509.new_csr(key.read_text(), "edge-01.ca", x509.EDGE_CA_EXTENSIONS),
        signer_key_pem=key.read_text(),
        issuer_cert_pem=None,
        days=3,
    )
    (tmp_path / "edge-ca.pem").write_text(short)
    runtime.configure(f'\n[edge_ca]\ncert = "file://{tmp_path}/edge-ca.pem"\npk = "file://{key}"\n')
    monkeypatch.setattr(check, "ETC", runtime.home / "etc")
    monkeypatch.setattr(check.Device, "readable_by", staticmethod(lambda user, path: True))
    device = check.Device.__new__(check.Device)
    outcome = check.certs_preloaded(device)
    # device-id's file does not exist here, and aziot-edged-ca sorts first.
    assert outcome.result == "warning", outcome
    (detail,) = outcome.details
    assert detail.startswith(" 'aziot-edged-ca' will expire soon (") and detail.endswith(" UTC, in 2 days)")


# ---- IoT Edge 1.1 ------------------------------------------------------------------------------------------------


@pytest.fixture
def legacy_home(tmp_path, monkeypatch):
    monkeypatch.setattr(iotedged, "HSM_CERTS", tmp_path / "hsm" / "certs")
    monkeypatch.setattr(iotedged, "HSM_KEYS", tmp_path / "hsm" / "cert_keys")
    monkeypatch.setattr(check11, "HSM_CERTS", tmp_path / "hsm" / "certs")
    monkeypatch.setattr(iotedged, "log", lambda level, message: None)
    return tmp_path


def legacy_config(certificates: dict | None = None) -> dict:
    config = {"provisioning": {"source": "dps"}}
    if certificates is not None:
        config["certificates"] = certificates
    return config


def test_1_1_quickstart_device_ca_and_the_workload_ca_under_it(legacy_home):
    ca = iotedged.LegacyCa(legacy_config({"auto_generated_ca_lifetime_days": 20}))
    ca.prepare()
    device_ca = (legacy_home / "hsm/certs/device_ca_alias.cert.pem").read_text()
    assert (x509.validity(device_ca)[1] - x509.validity(device_ca)[0]).days == 20
    issued = ca.server_certificate("edgeHub", "1", "edge-01")
    assert openssl_verify(legacy_home, device_ca, issued["certificate"]).endswith(": OK")
    assert x509.subject_common_name(
        issued["certificate"].split("-----END CERTIFICATE-----")[1] + "-----END CERTIFICATE-----\n"
    ) == ("iotedged workload ca")
    assert ca.trust_bundle() == device_ca
    outcome = check11.certificates_quickstart(
        type("D", (), {"config": legacy_config({"auto_generated_ca_lifetime_days": 20})})()
    )
    assert outcome.result == "warning"
    assert (
        outcome.details[0] == "The Edge device is using self-signed automatically-generated development certificates."
    )
    assert outcome.details[1].startswith("They will expire in 19 days (at ")


def test_1_1_device_ca_from_config_yaml(legacy_home):
    root_key, ca_key = legacy_home / "root.key", legacy_home / "ca.key"
    x509.new_key(root_key)
    x509.new_key(ca_key)
    root = x509.issue(
        x509.new_csr(root_key.read_text(), "root", ("basicConstraints=critical,CA:TRUE",)),
        signer_key_pem=root_key.read_text(),
        issuer_cert_pem=None,
        days=60,
    )
    device_ca = x509.issue(
        x509.new_csr(ca_key.read_text(), "edge-01.ca", ("basicConstraints=critical,CA:TRUE,pathlen:1",)),
        signer_key_pem=root_key.read_text(),
        issuer_cert_pem=root,
        days=50,
    )
    (legacy_home / "device-ca.pem").write_text(device_ca + root)
    (legacy_home / "root.pem").write_text(root)
    certificates = {
        "device_ca_cert": str(legacy_home / "device-ca.pem"),
        "device_ca_pk": f"file://{ca_key}",
        "trusted_ca_certs": str(legacy_home / "root.pem"),
    }
    ca = iotedged.LegacyCa(legacy_config(certificates))
    ca.prepare()
    assert not (legacy_home / "hsm/certs/device_ca_alias.cert.pem").exists()
    issued = ca.server_certificate("edgeHub", "1", "edge-01")
    # server <- workload CA <- device CA <- root: the chain a downstream device that trusts the root verifies.
    assert openssl_verify(legacy_home, root, issued["certificate"]).endswith(": OK")
    assert ca.trust_bundle() == root
    outcome = check11.certificates_quickstart(type("D", (), {"config": legacy_config(certificates)})())
    assert outcome.result == "warning"
    assert outcome.details[0].startswith("The device CA cert will expire within the next 90 days, at ")


def test_1_1_partial_certificates_fall_back_to_quickstart_as_the_flattened_option_does(legacy_home):
    ca = iotedged.LegacyCa(legacy_config({"device_ca_cert": "/var/x.pem"}))
    assert ca.configured is False
