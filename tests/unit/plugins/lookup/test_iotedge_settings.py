"""edgefleet.iotedge.iotedge_settings: the renderer's settings read from the inventory variables of the same names."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ansible.errors import AnsibleLookupError
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

from ansible_collections.edgefleet.iotedge.plugins.lookup.iotedge_settings import LookupModule
from ansible_collections.edgefleet.iotedge.plugins.module_utils._edge_config import (
    SETTING_VARIABLES,
    SETTINGS,
    render_edge_config,
    setting_variables,
)

ROLES = Path(__file__).resolve().parents[4] / "roles"


def settings_of(variables: dict) -> dict:
    loader = DataLoader()
    templar = Templar(loader=loader, variables=variables)
    return LookupModule(loader=loader, templar=templar).run([], variables=variables)[0]


def test_each_setting_is_its_variable_templated_and_other_variables_are_left_out():
    variables = {
        "edgefleet_dps_id_scope": "0ne00C0FFEE",
        # As Ansible loads inventory: a template it trusts.
        "edgefleet_dps_global_endpoint": trust_as_template("https://{{ dps_host }}/"),
        "dps_host": "global.azure-devices-provisioning.net",
        "edgefleet_pki_dir": "/pki",
        "edgefleet_iotedge_identity_cert_path": "/ignored",
    }
    assert settings_of(variables) == {
        "dps_id_scope": "0ne00C0FFEE",
        "dps_global_endpoint": "https://global.azure-devices-provisioning.net/",
    }


def test_every_setting_with_a_variable_of_its_own_is_a_role_option_so_an_option_lives_in_the_spec():
    options = {}
    for spec in ROLES.glob("*/meta/argument_specs.yml"):
        for entry_point in yaml.safe_load(spec.read_text())["argument_specs"].values():
            options.update(entry_point.get("options", {}))
    assert sorted(set(setting_variables().values()) - set(options)) == []
    assert sorted(setting_variables()) == sorted(set(SETTINGS) - set(SETTING_VARIABLES))


def test_the_settings_render_once_the_role_adds_what_it_derives():
    settings = settings_of({"edgefleet_generation": "1.2+", "edgefleet_dps_id_scope": "0ne00C0FFEE"})
    settings.update(
        iotedge_identity_cert_path="/var/aziot/certs/device-id.pem",
        iotedge_identity_key_path="/var/aziot/secrets/device-id.key.pem",
    )
    assert 'id_scope = "0ne00C0FFEE"' in render_edge_config(settings)


def test_terms_are_refused():
    with pytest.raises(AnsibleLookupError, match="takes no terms"):
        LookupModule(loader=DataLoader(), templar=Templar(loader=DataLoader())).run(
            ["edgefleet_dps_id_scope"], variables={}
        )
