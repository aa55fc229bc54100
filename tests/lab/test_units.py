"""Small pure units: SAS tokens, fault rules, the query language, hub deployments, TLS material."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from cryptography import x509

from lab.cloud.clock import IdGenerator, ManualClock
from lab.cloud.faults import FaultInjector, FaultSpecError
from lab.cloud.iothub.backend import IotHubBackend
from lab.cloud.iothub.errors import IotHubError
from lab.cloud.iothub.query import QueryError, compile_condition, compile_select
from lab.cloud.sas import SasError, SasPolicy, derived_key, make_token, verify_policy_token
from lab.cloud.tls import LabCA

NOW = dt.datetime.now(dt.UTC)
POLICY = SasPolicy("owner", derived_key("test", 0), frozenset({"EnrollmentRead"}))


def test_sas_accepts_sdk_tokens_and_rejects_bad_ones():
    token = make_token("127.0.0.1:443", POLICY.key, "owner", int(time.time()) + 60)
    assert verify_policy_token(token, {"owner": POLICY}, ["127.0.0.1:443"], NOW) is POLICY
    upper_sr = token.replace("127.0.0.1%3A443", "127.0.0.1%3a443")  # .NET-style lowercase escapes
    assert verify_policy_token(upper_sr, {"owner": POLICY}, ["127.0.0.1:443"], NOW) is POLICY
    with pytest.raises(SasError, match="expired"):
        verify_policy_token(token, {"owner": POLICY}, ["127.0.0.1:443"], NOW + dt.timedelta(hours=1))
    with pytest.raises(SasError, match="missing"):
        verify_policy_token(None, {"owner": POLICY}, ["127.0.0.1:443"], NOW)
    with pytest.raises(SasError, match="signature"):
        verify_policy_token(token.replace("sig=", "sig=AAAA"), {"owner": POLICY}, ["127.0.0.1:443"], NOW)


def test_fault_rules_count_down_and_validate():
    faults = FaultInjector()
    faults.add({"match": {"method": "GET", "path": "^/x"}, "count": 2, "action": {"status": 429}})
    assert faults.take("dps", "GET", "/x/1", None).retry_after == 1
    assert faults.take("dps", "PUT", "/x/1", None) is None
    assert faults.take("dps", "GET", "/x/2", None) is not None
    assert faults.take("dps", "GET", "/x/3", None) is None
    for bad in (
        {"action": {}},
        {"count": 0, "action": {"drop": True}},
        {"match": {"path": "("}, "action": {"drop": True}},
    ):
        with pytest.raises(FaultSpecError):
            faults.add(bad)


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("tags.environment='test'", True),
        ("tags.environment = 'prod'", False),
        ("tags.environment='test' AND capabilities.iotEdge = true", True),
        ("NOT (tags.rack > 3) OR deviceId = 'x'", False),
        ("tags.rack IN [1, 4]", True),
        ("*", True),
    ],
)
def test_conditions(condition, expected):
    document = {"deviceId": "d", "tags": {"environment": "test", "rack": 4}, "capabilities": {"iotEdge": True}}
    assert compile_condition(condition)(document) is expected


def test_unsupported_queries_are_refused():
    with pytest.raises(QueryError):
        compile_condition("tags.a = ")
    with pytest.raises(QueryError):
        compile_select("SELECT deviceId FROM devices")
    assert compile_select("select * from devices.modules where moduleId = '$edgeAgent'")[0] == "devices.modules"


def test_highest_priority_deployment_wins_and_content_is_immutable():
    hub = IotHubBackend(ManualClock(NOW), IdGenerator(0), "hub")
    hub.put_device("edge", {"capabilities": {"iotEdge": True}}, None)
    hub.update_twin("edge", None, {"tags": {"env": "test"}}, None, replace=False)

    def deployment(marker: str, priority: int) -> dict:
        agent = {"properties.desired": {"marker": marker}}
        return {
            "content": {"modulesContent": {"$edgeAgent": agent, "$edgeHub": {"properties.desired": {}}}},
            "targetCondition": "tags.env='test'",
            "priority": priority,
        }

    hub.put_configuration("low", deployment("low", 1), None)
    hub.put_configuration("high", deployment("high", 5), None)
    assert hub.module("edge", "$edgeAgent").twin.desired == {"marker": "high"}
    assert hub.devices["edge"].applied_configuration == "high"
    with pytest.raises(IotHubError) as error:
        hub.put_configuration("high", deployment("changed", 5), "*")
    assert error.value.status == 400
    hub.delete_configuration("high", None)
    assert hub.module("edge", "$edgeAgent").twin.desired == {"marker": "low"}


def test_lab_ca_is_reused_and_server_cert_has_loopback_sans(tmp_path):
    ca = LabCA.load_or_create(tmp_path)
    again = LabCA.load_or_create(tmp_path)
    assert ca.certificate == again.certificate
    assert oct((tmp_path / "ca.key").stat().st_mode & 0o777) == "0o600"
    identity = ca.issue_server_identity("s")
    leaf = x509.load_pem_x509_certificates(identity.chain_path.read_bytes())[0]
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
