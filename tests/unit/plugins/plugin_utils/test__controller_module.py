"""plugin_utils/_controller_module.py: a controller module run in the action plugin's process gives what its module
process gives (validation, no_log masking, check mode), and runs there only when the module would run on this
controller with this interpreter anyway."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from ansible_collections.edgefleet.iotedge.plugins.action.pki_ca import ActionModule as PkiCaAction
from ansible_collections.edgefleet.iotedge.plugins.modules import pki_ca
from ansible_collections.edgefleet.iotedge.plugins.plugin_utils._controller_module import (
    ControllerModule,
    ControllerModuleAction,
    ModuleExit,
    same_interpreter,
)

COLLECTION = Path(__file__).resolve().parents[4]
MODULES = COLLECTION / "plugins" / "modules"
NAME = "edgefleet.iotedge.pki_ca"
SECRET = "controller-secret"


def module_process(arguments: dict, *, check_mode: bool = False) -> dict:
    """pki_ca as Ansible executes it: a new interpreter reading an arguments file."""
    internal = {"_ansible_module_name": NAME, "_ansible_check_mode": check_mode}
    completed = subprocess.run(
        [sys.executable, str(MODULES / "pki_ca.py")],
        input=json.dumps({"ANSIBLE_MODULE_ARGS": {**arguments, **internal}}),
        env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)),
        capture_output=True,
        text=True,
        check=False,
    )
    return json.loads(completed.stdout)


def in_this_process(arguments: dict, *, check_mode: bool = False) -> dict:
    """pki_ca's main() with ControllerModule standing in for AnsibleModule."""

    def module_class(argument_spec, **options):
        return ControllerModule(
            argument_spec, name=NAME, arguments=arguments, check_mode=check_mode, diff=False, **options
        )

    with pytest.raises(ModuleExit) as exit_:
        pki_ca.main(module_class)
    return json.loads(json.dumps(exit_.value.result))


BAD_ARGUMENTS = {
    "unsupported option": {"path": "{tmp}/ca", "passphrase": SECRET, "bogus": 1},
    "missing required option": {"passphrase": SECRET},
    "not one of the choices": {"path": "{tmp}/ca", "key_type": "dsa-1024", "passphrase": SECRET},
    "not an integer": {"path": "{tmp}/ca", "valid_days": "ten", "passphrase": SECRET},
    "secret that is not text": {"path": "{tmp}/ca", "passphrase": [SECRET]},
    "core refusal": {"path": "{tmp}/ca", "valid_days": -1, "passphrase": SECRET},
}


@pytest.mark.parametrize("arguments", BAD_ARGUMENTS.values(), ids=BAD_ARGUMENTS.keys())
def test_a_refusal_is_the_module_process_refusal(tmp_path, arguments):
    arguments = {
        key: value.format(tmp=tmp_path) if isinstance(value, str) else value for key, value in arguments.items()
    }
    expected = module_process(arguments)
    got = in_this_process(arguments)
    assert expected["failed"] is True and got["failed"] is True
    assert got["msg"] == expected["msg"]
    assert got.get("invocation") == expected.get("invocation")
    assert SECRET not in json.dumps(got)
    assert not (tmp_path / "ca").exists()


def test_check_mode_and_an_existing_ca_give_the_module_process_result(tmp_path):
    arguments = {"path": str(tmp_path / "ca"), "passphrase": SECRET}
    predicted = in_this_process(arguments, check_mode=True)
    expected = module_process(arguments, check_mode=True)
    for certificate in ("root", "intermediate"):  # a prediction's serial number is drawn anew each time
        assert predicted.pop(certificate).keys() == expected.pop(certificate).keys()
    assert predicted == expected
    assert predicted["changed"] is True and not (tmp_path / "ca").exists()

    created = in_this_process(arguments)
    assert created["changed"] is True and (tmp_path / "ca" / "root.cert.pem").is_file()
    assert created["invocation"]["module_args"]["passphrase"] == "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"
    again = in_this_process(arguments)
    assert again == module_process(arguments)
    assert again["changed"] is False and again["root"] == created["root"]


def test_a_module_without_check_mode_is_skipped_in_check_mode():
    with pytest.raises(ModuleExit) as exit_:
        ControllerModule({}, name=NAME, arguments={}, check_mode=True, diff=False)
    assert exit_.value.result == {"skipped": True, "msg": "remote module does not support check mode"}


def test_options_that_depend_on_each_other_are_checked():
    spec = {"a": {"type": "str"}, "b": {"type": "str"}}
    with pytest.raises(ModuleExit) as exit_:
        ControllerModule(
            spec,
            name=NAME,
            arguments={"a": "x", "b": "y"},
            check_mode=False,
            diff=False,
            mutually_exclusive=[("a", "b")],
        )
    assert exit_.value.result["failed"] is True
    assert exit_.value.result["msg"] == "parameters are mutually exclusive: a|b"


def action(*, transport="local", become=False, async_val=0, environment=None, delegate_to=None):
    plugin = PkiCaAction.__new__(PkiCaAction)
    plugin._connection = SimpleNamespace(transport=transport)
    plugin._play_context = SimpleNamespace(become=become)
    plugin._task = SimpleNamespace(async_val=async_val, environment=environment, delegate_to=delegate_to)
    plugin._templar = SimpleNamespace(
        template=lambda value: value.replace("{{ ansible_playbook_python }}", sys.executable)
    )
    return plugin


HERE = {"ansible_python_interpreter": sys.executable}


@pytest.mark.parametrize(
    ("plugin", "task_vars", "in_process"),
    [
        (action(), HERE, True),
        (action(), {"ansible_python_interpreter": "{{ ansible_playbook_python }}"}, True),
        (action(transport="ssh"), HERE, False),
        (action(become=True), HERE, False),
        (action(async_val=60), HERE, False),
        (action(environment=[{"HTTPS_PROXY": "http://127.0.0.1:3128"}]), HERE, False),
        (action(environment=[{}]), HERE, True),
        (action(), {}, False),
        (action(), {"ansible_python_interpreter": "auto"}, False),
        (action(), {"ansible_python_interpreter": "/usr/bin/python3.9"}, False),
        (action(delegate_to="localhost"), {"ansible_delegated_vars": {"localhost": HERE}}, True),
        (action(delegate_to="localhost"), {**HERE, "ansible_delegated_vars": {"localhost": {}}}, False),
    ],
    ids=[
        "local, this interpreter",
        "the playbook's interpreter, templated",
        "another connection",
        "become",
        "async",
        "task environment",
        "empty task environment",
        "no interpreter",
        "interpreter discovery",
        "another interpreter",
        "delegated to this interpreter",
        "delegated without one",
    ],
)
def test_the_module_runs_here_only_where_it_would_run_anyway(plugin, task_vars, in_process):
    assert plugin.runs_in_this_process(task_vars) is in_process


def test_same_interpreter_is_the_same_program_in_the_same_directory(tmp_path):
    venv = tmp_path / "venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "python3").symlink_to(sys.executable)
    (venv / "python").symlink_to("python3")
    assert same_interpreter(str(venv / "python"), str(venv / "python3"))
    assert not same_interpreter(str(venv / "python3"), os.path.realpath(sys.executable))
    assert not same_interpreter("python3", str(venv / "python3"))


def test_every_controller_module_action_calls_its_own_module():
    actions = sorted((COLLECTION / "plugins" / "action").glob("*.py"))
    controller_actions = [path.stem for path in actions if "ControllerModuleAction" in path.read_text()]
    assert len(controller_actions) >= 15
    for name in controller_actions:
        plugin = __import__(f"ansible_collections.edgefleet.iotedge.plugins.action.{name}", fromlist=["ActionModule"])
        module = __import__(f"ansible_collections.edgefleet.iotedge.plugins.modules.{name}", fromlist=["main"])
        assert issubclass(plugin.ActionModule, ControllerModuleAction)
        assert plugin.ActionModule.module_main is module.main, name


ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
PYTHON = sys.executable


@pytest.mark.skipif(not ANSIBLE_PLAYBOOK.exists(), reason="needs ansible-playbook next to python")
def test_a_playbook_gets_the_same_result_in_the_worker_as_from_a_module_process(tmp_path):
    task = {"edgefleet.iotedge.pki_ca": {"path": str(tmp_path / "ca"), "passphrase": SECRET}}
    results = tmp_path / "results.json"
    play = {
        "hosts": "localhost",
        "gather_facts": False,
        "tasks": [
            {**task, "register": "created"},
            {**task, "register": "in_worker"},
            # A task environment is for a module process: the module is executed as usual.
            {**task, "register": "executed", "environment": {"EDGEFLEET_EXAMPLE": "1"}},
            {**task, "register": "in_background", "async": 60, "poll": 1},
            {
                "ansible.builtin.copy": {
                    "dest": str(results),
                    "content": "{{ {'in_worker': in_worker, 'executed': executed, 'in_background': in_background}"
                    " | to_json }}",
                    "mode": "0600",
                }
            },
        ],
    }
    (tmp_path / "play.yml").write_text(json.dumps([play]))
    interpreter = f"ansible_python_interpreter={PYTHON}"
    command = [
        str(ANSIBLE_PLAYBOOK),
        "-vvv",
        "-i",
        "localhost,",
        "-c",
        "local",
        "-e",
        interpreter,
        str(tmp_path / "play.yml"),
    ]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=False,
        env={
            **os.environ,
            "ANSIBLE_CONFIG": str(COLLECTION / "ansible.cfg"),
            "ANSIBLE_LOCAL_TEMP": str(tmp_path / "t"),
        },
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # Only the tasks with an environment or async built a module payload (the others' payloads are ansible.builtin's).
    built = [line for line in done.stdout.splitlines() if "Using module file" in line and "pki_ca.py" in line]
    assert len(built) == 2
    assert SECRET not in done.stdout + done.stderr
    outcome = json.loads(results.read_text())
    assert outcome["in_worker"]["changed"] is False
    assert outcome["in_worker"] == outcome["executed"]
    in_background = outcome["in_background"]
    assert in_background["finished"] == 1 and in_background["changed"] is False
    assert in_background["root"] == outcome["in_worker"]["root"]
