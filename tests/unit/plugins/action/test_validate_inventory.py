"""edgefleet.iotedge.validate_inventory with ``hosts``: every host checked with its own variables in one task.

Runs ansible-playbook on the controller only (the hosts are never contacted: every task is run_once), so each host's
variables resolve as Ansible resolves them - role defaults, inventory, host_vars, facts set earlier, play and extra
vars - and the result is read back as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki_identity import identity_files

ROOT = Path(__file__).resolve().parents[4]
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
pytestmark = pytest.mark.skipif(not ANSIBLE_PLAYBOOK.exists(), reason="needs ansible-playbook next to python")

GROUP_VARS = {
    "edgefleet_dps_id_scope": "0ne00C0FFEE",
    "edgefleet_dps_connection_string": "HostName=dps.example.com;SharedAccessKeyName=owner;SharedAccessKey="
    + "A" * 43
    + "=",
    "edgefleet_dps_twin_tags": {"environment": "test"},
    "edgefleet_dps_resource_id": "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/edge"
    "/providers/Microsoft.Devices/provisioningServices/edge-dps",
}


def run_checks(tmp_path: Path, hosts: dict, *, play_vars=None, extra_vars=None, pre_tasks=()) -> dict:
    """The three controller preflights of provision_edge.yml over ``hosts``; their registered results."""
    inventory = {"all": {"children": {"edge": {"hosts": hosts, "vars": GROUP_VARS}}}}
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(inventory))
    results = tmp_path / "results.json"
    play = {
        "hosts": "edge",
        "gather_facts": False,
        "vars": {**(play_vars or {}), "edgefleet_pki_dir": str(tmp_path / "pki")},
        "tasks": [
            *pre_tasks,
            *(
                {"ansible.builtin.import_role": {"name": f"edgefleet.iotedge.{role}", "tasks_from": "preflight.yml"}}
                for role in ("edge_pki", "iotedge_provision", "dps_enrollment")
            ),
            {
                "ansible.builtin.copy": {
                    "dest": str(results),
                    "content": "{{ {'edge_pki': edge_pki_preflight, 'iotedge_provision': iotedge_provision_preflight,"
                    " 'dps_enrollment': dps_enrollment_preflight} | to_json }}",
                    "mode": "0600",
                },
                "delegate_to": "localhost",
                "run_once": True,
            },
        ],
    }
    (tmp_path / "play.yml").write_text(yaml.safe_dump([play], sort_keys=False))
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp"),
        "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
    }
    command = [str(ANSIBLE_PLAYBOOK), "-i", str(tmp_path / "hosts.yml"), str(tmp_path / "play.yml")]
    if extra_vars:
        command += ["-e", json.dumps(extra_vars)]
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    return {"output": done.stdout + done.stderr, **json.loads(results.read_text())}


def test_each_host_resolves_with_its_own_variables(tmp_path):
    results = run_checks(
        tmp_path,
        {
            "Edge-01": {},
            "edge-02": {"edgefleet_registration_id": "plant-2.gw", "edgefleet_dps_twin_tags": {"site": "b"}},
            # localhost is in the inventory only so that the results file can be written there.
            "localhost": {"ansible_connection": "local"},
        },
        pre_tasks=[
            {
                "ansible.builtin.set_fact": {"edgefleet_registration_id": "from-a-fact"},
                "when": "inventory_hostname == 'localhost'",
            }
        ],
    )
    dps = results["dps_enrollment"]
    assert dps["refused"] == {}
    assert dps["hosts"] == {
        "Edge-01": {
            "registration_id": "edge-01",
            "twin": {"tags": {"environment": "test"}, "desired_properties": {}},
            "certificate_path": identity_files(str(tmp_path / "pki" / "identities"), "edge-01")["cert_path"],
            "next_certificate_path": identity_files(str(tmp_path / "pki" / "identities"), "edge-01")["next"][
                "cert_path"
            ],
        },
        "edge-02": {
            "registration_id": "plant-2.gw",
            "twin": {"tags": {"site": "b"}, "desired_properties": {}},
            "certificate_path": identity_files(str(tmp_path / "pki" / "identities"), "plant-2.gw")["cert_path"],
            "next_certificate_path": identity_files(str(tmp_path / "pki" / "identities"), "plant-2.gw")["next"][
                "cert_path"
            ],
        },
        "localhost": {
            "registration_id": "from-a-fact",
            "twin": {"tags": {"environment": "test"}, "desired_properties": {}},
            "certificate_path": identity_files(str(tmp_path / "pki" / "identities"), "from-a-fact")["cert_path"],
            "next_certificate_path": identity_files(str(tmp_path / "pki" / "identities"), "from-a-fact")["next"][
                "cert_path"
            ],
        },
    }
    assert {host: facts["registration_id"] for host, facts in results["edge_pki"]["hosts"].items()} == {
        "Edge-01": "edge-01",
        "edge-02": "plant-2.gw",
        "localhost": "from-a-fact",
    }
    assert results["iotedge_provision"]["refused"] == {}


def test_the_hosts_with_each_pki_flag_are_listed_in_order_without_the_refused(tmp_path):
    results = run_checks(
        tmp_path,
        {
            "edge-01": {"edgefleet_retired": True, "edgefleet_identity_key_origin": "device"},
            "edge-02": {"edgefleet_identity_key_origin": "device", "edgefleet_edge_ca": "fleet"},
            "edge-03": {"edgefleet_retired": True, "edgefleet_registration_id": "Bad_Id"},
            "edge-04": {"edgefleet_identity_rotate": True, "edgefleet_edge_ca": "fleet"},
            "localhost": {"ansible_connection": "local"},
        },
    )
    pki = results["edge_pki"]
    assert list(pki["refused"]) == ["edge-03"]
    assert pki["hosts_with"] == {
        "rotate": ["edge-04"],
        "retired": ["edge-01"],
        "edge_ca": ["edge-02", "edge-04"],
        "device_key": ["edge-01", "edge-02"],
    }
    for flag, hosts in pki["hosts_with"].items():
        assert hosts == [host for host, facts in pki["hosts"].items() if facts[flag]]
    assert results["dps_enrollment"]["hosts_with"] == {}


def test_every_flag_is_listed_when_no_host_was_accepted(tmp_path):
    results = run_checks(
        tmp_path,
        {
            "edge-01": {"edgefleet_registration_id": "Bad_Id"},
            "localhost": {"ansible_connection": "local", "edgefleet_registration_id": "Bad"},
        },
    )
    pki = results["edge_pki"]
    assert pki["hosts"] == {} and sorted(pki["refused"]) == ["edge-01", "localhost"]
    assert pki["hosts_with"] == {"rotate": [], "retired": [], "edge_ca": [], "device_key": []}


def test_bad_hosts_are_refused_with_every_problem_and_the_others_accepted(tmp_path):
    results = run_checks(
        tmp_path,
        {
            "edge-01": {},
            "edge-02": {"edgefleet_registration_id": "Edge-02", "edgefleet_pki_passphrase": ["a", "list"]},
            "edge-03": {"edgefleet_registration_id": "edge-01"},
            "edge-04": {"edgefleet_iotedge_hostname": "edge 04"},
            "edge-05": {"edgefleet_dps_twin_tags": {"floor.2": 1}},
            "localhost": {"ansible_connection": "local"},
        },
    )
    pki, provision, dps = results["edge_pki"], results["iotedge_provision"], results["dps_enrollment"]
    assert sorted(pki["hosts"]) == ["edge-04", "edge-05", "localhost"]
    assert sorted(pki["refused"]) == ["edge-01", "edge-02", "edge-03"]
    assert [error.split(":")[0] for error in pki["refused"]["edge-02"]] == [
        "edgefleet_pki_passphrase",
        "edgefleet_registration_id",
    ]
    assert "got a list" in pki["refused"]["edge-02"][0] and "['a'" not in json.dumps(pki["refused"])
    shared = pki["refused"]["edge-01"]
    assert shared == pki["refused"]["edge-03"] == dps["refused"]["edge-01"]
    assert "edge-01 and edge-03 all have the registration id 'edge-01'" in shared[0]
    assert provision["refused"]["edge-04"][0].startswith("edgefleet_iotedge_hostname:")
    assert "edge-04" not in dps["refused"]
    assert dps["refused"]["edge-05"][0].startswith("edgefleet_dps_twin_tags")
    assert sorted(dps["hosts"]) == ["edge-04", "localhost"]


def test_an_est_host_is_refused_an_individual_enrollment_which_could_not_name_its_certificate(tmp_path):
    results = run_checks(
        tmp_path,
        {
            "edge-01": {"edgefleet_iotedge_identity_cert_method": "est"},
            "edge-02": {},
            "localhost": {"ansible_connection": "local"},
        },
    )
    dps = results["dps_enrollment"]
    assert sorted(dps["refused"]) == ["edge-01"]
    assert dps["refused"]["edge-01"][0].startswith(
        "edgefleet_dps_enrollment_type: is individual, and edgefleet_iotedge_identity_cert_method is 'est'"
    )
    (tmp_path / "group").mkdir()
    grouped = run_checks(
        tmp_path / "group",
        {"edge-01": {"edgefleet_iotedge_identity_cert_method": "est"}, "localhost": {"ansible_connection": "local"}},
        play_vars={"edgefleet_dps_enrollment_type": "group", "edgefleet_dps_enrollment_group_id": "fleet"},
    )
    assert grouped["dps_enrollment"]["refused"] == {}


def test_play_and_extra_vars_take_precedence_and_unknown_names_warn_once(tmp_path):
    results = run_checks(
        tmp_path,
        {f"edge-{n:02d}": {"edgefleet_dps_twin_tag": "typo"} for n in range(1, 8)}
        | {"localhost": {"ansible_connection": "local"}},
        play_vars={"edgefleet_dps_twin_desired_properties": {"ring": "canary"}},
        extra_vars={"edgefleet_dps_twin_tags": {"environment": "prod"}},
    )
    dps = results["dps_enrollment"]
    wanted = {"tags": {"environment": "prod"}, "desired_properties": {"ring": "canary"}}
    assert [host for host, facts in dps["hosts"].items() if facts["twin"] == wanted] == [
        *(f"edge-{n:02d}" for n in range(1, 8)),
        "localhost",
    ]
    warnings = [line for line in results["output"].splitlines() if "edgefleet_dps_twin_tag is not" in line]
    # One warning naming a few hosts, not one per host (the three role checks give the same one).
    assert len(warnings) == 1, results["output"]
    assert "(hosts: edge-01, edge-02, edge-03, edge-04, edge-05 and 2 more)" in warnings[0]


def test_each_host_has_its_own_unknown_variables_mode_plain_or_templated(tmp_path):
    results = run_checks(
        tmp_path,
        {
            "edge-01": {"edgefleet_dps_twin_tag": "typo"},
            "edge-02": {"edgefleet_dps_twin_tag": "typo", "edgefleet_unknown_variables": "fail"},
            "edge-03": {"edgefleet_dps_twin_tag": "typo", "edgefleet_unknown_variables": "{{ edge_strictness }}"},
            "edge-04": {"edgefleet_unknown_variables": "{{ 'ignore' }}", "edgefleet_dps_twin_tag": "typo"},
            "edge-05": {"edgefleet_unknown_variables": "strict"},
            "edge-06": {"edgefleet_unknown_variables": "fail", "edgefleet_zzz": 1},
        },
        play_vars={"edge_strictness": "fail"},
    )
    pki = results["edge_pki"]
    assert list(pki["hosts"]) == ["edge-01", "edge-04"]
    for host in ("edge-02", "edge-03"):
        assert pki["refused"][host] == [
            "edgefleet_dps_twin_tag is not a variable of edgefleet.iotedge, so it has no effect; did you mean "
            "edgefleet_dps_twin_tags? Remove it, or set edgefleet_unknown_variables: warn"
        ]
    # Named once, by the argument spec of common (which every role depends on).
    assert pki["refused"]["edge-05"] == [
        "edgefleet_unknown_variables: 'strict' is not one of 'warn', 'fail', 'ignore'. Use one of them"
    ]
    assert pki["refused"]["edge-06"] == [
        "edgefleet_zzz is not a variable of edgefleet.iotedge, so it has no effect. Remove it, or set "
        "edgefleet_unknown_variables: warn"
    ]
    warnings = [line for line in results["output"].splitlines() if "edgefleet_dps_twin_tag is not" in line]
    assert len(warnings) == 1 and "(hosts: edge-01)" in warnings[0], results["output"]


def test_a_host_with_its_own_value_of_a_fleet_wide_variable_is_refused_by_the_controller_roles(tmp_path):
    results = run_checks(
        tmp_path,
        {
            "edge-01": {},
            "edge-02": {"edgefleet_pki_valid_days": 90, "edgefleet_dps_provisioning_status": "disabled"},
            "edge-03": {"edgefleet_dps_twin_tags": {"site": "c"}, "edgefleet_identity_rotate": True},
        },
    )
    assert sorted(results["edge_pki"]["hosts"]) == ["edge-01", "edge-03"]
    assert results["edge_pki"]["refused"]["edge-02"] == [
        "edgefleet_pki_valid_days: is 90 on this host but 365 on edge-01, edge-03. The controller reads it once for "
        "the whole fleet of a run, so a host cannot have a value of its own: set it for every host (group_vars), or "
        "run the hosts that need another value in a run of their own (--limit, or another edgefleet_target)"
    ]
    assert list(results["dps_enrollment"]["refused"]) == ["edge-02"]
    assert results["dps_enrollment"]["refused"]["edge-02"][0].startswith(
        "edgefleet_dps_provisioning_status: is 'disabled' on this host but 'enabled' on edge-01, edge-03."
    )
    # The hosts' own variables (twin tags, a rotation) differ freely; the runtime's role compares nothing.
    assert results["iotedge_provision"]["refused"] == {}


def test_only_a_value_that_can_hold_a_template_is_rendered():
    from ansible_collections.edgefleet.iotedge.plugins.action.validate_inventory import _templated

    rendered = []

    class Templar:
        def template(self, value):
            rendered.append(value)
            return f"rendered {value}"

    for plain in (None, True, 3, 2.5, "enabled", "50%"):
        assert _templated(Templar(), plain) == plain
    assert rendered == []
    for template in ("{{ edgefleet_pki_dir }}/ca", "{% if x %}y{% endif %}", "{# note #}", {"site": "a"}, ["a"]):
        assert _templated(Templar(), template) == f"rendered {template}"
    assert len(rendered) == 5


def _counting_templar(variables: dict):
    """A real Templar over ``variables`` whose renders are listed with the variables each one was handed."""
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar

    templar = Templar(loader=DataLoader(), variables=variables)
    renders = []
    template = templar.template

    def counted(value, **kwargs):
        renders.append((str(value), sorted(templar.available_variables)))
        return template(value, **kwargs)

    templar.template = counted
    return templar, renders


def test_a_template_is_rendered_with_only_the_variables_it_reads_and_those_they_read():
    from ansible.template import trust_as_template

    from ansible_collections.edgefleet.iotedge.plugins.action.validate_inventory import _templated

    variables = {
        "edgefleet_pki_dir": trust_as_template("{{ base }}/pki"),
        "base": trust_as_template("{{ root | default('/opt', true) }}"),
        "root": "/srv",
        "unrelated": trust_as_template("{{ this_is_undefined }}"),
        "inventory_hostname": "Edge-01",
        "port": 8443,
    }
    templar, renders = _counting_templar(variables)
    assert _templated(templar, trust_as_template("{{ edgefleet_pki_dir }}/ca"), variables) == "/srv/pki/ca"
    assert renders == [("{{ edgefleet_pki_dir }}/ca", ["base", "edgefleet_pki_dir", "root"])]
    assert templar.available_variables is variables
    # A name the template reads that no level defines stays undefined, as with every variable.
    assert _templated(templar, trust_as_template("{{ missing | default(port) }}"), variables) == 8443


def test_a_template_that_may_read_variables_by_other_means_gets_them_all():
    from ansible_collections.edgefleet.iotedge.plugins.action.validate_inventory import _variables_read

    variables = {"name": "x", "x": "1"}
    for template in (
        "{{ lookup('ansible.builtin.file', 'ca.pem') }}",  # the file search path comes from the variables
        "{{ query('ansible.builtin.vars', name) }}",
        "{{ lookup(plugin, 'x') }}",
        "{{ vars[name] }}",
        "{{ unclosed",
    ):
        assert _variables_read(template, variables) is None, template
    assert _variables_read("{{ lookup('ansible.builtin.env', 'HOME') }}/{{ name }}", variables) == {"name": "x"}
    # A variable whose value holds more templates than can be walked cheaply: every variable.
    assert _variables_read("{{ big }}", {"big": [f"{{{{ v{i} }}}}" for i in range(300)]}) is None


def test_a_pure_template_is_rendered_once_for_the_hosts_where_it_reads_the_same_values():
    from ansible.template import trust_as_template

    from ansible_collections.edgefleet.iotedge.plugins.action.validate_inventory import _templated

    shared_dir, own_dir = trust_as_template("/srv/pki"), trust_as_template("/opt/pki")
    hosts = {
        "edge-01": {"edgefleet_pki_dir": shared_dir, "inventory_hostname": "Edge-01"},
        "edge-02": {"edgefleet_pki_dir": shared_dir, "inventory_hostname": "Edge-02"},
        "edge-03": {"edgefleet_pki_dir": own_dir, "inventory_hostname": "Edge-03"},
    }
    reused = {}
    rendered = {template: [] for template in ("ca", "id", "random", "now", "twin")}
    templates = {
        "ca": "{{ edgefleet_pki_dir }}/ca",
        "id": "{{ inventory_hostname | lower }}",
        "random": "{{ 1000000 | random }}",
        "now": "{{ now() }}",
        "twin": "{{ {'dir': edgefleet_pki_dir} }}",
    }
    results = {}
    for host, variables in hosts.items():
        for name, template in templates.items():
            templar, renders = _counting_templar(variables)
            results[host, name] = _templated(templar, trust_as_template(template), variables, reused)
            rendered[name] += renders
    assert [results[host, "ca"] for host in hosts] == ["/srv/pki/ca", "/srv/pki/ca", "/opt/pki/ca"]
    assert len(rendered["ca"]) == 2  # edge-02 reads what edge-01 read
    assert [results[host, "id"] for host in hosts] == ["edge-01", "edge-02", "edge-03"]
    # A filter or function that may answer differently each time is called for each host.
    assert len(rendered["random"]) == len(rendered["now"]) == 3
    # A container rendered once is still each host's own copy.
    assert results["edge-01", "twin"] == results["edge-02", "twin"] == {"dir": "/srv/pki"}
    assert results["edge-01", "twin"] is not results["edge-02", "twin"]


def test_one_variable_through_string_filters_is_computed_as_the_templar_renders_it():
    from ansible.template import trust_as_template

    from ansible_collections.edgefleet.iotedge.plugins.action.validate_inventory import _templated

    texts = ["Edge-01", "EDGE.Example.COM", " Padded Name ", "123", "True", "None", "[1, 2]", "İstanbul", "ǅ", ""]
    templates = [
        "{{ inventory_hostname | lower }}",
        "{{inventory_hostname|upper}}",
        "{{ name | trim | lower }}",
        "{{ name | lower() }}",
        "{{ name }}",
    ]
    for text in texts:
        variables = {"inventory_hostname": text, "name": text}
        for template in templates:
            templar, renders = _counting_templar(variables)
            expected = templar.template(trust_as_template(template))
            renders.clear()
            value = _templated(templar, trust_as_template(template), variables)
            assert value == expected and isinstance(value, str), (template, text)
            assert renders == [], (template, text)  # computed, not rendered


def test_a_string_expression_the_templar_would_treat_differently_is_rendered():
    from ansible.template import trust_as_template

    from ansible_collections.edgefleet.iotedge.plugins.action.validate_inventory import _templated

    variables = {
        "number": 42,
        "nested": trust_as_template("{{ number }}"),
        "name": "Edge-01",
    }
    cases = {
        "{{ number | lower }}": "42",  # not text: Jinja's filter converts it
        "{{ nested | lower }}": "42",  # text holding a template: rendered in turn
        "{{ name | replace('-', '_') }}": "Edge_01",  # a filter with arguments
        "{{ name | lower }}-x": "edge-01-x",  # more than the expression
        "{{ name | ansible.builtin.lower }}": "edge-01",
        "{{ missing | default(name) | lower }}": "edge-01",
    }
    for template, expected in cases.items():
        templar, renders = _counting_templar(variables)
        assert _templated(templar, trust_as_template(template), variables) == expected, template
        assert len(renders) == 1, template
    # A string the templar does not trust is left as it is, never rendered.
    templar, renders = _counting_templar(variables)
    assert _templated(templar, "{{ name | lower }}", variables) == "{{ name | lower }}"


def test_numbers_from_the_inventory_come_back_as_plain_numbers():
    from ansible._internal._datatag._tags import Origin

    from ansible_collections.edgefleet.iotedge.plugins.action.validate_inventory import _templated

    for number in (365, 2.5):
        tagged = Origin(path="/inventory/hosts.yml").tag(number)
        assert type(tagged) is not type(number)
        value = _templated(None, tagged)
        assert value == number and type(value) is type(number)
    assert _templated(None, Origin(path="/inventory/hosts.yml").tag({})) == {}


def test_a_fleet_is_split_in_order_and_joined_in_order():
    from ansible_collections.edgefleet.iotedge.plugins.action.validate_inventory import _map_in_forks, _split

    hosts = [f"edge-{number:02d}" for number in range(11)]
    parts = _split(hosts, 3)
    assert [len(part) for part in parts] == [4, 4, 3]
    assert [host for part in parts for host in part] == hosts
    assert _split(hosts, 1) == [hosts]

    parent = os.getpid()
    results = _map_in_forks(lambda part: {"checked": part, "here": os.getpid() == parent}, parts)
    assert [result["checked"] for result in results] == parts
    assert [result["here"] for result in results] == [True, False, False]


def test_a_part_whose_fork_fails_is_checked_here_again():
    from ansible_collections.edgefleet.iotedge.plugins.action.validate_inventory import _map_in_forks

    parent = os.getpid()

    def check(part):
        if os.getpid() != parent:
            raise RuntimeError("the copy cannot check")
        return [host.upper() for host in part]

    assert _map_in_forks(check, [["a"], ["b"], ["c"]]) == [["A"], ["B"], ["C"]]
