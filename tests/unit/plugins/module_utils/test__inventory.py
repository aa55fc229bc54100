"""The inventory checks of every role: argument specs without conversion, the values' own rules, unknown names."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
import yaml

from ansible_collections.edgefleet.iotedge.plugins.module_utils._inventory import (
    ROLES,
    check_role,
    fleet_wide_variables,
    load_role_options,
    shared_registration_ids,
    uneven_fleet_values,
    unknown_variables,
)

ROLES_DIR = Path(__file__).resolve().parents[4] / "roles"
NOW = datetime.datetime(2026, 11, 30, 12, 0, tzinfo=datetime.UTC)
CONNECTION = "HostName=dps.example.net;SharedAccessKeyName=provisioningserviceowner;SharedAccessKey=c2VjcmV0LWtleQ=="
HUB_CONNECTION = "HostName=hub.example.net;SharedAccessKeyName=iothubowner;SharedAccessKey=c2VjcmV0LWtleQ=="


def options(role: str) -> dict:
    """The role's options and those of the common role it depends on (what validate_inventory reads)."""
    found = {}
    for name in ("common", role):
        found.update(load_role_options(yaml.safe_load((ROLES_DIR / name / "meta" / "argument_specs.yml").read_text())))
    return found


def defaults(role: str) -> dict:
    """The role's defaults as a host with nothing set would resolve them (templates replaced by plain values)."""
    values = {
        **yaml.safe_load((ROLES_DIR / "common" / "defaults" / "main.yml").read_text()),
        **yaml.safe_load((ROLES_DIR / role / "defaults" / "main.yml").read_text()),
    }
    resolved = {
        "edgefleet_registration_id": "edge-01",
        "edgefleet_pki_dir": "/srv/pki",
        "edgefleet_pki_ca_dir": "/srv/pki/ca",
        "edgefleet_pki_identity_dir": "/srv/pki/identities",
        "edgefleet_iotedge_apt_uri": "https://packages.microsoft.com/debian/12/prod",
        "edgefleet_iotedge_apt_suite": "bookworm",
        "edgefleet_iotedge_identity_cert_src": "/srv/pki/identities/edge-01/identity.full-chain.cert.pem",
        "edgefleet_iotedge_identity_key_src": "/srv/pki/identities/edge-01/identity.key.pem",
        "edgefleet_iotedge_hostname": "edge-01",
        "edgefleet_dps_connection_string": CONNECTION,
        "edgefleet_dps_resource_id": "/subscriptions/s/resourceGroups/g/providers/Microsoft.Devices/provisioningServices/d",
        "edgefleet_dps_ca_rollover_certificate_name": "edgefleet-root-rollover",
    }
    return {name: resolved.get(name, value) for name, value in values.items()} | REQUIRED.get(role, {})


# What a role needs set, beyond its defaults.
REQUIRED = {
    "iotedge_deployment": {
        "edgefleet_deployment_name": "sensors",
        "edgefleet_deployment_manifest": {"modulesContent": {"$edgeAgent": {"properties.desired": {}}}},
    }
}


def problems(role: str, **values) -> list[str]:
    return check_role(role, options(role), {**defaults(role), **values}, now=NOW)


@pytest.mark.parametrize("role", ROLES)
def test_the_defaults_of_every_role_pass(role):
    assert problems(role) == []


# ---- argument specs, applied without conversion ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "values", "message"),
    [
        (
            "edge_pki",
            {"edgefleet_pki_passphrase": ["s3cret"]},
            "edgefleet_pki_passphrase: must be a string, got a list",
        ),
        (
            "dps_enrollment",
            {"edgefleet_dps_connection_string": 42},
            "edgefleet_dps_connection_string: must be a string",
        ),
        ("edge_pki", {"edgefleet_pki_root_common_name": ["Root"]}, "edgefleet_pki_root_common_name: must be a string"),
        (
            "iotedge_install",
            {"edgefleet_iotedge_version": 1.5},
            "edgefleet_iotedge_version: must be a string, got a number",
        ),
        (
            "edge_pki",
            {"edgefleet_pki_valid_days": "ninety"},
            "edgefleet_pki_valid_days: must be a whole number, got 'ninety'",
        ),
        ("edge_pki", {"edgefleet_pki_valid_days": True}, "edgefleet_pki_valid_days: must be a whole number"),
        ("iotedge_provision", {"edgefleet_iotedge_check": "maybe"}, "edgefleet_iotedge_check: must be true or false"),
        (
            "iotedge_provision",
            {"edgefleet_iotedge_check_ignore": "a,b"},
            "edgefleet_iotedge_check_ignore: must be a list",
        ),
        ("iotedge_provision", {"edgefleet_iotedge_check_ignore": ["a", 3]}, "item 1 must be a string"),
        (
            "dps_enrollment",
            {"edgefleet_dps_twin_tags": "environment=test"},
            "edgefleet_dps_twin_tags: must be a dictionary",
        ),
        ("dps_enrollment", {"edgefleet_dps_enrollment_type": "bulk"}, "'bulk' is not one of 'individual', 'group'"),
        ("dps_enrollment", {"edgefleet_dps_reprovision_policy": {"migrate": True}}, "unknown key(s) 'migrate'"),
    ],
)
def test_wrong_types_and_choices_are_errors_never_conversions(role, values, message):
    found = problems(role, **values)
    assert any(message in problem for problem in found), found


def test_a_secret_of_the_wrong_type_is_described_by_its_type_only():
    (problem,) = problems("edge_pki", edgefleet_pki_passphrase=["hunter2-secret"])
    assert "hunter2" not in problem


@pytest.mark.parametrize(
    ("values", "converted_ok"),
    [
        ({"edgefleet_pki_valid_days": "90"}, True),
        ({"edgefleet_pki_intermediate": "yes"}, True),
        ({"edgefleet_pki_intermediate": 0}, True),
        ({"edgefleet_pki_valid_days": "90\n"}, False),
    ],
)
def test_what_ansible_itself_passes_as_text_is_read_as_such(values, converted_ok):
    assert (problems("edge_pki", **values) == []) is converted_ok


# ---- a value ending in a line break fails every check that guards a file, a command line or DPS --------------------

NEWLINE_CASES = [
    ("edge_pki", "edgefleet_registration_id", "edge-01\n"),
    ("dps_enrollment", "edgefleet_registration_id", "edge-01\n"),
    ("iotedge_provision", "edgefleet_registration_id", "edge-01\n"),
    ("edge_pki", "edgefleet_pki_root_common_name", "Fleet Root\n"),
    ("edge_pki", "edgefleet_pki_intermediate_common_name", "Fleet Intermediate\n"),
    ("edge_pki", "edgefleet_pki_ca_not_after", "2037-12-31\n"),
    ("edge_pki", "edgefleet_pki_dir", "/srv/pki\n"),
    ("edge_pki", "edgefleet_pki_ca_dir", "/srv/pki/ca\n"),
    ("edge_pki", "edgefleet_pki_identity_dir", "/srv/pki/ids\n"),
    ("dps_enrollment", "edgefleet_dps_enrollment_group_id", "fleet\n"),
    ("dps_enrollment", "edgefleet_dps_ca_certificate_name", "edgefleet-root\n"),
    ("dps_enrollment", "edgefleet_dps_ca_rollover_certificate_name", "edgefleet-root-rollover\n"),
    ("dps_enrollment", "edgefleet_dps_connection_string", CONNECTION.replace(".net", ".net\nx")),
    ("dps_enrollment", "edgefleet_iothub_connection_string", HUB_CONNECTION.replace(".net", ".net\nx")),
    ("dps_enrollment", "edgefleet_dps_management_url", "https://management.azure.com\n"),
    ("dps_enrollment", "edgefleet_dps_resource_id", defaults("dps_enrollment")["edgefleet_dps_resource_id"] + "\n"),
    ("dps_enrollment", "edgefleet_azure_tenant_id", "contoso.onmicrosoft.com\n"),
    ("dps_enrollment", "edgefleet_ca_bundle", "/etc/ssl/ca.pem\n"),
    ("iotedge_install", "edgefleet_iotedge_apt_uri", "https://packages.microsoft.com/debian/12/prod\n"),
    ("iotedge_install", "edgefleet_iotedge_apt_suite", "bookworm\n"),
    ("iotedge_install", "edgefleet_iotedge_apt_signing_key_url", "https://packages.microsoft.com/keys/microsoft.asc\n"),
    ("iotedge_install", "edgefleet_iotedge_version", "1.5.44-1\n"),
    ("iotedge_install", "edgefleet_iotedge_identity_service_version", "1.5.6-1\n"),
    ("iotedge_install", "edgefleet_iotedge_container_engine_package", "moby-engine\n"),
    ("iotedge_provision", "edgefleet_iotedge_cert_dir", "/var/aziot/certs\n"),
    ("iotedge_provision", "edgefleet_iotedge_secrets_dir", "/var/aziot/secrets\n"),
    ("iotedge_provision", "edgefleet_iotedge_identity_cert_src", "/srv/pki/chain.pem\n"),
    ("iotedge_provision", "edgefleet_iotedge_identity_key_src", "/srv/pki/key.pem\n"),
]


@pytest.mark.parametrize(
    ("role", "name", "value"), NEWLINE_CASES, ids=[f"{case[0]}-{case[1]}" for case in NEWLINE_CASES]
)
def test_a_trailing_line_break_is_refused_naming_the_variable(role, name, value):
    extra = {"edgefleet_dps_enrollment_type": "group"} if name == "edgefleet_dps_enrollment_group_id" else {}
    if name == "edgefleet_iotedge_identity_service_version":
        extra["edgefleet_iotedge_version"] = "1.5.44-1"
    if name == "edgefleet_dps_resource_id":
        extra.update(edgefleet_dps_subscription_id="", edgefleet_dps_resource_group="", edgefleet_dps_name="")
    found = problems(role, **extra, **{name: value})
    assert any(problem.startswith(f"{name}:") for problem in found), found


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("edgefleet_iotedge_apt_components", ["main\n"]),
        ("edgefleet_iotedge_apt_components", ["main", "contrib deb http://x"]),
    ],
)
def test_apt_components_are_single_words(name, value):
    assert any(problem.startswith(f"{name}[") for problem in problems("iotedge_install", **{name: value}))


def test_the_apt_uri_cannot_open_a_second_sources_line():
    found = problems("iotedge_install", edgefleet_iotedge_apt_uri="http://127.0.0.1:19580/ ./\ndeb http://example.com/")
    assert found and found[0].startswith("edgefleet_iotedge_apt_uri:")


# ---- the values' own rules ----------------------------------------------------------------------------------------


def test_a_ca_a_generation_cannot_read_is_refused_before_the_pki_phase():
    (problem,) = problems("edge_pki", edgefleet_generation="1.1", edgefleet_pki_ca_valid_days=5000)
    assert problem.startswith("edgefleet_pki_ca_valid_days: a CA issued now would expire on 2040-08-08")
    assert "2038" in problem and "edgefleet_pki_ca_not_after" in problem
    assert (
        problems(
            "edge_pki",
            edgefleet_generation="1.1",
            edgefleet_pki_ca_valid_days=5000,
            edgefleet_pki_ca_not_after="2037-12-31",
        )
        == []
    )
    assert problems("edge_pki", edgefleet_pki_ca_valid_days=9000)[0].endswith("or lower edgefleet_pki_ca_valid_days")


def test_twin_rules_name_the_variable_and_the_place():
    (problem,) = problems("dps_enrollment", edgefleet_dps_twin_tags={"site": {"floor.2": 1}})
    assert problem.startswith("edgefleet_dps_twin_tags.site: key 'floor.2'")
    (problem,) = problems("dps_enrollment", edgefleet_dps_twin_desired_properties={"$version": 1})
    assert problem.startswith("edgefleet_dps_twin_desired_properties: key '$version'")


def test_the_two_names_of_the_fleet_ca_in_dps_differ():
    (problem,) = problems("dps_enrollment", edgefleet_dps_ca_rollover_certificate_name="edgefleet-root")
    assert problem.startswith(
        "edgefleet_dps_ca_rollover_certificate_name: is the same as edgefleet_dps_ca_certificate_name"
    )
    (problem,) = problems("dps_enrollment", edgefleet_dps_ca_rollover_certificate_name="fleet root/next")
    assert problem.startswith("edgefleet_dps_ca_rollover_certificate_name: 'fleet root/next' is not a DPS certificate")


def test_a_connection_string_in_the_wrong_place_is_never_echoed():
    found = problems("dps_enrollment", edgefleet_dps_ca_certificate_name=CONNECTION)
    assert found and all("c2VjcmV0LWtleQ" not in problem for problem in found)
    assert "looks like a secret" in found[0]


def test_dps_and_management_settings():
    assert problems("dps_enrollment", edgefleet_dps_connection_string="")[0].startswith(
        "edgefleet_dps_connection_string: is empty"
    )
    found = problems("dps_enrollment", edgefleet_dps_resource_id="")
    assert found[0].startswith("edgefleet_dps_resource_id: is empty")
    found = problems("dps_enrollment", edgefleet_dps_management_url="http://management.azure.com")
    assert found[0].startswith("edgefleet_dps_management_url:")
    found = problems("dps_enrollment", edgefleet_azure_tenant_id="t", edgefleet_azure_client_id="c")
    assert found[0].startswith("edgefleet_azure_client_secret: is empty while")
    found = problems("dps_enrollment", edgefleet_dps_iot_hubs=["hub.example.net", "hub two"])
    assert found[0].startswith("edgefleet_dps_iot_hubs[1]:")


def test_renewal_and_reencryption_settings():
    assert problems("edge_pki", edgefleet_pki_renew_before_days=400)[0].startswith("edgefleet_pki_renew_before_days:")
    assert problems("edge_pki", edgefleet_pki_previous_passphrase="old")[0].startswith(
        "edgefleet_pki_previous_passphrase: is only used with edgefleet_pki_reencrypt"
    )


def test_versions_are_pinned_together_on_1_2():
    (problem,) = problems("iotedge_install", edgefleet_iotedge_version="1.5.44-1")
    assert problem.startswith("edgefleet_iotedge_identity_service_version: is not pinned")
    assert problems("iotedge_install", edgefleet_iotedge_version="1.1.19-1", edgefleet_generation="1.1") == []


def test_the_runtime_configuration_is_rendered_once_and_its_errors_name_the_variable():
    settings = {
        "generation": "1.2+",
        "registration_id": "edge-01",
        "iotedge_hostname": "edge-01",
        "dps_id_scope": "0ne00C0FFEE\n",
        "iotedge_identity_cert_path": "/var/aziot/certs/device-id.pem",
        "iotedge_identity_key_path": "/var/aziot/secrets/device-id.key.pem",
        "iotedge_est_password": "p@ss",
    }
    found = check_role(
        "iotedge_provision", options("iotedge_provision"), defaults("iotedge_provision"), config_settings=settings
    )
    assert found == [
        "edgefleet_dps_id_scope: '0ne00C0FFEE\\n' is not a DPS ID scope (letters and digits only, like "
        "0ne00C0FFEE). Copy it from the DPS overview page or `az iot dps show --name <dps> --query "
        "properties.idScope -o tsv`"
    ]


# ---- unknown variables --------------------------------------------------------------------------------------------


def test_unknown_names_get_the_closest_known_one():
    known = {name for role in ROLES for name in options(role)}
    messages = unknown_variables(
        [
            "edgefleet_iotedge_auto_reprovision_mode",
            "edgefleet_dps_twin_tag",
            "edgefleet_something_else_entirely",
            "edgefleet_target",
            "edgefleet_identities",
            "edgefleet_pki_dir",
            "other_variable",
        ],
        known,
    )
    assert messages == [
        "edgefleet_dps_twin_tag is not a variable of edgefleet.iotedge, so it has no effect; did you mean "
        "edgefleet_dps_twin_tags?",
        "edgefleet_iotedge_auto_reprovision_mode is not a variable of edgefleet.iotedge, so it has no effect; did "
        "you mean edgefleet_iotedge_auto_reprovisioning_mode?",
        "edgefleet_something_else_entirely is not a variable of edgefleet.iotedge, so it has no effect",
    ]


def test_a_flat_repository_has_no_components_and_a_suite_has_some():
    assert problems("iotedge_install", edgefleet_iotedge_apt_suite="./", edgefleet_iotedge_apt_components=[]) == []
    assert problems("iotedge_install", edgefleet_iotedge_apt_suite="./", edgefleet_iotedge_apt_components=["main"])
    assert problems("iotedge_install", edgefleet_iotedge_apt_components=[])[0].startswith(
        "edgefleet_iotedge_apt_components: is empty"
    )


def test_the_apt_update_scope_is_all_or_repository():
    assert problems("iotedge_install", edgefleet_iotedge_apt_update_scope="repository") == []
    (problem,) = problems("iotedge_install", edgefleet_iotedge_apt_update_scope="microsoft")
    assert problem.startswith("edgefleet_iotedge_apt_update_scope: 'microsoft' is not one of 'all', 'repository'")


# ---- the fleet CA as an input ---------------------------------------------------------------------------------------

CA_VARIABLES = {
    "root.cert.pem": "edgefleet_pki_ca_root_cert_content",
    "root.key.pem": "edgefleet_pki_ca_root_key_content",
    "intermediate.cert.pem": "edgefleet_pki_ca_intermediate_cert_content",
    "intermediate.key.pem": "edgefleet_pki_ca_intermediate_key_content",
}


@pytest.fixture
def fleet_ca(tmp_path):
    """A CA made by pki_ca (keys encrypted), and its files as the role's content variables."""
    from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki_ca import ensure_ca
    from ansible_collections.edgefleet.iotedge.tests.unit.pki_factories import ca_request

    path = tmp_path / "made"
    ensure_ca(
        ca_request(path, root_common_name="edgefleet Root CA", intermediate_common_name="edgefleet Intermediate CA"),
        check_mode=False,
        now=NOW,
    )
    ensure_ca(
        ca_request(
            path,
            root_common_name="edgefleet Root CA",
            intermediate_common_name="edgefleet Intermediate CA",
            passphrase="vaulted",
            reencrypt=True,
        ),
        check_mode=False,
        now=NOW,
    )
    return path, {variable: (path / name).read_text() for name, variable in CA_VARIABLES.items()}


def test_a_ca_handed_in_passes_and_its_problems_name_the_variables(fleet_ca):
    _path, contents = fleet_ca
    assert problems("edge_pki", edgefleet_pki_passphrase="vaulted", **contents) == []
    (problem,) = problems("edge_pki", **contents)
    assert problem.startswith(
        "edgefleet_pki_passphrase: edgefleet_pki_ca_root_key_content is encrypted; give the passphrase"
    )
    (problem,) = problems(
        "edge_pki",
        edgefleet_pki_passphrase="vaulted",
        **dict(
            contents, **{"edgefleet_pki_ca_root_key_content": contents["edgefleet_pki_ca_intermediate_key_content"]}
        ),
    )
    assert problem == (
        "edgefleet_pki_ca_root_key_content: is not the key of edgefleet_pki_ca_root_cert_content; give the matching "
        "key and certificate"
    )
    (problem,) = problems(
        "edge_pki", edgefleet_pki_passphrase="vaulted", edgefleet_pki_root_common_name="Contoso Root", **contents
    )
    assert problem.startswith(
        "edgefleet_pki_root_common_name: the root CA handed in (edgefleet_pki_ca_root_cert_content) has the common "
        "name 'edgefleet Root CA'; set edgefleet_pki_root_common_name to it"
    )
    (problem,) = problems(
        "edge_pki",
        edgefleet_pki_passphrase="vaulted",
        **dict(contents, edgefleet_pki_ca_intermediate_key_content=""),
    )
    assert problem.startswith(
        "edgefleet_pki_ca_intermediate_key_content: is empty while edgefleet_pki_ca_intermediate_cert_content is given"
    )
    (problem,) = problems("edge_pki", edgefleet_pki_passphrase="vaulted", edgefleet_pki_intermediate=False, **contents)
    assert problem.startswith("edgefleet_pki_ca_intermediate_cert_content: is given while edgefleet_pki_intermediate")


def test_a_ca_key_of_the_wrong_type_is_described_by_its_type_only():
    (problem,) = problems("edge_pki", edgefleet_pki_ca_root_key_content=["-----BEGIN PRIVATE KEY-----secret"])
    assert problem.startswith("edgefleet_pki_ca_root_key_content: must be a string, got a list")
    assert "secret" not in problem


def test_create_false_needs_the_ca_in_the_directory_or_handed_in(tmp_path, fleet_ca):
    made, contents = fleet_ca
    empty = tmp_path / "empty"
    (problem,) = problems("edge_pki", edgefleet_pki_ca_create=False, edgefleet_pki_ca_dir=str(empty))
    assert problem.startswith(
        f"edgefleet_pki_ca_create: is false and the fleet CA in {empty} (edgefleet_pki_ca_dir) is not complete "
        "(root.cert.pem, root.key.pem, intermediate.cert.pem, intermediate.key.pem missing there)"
    )
    assert "edgefleet_pki_ca_root_key_content" in problem and "edgefleet_pki_intermediate: false" not in problem
    assert not empty.exists()
    # The preflight's "false" is YAML's or the command line's.
    assert problems("edge_pki", edgefleet_pki_ca_create="false", edgefleet_pki_ca_dir=str(empty))
    assert problems("edge_pki", edgefleet_pki_ca_create=False, edgefleet_pki_ca_dir=str(made)) == []
    assert (
        problems(
            "edge_pki",
            edgefleet_pki_ca_create=False,
            edgefleet_pki_ca_dir=str(empty),
            edgefleet_pki_passphrase="vaulted",
            **contents,
        )
        == []
    )
    root_only = {name: value for name, value in contents.items() if "_root_" in name}
    (problem,) = problems(
        "edge_pki",
        edgefleet_pki_ca_create=False,
        edgefleet_pki_ca_dir=str(empty),
        edgefleet_pki_passphrase="vaulted",
        **root_only,
    )
    assert "(intermediate.cert.pem, intermediate.key.pem missing there)" in problem
    assert "or set edgefleet_pki_intermediate: false" in problem


# ---- registration ids several hosts share ---------------------------------------------------------------------------


def test_hosts_sharing_a_registration_id_are_each_refused_naming_the_others():
    refused = shared_registration_ids({"gw-a": "edge-01", "gw-b": "edge-02", "gw-c": "edge-01", "gw-d": "edge-01"})
    assert sorted(refused) == ["gw-a", "gw-c", "gw-d"]
    assert refused["gw-a"] == refused["gw-c"] == refused["gw-d"]
    assert refused["gw-a"].startswith(
        "edgefleet_registration_id: gw-a and gw-c and gw-d all have the registration id 'edge-01'"
    )
    assert shared_registration_ids({"gw-a": "edge-01", "gw-b": "edge-02"}) == {}


TOKEN_KEY = {
    "edgefleet_iotedge_identity_key_method": "pkcs11",
    "edgefleet_iotedge_identity_key_pkcs11_uri": "pkcs11:token=edge;object=device-id?pin-value=1234",
    "edgefleet_iotedge_pkcs11_lib_path": "/usr/lib/softhsm/libsofthsm2.so",
    "edgefleet_iotedge_pkcs11_base_slot": "pkcs11:token=edge?pin-value=1234",
}


@pytest.mark.parametrize(
    "values, message",
    [
        (
            {"edgefleet_iotedge_identity_cert_method": "est"},
            "edgefleet_identity_key_origin: is device, and edgefleet_iotedge_identity_cert_method is 'est'",
        ),
        (
            {**TOKEN_KEY, "edgefleet_iotedge_identity_key_pkcs11_uri": "pkcs11:slot-id=0;object=id?pin-value=1"},
            "edgefleet_iotedge_identity_key_pkcs11_uri: must name the token by its label, the key and the user PIN",
        ),
        (
            {**TOKEN_KEY, "edgefleet_iotedge_identity_key_pkcs11_uri": "pkcs11:token=edge;object=id"},
            "edgefleet_iotedge_identity_key_pkcs11_uri: must name the token by its label",
        ),
        (
            {**TOKEN_KEY, "edgefleet_iotedge_pkcs11_init_token": True},
            "edgefleet_iotedge_pkcs11_so_pin: is empty, and edgefleet_iotedge_pkcs11_init_token asks",
        ),
        ({"edgefleet_identity_rotate_key": "sometimes"}, "edgefleet_identity_rotate_key: "),
    ],
)
def test_a_key_made_on_the_device_needs_a_certificate_signed_by_the_fleet_pki_and_a_token_it_can_find(values, message):
    assert problems("iotedge_provision", edgefleet_identity_key_origin="device") == []
    found = problems("iotedge_provision", edgefleet_identity_key_origin="device", **values)
    assert any(problem.startswith(message) for problem in found), found
    assert problems("iotedge_provision", edgefleet_identity_key_origin="hsm")[0].startswith(
        "edgefleet_identity_key_origin: 'hsm' is not one of 'controller', 'device'"
    )


def test_the_fleet_wide_variables_of_the_controllers_batches():
    names = [
        "edgefleet_pki_key_type",
        "edgefleet_identity_rotate",
        "edgefleet_dps_twin_tags",
        "edgefleet_dps_connection_string",
        "edgefleet_iotedge_version",
    ]
    assert fleet_wide_variables("edge_pki", names) == ["edgefleet_pki_key_type"]
    assert fleet_wide_variables("dps_enrollment", names) == ["edgefleet_dps_connection_string"]
    assert fleet_wide_variables("iotedge_provision", names) == []
    deployment = ["edgefleet_deployment_ring", "edgefleet_deployment_rings", "edgefleet_iothub_connection_string"]
    assert fleet_wide_variables("iotedge_deployment", deployment + names) == deployment[1:]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"edgefleet_deployment_name": ""}, "edgefleet_deployment_name: is not set"),
        ({"edgefleet_deployment_name": "Sensors"}, "edgefleet_deployment_name: 'Sensors' is not usable"),
        (
            {"edgefleet_deployment_ring": "beta"},
            "edgefleet_deployment_ring: 'beta' is not one of edgefleet_deployment_rings",
        ),
        ({"edgefleet_deployment_rings": []}, "edgefleet_deployment_rings: is empty"),
        (
            {"edgefleet_deployment_rings": ["a", "a"]},
            "edgefleet_deployment_rings: a list of 2 items has an empty or repeated",
        ),
        ({"edgefleet_deployment_ring_tag": "group"}, "edgefleet_deployment_ring_tag: tag name 'group' cannot be"),
        ({"edgefleet_dps_twin_tags": {"ring": "canary"}}, "edgefleet_dps_twin_tags: sets the tag 'ring' to 'canary'"),
        ({"edgefleet_deployment_target_tags": {"ring": "x"}}, "edgefleet_deployment_target_tags: names the ring tag"),
        ({"edgefleet_deployment_target_tags": {"env": None}}, "edgefleet_deployment_target_tags: None cannot be"),
        (
            {"edgefleet_deployment_manifest_path": "/nowhere.json"},
            "edgefleet_deployment_manifest_path: both a manifest",
        ),
        ({"edgefleet_deployment_manifest": {}}, "edgefleet_deployment_manifest_path: no manifest"),
        ({"edgefleet_deployment_priority": 0}, "edgefleet_deployment_priority: is 0; it must be 1 or more"),
        ({"edgefleet_deployment_max_failures": "ten"}, "edgefleet_deployment_max_failures: 'ten' is neither"),
        ({"edgefleet_deployment_poll_interval": 0}, "edgefleet_deployment_poll_interval: is 0"),
        ({"edgefleet_deployment_labels": {"release": 2}}, "edgefleet_deployment_labels.release: must be text"),
        (
            {
                "edgefleet_deployment_layers": [
                    {"name": "gpu", "manifest": {"a": 1}, "tags": {"gpu": True}, "priority": 50}
                ]
            },
            "edgefleet_deployment_layers[0].priority: 50 is not above 110",
        ),
        (
            {"edgefleet_deployment_layers": [{"name": "sensors", "manifest": {"a": 1}, "tags": {"gpu": True}}]},
            "edgefleet_deployment_layers[0].name: 'sensors' is used twice",
        ),
        (
            {"edgefleet_deployment_layers": [{"name": "gpu", "manifest": {"a": 1}, "tags": {}, "extra": 1}]},
            "edgefleet_deployment_layers[0]: unknown key(s) extra",
        ),
    ],
)
def test_the_deployment_variables_name_the_variable_and_the_fix(values, message):
    found = problems("iotedge_deployment", **values)
    assert any(problem.startswith(message) for problem in found), found


def test_a_host_in_a_known_ring_with_layers_passes(tmp_path):
    manifest = tmp_path / "gpu.json"
    manifest.write_text("{}")
    layers = [{"name": "gpu", "manifest_path": str(manifest), "tags": {"gpu": True, "site": ["a", "b"]}}]
    assert (
        problems(
            "iotedge_deployment",
            edgefleet_deployment_ring="canary",
            edgefleet_dps_twin_tags={"ring": "canary", "site": "a"},
            edgefleet_deployment_layers=layers,
            edgefleet_deployment_max_failures="10%",
        )
        == []
    )


def test_a_host_with_its_own_value_of_a_fleet_wide_variable_is_refused_and_the_majority_goes_on():
    values = {
        "edge-01": {"edgefleet_pki_key_type": "ec-p384", "edgefleet_pki_passphrase": "a"},
        "edge-02": {"edgefleet_pki_key_type": "ec-p256", "edgefleet_pki_passphrase": "a"},
        "edge-03": {"edgefleet_pki_key_type": "ec-p256", "edgefleet_pki_passphrase": "b"},
    }
    refused = uneven_fleet_values(values)
    assert sorted(refused) == ["edge-01", "edge-03"]
    assert refused["edge-01"] == [
        "edgefleet_pki_key_type: is 'ec-p384' on this host but 'ec-p256' on edge-02, edge-03. The controller reads it "
        "once for the whole fleet of a run, so a host cannot have a value of its own: set it for every host "
        "(group_vars), or run the hosts that need another value in a run of their own (--limit, or another "
        "edgefleet_target)"
    ]
    # A secret is named, never shown; on a tie the first host's value is the fleet's.
    assert refused["edge-03"][0].startswith("edgefleet_pki_passphrase: differs on this host from its value on edge-01")
    assert "'b'" not in refused["edge-03"][0] and "'a'" not in refused["edge-03"][0]


def test_equal_values_and_equal_dicts_in_another_order_refuse_nothing():
    values = {
        "edge-01": {"edgefleet_dps_iot_hubs": {"a": 1, "b": 2}},
        "edge-02": {"edgefleet_dps_iot_hubs": {"b": 2, "a": 1}},
    }
    assert uneven_fleet_values(values) == {}
    assert uneven_fleet_values({}) == {}


def test_values_of_another_type_differ_and_a_tagged_string_equals_its_text():
    from ansible._internal._datatag._tags import Origin

    tagged = Origin(path="/inventory/group_vars/all.yml").tag("ec-p256")
    assert uneven_fleet_values({"edge-01": {"x": "ec-p256"}, "edge-02": {"x": tagged}}) == {}
    values = {
        "edge-01": {"x": 1},
        "edge-02": {"x": 1},
        "edge-03": {"x": True},
        "edge-04": {"x": "1"},
        "edge-05": {"x": 1.0},
        "edge-06": {"x": None},
    }
    assert sorted(uneven_fleet_values(values)) == ["edge-03", "edge-04", "edge-05", "edge-06"]


def test_a_key_in_a_token_is_accepted_when_made_on_the_device_or_with_a_certificate_of_its_own():
    assert problems("iotedge_provision", edgefleet_identity_key_origin="device", **TOKEN_KEY) == []
    init = {"edgefleet_iotedge_pkcs11_init_token": True, "edgefleet_iotedge_pkcs11_so_pin": "5678"}
    assert problems("iotedge_provision", edgefleet_identity_key_origin="device", **TOKEN_KEY, **init) == []
    own = {"edgefleet_iotedge_identity_cert_src": "/srv/certs/edge-01-token.pem"}
    assert problems("iotedge_provision", **TOKEN_KEY, **own) == []
    # The controller's chain is for a key the controller made: never the token's.
    found = problems("iotedge_provision", **TOKEN_KEY)
    assert [p for p in found if p.startswith("edgefleet_iotedge_identity_key_method: is pkcs11 with a key made on")]
