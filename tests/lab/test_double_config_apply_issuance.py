"""The double's `iotedge config apply` for identity certificates certd issues (EST, local CA) and [cert_issuance], case by
case as aziotctl-common's apply.rs test-files/apply (release/1.5) show them: the DPS-X.509 inputs below, and what certd,
keyd and identityd must get. Compared as parsed TOML with key order (tomllib keeps it), after setting aside what
aziot-edge adds around the identity service (its Edge CA, trust bundle and principals)."""

from __future__ import annotations

import tomllib

import pytest

from lab.runtime.double.config_apply import ApplyError, parse, service_files, validate

UIDS = {"aziotks": 5554, "aziotcs": 5555, "aziotid": 5556, "aziottpm": 5557, "iotedge": 5558}
DPS = """\
[provisioning]
source = "dps"
global_endpoint = "https://global.azure-devices-provisioning.net/"
id_scope = "0ab1234C5D6"

[provisioning.attestation]
method = "x509"
registration_id = "my-device"
"""
PKCS11 = """
[aziot_keys]
pkcs11_lib_path = "/usr/lib/libmypkcs11.so"
pkcs11_base_slot = "pkcs11:slot-id=0?pin-value=1234"
"""
TRUSTED = """
[cert_issuance.est]
trusted_certs = ["file:///var/secrets/est-id-ca.pem"]
"""
PKCS11_KEYS = {"homedir_path": "/var/lib/aziot/keyd", "pkcs11_base_slot": "pkcs11:slot-id=0?pin-value=1234",
               "pkcs11_lib_path": "/usr/lib/libmypkcs11.so"}  # fmt: skip
X509 = {"method": "x509", "identity_cert": "device-id", "identity_pk": "device-id"}
PLAIN = (
    DPS + 'identity_cert = "file:///var/secrets/device-id.pem"\nidentity_pk = "file:///var/secrets/device-id.key.pem"\n'
)

CASES = {
    "dps-x509-pkcs11-est": (
        DPS
        + 'identity_cert = { method = "est", common_name = "my-device" }\n'
        + PKCS11
        + TRUSTED
        + """
[cert_issuance.est.auth]
username = "estuser"
password = "estpwd"
identity_cert = "file:///var/secrets/est-id.pem"
identity_pk = "pkcs11:slot-id=0;object=est-id?pin-value=1234"

[cert_issuance.est.urls]
default = "https://example.org/.well-known/est"
""",
        {
            "cert_issuance": {
                "est": {
                    "trusted_certs": ["est-server-ca-1"], "username": "estuser", "password": "estpwd",
                    "identity_cert": "est-id", "identity_pk": "est-id",
                    "urls": {"default": "https://example.org/.well-known/est"},
                },
                "device-id": {"method": "est", "common_name": "my-device"},
            },
            "preloaded_certs": {"est-id": "file:///var/secrets/est-id.pem",
                                "est-server-ca-1": "file:///var/secrets/est-id-ca.pem"},
            "principal": [{"uid": 5556, "certs": ["device-id"]}],
        },
        {
            "aziot_keys": PKCS11_KEYS,
            "preloaded_keys": {"est-id": "pkcs11:slot-id=0;object=est%2Did?pin-value=1234"},
            "principal": [{"uid": 5556, "keys": ["aziot_identityd_master_id", "device-id"]},
                          {"uid": 5555, "keys": ["est-id"]}],
        },
        {**X509, "registration_id": "my-device"},
    ),
    "dps-x509-pkcs11-est-bootstrap": (
        DPS
        + """
[provisioning.attestation.identity_cert]
method = "est"
common_name = "my-device"

[provisioning.attestation.identity_cert.auto_renew]
rotate_key = true
threshold = "90%"
retry = "1%"
"""
        + PKCS11
        + TRUSTED
        + """
[cert_issuance.est.auth]
username = "estuser"
password = "estpwd"
bootstrap_identity_cert = "file:///var/secrets/est-bootstrap-id.pem"
bootstrap_identity_pk = "pkcs11:slot-id=0;object=est-bootstrap-id?pin-value=1234"

[cert_issuance.est.identity_auto_renew]
rotate_key = true
threshold = "50%"
retry = "10%"

[cert_issuance.est.urls]
default = "https://example.org/.well-known/est"
""",
        {
            "cert_issuance": {
                "est": {
                    "trusted_certs": ["est-server-ca-1"], "username": "estuser", "password": "estpwd",
                    "identity_cert": "est-id", "identity_pk": "est-id",
                    "bootstrap_identity_cert": "est-bootstrap-id", "bootstrap_identity_pk": "est-bootstrap-id",
                    "identity_auto_renew": {"rotate_key": True, "threshold": "50%", "retry": "10%"},
                    "urls": {"default": "https://example.org/.well-known/est"},
                },
                "device-id": {"method": "est", "common_name": "my-device"},
                "device-id-temp": {"method": "est", "common_name": "my-device"},
            },
            "preloaded_certs": {"est-bootstrap-id": "file:///var/secrets/est-bootstrap-id.pem",
                                "est-server-ca-1": "file:///var/secrets/est-id-ca.pem"},
            "principal": [{"uid": 5556, "certs": ["device-id-temp", "device-id"]}],
        },
        {
            "aziot_keys": PKCS11_KEYS,
            "preloaded_keys": {"est-bootstrap-id": "pkcs11:slot-id=0;object=est%2Dbootstrap%2Did?pin-value=1234"},
            "principal": [{"uid": 5556, "keys": ["aziot_identityd_master_id", "device-id", "device-id-temp"]},
                          {"uid": 5555, "keys": ["est-bootstrap-id", "est-id", "est-id-temp"]}],
        },
        {**X509, "registration_id": "my-device",
         "identity_auto_renew": {"rotate_key": True, "threshold": "90%", "retry": "1%"}},
    ),
    "dps-x509-est-bootstrap-auto-renew": (
        DPS
        + """
[provisioning.attestation.identity_cert]
method = "est"
url = "https://example.org/.well-known/est"
bootstrap_identity_cert = "file:///var/secrets/est-bootstrap-id.pem"
bootstrap_identity_pk = "file:///var/secrets/est-bootstrap-id-key.pem"

[provisioning.attestation.identity_cert.subject]
L = "AQ"
ST = "Antarctica"
CN = "my-device"

[provisioning.attestation.identity_cert.auto_renew]
rotate_key = false
threshold = "50%"
retry = "10%"
"""
        + TRUSTED,
        {
            "cert_issuance": {
                "est": {"trusted_certs": ["est-server-ca-1"]},
                "device-id": {
                    "method": "est", "url": "https://example.org/.well-known/est",
                    "identity_cert": "est-id-device-id", "identity_pk": "est-id-device-id",
                    "bootstrap_identity_cert": "est-bootstrap-id-device-id",
                    "bootstrap_identity_pk": "est-bootstrap-id-device-id",
                    "subject": {"CN": "my-device", "L": "AQ", "ST": "Antarctica"},
                },
                "device-id-temp": {
                    "method": "est", "url": "https://example.org/.well-known/est",
                    "identity_cert": "est-id-device-id", "identity_pk": "est-id-device-id",
                    "bootstrap_identity_cert": "est-bootstrap-id-device-id",
                    "bootstrap_identity_pk": "est-bootstrap-id-device-id",
                    "subject": {"CN": "my-device", "L": "AQ", "ST": "Antarctica"},
                },
            },
            "preloaded_certs": {"est-bootstrap-id-device-id": "file:///var/secrets/est-bootstrap-id.pem",
                                "est-server-ca-1": "file:///var/secrets/est-id-ca.pem"},
            "principal": [{"uid": 5556, "certs": ["device-id-temp", "device-id"]}],
        },
        {
            "aziot_keys": {"homedir_path": "/var/lib/aziot/keyd"},
            "preloaded_keys": {"est-bootstrap-id-device-id": "file:///var/secrets/est-bootstrap-id-key.pem"},
            "principal": [{"uid": 5556, "keys": ["aziot_identityd_master_id", "device-id"]},
                          {"uid": 5555, "keys": ["est-bootstrap-id-device-id", "est-id-device-id-temp",
                                                 "est-id-device-id"]}],
        },
        {**X509, "registration_id": {"CN": "my-device", "L": "AQ", "ST": "Antarctica"},
         "identity_auto_renew": {"rotate_key": False, "threshold": "50%", "retry": "10%"}},
    ),
    "dps-x509-pkcs11-est-custom-bootstrap": (
        DPS
        + """
[provisioning.attestation.identity_cert]
method = "est"
common_name = "my-device"
url = "https://example.org/.well-known/custom/est"
bootstrap_identity_cert = "file:///var/secrets/est-custom-bootstrap-id.pem"
bootstrap_identity_pk = "pkcs11:slot-id=0;object=est-custom-bootstrap-id?pin-value=1234"
"""
        + PKCS11
        + TRUSTED
        + """
[cert_issuance.est.auth]
username = "estuser"
password = "estpwd"
bootstrap_identity_cert = "file:///var/secrets/est-bootstrap-id.pem"
bootstrap_identity_pk = "pkcs11:slot-id=0;object=est-bootstrap-id?pin-value=1234"

[cert_issuance.est.urls]
default = "https://example.org/.well-known/est"
""",
        {
            "cert_issuance": {
                "est": {
                    "trusted_certs": ["est-server-ca-1"], "username": "estuser", "password": "estpwd",
                    "identity_cert": "est-id", "identity_pk": "est-id",
                    "bootstrap_identity_cert": "est-bootstrap-id", "bootstrap_identity_pk": "est-bootstrap-id",
                    "urls": {"default": "https://example.org/.well-known/est"},
                },
                "device-id": {
                    "method": "est", "url": "https://example.org/.well-known/custom/est",
                    "identity_cert": "est-id-device-id", "identity_pk": "est-id-device-id",
                    "bootstrap_identity_cert": "est-bootstrap-id-device-id",
                    "bootstrap_identity_pk": "est-bootstrap-id-device-id",
                    "common_name": "my-device",
                },
            },
            "preloaded_certs": {"est-bootstrap-id": "file:///var/secrets/est-bootstrap-id.pem",
                                "est-bootstrap-id-device-id": "file:///var/secrets/est-custom-bootstrap-id.pem",
                                "est-server-ca-1": "file:///var/secrets/est-id-ca.pem"},
            "principal": [{"uid": 5556, "certs": ["device-id"]}],
        },
        {
            "aziot_keys": PKCS11_KEYS,
            "preloaded_keys": {
                "est-bootstrap-id": "pkcs11:slot-id=0;object=est%2Dbootstrap%2Did?pin-value=1234",
                "est-bootstrap-id-device-id": "pkcs11:slot-id=0;object=est%2Dcustom%2Dbootstrap%2Did?pin-value=1234",
            },
            "principal": [{"uid": 5556, "keys": ["aziot_identityd_master_id", "device-id"]},
                          {"uid": 5555, "keys": ["est-bootstrap-id-device-id", "est-id-device-id-temp",
                                                 "est-id-device-id", "est-bootstrap-id", "est-id", "est-id-temp"]}],
        },
        {**X509, "registration_id": "my-device"},
    ),
    "dps-x509-pkcs11-localca": (
        DPS
        + 'identity_cert = { method = "local_ca", common_name = "my-device" }\n'
        + PKCS11
        + """
[cert_issuance.local_ca]
cert = "file:///var/secrets/local-ca.pem"
pk = "pkcs11:slot-id=0;object=local-ca?pin-value=1234"
""",
        {
            "cert_issuance": {
                "local_ca": {"cert": "local-ca", "pk": "local-ca"},
                "device-id": {"method": "local_ca", "common_name": "my-device"},
            },
            "preloaded_certs": {"local-ca": "file:///var/secrets/local-ca.pem"},
            "principal": [{"uid": 5556, "certs": ["device-id"]}],
        },
        {
            "aziot_keys": PKCS11_KEYS,
            "preloaded_keys": {"local-ca": "pkcs11:slot-id=0;object=local%2Dca?pin-value=1234"},
            "principal": [{"uid": 5556, "keys": ["aziot_identityd_master_id", "device-id"]},
                          {"uid": 5555, "keys": ["local-ca"]}],
        },
        {**X509, "registration_id": "my-device"},
    ),
}  # fmt: skip


def identity_part(written: dict) -> dict:
    """Each service's file, parsed, without what aziot-edge adds for its Edge CA, trust bundle and daemon."""
    certd = tomllib.loads(written["certd"])
    certd["cert_issuance"] = {k: v for k, v in certd["cert_issuance"].items() if not k.startswith("aziot-edged-ca")}
    certd["preloaded_certs"] = {k: v for k, v in certd["preloaded_certs"].items() if not k.startswith("aziot-edged")}
    certd["principal"] = [p for p in certd["principal"] if p["uid"] != UIDS["iotedge"]]
    keyd = tomllib.loads(written["keyd"])
    keyd["principal"] = [
        p for p in keyd["principal"] if p["uid"] != UIDS["iotedge"] and not p["keys"][0].startswith("aziot-edged-ca")
    ]
    identityd = tomllib.loads(written["identityd"])
    return {"certd": certd, "keyd": keyd, "attestation": identityd["provisioning"]["attestation"]}


def ordered(value):
    """A parsed document with every table's key order made part of its value."""
    if isinstance(value, dict):
        return [(key, ordered(item)) for key, item in value.items()]
    if isinstance(value, list):
        return [ordered(item) for item in value]
    return value


@pytest.mark.parametrize("case", sorted(CASES))
def test_issued_identity_certificates_as_upstream_writes_them(case):
    source, certd, keyd, attestation = CASES[case]
    written = service_files(validate(source, parse(source), "my-device"), UIDS)
    part = identity_part(written)
    assert ordered({key: part["certd"][key] for key in ("cert_issuance", "preloaded_certs", "principal")}) == ordered(
        certd
    )
    assert ordered({key: part["keyd"][key] for key in ("aziot_keys", "preloaded_keys", "principal")}) == ordered(keyd)
    assert ordered(part["attestation"]) == ordered(attestation)
    # The other files do not depend on the identity certificate: tpmd's is empty, edged's as for a preloaded one.
    plain = service_files(validate(PLAIN, parse(PLAIN), "my-device"), UIDS)
    assert written["tpmd"] == plain["tpmd"] and tomllib.loads(written["tpmd"]) == {}
    assert written["edged"] == plain["edged"]
    identityd = tomllib.loads(written["identityd"])
    assert {key: value for key, value in identityd.items() if key != "provisioning"} == {
        "hostname": "my-device",
        "homedir": "/var/lib/aziot/identityd",
        "prefer_module_identity_cache": False,
        "principal": [{"uid": UIDS["iotedge"], "name": "aziot-edge"}],
    }


def test_est_tables_follow_the_home_directory_with_a_blank_line_and_the_edge_ca_among_the_certificates():
    source = CASES["dps-x509-pkcs11-est"][0]
    certd = service_files(validate(source, parse(source), "my-device"), UIDS)["certd"].splitlines()
    start = certd.index('homedir_path = "/var/lib/aziot/certd"')
    assert certd[start + 1 : start + 3] == ["", "[cert_issuance.est]"]
    # The certificates by id, sorted: the edge's Edge CA before device-id, each after a blank line.
    headers = [line for line in certd if line.startswith("[cert_issuance.")]
    assert headers == [
        "[cert_issuance.est]",
        "[cert_issuance.est.urls]",
        "[cert_issuance.aziot-edged-ca]",
        "[cert_issuance.aziot-edged-ca-temp]",
        "[cert_issuance.device-id]",
    ]
    assert certd[certd.index("[cert_issuance.aziot-edged-ca]") - 1] == ""


@pytest.mark.parametrize(
    "extra, message",
    [
        ('identity_cert = { method = "self_signed", common_name = "x" }\n', "a self-signed DPS identity certificate"),
        ('identity_cert = { method = "scep" }\n', "unknown variant `scep`"),
        (
            'identity_cert = { method = "est", username = "u" }\n',
            "EST basic authentication needs both username and password",
        ),
        ('identity_cert = { method = "est", expiry_days = -1 }\n', "expected u32"),
    ],
)
def test_what_the_double_refuses_in_an_issued_identity(extra, message):
    with pytest.raises(ApplyError) as raised:
        validate(DPS + extra, parse(DPS + extra), "my-device")
    assert message in str(raised.value)


@pytest.mark.parametrize(
    "text, message",
    [
        (
            '[provisioning]\nsource = "manual"\nconnection_string = "HostName=h;DeviceId=d;SharedAccessKey=YWJj"\n',
            "provisioning source 'manual' is not implemented by the edgefleet test double",
        ),
        ('[provisioning]\nsource = "none"\n', "provisioning source 'none' is not implemented"),
        (
            DPS.replace('method = "x509"', 'method = "symmetric_key"') + 'symmetric_key = { value = "YWJj" }\n',
            "DPS attestation method 'symmetric_key' is not implemented by the edgefleet test double",
        ),
        (DPS.replace('method = "x509"', 'method = "tpm"'), "DPS attestation method 'tpm' is not implemented"),
    ],
)
def test_provisioning_the_double_cannot_run_is_refused_not_written_without_its_credentials(text, message):
    with pytest.raises(ApplyError) as raised:
        service_files(validate(text, parse(text), "my-device"), UIDS)
    assert message in str(raised.value)
