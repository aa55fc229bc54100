"""The lab's EST server (RFC 7030): cacerts, simpleenroll with basic or certificate authentication, simplereenroll
with the certificate it renews, the wire formats aziot-certd uses (base64 DER PKCS#10 in, base64 PKCS#7 certs-only out),
and what it refuses."""

from __future__ import annotations

import base64
import datetime as dt
import http.client
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lab.cloud import CloudLab
from lab.runtime.double import aziotd, est
from lab.runtime.double import x509 as double_x509
from lab.runtime.double.pkcs11 import Pkcs11Uri, TokenKey


def trust(cloud: CloudLab) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cloud.ca_bundle))


def csr_body(key, common_name: str, extra=()) -> bytes:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name), *extra])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return base64.encodebytes(csr.public_bytes(serialization.Encoding.DER))


def basic(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def call(cloud: CloudLab, method: str, path: str, body: bytes | None = None, headers=None, client=None):
    """(status, headers, body bytes); ``client`` is (cert PEM, key PEM) for mutual TLS."""
    context = trust(cloud)
    if client is not None:
        directory = Path(cloud.state_dir) / "est-clients"
        directory.mkdir(exist_ok=True)
        cert_path, key_path = directory / "client.pem", directory / "client.key"
        cert_path.write_text(client[0])
        key_path.write_text(client[1])
        context.load_cert_chain(cert_path, key_path)
    port = int(cloud.est_url.split(":")[2].split("/")[0])
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    try:
        all_headers = {"Content-Type": "application/pkcs10", "Content-Transfer-Encoding": "base64"} if body else {}
        all_headers.update(headers or {})
        connection.request(method, path, body=body, headers=all_headers)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def certificates_of(body: bytes) -> list[x509.Certificate]:
    return pkcs7.load_der_pkcs7_certificates(base64.b64decode(body))


def credentials(cloud: CloudLab) -> dict:
    return basic(cloud.settings.est_username, cloud.est_password)


def enroll(cloud: CloudLab, key, common_name: str, **kwargs) -> x509.Certificate:
    status, headers, body = call(cloud, "POST", "/.well-known/est/simpleenroll", csr_body(key, common_name), **kwargs)
    assert status == 200, body
    assert headers["content-type"] == "application/pkcs7-mime; smime-type=certs-only"
    assert headers["content-transfer-encoding"] == "base64"
    (certificate,) = certificates_of(body)
    return certificate


def pem_pair(certificate: x509.Certificate, key) -> tuple[str, str]:
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()


def test_cacerts_is_the_issuing_ca_as_base64_pkcs7(cloud):
    status, headers, body = call(cloud, "GET", "/.well-known/est/cacerts")
    assert status == 200 and headers["content-type"].startswith("application/pkcs7-mime")
    assert certificates_of(body) == [cloud.est.ca.cert]
    # A labelled path (one EST server, several CAs or profiles) answers the same.
    assert certificates_of(call(cloud, "GET", "/.well-known/est/edge/cacerts")[2]) == [cloud.est.ca.cert]


def test_simpleenroll_with_basic_auth_issues_a_client_certificate_for_the_csrs_key_and_subject(cloud):
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = enroll(cloud, key, "edge-01", headers=credentials(cloud))
    assert certificate.subject.rfc4514_string() == "CN=edge-01"
    assert certificate.public_key().public_numbers() == key.public_key().public_numbers()
    assert cloud.est.ca.issued(certificate)
    usage = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    assert abs(lifetime.total_seconds() - cloud.settings.est_cert_seconds - 60) < 5
    (record,) = cloud.state()["est"]["issued"]
    assert (record["operation"], record["auth"], record["subject"]) == ("simpleenroll", "basic", "CN=edge-01")


def test_a_wrong_password_or_no_credentials_is_401_with_a_basic_challenge(cloud):
    key = ec.generate_private_key(ec.SECP256R1())
    for headers in (basic(cloud.settings.est_username, "wrong"), {}, {"Authorization": "Bearer x"}):
        status, answer, body = call(cloud, "POST", "/.well-known/est/simpleenroll", csr_body(key, "x"), headers=headers)
        assert status == 401, body
        assert answer["www-authenticate"] == 'Basic realm="edgefleet-lab-est"'
    assert cloud.state()["est"]["issued"] == []


def test_a_bootstrap_identity_enrolls_and_its_est_identity_renews_with_simplereenroll(cloud):
    bootstrap = cloud.est.bootstrap_identity("edge-02-bootstrap")
    identity_key = ec.generate_private_key(ec.SECP256R1())
    identity = enroll(cloud, identity_key, "edge-02", client=bootstrap)
    assert cloud.state()["est"]["issued"][0]["auth"] == "bootstrap"
    # The EST identity authenticates on its own: an enrollment, and the renewal of itself (same subject).
    client = pem_pair(identity, identity_key)
    enroll(cloud, ec.generate_private_key(ec.SECP256R1()), "edge-02", client=client)
    status, _headers, body = call(
        cloud, "POST", "/.well-known/est/simplereenroll", csr_body(identity_key, "edge-02"), client=client
    )
    assert status == 200, body
    assert [r["operation"] for r in cloud.state()["est"]["issued"]] == [
        "simpleenroll",
        "simpleenroll",
        "simplereenroll",
    ]
    # simplereenroll keeps the subject, and needs the certificate it renews (a bootstrap identity is not one).
    status, _headers, body = call(
        cloud, "POST", "/.well-known/est/simplereenroll", csr_body(identity_key, "edge-99"), client=client
    )
    assert status == 400 and b"keep the subject" in body
    status, _headers, _body = call(
        cloud, "POST", "/.well-known/est/simplereenroll", csr_body(identity_key, "edge-02"), client=bootstrap
    )
    assert status == 401


def test_a_client_certificate_of_another_ca_proves_nothing(cloud, pki, root):
    stranger = pki.leaf("edge-03", root)
    client = pem_pair(stranger.certificate, stranger.key)
    status, _headers, _body = call(
        cloud, "POST", "/.well-known/est/simpleenroll", csr_body(stranger.key, "edge-03"), client=client
    )
    assert status == 401


@pytest.mark.parametrize(
    "content_type, body, status",
    [
        ("application/json", b"{}", 415),
        ("application/pkcs10", b"not base64 !!", 400),
        ("application/pkcs10", base64.encodebytes(b"not a csr"), 400),
    ],
)
def test_what_is_not_a_csr_is_refused(cloud, content_type, body, status):
    headers = {**credentials(cloud), "Content-Type": content_type}
    answer, _headers, text = call(cloud, "POST", "/.well-known/est/simpleenroll", body, headers=headers)
    assert answer == status, text


def test_unknown_operations_and_methods(cloud):
    assert call(cloud, "GET", "/.well-known/est/csrattrs")[0] == 404
    status, headers, _body = call(cloud, "GET", "/.well-known/est/simpleenroll")
    assert status == 405 and headers["allow"] == "POST"


def test_the_certificate_lifetime_is_set_through_the_control_plane(cloud, control):
    status, _headers, answer = control.request("POST", "/_emulator/est", {"cert_validity_seconds": 120})
    assert status == 200 and answer == {"cert_validity_seconds": 120}
    certificate = enroll(cloud, ec.generate_private_key(ec.SECP256R1()), "edge-04", headers=credentials(cloud))
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    assert lifetime.total_seconds() == 180
    status, _headers, answer = control.request("POST", "/_emulator/est", {"bootstrap_identity": "edge-05"})
    assert status == 200 and "BEGIN CERTIFICATE" in answer["cert"] and "PRIVATE KEY" in answer["key"]
    assert control.request("POST", "/_emulator/est", {"cert_validity_seconds": 5})[0] == 400
    control.request("POST", "/_emulator/est", {"cert_validity_seconds": cloud.settings.est_cert_seconds})


def test_a_bootstrap_certificate_for_a_key_the_device_keeps_in_its_hsm(cloud, control):
    key = ec.generate_private_key(ec.SECP256R1())
    public_pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    body = {"bootstrap_identity": "edge-11-bootstrap", "public_key": public_pem}
    status, _headers, answer = control.request("POST", "/_emulator/est", body)
    assert status == 200 and set(answer) == {"cert"}
    certificate = x509.load_pem_x509_certificate(answer["cert"].encode())
    assert certificate.public_key() == key.public_key()
    assert certificate.issuer == cloud.est.bootstrap_ca.cert.subject
    assert certificate.subject.rfc4514_string() == "CN=edge-11-bootstrap"
    status, _headers, answer = control.request(
        "POST", "/_emulator/est", {"bootstrap_identity": "edge-11", "public_key": "not a key"}
    )
    assert status == 400 and "'public_key' must be a PEM EC or RSA public key" in str(answer)


# ---- the runtime double's EST client (certd's) against this server ------------------------------------------------


def double_csr(key_pem: str, common_name: str) -> str:
    return double_x509.new_csr(key_pem, common_name)


def new_key_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def test_the_doubles_certd_enrolls_with_basic_auth_and_gets_the_ca_after_the_certificate(cloud, tmp_path):
    trusted = [cloud.ca_bundle.read_text()]
    chain = est.enroll(
        cloud.est_url,
        double_csr(new_key_pem(), "edge-06"),
        trusted_pems=trusted,
        basic=(cloud.settings.est_username, cloud.est_password),
        client=None,
        private_dir=tmp_path,
    )
    certificates = x509.load_pem_x509_certificates(chain.encode())
    assert certificates[0].subject.rfc4514_string() == "CN=edge-06"
    assert certificates[1] == cloud.est.ca.cert  # /cacerts, appended as certd does
    with pytest.raises(est.EstFailure) as failure:
        est.enroll(
            cloud.est_url,
            double_csr(new_key_pem(), "edge-06"),
            trusted_pems=trusted,
            basic=(cloud.settings.est_username, "wrong"),
            client=None,
            private_dir=tmp_path,
        )
    assert str(failure.value) == (
        'EST endpoint did not return successful response: 401 Unauthorized b"the user name or password is wrong\\n"'
    )


def test_the_doubles_certd_enrolls_with_a_bootstrap_identity_as_client_certificate(cloud, tmp_path):
    chain = est.enroll(
        cloud.est_url,
        double_csr(new_key_pem(), "edge-07"),
        trusted_pems=[cloud.ca_bundle.read_text()],
        basic=None,
        client=cloud.est.bootstrap_identity("edge-07"),
        private_dir=tmp_path,
    )
    assert "BEGIN CERTIFICATE" in chain
    assert cloud.state()["est"]["issued"][-1]["auth"] == "bootstrap"


def test_a_bootstrap_key_inside_a_token_signs_the_enrollments_handshake(cloud, tmp_path, soft_token):
    """keyd's requests for certd when the EST client key is in a PKCS#11 token: the token signs, nothing is read out."""
    public_key = soft_token.generate("bootstrap")
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edge-08-bootstrap")])
    certificate = cloud.est.bootstrap_ca.issue(
        subject, public_key, cloud.runtime.clock.now(), dt.timedelta(days=1), client=True
    )
    cert_pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
    token_key = TokenKey("/usr/lib/softhsm/libsofthsm2.so", Pkcs11Uri.parse(soft_token.uri("bootstrap")))
    trusted = [cloud.ca_bundle.read_text()]

    def send(method, url, body, headers):
        status, content_type, raw = token_key.request(cert_pem, url, method, body, headers, trusted, 30, tmp_path)
        return status, {"content-type": content_type}, raw

    chain = est.enroll(
        cloud.est_url,
        double_csr(new_key_pem(), "edge-08"),
        trusted_pems=trusted,
        basic=None,
        client=None,
        private_dir=tmp_path,
        send=send,
    )
    assert x509.load_pem_x509_certificates(chain.encode())[0].subject.rfc4514_string() == "CN=edge-08"
    assert cloud.state()["est"]["issued"][-1]["auth"] == "bootstrap"


def test_the_doubles_certd_issues_by_est_with_basic_credentials_alone(cloud):
    """certd's issuance (aziotd._issue_by_est) with [cert_issuance.est] basic credentials and no EST identity."""
    config = {
        "cert_issuance": {
            "est": {
                "username": cloud.settings.est_username,
                "password": cloud.est_password,
                "urls": {"default": cloud.est_url},
            }
        }
    }
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(aziotd, "CERTD_HOME", Path(cloud.state_dir) / "certd-home")
        patch.setenv("SSL_CERT_FILE", str(cloud.ca_bundle))
        chain = aziotd._issue_by_est(config, "device-id", {"method": "est"}, double_csr(new_key_pem(), "edge-09"))
    assert x509.load_pem_x509_certificates(chain.encode())[0].subject.rfc4514_string() == "CN=edge-09"
    assert cloud.state()["est"]["issued"][-1]["auth"] == "basic"


# ---- certd's renewal of its EST identity ([cert_issuance.est.identity_auto_renew]) --------------------------------


@pytest.fixture
def est_certd(cloud, tmp_path, monkeypatch):
    """certd and keyd of the double answering in-process, configured for an EST identity got with a bootstrap one."""
    for name, directory in (("ETC", "etc"), ("KEYD_HOME", "keyd"), ("CERTD_HOME", "certd")):
        (tmp_path / directory).mkdir()
        monkeypatch.setattr(aziotd, name, tmp_path / directory)
    monkeypatch.setattr(aziotd, "KEYD_KEYS", tmp_path / "keyd" / "keys")
    monkeypatch.setattr(aziotd, "CERTD_CERTS", tmp_path / "certd" / "certs")
    monkeypatch.setenv("SSL_CERT_FILE", str(cloud.ca_bundle))
    daemons = {aziotd.KEYD_SOCKET: aziotd.keyd, aziotd.CERTD_SOCKET: aziotd.certd}
    monkeypatch.setattr(aziotd, "call", lambda path, request, timeout=300: daemons[path](request))
    cert_pem, key_pem = cloud.est.bootstrap_identity("edge-10")
    (tmp_path / "bootstrap.pem").write_text(cert_pem)
    (tmp_path / "bootstrap.key.pem").write_text(key_pem)

    def configure(renewal: str) -> dict:
        certd_toml = (
            f'[cert_issuance.est]\nurls = {{ default = "{cloud.est_url}" }}\n'
            'identity_cert = "est-id"\nidentity_pk = "est-id"\n'
            'bootstrap_identity_cert = "est-bootstrap-id"\nbootstrap_identity_pk = "est-bootstrap-id"\n\n'
            f"[cert_issuance.est.identity_auto_renew]\n{renewal}\n"
            '[cert_issuance.device-id]\nmethod = "est"\n\n'
            f'[preloaded_certs]\nest-bootstrap-id = "file://{tmp_path}/bootstrap.pem"\n'
        )
        keyd_toml = f'[preloaded_keys]\nest-bootstrap-id = "file://{tmp_path}/bootstrap.key.pem"\n'
        for service, text in (("certd", certd_toml), ("keyd", keyd_toml)):
            (tmp_path / "etc" / service / "config.d").mkdir(parents=True, exist_ok=True)
            (tmp_path / "etc" / service / "config.d" / "00-super.toml").write_text(text)
        return aziotd.load_config("certd")

    return configure


def est_identity(tmp_path) -> tuple[x509.Certificate, bytes]:
    """The EST identity certd holds and the public key of keyd's est-id key."""
    certificate = x509.load_pem_x509_certificate((tmp_path / "certd/certs/est-id.pem").read_bytes())
    key = serialization.load_pem_private_key((tmp_path / "keyd/keys/est-id.pem").read_bytes(), None)
    return certificate, key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_der(certificate: x509.Certificate) -> bytes:
    return certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_certd_renews_its_est_identity_with_itself_and_a_new_key(cloud, est_certd, tmp_path):
    config = est_certd('rotate_key = true\nthreshold = "3650day"\nretry = "1%"\n')
    issued = aziotd.certd({"op": "create_cert", "id": "device-id", "csr": double_csr(new_key_pem(), "edge-10")})
    assert "pem" in issued, issued
    assert [entry["auth"] for entry in cloud.state()["est"]["issued"]] == ["bootstrap", "certificate"]
    old, old_key = est_identity(tmp_path)
    assert aziotd.est_identity_credentials(config) == {("est-id", "est-id"): "est-id"}
    policy = {**aziotd.EST_IDENTITY_RENEWAL_DEFAULT, **config["cert_issuance"]["est"]["identity_auto_renew"]}
    assert double_x509.renewal_due(policy, (tmp_path / "certd/certs/est-id.pem").read_text())

    aziotd.renew_est_identity(config, ("est-id", "est-id"), "est-id", policy)

    new, new_key = est_identity(tmp_path)
    assert new.serial_number != old.serial_number and new.subject == old.subject
    # rotate_key: a new key, moved over the old id; the temporary one is gone; the certificate is for the new key.
    assert new_key != old_key and public_der(new) == new_key
    assert not (tmp_path / "keyd/keys/est-id-temp.pem").exists()
    # Enrolled with the old EST identity as client certificate, asking for clientAuth again.
    last = cloud.state()["est"]["issued"][-1]
    assert last["auth"] == "certificate"
    assert new.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.CLIENT_AUTH]
    )


def test_an_expired_est_identity_is_renewed_with_the_bootstrap_identity_and_keeps_its_key(
    cloud, est_certd, tmp_path, pki, root
):
    config = est_certd('rotate_key = false\nthreshold = "80%"\nretry = "4%"\n')
    aziotd.certd({"op": "create_cert", "id": "device-id", "csr": double_csr(new_key_pem(), "edge-10")})
    _current, key = est_identity(tmp_path)
    expired = pki.leaf("edge-10", root, not_after=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    (tmp_path / "certd/certs/est-id.pem").write_bytes(expired.certificate.public_bytes(serialization.Encoding.PEM))
    policy = {**aziotd.EST_IDENTITY_RENEWAL_DEFAULT, **config["cert_issuance"]["est"]["identity_auto_renew"]}

    aziotd.renew_est_identity(config, ("est-id", "est-id"), "est-id", policy)

    new, same_key = est_identity(tmp_path)
    assert cloud.state()["est"]["issued"][-1]["auth"] == "bootstrap"
    assert same_key == key and public_der(new) == key
    assert new.not_valid_after_utc > dt.datetime.now(dt.UTC)


def test_the_renewal_engine_logs_as_certd_and_keeps_the_identity_it_could_not_renew(
    cloud, est_certd, tmp_path, monkeypatch, capsys
):
    est_certd('rotate_key = true\nthreshold = "3650day"\nretry = "1%"\n')
    aziotd.certd({"op": "create_cert", "id": "device-id", "csr": double_csr(new_key_pem(), "edge-10")})
    before = (tmp_path / "certd/certs/est-id.pem").read_text()

    def run_rounds(count: int) -> str:
        rounds = iter(range(count))

        def sleep(_seconds):
            if next(rounds, None) is None:
                raise StopIteration

        monkeypatch.setattr(aziotd.time, "sleep", sleep)
        with pytest.raises(StopIteration):
            aziotd.renew_est_identities_when_due()
        return capsys.readouterr().err

    log = run_rounds(1)
    assert "[INFO] - Attempting to renew certificate est-id." in log
    assert "[INFO] - Certificate est-id was renewed." in log
    renewed = (tmp_path / "certd/certs/est-id.pem").read_text()
    assert renewed != before

    # keyd lost the identity's key: the attempt fails, the certificate stays, the next round tries again.
    (tmp_path / "keyd/keys/est-id.pem").unlink()
    log = run_rounds(2)
    assert log.count("[WARN] - Tried to renew est-id, but could not get the key of 'est-id'") == 2
    assert "Retrying in 10 seconds." in log
    assert (tmp_path / "certd/certs/est-id.pem").read_text() == renewed
