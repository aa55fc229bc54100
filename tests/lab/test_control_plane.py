"""Control plane (health, reset, state, faults, clock), proof of possession over HTTPS, and the CLI."""

from __future__ import annotations

import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab.cloud import CloudLab, ManualClock

API = "api-version=2021-10-01"


def test_health_reset_and_state(kit, control, pki):
    status, _headers, health = control.request("GET", "/_emulator/health")
    assert status == 200 and health["status"] == "ok" and health["services"]["dps"] == kit.cloud.dps_url
    body = kit.x509_enrollment("r-1", pki.leaf("r-1").pem)
    kit.https(kit.cloud.dps_port).request("PUT", f"/enrollments/r-1?{API}", body, kit.dps_auth())
    status, _headers, state = control.request("GET", "/_emulator/state")
    assert [e["registrationId"] for e in state["dps"]["enrollments"]] == ["r-1"]
    assert control.request("POST", "/_emulator/reset")[0] == 200
    assert control.request("GET", "/_emulator/state")[2]["dps"]["enrollments"] == []


def test_fault_429_then_recovery(kit, control):
    rule = {"match": {"operation": "IndividualEnrollment_Get"}, "count": 2, "action": {"status": 429, "retryAfter": 7}}
    status, _headers, created = control.request("POST", "/_emulator/faults", rule)
    assert status == 201 and created["remaining"] == 2
    dps = kit.https(kit.cloud.dps_port)
    for _index in range(2):
        status, headers, body = dps.request("GET", f"/enrollments/x?{API}", headers=kit.dps_auth())
        assert (status, headers["retry-after"], body["errorCode"]) == (429, "7", 429001)
    assert dps.request("GET", f"/enrollments/x?{API}", headers=kit.dps_auth())[0] == 404
    assert control.request("GET", "/_emulator/faults")[2][0]["hits"] == 2


def test_fault_by_path_regex_503_delay_and_drop(kit, control):
    hub = kit.https(kit.cloud.hub_ports[0])
    control.request(
        "POST",
        "/_emulator/faults",
        {"match": {"service": "iothub", "method": "GET", "path": "^/devices/"}, "action": {"status": 503}},
    )
    status, headers, _body = hub.request("GET", "/devices/x?api-version=2021-04-12")
    assert status == 503 and headers["iothub-errorcode"] == "ServiceUnavailable"
    control.request("POST", "/_emulator/faults", {"match": {"path": "/enrollments/slow"}, "action": {"delay": 0.3}})
    started = time.monotonic()
    status, _headers, _body = kit.https(kit.cloud.dps_port).request(
        "GET", f"/enrollments/slow?{API}", headers=kit.dps_auth()
    )
    assert status == 404 and time.monotonic() - started >= 0.3
    control.request("POST", "/_emulator/faults", {"match": {"path": "/enrollments/gone"}, "action": {"drop": True}})
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError, ssl.SSLError)):
        kit.https(kit.cloud.dps_port).request("GET", f"/enrollments/gone?{API}", headers=kit.dps_auth())
    assert control.request("POST", "/_emulator/faults", {"action": {"status": 418}})[0] == 400
    log = control.request("GET", "/_emulator/requests")[2]
    assert [r["status"] for r in log if r["path"] == "/enrollments/gone"] == [None]


def test_proof_of_possession_over_management_api(kit, root, pki):
    cloud = kit.cloud
    api = kit.https(cloud.dps_port)
    base = f"{cloud.management_resource_id}/certificates/lab-root?api-version=2022-02-05"
    bearer = {"Authorization": f"Bearer {cloud.management_token}"}
    assert api.request("PUT", base, {"certificate": root.pem}, {"Authorization": "Bearer nope"})[0] == 401
    status, _headers, uploaded = api.request("PUT", base, {"certificate": root.pem}, bearer)
    assert status == 200 and uploaded["properties"]["isVerified"] is False
    assert uploaded["properties"]["subject"] == "CN=edgefleet test root"
    code_url = base.replace("?", "/generateVerificationCode?")
    status, _headers, coded = api.request("POST", code_url, None, bearer | {"If-Match": uploaded["etag"]})
    assert status == 200 and coded["properties"]["verificationCode"]
    proof = pki.leaf(coded["properties"]["verificationCode"], root)
    verify_url = base.replace("?", "/verify?")
    status, _headers, verified = api.request(
        "POST", verify_url, {"certificate": proof.pem}, bearer | {"If-Match": coded["etag"]}
    )
    assert status == 200 and verified["properties"]["isVerified"] is True
    assert cloud.state()["dps"]["certificates"][0]["isVerified"] is True


def test_management_api_refuses_an_api_version_it_does_not_publish(kit):
    cloud = kit.cloud
    api = kit.https(cloud.dps_port)
    bearer = {"Authorization": f"Bearer {cloud.management_token}"}
    base = f"{cloud.management_resource_id}/certificates/lab-root"
    status, headers, body = api.request("GET", f"{base}?api-version=2019-01-01", headers=bearer)
    assert (status, body["code"], headers["x-ms-error-code"]) == (400, "NoRegisteredProviderFound", body["code"])
    assert "'2019-01-01'" in body["message"] and "2022-12-12" in body["message"]
    assert api.request("GET", f"{base}?api-version=2022-12-12", headers=bearer)[0] == 404


def test_manual_clock_expires_device_certificates(tmp_path, pki):
    import datetime as dt

    clock = ManualClock(dt.datetime.now(dt.UTC))
    with CloudLab.start(tmp_path, clock=clock, seed=3) as lab:
        leaf = pki.leaf("clocked")  # valid for 30 days
        lab.dps.put_enrollment(
            "enrollment",
            "clocked",
            {
                "registrationId": "clocked",
                "attestation": {"type": "x509", "x509": {"clientCertificates": {"primary": {"certificate": leaf.pem}}}},
            },
            None,
        )
        context = ssl.create_default_context(cafile=str(lab.ca_bundle))
        chain_path, key_path = leaf.write(tmp_path, "clocked")
        context.load_cert_chain(chain_path, key_path)

        def register() -> tuple[int, dict]:
            connection = http.client.HTTPSConnection("127.0.0.1", lab.device_port, context=context, timeout=5)
            connection.request(
                "PUT",
                f"/{lab.id_scope}/registrations/clocked/register?api-version=2021-06-01",
                body=json.dumps({"registrationId": "clocked"}),
                headers={"Content-Type": "application/json"},
            )
            response = connection.getresponse()
            return response.status, json.loads(response.read())

        assert register()[0] == 202
        control = http.client.HTTPSConnection(
            "127.0.0.1", lab.dps_port, context=ssl.create_default_context(cafile=str(lab.ca_bundle))
        )
        control.request("POST", "/_emulator/clock", body=json.dumps({"advance": 31 * 86400}))
        assert control.getresponse().status == 200
        status, body = register()
        assert status == 401 and "expired" in body["info"]["reason"]


def test_cli_writes_info_and_stops_on_sigterm(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    process = subprocess.Popen(
        [sys.executable, "-m", "lab.cloud", "--state-dir", str(tmp_path)], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        info_path = Path(process.stdout.readline().strip())
        info = json.loads(info_path.read_text())
        assert oct(info_path.stat().st_mode & 0o777) == "0o600"
        assert info["dps"]["connection_string"].startswith(f"HostName=127.0.0.1:{info['dps']['port']};")
        assert info["iothub"]["host_name"].startswith("127.0.0.1:") and info["dps"]["id_scope"] == "0ne00C0FFEE"
        context = ssl.create_default_context(cafile=info["ca_bundle"])
        connection = http.client.HTTPSConnection("127.0.0.1", info["dps"]["port"], context=context, timeout=5)
        connection.request("GET", "/_emulator/health")
        assert connection.getresponse().status == 200
        connection.close()
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0


@pytest.mark.parametrize(
    ("rule", "words"),
    [
        ({"action": {"status": 503}, "probability": 0.5}, "'probability'"),
        ({"match": {"operaton": "X"}, "action": {"status": 503}}, "'match.operaton'"),
        ({"action": {"status": 503, "retry_after": 2}}, "'action.retry_after'"),
    ],
)
def test_a_fault_field_the_rule_does_not_have_is_refused_not_ignored(kit, control, rule, words):
    status, _headers, body = control.request("POST", "/_emulator/faults", rule)
    assert status == 400 and words in json.dumps(body)
    assert control.request("GET", "/_emulator/faults")[2] == []


def test_a_fault_rate_hits_exactly_that_share_of_matching_requests(kit, control):
    rule = {"match": {"operation": "IndividualEnrollment_Get"}, "count": 100, "action": {"status": 503}, "rate": 0.25}
    assert control.request("POST", "/_emulator/faults", rule)[0] == 201
    dps = kit.https(kit.cloud.dps_port)
    statuses = [dps.request("GET", f"/enrollments/x?{API}", headers=kit.dps_auth())[0] for _attempt in range(8)]
    assert statuses.count(503) == 2 and statuses.count(404) == 6


def test_device_registration_refuses_an_id_with_a_trailing_newline(kit):
    """'$' matches before a trailing newline; DPS's rule is applied to the whole id."""
    from lab.cloud.dps.errors import DpsError

    with pytest.raises(DpsError, match="is invalid"):
        kit.cloud.dps.register(kit.cloud.id_scope, "edge-01\n", {"registrationId": "edge-01\n"}, [])
