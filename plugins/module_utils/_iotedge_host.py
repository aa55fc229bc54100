# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# PRIVATE to the edgefleet.iotedge collection. Do not use this from other collections:
# it may change at any time.

"""One pass over an edge host's identity files and runtime configuration: compare with what is wanted, change what
differs, and read whether the runtime applied what is on disk.

Runs on the managed host (Python 3.8+, standard library only) and never imports AnsibleModule. What a role used to do
in a dozen tasks (stat, getent, file, copy with backup, find, stat again) is one module run here, so a host that is
already right costs one round trip. Failures raise `HostStateError` with a message naming the variable to fix.

Debian packages are compared with dpkg-query and, if asked, installed with apt-get itself (as ansible.builtin.apt runs
it: noninteractive, the same dpkg options for configuration files, the same cache-age stamp), so a host needs no
python3-apt, which ansible.builtin.apt would first install from the distribution's mirror. Commands go through a
``run(argv, environ_update=None) -> (rc, stdout, stderr)`` callable (AnsibleModule.run_command on the host, a fake in
the unit tests).
"""

from __future__ import annotations

import grp
import hashlib
import hmac
import os
import pwd
import re
import shlex
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

ROOT = "root"
PARENT_MODE = 0o755

# What ansible.builtin.apt reads for the cache's age: the stamp apt's Post-Invoke-Success hook touches where one is
# configured (Ubuntu), else the lists directory.
APT_LISTS_PATH = "/var/lib/apt/lists"
APT_UPDATE_SUCCESS_STAMP_PATH = "/var/lib/apt/periodic/update-success-stamp"
# ansible.builtin.apt's environment (with the C locale, which every host has) and dpkg options: keep a changed
# configuration file, take the package's default where there is no local change; wait for the lock as its
# lock_timeout does.
APT_ENVIRONMENT = {
    "DEBIAN_FRONTEND": "noninteractive",
    "DEBIAN_PRIORITY": "critical",
    "LANG": "C",
    "LC_ALL": "C",
    "LC_MESSAGES": "C",
    "LC_CTYPE": "C",
    "LANGUAGE": "C",
}
APT_LOCK_TIMEOUT = 60
APT_OPTIONS = (
    "-y",
    "-q",
    "-o",
    "Dpkg::Options::=--force-confdef",
    "-o",
    "Dpkg::Options::=--force-confold",
    "-o",
    f"DPkg::Lock::Timeout={APT_LOCK_TIMEOUT}",
)
APT_UPDATE_CHOICES = ("if_stale", "always", "never")
# Debian policy's names and versions (the same rules as the inventory check): nothing apt-get could read as an option.
PACKAGE_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]+")
PACKAGE_VERSION = re.compile(r"[0-9][A-Za-z0-9.+~:-]*")
# The characters apt %-quotes in a list file's name (besides spaces, control and non-ASCII characters).
APT_QUOTED = frozenset('\\|{}[]<>"^~_=!@#$%&*')
# The last lines of a failed apt-get's output that a message quotes.
APT_ERROR_LINES = 4


class HostStateError(Exception):
    """The host cannot be brought to the wanted state; the message says why and what to do."""


class NotInCacheError(HostStateError):
    """apt-get install found no such package or version in a cache this run did not refresh."""


@dataclass(frozen=True)
class WantedDirectory:
    path: str
    owner: str
    group: str
    mode: int
    # The inventory variable that chose the path, named when a parent stops the runtime's users.
    variable: str = ""


@dataclass(frozen=True)
class WantedFile:
    path: str
    owner: str
    group: str
    mode: int
    # None: the content is unknown (check mode before the controller made it); the file is predicted as written.
    content: bytes | None
    # Keep the replaced file beside it as <file>.<pid>.<time>~ (the format of Ansible's backup option).
    backup: bool = False
    # Show the text as a diff (never for keys or a configuration that holds credentials).
    show_diff: bool = False
    # Made on the host (a key the device made itself): never written, only its owner, group and mode are corrected.
    made_on_host: bool = False
    # The inventory variable that chose the file, named when a file made on the host is missing.
    variable: str = ""


@dataclass
class Request:
    directories: list = field(default_factory=list)
    files: list = field(default_factory=list)
    # Users the runtime reads its identity as; none of them means the runtime is not installed.
    runtime_users: list = field(default_factory=list)
    # How many backups of a backed-up file stay (the newest).
    backups_kept: int = 5
    # The runtime's configuration: its age before this run is compared with what the runtime applied.
    config_path: str = ""
    # 1.2+: the file `iotedge config apply` writes; its age tells whether the configuration on disk was applied.
    applied_marker: str = ""
    # 1.1: the daemon that reads the configuration when it starts.
    service: str = ""
    # Debian packages and their pinned versions ('' for any): those not installed as asked are reported, and
    # installed with apt-get when `install` is set.
    packages: dict = field(default_factory=dict)
    install: bool = False
    # Packages installed in an earlier apt-get run than the others (a container engine whose group a runtime needs).
    install_first: list = field(default_factory=list)
    # Refresh the apt cache before installing: if_stale (older than apt_cache_valid_time), always, never.
    apt_update: str = "if_stale"
    apt_cache_valid_time: int = 3600
    # A sources list (one-line format): every apt-get update refreshes only its repositories, and the cache's age is
    # that of their lists. Empty: every source of the host, the age as ansible.builtin.apt reads it.
    apt_update_sources: str = ""
    # Let apt install a pinned version older than the installed one.
    allow_downgrade: bool = False
    # Only check that the directories can be reached; change nothing (the playbook's preflight).
    preflight: bool = False
    check_mode: bool = False


@dataclass
class Outcome:
    changed: bool = False
    actions: list = field(default_factory=list)
    diff: list = field(default_factory=list)
    runtime_installed: bool = True
    # The runtime applied a configuration before (1.2+) or its daemon runs (1.1): a change needs a reprovisioning.
    was_provisioned: bool = False
    # The configuration on disk is newer than what the runtime runs (a run stopped before its handlers).
    apply_pending: bool = False
    backups: list = field(default_factory=list)
    packages_to_install: list = field(default_factory=list)
    # Packages apt-get installed, upgraded or downgraded (dependencies too): name, version, previous_version ('' if new).
    installed: list = field(default_factory=list)
    # Packages apt-get removed (a conflict): name, version.
    removed: list = field(default_factory=list)
    cache_updated: bool = False
    # apt-get update's warnings (a source it could not fetch): the module shows them.
    warnings: list = field(default_factory=list)
    # Parents created (or, in check mode, to be created) in this pass: each is reported once.
    created_parents: set = field(default_factory=set)

    def to_result(self) -> dict:
        return {
            "changed": self.changed,
            "actions": self.actions,
            "runtime_installed": self.runtime_installed,
            "was_provisioned": self.was_provisioned,
            "apply_pending": self.apply_pending,
            "backups": self.backups,
            "packages_to_install": self.packages_to_install,
            "installed": self.installed,
            "removed": self.removed,
            "cache_updated": self.cache_updated,
        }


def mode_value(text: str, field_name: str) -> int:
    """'0644' -> 0o644; only permission bits, written in octal."""
    if not isinstance(text, str) or not text.isascii() or not text.isdigit() or set(text) - set("01234567"):
        raise HostStateError(
            f"{field_name}: {text!r} is not an octal mode. Write it as a quoted string such as '0644'."
        )
    value = int(text, 8)
    if value > 0o7777:
        raise HostStateError(f"{field_name}: {text!r} has more than permission bits. Use at most four octal digits.")
    return value


# The module options of an owned path (directories[] of iotedge_host and iotedge_host_preflight, files[] of
# iotedge_host), as AnsibleModule argument specs.
OWNED_OPTIONS = {
    "path": {"type": "path", "required": True},
    "owner": {"type": "str", "required": True},
    "group": {"type": "str"},
    "mode": {"type": "str", "required": True},
    "variable": {"type": "str", "default": ""},
}


# The options of iotedge_host as an AnsibleModule argument spec: the module validates with it on the host, the action
# plugin on the controller before it decides from an observation.
HOST_OPTIONS = {
    "directories": {"type": "list", "elements": "dict", "default": [], "options": OWNED_OPTIONS},
    "files": {
        "type": "list",
        "elements": "dict",
        "default": [],
        "options": {
            **OWNED_OPTIONS,
            "src": {"type": "path"},
            "content": {"type": "str"},
            "secret": {"type": "bool", "default": False},
            "secret_content": {"type": "str", "no_log": True},
            "backup": {"type": "bool", "default": False},
            "diff": {"type": "bool", "default": False},
            "made_on_host": {"type": "bool", "default": False},
        },
        "mutually_exclusive": [
            ["content", "secret_content"],
            ["made_on_host", "src"],
            ["made_on_host", "content"],
            ["made_on_host", "secret_content"],
        ],
    },
    "runtime_users": {"type": "list", "elements": "str", "default": []},
    "backups_kept": {"type": "int", "default": 5},
    "config_path": {"type": "path"},
    "applied_marker": {"type": "path"},
    "service": {"type": "str"},
    "packages": {"type": "dict", "default": {}},
    "install": {"type": "bool", "default": False},
    "install_first": {"type": "list", "elements": "str", "default": []},
    "apt_update": {"type": "str", "choices": list(APT_UPDATE_CHOICES), "default": "if_stale"},
    "apt_cache_valid_time": {"type": "int", "default": 3600},
    "apt_update_sources": {"type": "path"},
    "allow_downgrade": {"type": "bool", "default": False},
    # Read by the action plugin, never sent to the host.
    "observed": {"type": "dict"},
    "observed_key": {"type": "str", "no_log": True},
}


def request_from_params(params: dict, check_mode: bool) -> Request:
    """The Request of iotedge_host's validated options (HOST_OPTIONS)."""
    return Request(
        directories=wanted_directories(params["directories"]),
        files=[
            WantedFile(
                path=item["path"],
                owner=item["owner"],
                group=item["group"] or item["owner"],
                mode=mode_value(item["mode"], "files[].mode"),
                content=_content(item),
                backup=item["backup"],
                show_diff=item["diff"] and not item["secret"] and item["secret_content"] is None,
                made_on_host=item["made_on_host"],
                variable=item["variable"],
            )
            for item in params["files"]
        ],
        runtime_users=params["runtime_users"],
        backups_kept=params["backups_kept"],
        config_path=params["config_path"] or "",
        applied_marker=params["applied_marker"] or "",
        service=params["service"] or "",
        packages={name: str(version or "") for name, version in params["packages"].items()},
        install=params["install"],
        install_first=params["install_first"],
        apt_update=params["apt_update"],
        apt_cache_valid_time=params["apt_cache_valid_time"],
        apt_update_sources=params["apt_update_sources"] or "",
        allow_downgrade=params["allow_downgrade"],
        check_mode=check_mode,
    )


def _content(item: dict):
    """The text as bytes; None (unknown, predicted as written) when the action plugin found no source in check mode."""
    text = item["secret_content"] if item["secret_content"] is not None else item["content"]
    return None if text is None else text.encode("utf-8")


def wanted_directories(items) -> list:
    """WantedDirectory for each ``directories[]`` option (the group defaults to the owner's name)."""
    return [
        WantedDirectory(
            path=item["path"],
            owner=item["owner"],
            group=item["group"] or item["owner"],
            mode=mode_value(item["mode"], "directories[].mode"),
            variable=item["variable"],
        )
        for item in items
    ]


def traversal_problems(directories) -> list:
    """Existing parents of the directories (below /) that the runtime's users cannot enter, as messages."""
    problems, seen = [], set()
    for directory in directories:
        for parent in parents(directory.path):
            if parent in seen:
                continue
            seen.add(parent)
            try:
                info = os.stat(parent)
            except FileNotFoundError:
                continue
            if not stat.S_ISDIR(info.st_mode) or not info.st_mode & stat.S_IXOTH:
                problems.append(
                    f"{directory.variable or directory.path}: {parent} is not a directory others can enter (mode "
                    f"{stat.S_IMODE(info.st_mode):04o}), so {directory.owner} could not read the identity below it. "
                    f"Choose a directory under a traversable parent (the default is under /var), or chmod o+x {parent}"
                )
    return problems


def parents(path: str) -> list:
    """/a/b/c -> [/a, /a/b]: the ancestors of a directory, without / and without the directory itself."""
    parts = path.strip("/").split("/")
    return ["/" + "/".join(parts[:depth]) for depth in range(1, len(parts))]


def user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def converge(request: Request, run) -> Outcome:
    """Bring the directories, files and packages to what is wanted.

    ``run(argv, environ_update=None) -> (rc, stdout, stderr)`` asks systemd, dpkg-query and apt-get.
    """
    check_packages(request)
    problems = traversal_problems(request.directories)
    if problems:
        raise HostStateError(". ".join(problems) + ".")
    outcome = Outcome()
    if request.preflight:
        return outcome
    missing = [user for user in request.runtime_users if not user_exists(user)]
    outcome.runtime_installed = not missing
    if missing and not request.check_mode:
        raise HostStateError(
            f"No user {' or '.join(missing)} on this host: the IoT Edge runtime is not installed. Run the install "
            "phase (role edgefleet.iotedge.iotedge_install, tag install) or check edgefleet_generation."
        )
    previous_config_mtime = _mtime(request.config_path) if request.config_path else None
    for directory in request.directories:
        _converge_directory(directory, request, outcome)
    for wanted in request.files:
        _converge_file(wanted, request, outcome)
    _read_runtime(request, previous_config_mtime, run, outcome)
    outcome.packages_to_install = packages_to_install(request.packages, run)
    if request.install and outcome.packages_to_install:
        install_packages(request, outcome, run)
    return outcome


def check_packages(request: Request) -> None:
    """Refuse package names, pins and apt options that are not what they claim, before anything changes."""
    for name, version in request.packages.items():
        if not PACKAGE_NAME.fullmatch(name):
            raise HostStateError(f"packages: {name!r} is not a Debian package name (such as aziot-edge).")
        if version and not PACKAGE_VERSION.fullmatch(version):
            raise HostStateError(
                f"packages: {name}: {version!r} is not an apt version string. Use one like 1.5.44-1, or '' for any."
            )
    unknown = [name for name in request.install_first if name not in request.packages]
    if unknown:
        raise HostStateError(
            f"install_first: {', '.join(unknown)} not in packages. Name only packages that packages lists."
        )
    if request.apt_update not in APT_UPDATE_CHOICES:
        raise HostStateError(f"apt_update: {request.apt_update!r} is not one of {', '.join(APT_UPDATE_CHOICES)}.")
    if request.apt_update_sources and not os.path.isabs(request.apt_update_sources):
        raise HostStateError(
            f"apt_update_sources: {request.apt_update_sources!r} is not an absolute path. Name a sources list such as "
            "/etc/apt/sources.list.d/edgefleet-iotedge.list, or leave it unset to refresh every source."
        )
    if request.apt_cache_valid_time < 0:
        raise HostStateError(f"apt_cache_valid_time: must be 0 or more seconds, got {request.apt_cache_valid_time}.")


def packages_to_install(wanted: dict, run) -> list:
    """``name`` or ``name=version`` for each wanted package that is not installed, or not at its pinned version."""
    return missing_packages(wanted, installed_packages(list(wanted), run))


def installed_packages(names: list, run) -> dict:
    """The installed version of each named package, None for one that is not installed."""
    if not names:
        return {}
    rc, stdout, _stderr = run(["dpkg-query", "--show", "--showformat", "${Package}\t${Status}\t${Version}\n", *names])
    installed = dict.fromkeys(names)
    # dpkg-query exits 1 when a package is unknown, and still lists the others.
    for line in stdout.splitlines() if rc in (0, 1) else []:
        name, _tab, rest = line.partition("\t")
        status, _tab, version = rest.partition("\t")
        if status.endswith(" installed") and name in installed:
            installed[name] = version
    return installed


def missing_packages(wanted: dict, installed: dict) -> list:
    """``name`` or ``name=version`` for each wanted package that `installed_packages` found absent or not at its pin."""
    return [
        name + (f"={version}" if version else "")
        for name, version in wanted.items()
        if installed.get(name) is None or (version and installed[name] != version)
    ]


def install_packages(request: Request, outcome: Outcome, run) -> None:
    """Install ``outcome.packages_to_install`` with apt-get (``install_first`` in a run of their own, first); in check
    mode only say what would run. Records what dpkg shows changed; a failure raises `HostStateError`."""
    wanted = outcome.packages_to_install
    first = [spec for name in request.install_first for spec in wanted if _package_name(spec) == name]
    batches = [batch for batch in (first, [spec for spec in wanted if spec not in first]) if batch]
    update = cache_needs_update(request)
    outcome.changed = True
    outcome.cache_updated = update
    if update:
        outcome.actions.append("update the apt cache")
    outcome.actions.extend(f"install {', '.join(batch)}" for batch in batches)
    if request.check_mode:
        return
    before = installed_versions(run)
    try:
        if update:
            _update_cache(request, outcome, run)
        for batch in batches:
            argv = ["apt-get", "install", *APT_OPTIONS]
            if request.allow_downgrade:
                argv.append("--allow-downgrades")
            try:
                _apt([*argv, "--", *batch], run, request, updated=outcome.cache_updated)
            except NotInCacheError:
                # A cache fresh by its age can still lack the repository: a run that wrote the sources list and was
                # stopped before its update. Refresh once, unless asked never to, and try again.
                if request.apt_update == "never":
                    raise
                outcome.actions.insert(outcome.actions.index(f"install {', '.join(batch)}"), "update the apt cache")
                _update_cache(request, outcome, run)
                _apt([*argv, "--", *batch], run, request, updated=True)
    except HostStateError as error:
        # An earlier run (or the failed one, before dpkg stopped) may have installed something: say what.
        installed, removed = package_changes(before, installed_versions(run))
        left = [f"{item['name']} {item['version']} installed" for item in installed]
        left += [f"{item['name']} {item['version']} removed" for item in removed]
        if left:
            raise HostStateError(f"{error} Done before the failure: {', '.join(left)}.") from None
        raise
    outcome.installed, outcome.removed = package_changes(before, installed_versions(run))
    left = packages_to_install(request.packages, run)
    if left:
        raise HostStateError(
            f"apt-get finished, but dpkg does not show {', '.join(left)} installed as asked. Look with "
            f"'apt-cache policy {' '.join(_package_name(spec) for spec in left)}'."
        )


def update_command(request: Request) -> list:
    """apt-get update, of every source or (apt_update_sources) of one sources list's repositories only: apt.conf(5)'s
    Dir::Etc::sourcelist names the list, sourceparts=- reads no sources.list.d, and List-Cleanup=0 keeps the lists of
    the other sources (apt would otherwise delete them as unused)."""
    argv = ["apt-get", "update", "-q"]
    if request.apt_update_sources:
        argv += [
            "-o",
            f"Dir::Etc::sourcelist={request.apt_update_sources}",
            "-o",
            "Dir::Etc::sourceparts=-",
            "-o",
            "APT::Get::List-Cleanup=0",
        ]
    return argv


def _update_cache(request: Request, outcome: Outcome, run) -> None:
    _stdout, stderr = _apt(update_command(request), run, request, updated=True)
    outcome.cache_updated = True
    outcome.warnings.extend(
        f"apt-get update: {line.strip()}" for line in stderr.splitlines() if line.startswith(("W:", "E:"))
    )


def cache_needs_update(request: Request) -> bool:
    """Whether apt-get update runs before installing: asked always, or the cache is older than its valid time (read as
    ansible.builtin.apt reads it), or there are no package lists at all (an image that removed them)."""
    if request.apt_update != "if_stale":
        return request.apt_update == "always"
    if request.apt_update_sources:
        return sources_need_update(request.apt_update_sources, request.apt_cache_valid_time)
    try:
        lists = os.listdir(APT_LISTS_PATH)
    except OSError:
        lists = []
    if not any("_Packages" in name for name in lists):
        return True
    return cache_mtime() + request.apt_cache_valid_time < time.time()


def cache_mtime() -> float:
    """ansible.builtin.apt's cache age: the update-success stamp if there is one, else the lists directory; 0 if none."""
    for path in (APT_UPDATE_SUCCESS_STAMP_PATH, APT_LISTS_PATH):
        try:
            return os.stat(path).st_mtime
        except OSError:
            continue
    return 0.0


def sources_need_update(sources_path: str, valid_time: int) -> bool:
    """Whether one sources list's repositories need apt-get update: none of their lists is there, the sources list is
    newer than the newest of them (a repository added or changed since), or that one is older than ``valid_time``.

    A list's age is when apt wrote it (`list_written`), not its modification time: apt gives a downloaded file the
    server's Last-Modified time, the age of the repository rather than of the cache."""
    prefixes = list_prefixes(_read(sources_path) or b"")
    newest = 0.0
    try:
        entries = list(os.scandir(APT_LISTS_PATH))
    except OSError:
        entries = []
    for entry in entries:
        if entry.name.startswith(prefixes) and entry.is_file(follow_symlinks=False):
            newest = max(newest, list_written(entry.stat(follow_symlinks=False)))
    if not newest or (_mtime(sources_path) or 0.0) > newest:
        return True
    return newest + valid_time < time.time()


def list_written(info) -> float:
    """When apt last wrote or renamed a list into place: its inode change time, which no one can set back."""
    return info.st_ctime


def list_prefixes(sources: bytes) -> tuple:
    """The names apt gives the lists of each ``deb`` line's repository in /var/lib/apt/lists (apt's URItoFileName: the
    URI without scheme and credentials, special characters %-quoted, '/' as '_'), up to the suite: for
    ``deb [trusted=yes] http://127.0.0.1:18480/ ./`` the prefix ``127.0.0.1:18480_._`` of ``127.0.0.1:18480_._Packages``,
    for ``deb http://deb.debian.org/debian bookworm main`` ``deb.debian.org_debian_dists_bookworm_``. One-line format
    only; a line apt would not read gives none."""
    prefixes = []
    for line in sources.decode("utf-8", errors="replace").splitlines():
        words = re.sub(r"\[[^]]*\]", " ", line.partition("#")[0]).split()
        if len(words) < 3 or words[0] != "deb":
            continue
        uri, suite = words[1], words[2]
        parts = urlsplit(uri)
        location = parts.netloc.rpartition("@")[2] + parts.path
        if not location.endswith("/"):
            location += "/"
        location += suite if suite.endswith("/") else f"dists/{suite}/"
        prefixes.append("".join(_apt_quoted(character) for character in location).replace("/", "_"))
    return tuple(prefixes)


def _apt_quoted(character: str) -> str:
    """One character as apt's QuoteString writes it in a list's name."""
    if character in APT_QUOTED or not " " < character < "\x7f":
        return "".join(f"%{byte:02x}" for byte in character.encode("utf-8"))
    return character


def installed_versions(run) -> dict:
    """Every installed package (architecture-qualified where dpkg needs it) and its version."""
    rc, stdout, stderr = run(["dpkg-query", "--show", "--showformat", "${binary:Package}\t${Status}\t${Version}\n"])
    if rc != 0:
        raise HostStateError(f"dpkg-query could not list the installed packages (rc {rc}): {_last_lines(stderr)}")
    installed = {}
    for line in stdout.splitlines():
        name, _tab, rest = line.partition("\t")
        status, _tab, version = rest.partition("\t")
        if status.endswith(" installed"):
            installed[name] = version
    return installed


def package_changes(before: dict, after: dict) -> tuple:
    """(installed, removed) between two `installed_versions`, each sorted by name."""
    installed = [
        {"name": name, "version": version, "previous_version": before.get(name, "")}
        for name, version in sorted(after.items())
        if before.get(name) != version
    ]
    removed = [{"name": name, "version": version} for name, version in sorted(before.items()) if name not in after]
    return installed, removed


def _package_name(spec: str) -> str:
    return spec.partition("=")[0]


def _apt(argv: list, run, request: Request, updated: bool) -> tuple:
    """Run apt-get; a failure raises `HostStateError` with apt's last lines, the command and, where known, the fix."""
    rc, stdout, stderr = run(argv, environ_update=APT_ENVIRONMENT)
    if rc == 0:
        return stdout, stderr
    output = stderr if stderr.strip() else stdout
    tail = _last_lines(output)
    message = (
        f"{' '.join(argv[:2])} failed (rc {rc}): {tail}{'' if tail.endswith('.') else '.'} Command: {shlex.join(argv)}."
    )
    if "--allow-downgrades" in output and not request.allow_downgrade:
        message += " An installed package is newer than its pinned version: set allow_downgrade to install the pin."
    elif "Unable to locate package" in output or "was not found" in output or "has no installation candidate" in output:
        names = " ".join(_package_name(spec) for spec in argv[argv.index("--") + 1 :]) if "--" in argv else "NAME"
        if not updated:
            raise NotInCacheError(f"{message} The apt cache was not refreshed in this run (apt_update is never).")
        message += f" Check that the repository serves it (apt-cache policy {names})."
    elif "Could not get lock" in output or "Unable to acquire the dpkg frontend lock" in output:
        message += " Another apt or dpkg process holds the lock: re-run when it has finished."
    raise HostStateError(message)


def _last_lines(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " ".join(lines[-APT_ERROR_LINES:]) if lines else "(no output)"


def _mtime(path: str):
    try:
        return os.stat(path).st_mtime
    except FileNotFoundError:
        return None


def _ids(owner: str, group: str, check_mode: bool) -> tuple:
    """uid and gid; in check mode a user the runtime's packages would create is predicted, not an error."""
    try:
        return pwd.getpwnam(owner).pw_uid, grp.getgrnam(group).gr_gid
    except KeyError:
        if check_mode:
            return None, None
        raise HostStateError(f"No user or group {owner}:{group} on this host: install the runtime first.") from None


def _converge_directory(directory: WantedDirectory, request: Request, outcome: Outcome) -> None:
    for parent in parents(directory.path):
        if parent not in outcome.created_parents and not os.path.lexists(parent):
            outcome.created_parents.add(parent)
            outcome.actions.append(f"create {parent} (root, {PARENT_MODE:04o})")
            outcome.changed = True
            if not request.check_mode:
                os.mkdir(parent, PARENT_MODE)
                os.chown(parent, 0, 0)
                os.chmod(parent, PARENT_MODE)
    uid, gid = _ids(directory.owner, directory.group, request.check_mode)
    observed = observe_path(directory.path)
    if observed is not None and observed["kind"] != "directory":
        raise HostStateError(
            f"{directory.variable or directory.path}: {directory.path} exists and is not a directory. Move it away or "
            "choose another directory."
        )
    if observed is None:
        outcome.actions.append(f"create {directory.path} ({directory.owner}, {directory.mode:04o})")
        outcome.changed = True
        if not request.check_mode:
            os.mkdir(directory.path, directory.mode)
            _set_metadata(directory.path, uid, gid, directory.mode)
        return
    # uid None: check mode, and the owner is not created yet: it will differ.
    if uid is None or metadata_differs(observed, directory.owner, directory.group, directory.mode):
        outcome.actions.append(f"set {directory.path} to {directory.owner}:{directory.group} {directory.mode:04o}")
        outcome.changed = True
        if not request.check_mode:
            _set_metadata(directory.path, uid, gid, directory.mode)


def metadata_differs(observed: dict, owner: str, group: str, mode: int) -> bool:
    """Whether a path `observe_path` read has another owner, group or mode than wanted."""
    return (observed["owner"], observed["group"], observed["mode"]) != (owner, group, mode)


def content_differs(wanted: WantedFile, digest, key: str = "") -> bool:
    """Whether a file whose content has this `_digest` (None: no file) must be written."""
    return wanted.content is None or digest is None or not hmac.compare_digest(digest, _digest(wanted.content, key))


def _set_metadata(path: str, uid, gid, mode: int) -> None:
    os.chown(path, uid, gid)
    os.chmod(path, mode)


def _read(path: str):
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def _converge_file(wanted: WantedFile, request: Request, outcome: Outcome) -> None:
    uid, gid = _ids(wanted.owner, wanted.group, request.check_mode)
    if wanted.made_on_host:
        _converge_made_on_host(wanted, request, outcome, uid, gid)
        return
    current = _read(wanted.path)
    write = content_differs(wanted, None if current is None else _digest(current))
    if wanted.show_diff and write:
        outcome.diff.append(
            {
                "before_header": wanted.path,
                "after_header": wanted.path,
                "before": _text(current),
                "after": _text(wanted.content) if wanted.content is not None else "(made by this run)\n",
            }
        )
    if write:
        outcome.actions.append(f"write {wanted.path} ({wanted.owner}, {wanted.mode:04o})")
        outcome.changed = True
        if not request.check_mode:
            backup = _write(wanted, current is not None, uid, gid)
            if backup:
                outcome.backups.append(backup)
                _prune_backups(wanted.path, request.backups_kept)
        return
    if uid is None or metadata_differs(observe_path(wanted.path), wanted.owner, wanted.group, wanted.mode):
        outcome.actions.append(f"set {wanted.path} to {wanted.owner}:{wanted.group} {wanted.mode:04o}")
        outcome.changed = True
        if not request.check_mode:
            _set_metadata(wanted.path, uid, gid, wanted.mode)


def _converge_made_on_host(wanted: WantedFile, request: Request, outcome: Outcome, uid, gid) -> None:
    """A file the host made (a device's own key): hand it to its owner; it is never read, written or replaced."""
    observed = observe_path(wanted.path)
    if observed is None and request.check_mode:
        outcome.actions.append(
            f"set {wanted.path} to {wanted.owner}:{wanted.group} {wanted.mode:04o} (made on the host)"
        )
        outcome.changed = True
        return
    if observed is None or observed["kind"] != "file":
        raise HostStateError(
            f"{wanted.variable or wanted.path}: {wanted.path} is {'missing' if observed is None else 'not a file'}. It "
            "is made on the device by the key phase (provision_edge.yml, tag pki), which did not run for this host: "
            "run the playbook without --skip-tags pki."
        )
    if uid is None or metadata_differs(observed, wanted.owner, wanted.group, wanted.mode):
        outcome.actions.append(f"set {wanted.path} to {wanted.owner}:{wanted.group} {wanted.mode:04o}")
        outcome.changed = True
        if not request.check_mode:
            _set_metadata(wanted.path, uid, gid, wanted.mode)


def _digest(content: bytes, key: str = "") -> str:
    """SHA-256 of the content, keyed (HMAC) when a key is given: a digest the host check returns is shown with -v, and a
    plain hash of a configuration that holds a short EST password would let a reader of the log guess the password."""
    if key:
        return hmac.new(key.encode("utf-8"), content, hashlib.sha256).hexdigest()
    return hashlib.sha256(content).hexdigest()


def _text(content) -> str:
    return "" if content is None else content.decode("utf-8", errors="replace")


def _write(wanted: WantedFile, exists: bool, uid, gid) -> str:
    """Write atomically (a temporary file renamed over the target); back up the replaced file first if asked."""
    directory = os.path.dirname(wanted.path)
    backup = ""
    if wanted.backup and exists:
        backup = f"{wanted.path}.{os.getpid()}.{time.strftime('%Y-%m-%d@%H:%M:%S')}~"
        try:
            shutil.copy2(wanted.path, backup)
        except OSError as error:
            removed = _remove_quietly(backup)
            raise HostStateError(
                f"could not write {wanted.path} (its backup {backup}: {error.strerror or error}). The configuration "
                f"in use was left as it was{' and the empty backup file was removed' if removed else ''}. Free "
                f"space on the host (df -h {directory}) and re-run."
            ) from None
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(wanted.path)}.")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(wanted.content)
            stream.flush()
            os.fsync(stream.fileno())
        _set_metadata(temporary, uid, gid, wanted.mode)
        os.rename(temporary, wanted.path)
    except OSError as error:
        _remove_quietly(temporary)
        removed = bool(backup) and _remove_quietly(backup)
        raise HostStateError(
            f"could not write {wanted.path} ({error.strerror or error}). The file in use was left as it "
            f"was{' and its backup was removed' if removed else ''}. Free space on the host (df -h {directory}) and "
            "re-run."
        ) from None
    return backup


def _remove_quietly(path: str) -> bool:
    """Remove a file this run made; True if it was there and is gone."""
    try:
        os.unlink(path)
    except OSError:
        return False
    return True


def _prune_backups(path: str, kept: int) -> None:
    directory, name = os.path.split(path)
    found = []
    for entry in os.scandir(directory):
        if entry.name.startswith(name + ".") and entry.name.endswith("~") and entry.is_file(follow_symlinks=False):
            found.append((entry.stat(follow_symlinks=False).st_mtime, entry.path))
    for _mtime_of, stale in sorted(found, reverse=True)[kept:]:
        _remove_quietly(stale)


def _read_runtime(request: Request, previous_config_mtime, run, outcome: Outcome) -> None:
    state = runtime_state(request.config_path, request.applied_marker, request.service, run)
    state["config_mtime"] = previous_config_mtime
    outcome.was_provisioned, outcome.apply_pending = provisioning(state)


def runtime_state(config_path: str, applied_marker: str, service: str, run) -> dict:
    """What tells whether the runtime runs the configuration on disk: the configuration's and (1.2+) the applied
    marker's modification times, or (1.1) whether the daemon is active; each with the path or service it is of."""
    state = {"config_path": config_path, "applied_marker": applied_marker, "service": service}
    state["config_mtime"] = _mtime(config_path) if config_path else None
    state["applied_mtime"] = _mtime(applied_marker) if applied_marker else None
    state["service_active"] = None
    if service and not applied_marker:
        rc, stdout, _stderr = run(["systemctl", "is-active", service])
        state["service_active"] = rc == 0 and stdout.strip() == "active"
    return state


def provisioning(state: dict) -> tuple:
    """(was_provisioned, apply_pending) from a `runtime_state`: the runtime applied a configuration before (1.2+) or
    its daemon runs (1.1); the configuration on disk is newer than what it runs."""
    if state["applied_marker"]:
        applied = state["applied_mtime"]
        return applied is not None, applied is None or (state["config_mtime"] or 0) > applied
    if state["service"]:
        return bool(state["service_active"]), not state["service_active"]
    return False, False


# ---- The state read once before a run changes anything --------------------------------------------------------------
# The playbook's preflight reads each host's state in its one module run (iotedge_host_preflight); the action plugin of
# iotedge_host compares it with what a task wants, on the controller, and runs the module on the host only where
# something differs. Both sides compare with the functions above, so there is one rule for "differs".


def observe_path(path: str, digest: bool = False, key: str = ""):
    """A path as it is: kind (file, directory, other), owner and group names, mode, and with ``digest`` a file's
    `_digest` (keyed with ``key``); None when there is nothing at the path."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    kind = "directory" if stat.S_ISDIR(info.st_mode) else "file" if stat.S_ISREG(info.st_mode) else "other"
    observed = {
        "kind": kind,
        "owner": _user_name(info.st_uid),
        "group": _group_name(info.st_gid),
        "mode": stat.S_IMODE(info.st_mode),
    }
    if digest and kind == "file":
        observed["digest"] = _digest(_read(path) or b"", key)
    return observed


@dataclass
class Observed:
    """What to read: the paths, users, packages and runtime state that the later requests of a run will name."""

    directories: list = field(default_factory=list)
    files: list = field(default_factory=list)
    runtime_users: list = field(default_factory=list)
    packages: list = field(default_factory=list)
    config_path: str = ""
    applied_marker: str = ""
    service: str = ""
    # Keys the files' digests (HMAC-SHA256): the controller draws one per run and never shows it.
    digest_key: str = ""


def observe(observed: Observed, run) -> dict:
    """The state `unchanged_outcome` decides from: each directory and its parents, each file with its SHA-256, whether
    each user exists, each package's installed version, and `runtime_state`."""
    paths = {}
    for directory in observed.directories:
        for parent in parents(directory):
            paths.setdefault(parent, observe_path(parent))
        paths[directory] = observe_path(directory)
    for path in observed.files:
        paths[path] = observe_path(path, digest=True, key=observed.digest_key)
    return {
        "paths": paths,
        "users": {user: user_exists(user) for user in observed.runtime_users},
        "packages": installed_packages(observed.packages, run),
        "runtime": runtime_state(observed.config_path, observed.applied_marker, observed.service, run),
    }


def unchanged_outcome(request: Request, observation: dict, key: str = ""):
    """`converge`'s outcome for a host in the state `observe` read (its digests keyed with ``key``), when that state
    already is what the request wants and the runtime runs the configuration on disk; None when the host has to be
    converged (something differs, is pending, or was not read)."""
    try:
        check_packages(request)
    except HostStateError:
        return None  # the module run says what is wrong
    paths, users = observation.get("paths", {}), observation.get("users", {})
    if not all(users.get(user) for user in request.runtime_users):
        return None
    for directory in request.directories:
        if any(paths.get(parent) is None for parent in parents(directory.path)):
            return None
        observed = paths.get(directory.path)
        if observed is None or observed["kind"] != "directory":
            return None
        if metadata_differs(observed, directory.owner, directory.group, directory.mode):
            return None
    for wanted in request.files:
        observed = paths.get(wanted.path)
        if observed is None or observed["kind"] != "file":
            return None
        if not wanted.made_on_host and content_differs(wanted, observed.get("digest"), key):
            return None
        if metadata_differs(observed, wanted.owner, wanted.group, wanted.mode):
            return None
    if missing_packages(request.packages, observation.get("packages", {})):
        return None
    names = (request.config_path, request.applied_marker, request.service)
    if not any(names):
        return Outcome()
    runtime = observation.get("runtime", {})
    if (runtime.get("config_path"), runtime.get("applied_marker"), runtime.get("service")) != names:
        return None
    was_provisioned, apply_pending = provisioning(runtime)
    return None if apply_pending else Outcome(was_provisioned=was_provisioned)


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)
