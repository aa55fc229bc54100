# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Action plugin of edgefleet.iotedge.validate_inventory: runs on the controller, never on the host.

It reads the host's values of one role's variables (as the host resolves them: inventory, group_vars, role
defaults, extra vars), hands them to the module_utils/_inventory core and fails the host with every problem found.
With ``hosts`` it does the same for every host named, in this one task (run it with run_once): a task per host costs
the controller a worker process per host, which at a thousand hosts is most of a run.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import os
import pickle

import jinja2
import jinja2.meta
import jinja2.nodes
import yaml

from ansible.errors import AnsibleActionFail, AnsibleError
from ansible.plugins.action import ActionBase

try:
    from ansible._internal._templating._engine import TemplateEngine
except ImportError:  # ansible-core before 2.19 caches compiled templates itself
    TemplateEngine = None
try:
    from ansible.template import is_trusted_as_template
except ImportError:  # ansible-core before 2.19 renders every string

    def is_trusted_as_template(_value) -> bool:
        return True


from ansible_collections.edgefleet.iotedge.plugins.module_utils._inventory import (
    PEER_VARIABLES,
    ROLES,
    UNKNOWN_VARIABLE_MODES,
    check_role,
    fleet_wide_variables,
    load_role_options,
    shared_registration_ids,
    uneven_fleet_values,
    unknown_variables,
)
from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki_identity import identity_files

# libyaml's safe loader where PyYAML has it: each check runs in a new worker and reads every role's argument specs,
# which the pure-Python loader takes about 0.3 s for.
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
ROLES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir, "roles")
# The true-or-false settings of a role's accepted hosts (_resolved), listed by host in the result's hosts_with.
FLAGS = {"edge_pki": ("rotate", "retired", "edge_ca", "device_key")}
# The role variable holding the runtime configuration's settings, rendered once per host to check them.
CONFIG_SETTINGS_VARIABLE = "iotedge_provision_settings"
# The roles whose hosts must not share a registration id: it names one certificate, one enrollment, one device twin.
UNIQUE_ID_ROLES = ("edge_pki", "dps_enrollment", "iotedge_deployment")


@functools.lru_cache(maxsize=None)
def role_options(role: str) -> dict:
    """The options of a role's meta/argument_specs.yml and of the collection roles it depends on (read once)."""
    role_dir = os.path.join(ROLES_DIR, role)
    with open(os.path.join(role_dir, "meta", "main.yml"), encoding="utf-8") as handle:
        dependencies = (yaml.load(handle, Loader=SAFE_LOADER) or {}).get("dependencies") or []
    options: dict = {}
    for dependency in dependencies:
        name = dependency.get("role") if isinstance(dependency, dict) else dependency
        options.update(role_options(name.rsplit(".", 1)[-1]))
    with open(os.path.join(role_dir, "meta", "argument_specs.yml"), encoding="utf-8") as handle:
        options.update(load_role_options(yaml.load(handle, Loader=SAFE_LOADER)))
    return options


@functools.lru_cache(maxsize=None)
def known_variables() -> frozenset:
    return frozenset(name for role in ROLES for name in role_options(role))


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False
    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        task_vars = task_vars or {}
        _spec, args = self.validate_argument_spec(
            argument_spec={
                "role": {"type": "str", "required": True, "choices": list(ROLES)},
                "config_settings": {"type": "dict", "no_log": True},
                "hosts": {"type": "list", "elements": "str"},
            },
            mutually_exclusive=[("config_settings", "hosts")],
        )
        role = args["role"]
        result["changed"] = False
        result["role"] = role
        if args["hosts"] is not None:
            return self._check_fleet(result, role, args["hosts"], task_vars)

        errors, values, unknown = self._check_host(role, task_vars, self._templar, args["config_settings"])
        if unknown:
            result["warnings"] = [*result.get("warnings", []), *unknown]
        result["checked"] = sorted(values)
        if "edgefleet_registration_id" in values:
            # Resolved once here; the roles read it from the registered result (hostvars) for the fleet's checks.
            result["registration_id"] = values["edgefleet_registration_id"]
        if errors:
            result["failed"] = True
            result["errors"] = errors
            result["msg"] = _joined(errors)
        else:
            result["msg"] = f"{len(values)} variables of role edgefleet.iotedge.{role} are valid"
        return result

    def _check_host(
        self, role: str, variables: dict, templar, config_settings, renders: dict | None = None
    ) -> tuple[list, dict, list]:
        """One host's problems, its templated values and its unknown-variable warnings. ``renders`` keeps the
        renders that other hosts of the same check can reuse (_templated)."""
        options = role_options(role)
        errors, values = [], {}
        for name in options:
            if name not in variables:
                continue
            try:
                values[name] = _templated(templar, variables[name], variables, renders)
            except AnsibleError as error:
                errors.append(f"{name}: cannot be resolved ({_first_line(error)}). Correct the expression")
        peers = {}
        for name in PEER_VARIABLES.get(role, ()):
            # A peer that cannot be resolved is left out: the role that owns it names the problem.
            with contextlib.suppress(AnsibleError):
                if name in variables:
                    peers[name] = _templated(templar, variables[name], variables, renders)
        errors += check_role(role, options, values, config_settings=config_settings, peers=peers)

        mode = self._unknown_variables_mode(values)
        unknown = unknown_variables((name for name in variables if name.startswith("edgefleet_")), known_variables())
        if unknown and mode == "fail":
            errors += [
                f"{message}{' ' if message.endswith('?') else '. '}Remove it, or set edgefleet_unknown_variables: warn"
                for message in unknown
            ]
        return errors, values, (unknown if mode == "warn" else [])

    def _check_fleet(self, result: dict, role: str, hosts: list, task_vars: dict) -> dict:
        """Every named host checked with its own variables; the problems come back per host, and no host fails here
        (a failing run_once task would fail them all): the caller fails the refused ones."""
        templar = self._templar
        try:
            with _templates_compiled_once():
                accepted, refused, warnings, fleet_values = self._check_each_host(
                    role, hosts, _HostVariables(self._task, task_vars)
                )
        finally:
            templar.available_variables = task_vars
        if role in UNIQUE_ID_ROLES:
            ids = {host: facts["registration_id"] for host, facts in accepted.items()}
            for host, message in shared_registration_ids(ids).items():
                refused[host] = [message]
                del accepted[host]
            for host, messages in uneven_fleet_values({h: fleet_values[h] for h in accepted}).items():
                refused[host] = messages
                del accepted[host]
        for message, named in warnings.items():
            result.setdefault("warnings", []).append(f"{message} (hosts: {_named(named)})")
        result["hosts"] = accepted
        result["hosts_with"] = _hosts_with_flags(role, accepted)
        result["refused"] = refused
        result["msg"] = f"role edgefleet.iotedge.{role}: {len(accepted)} hosts valid, {len(refused)} refused" + (
            f" ({_named(list(refused))}; see refused)" if refused else ""
        )
        return result

    def _check_each_host(self, role: str, hosts: list, resolve) -> tuple[dict, dict, dict, dict]:
        """Host -> what the roles read of it, host -> its problems, each unknown-variable warning -> its hosts, and
        host -> its values of the variables the controller reads once for the fleet; in the order of ``hosts``.

        A large fleet is split over the controller's processors: this process checks the first part while forked
        copies of it check the others (each host's check only reads variables), and the parts are joined in order."""
        hosts = list(dict.fromkeys(hosts))
        parts = _split(hosts, _processes_for(len(hosts)))
        accepted, refused, warnings, fleet_values = {}, {}, {}, {}
        for part in _map_in_forks(functools.partial(self._check_hosts, role, resolve=resolve), parts):
            part_accepted, part_refused, part_warnings, part_fleet_values = part
            accepted.update(part_accepted)
            refused.update(part_refused)
            fleet_values.update(part_fleet_values)
            for message, named in part_warnings.items():
                warnings.setdefault(message, []).extend(named)
        return accepted, refused, warnings, fleet_values

    def _check_hosts(self, role: str, hosts: list, *, resolve) -> tuple[dict, dict, dict, dict]:
        accepted, refused, warnings, fleet_values, renders = {}, {}, {}, {}, {}
        templar = self._templar
        for host in hosts:
            variables = resolve(host)
            if variables is None:
                refused[host] = [f"{host} is not in the inventory"]
                continue
            templar.available_variables = variables
            config_settings, errors = None, []
            if role == "iotedge_provision":
                config_settings, errors = _config_settings(variables, templar)
            problems, values, unknown = self._check_host(role, variables, templar, config_settings, renders)
            errors += problems
            for message in unknown:
                warnings.setdefault(message, []).append(host)
            if errors:
                refused[host] = errors
            else:
                accepted[host] = _resolved(role, values)
                fleet_values[host] = {name: values.get(name) for name in fleet_wide_variables(role, values)}
        return accepted, refused, warnings, fleet_values

    @staticmethod
    def _unknown_variables_mode(values: dict) -> str:
        """The host's edgefleet_unknown_variables, rendered and checked with the role's other variables (every role
        has it, from common): a value that is not a mode, or does not resolve, is a problem named there; warn then."""
        mode = values.get("edgefleet_unknown_variables", "warn")
        return mode if mode in UNKNOWN_VARIABLE_MODES else "warn"


TEMPLATE_MARKERS = ("{{", "{%", "{#")
# Below this many hosts per process, forking another one costs more than it saves.
HOSTS_PER_PROCESS = 250


def _processes_for(hosts: int) -> int:
    try:
        processors = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        processors = os.cpu_count() or 1
    return max(1, min(processors, hosts // HOSTS_PER_PROCESS))


def _split(items: list, parts: int) -> list:
    """``items`` in ``parts`` consecutive slices of nearly equal size."""
    size, extra = divmod(len(items), parts)
    bounds = [index * size + min(index, extra) for index in range(parts + 1)]
    return [items[bounds[index] : bounds[index + 1]] for index in range(parts)]


def _map_in_forks(function, parts: list) -> list:
    """``[function(part) for part in parts]``, the first part in this process and each other one in a forked copy of
    it that pickles its result back through a pipe. A part whose copy could not give its result is done here again,
    so that a failing fork never changes the answer, only its speed."""
    children = []
    for part in parts[1:]:
        try:
            reader, writer = os.pipe()
            pid = os.fork()
        except OSError:
            children.append((None, None, part))
            continue
        if pid == 0:  # the copy: compute, write, and leave without running this process's exit handlers
            os.close(reader)
            try:
                payload = pickle.dumps(function(part))
                with os.fdopen(writer, "wb") as stream:
                    stream.write(payload)
            finally:
                os._exit(0)
        os.close(writer)
        children.append((pid, reader, part))
    results = [function(parts[0])] if parts else []
    for pid, reader, part in children:
        result = None
        if pid is not None:
            with os.fdopen(reader, "rb") as stream:
                payload = stream.read()
            os.waitpid(pid, 0)
            with contextlib.suppress(Exception):
                result = pickle.loads(payload)
        results.append(function(part) if result is None else result)
    return results


def _templated(templar, value, variables=None, renders=None):
    """The value as the templar renders it. A number, a boolean, None, an empty container or a string without a
    template marker renders to itself: it is taken as it is, which at a thousand hosts with some forty variables each
    saves about a second.

    A template string is rendered with only the ``variables`` it reads (_variables_read): ansible-core 2.19 wraps
    every available variable for each render, a few hundred per host, which made each render cost ~0.3 ms. With
    ``renders``, a template that only reads variables and calls pure filters (_reusable) is rendered once for all the
    hosts where those variables hold the same values: role defaults such as ``{{ edgefleet_pki_dir }}/ca``."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):  # the inventory's numbers carry their origin in a subclass (ansible-core 2.19)
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str) and not any(marker in value for marker in TEMPLATE_MARKERS):
        return str(value)
    if isinstance(value, (dict, list)) and not value:
        return {} if isinstance(value, dict) else []
    if isinstance(value, str) and variables is not None:
        text = _string_expression_value(value, variables)
        if text is not None:
            return text
    read = _variables_read(value, variables) if variables is not None else None
    if read is None:
        return _untagged(templar.template(value))
    key = None
    if renders is not None and isinstance(value, str) and _reusable(value):
        # The values themselves stay in the entry, so that no other object can take their ids while it is kept.
        key = (str(value), tuple((name, id(read[name])) for name in sorted(read)))
        if key in renders:
            return copy.deepcopy(renders[key][1])  # a list or dict rendered once is each host's own
    every_variable = templar.available_variables
    templar.available_variables = read
    try:
        rendered = _untagged(templar.template(value))
    finally:
        templar.available_variables = every_variable
    if key is not None:
        renders[key] = (read, rendered)
    return rendered


# Filters that Jinja defines as the str method of the same name (jinja2.filters do_lower, do_upper, do_trim).
STRING_FILTERS = {"lower": str.lower, "upper": str.upper, "trim": str.strip}


@functools.lru_cache(maxsize=4096)
def _string_expression(template: str) -> tuple | None:
    """(variable, filters) when the template is one variable passed through argument-less STRING_FILTERS and nothing
    else, such as the default registration id ``{{ inventory_hostname | lower }}``; None otherwise."""
    tree = _parsed(template)
    if tree is None:
        return None
    body = tree.body
    if len(body) != 1 or not isinstance(body[0], jinja2.nodes.Output) or len(body[0].nodes) != 1:
        return None
    node, filters = body[0].nodes[0], []
    while isinstance(node, jinja2.nodes.Filter):
        if node.name not in STRING_FILTERS or node.args or node.kwargs or node.dyn_args or node.dyn_kwargs:
            return None
        filters.insert(0, STRING_FILTERS[node.name])
        node = node.node
    return (node.name, tuple(filters)) if isinstance(node, jinja2.nodes.Name) else None


def _string_expression_value(template: str, variables: dict) -> str | None:
    """The value of a _string_expression template over a variable that holds text without a template: computed here,
    as the templar would (each render through it costs ~0.3 ms, and the default registration id is rendered for every
    host of every check); None when the templar must render it."""
    expression = _string_expression(str(template))
    if expression is None or not is_trusted_as_template(template):
        return None  # an untrusted string is not rendered: the templar returns it as it is
    name, filters = expression
    text = variables.get(name)
    if not isinstance(text, str) or any(marker in text for marker in TEMPLATE_MARKERS):
        return None
    text = str(text)
    for string_filter in filters:
        text = string_filter(text)
    return text


def _untagged(rendered):
    """A rendered string as a plain str: what the roles read of it is its text, and ansible-core 2.19's tags (origin,
    trust) made each accepted host's entry slow to pass from the processes that check parts of the fleet."""
    return str(rendered) if isinstance(rendered, str) else rendered


# Lookups that read nothing of the variables they are handed: any other may (a file search path, `vars`, a template).
LOOKUPS_READING_NO_VARIABLES = frozenset(("env", "ansible.builtin.env"))
LOOKUP_FUNCTIONS = frozenset(("lookup", "query", "q"))
# Past this many values walked for the templates a variable holds, every variable is handed over instead.
MOST_VALUES_WALKED = 200


def _variables_read(value, variables: dict):
    """The variables a template needs, with those that the templates among them need in turn, as a new dict; None when
    that cannot be told from the template's text (it names ``vars``, calls a lookup that may read variables, or does
    not parse), and then the template is rendered with every variable."""
    read: dict = {}
    pending = _template_strings(value)
    while pending:
        names = _names_in(pending.pop())
        if names is None:
            return None
        for name in names:
            if name in read or name not in variables:
                continue
            read[name] = variables[name]
            inner = _template_strings(read[name])
            if inner is None:
                return None
            pending += inner
    return read


def _template_strings(value) -> list | None:
    """The strings with a template marker in a value and its containers; None past MOST_VALUES_WALKED values."""
    found, pending, walked = [], [value], 0
    while pending:
        walked += 1
        if walked > MOST_VALUES_WALKED:
            return None
        current = pending.pop()
        if isinstance(current, str):
            if any(marker in current for marker in TEMPLATE_MARKERS):
                found.append(current)
        elif isinstance(current, dict):
            pending += current.keys()
            pending += current.values()
        elif isinstance(current, (list, tuple)):
            pending += current
    return found


@jinja2.pass_context  # never evaluated ahead of a render, even with constant arguments
def _any_plugin(*_args, **_kwargs):
    raise NotImplementedError("only parsed, never rendered")


class _EveryPluginName(dict):
    """Filters and tests by any name (collection plugins included): jinja2.meta compiles the template it reads."""

    def get(self, key, default=None):
        return _any_plugin


# Only reads templates, to tell the names they read; the templar renders. A template using an extension of the
# controller's configuration does not parse here and is rendered with every variable.
def _template_parser() -> jinja2.Environment:
    parser = jinja2.Environment(extensions=["jinja2.ext.do", "jinja2.ext.loopcontrols"])  # nosec B701
    parser.filters = _EveryPluginName()
    parser.tests = _EveryPluginName()
    return parser


TEMPLATE_PARSER = _template_parser()


@functools.lru_cache(maxsize=4096)
def _parsed(template: str) -> jinja2.nodes.Template | None:
    """The template's syntax tree, parsed once for _names_in, _reusable and _string_expression; None when it does not
    parse (the templar then renders it, with every variable, and reports the error)."""
    try:
        return TEMPLATE_PARSER.parse(template)
    except Exception:  # pylint: disable=broad-exception-caught
        return None


@functools.lru_cache(maxsize=4096)
def _names_in(template: str) -> frozenset | None:
    """The names a template reads that it does not set itself (jinja2.meta), or None (see _variables_read)."""
    tree = _parsed(template)
    if tree is None:
        return None
    try:
        names = jinja2.meta.find_undeclared_variables(tree)
    except Exception:  # pylint: disable=broad-exception-caught  # the render reports the error, with every variable
        return None
    for call in tree.find_all(jinja2.nodes.Call):
        if isinstance(call.node, jinja2.nodes.Name) and call.node.name in LOOKUP_FUNCTIONS:
            plugin = call.args[0] if call.args else None
            if not (isinstance(plugin, jinja2.nodes.Const) and plugin.value in LOOKUPS_READING_NO_VARIABLES):
                return None
    return None if "vars" in names else frozenset(names)


# Filters whose result depends on their input alone; a template calling any other filter, or any function (lookup,
# now(), a method), is rendered for each host.
PURE_FILTERS = frozenset(
    [
        "abs",
        "b64decode",
        "b64encode",
        "basename",
        "bool",
        "capitalize",
        "combine",
        "d",
        "default",
        "dict2items",
        "dirname",
        "first",
        "flatten",
        "float",
        "format",
        "from_json",
        "from_yaml",
        "hash",
        "int",
        "items2dict",
        "join",
        "last",
        "length",
        "list",
        "lower",
        "mandatory",
        "path_join",
        "quote",
        "regex_escape",
        "regex_replace",
        "regex_search",
        "replace",
        "reverse",
        "round",
        "sort",
        "splitext",
        "string",
        "title",
        "to_json",
        "to_nice_json",
        "to_nice_yaml",
        "to_yaml",
        "trim",
        "truncate",
        "unique",
        "upper",
        "urlencode",
    ]
)


@functools.lru_cache(maxsize=4096)
def _reusable(template: str) -> bool:
    """Whether a template's render depends on the variables it reads alone (see PURE_FILTERS)."""
    tree = _parsed(template)
    if tree is None or next(tree.find_all(jinja2.nodes.Call), None) is not None:
        return False
    return all(
        node.name.removeprefix("ansible.builtin.") in PURE_FILTERS for node in tree.find_all(jinja2.nodes.Filter)
    )


def _first_line(error: Exception) -> str:
    text = getattr(error, "message", None) or str(error)
    return str(text).strip().splitlines()[0] if str(text).strip() else type(error).__name__


class _HostVariables:
    """Each host's variables as a task of this play sees them on that host: role defaults and vars, inventory,
    group_vars, facts, play and extra vars. The VariableManager the strategy itself uses for each task and host;
    the play's host lists are handed in so that each lookup does not walk the inventory again."""

    def __init__(self, task, task_vars: dict):
        hostvars = task_vars.get("hostvars")
        self._variable_manager = getattr(hostvars, "_variable_manager", None)
        self._inventory = getattr(hostvars, "_inventory", None)
        if self._variable_manager is None or self._inventory is None:
            raise AnsibleActionFail("hosts: this ansible-core gives the action no access to the other hosts' variables")
        self._task = task
        self._play = task.get_play()
        self._hosts = list(task_vars.get("ansible_play_batch") or [])
        self._hosts_all = list(task_vars.get("ansible_play_hosts_all") or [])

    def __call__(self, name: str):
        host = self._inventory.get_host(name)
        if host is None:
            return None
        return self._variable_manager.get_vars(
            play=self._play, host=host, task=self._task, _hosts=self._hosts, _hosts_all=self._hosts_all
        )


@contextlib.contextmanager
def _templates_compiled_once():
    """ansible-core 2.19 compiles a template string anew every time it renders it, and checking every host renders
    the same role defaults for each (most of the cost at a thousand hosts). Within this task each distinct string is
    compiled once; the trust check still runs on every render, before the compiled template is asked for."""
    compile_template = getattr(TemplateEngine, "_compile_template", None)
    if compile_template is None:
        yield
        return
    compiled: dict = {}

    def compile_once(engine, template, options):
        key = (str(template), options)
        if key not in compiled:
            compiled[key] = compile_template(engine, template, options)
        return compiled[key]

    TemplateEngine._compile_template = compile_once
    try:
        yield
    finally:
        TemplateEngine._compile_template = compile_template


def _config_settings(variables: dict, templar) -> tuple[dict | None, list]:
    if CONFIG_SETTINGS_VARIABLE not in variables:
        return None, []
    try:
        return templar.template(variables[CONFIG_SETTINGS_VARIABLE]), []
    except AnsibleError as error:
        # The settings are templates of the role's variables; the type checks name the variable itself.
        return None, [f"the runtime configuration cannot be rendered ({_first_line(error)}). Correct the variables"]


def _resolved(role: str, values: dict) -> dict:
    """What the roles read of an accepted host, resolved once here."""
    registration_id = values.get("edgefleet_registration_id")
    resolved = {"registration_id": registration_id}
    if role == "edge_pki":
        resolved["rotate"] = bool(values.get("edgefleet_identity_rotate"))
        resolved["retired"] = bool(values.get("edgefleet_retired"))
        resolved["edge_ca"] = values.get("edgefleet_edge_ca") == "fleet"
        resolved["device_key"] = values.get("edgefleet_identity_key_origin") == "device"
        resolved["key_type"] = values.get("edgefleet_pki_key_type")
    if role == "dps_enrollment":
        # Both twin parts are always sent: a tag or property removed from inventory is removed from the enrollment.
        resolved["twin"] = {
            "tags": values.get("edgefleet_dps_twin_tags") or {},
            "desired_properties": values.get("edgefleet_dps_twin_desired_properties") or {},
        }
        # Where pki_identity keeps the host's leaf (the module owns the file names).
        identity = identity_files(values["edgefleet_pki_identity_dir"], registration_id)
        resolved["certificate_path"] = identity["cert_path"]
        # A rotation's new leaf while it is under way (pki_identity staged=true).
        resolved["next_certificate_path"] = identity["next"]["cert_path"]
    if role == "iotedge_deployment":
        # The twin tags the host's device must have: its enrollment's initial twin tags and its ring.
        ring = values.get("edgefleet_deployment_ring")
        resolved["ring"] = ring
        resolved["tags"] = {
            **(values.get("edgefleet_dps_twin_tags") or {}),
            values.get("edgefleet_deployment_ring_tag", "ring"): ring,
        }
    return resolved


def _hosts_with_flags(role: str, accepted: dict) -> dict:
    """Each flag of the role (a true-or-false setting of _resolved) -> the accepted hosts that have it, in their
    order; every flag is there, with no host when none was accepted."""
    return {flag: [host for host, facts in accepted.items() if facts[flag]] for flag in FLAGS.get(role, ())}


def _joined(errors: list) -> str:
    return errors[0] if len(errors) == 1 else f"{len(errors)} problems: " + " | ".join(errors)


def _named(hosts: list, shown: int = 5) -> str:
    return ", ".join(hosts[:shown]) + (f" and {len(hosts) - shown} more" if len(hosts) > shown else "")
