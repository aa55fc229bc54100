# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# PRIVATE to the edgefleet.iotedge collection. Do not use this from other collections:
# it may change at any time.

"""One pass over an edge host's identity files and runtime configuration: compare with what is wanted, change what
differs, and read whether the runtime applied what is on disk.

Runs on the managed host (Python 3.8+, standard library only) and never imports AnsibleModule. What a role used to do
in a dozen tasks (stat, getent, file, copy with backup, find, stat again) is one module run here, so a host that is
already right costs one round trip. Failures raise `HostStateError` with a message naming the variable to fix.
"""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass, field

ROOT = "root"
PARENT_MODE = 0o755


class HostStateError(Exception):
    """The host cannot be brought to the wanted state; the message says why and what to do."""


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
    # Debian packages and their pinned versions ('' for any): those not installed as asked are reported, not installed
    # (apt does that, with its cache and locks).
    packages: dict = field(default_factory=dict)
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
    """Bring the directories and files to what is wanted; ``run(argv) -> (rc, stdout, stderr)`` asks systemd."""
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
    return outcome


def packages_to_install(wanted: dict, run) -> list:
    """``name`` or ``name=version`` for each wanted package that is not installed, or not at its pinned version."""
    if not wanted:
        return []
    rc, stdout, _stderr = run(["dpkg-query", "--show", "--showformat", "${Package}\t${Status}\t${Version}\n", *wanted])
    installed = {}
    # dpkg-query exits 1 when a package is unknown, and still lists the others.
    for line in stdout.splitlines() if rc in (0, 1) else []:
        name, _tab, rest = line.partition("\t")
        status, _tab, version = rest.partition("\t")
        if status.endswith(" installed"):
            installed[name] = version
    return [
        name + (f"={version}" if version else "")
        for name, version in wanted.items()
        if name not in installed or (version and installed[name] != version)
    ]


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
    try:
        info = os.lstat(directory.path)
    except FileNotFoundError:
        info = None
    if info is not None and not stat.S_ISDIR(info.st_mode):
        raise HostStateError(
            f"{directory.variable or directory.path}: {directory.path} exists and is not a directory. Move it away or "
            "choose another directory."
        )
    if info is None:
        outcome.actions.append(f"create {directory.path} ({directory.owner}, {directory.mode:04o})")
        outcome.changed = True
        if not request.check_mode:
            os.mkdir(directory.path, directory.mode)
            _set_metadata(directory.path, uid, gid, directory.mode)
        return
    if _metadata_differs(info, uid, gid, directory.mode):
        outcome.actions.append(f"set {directory.path} to {directory.owner}:{directory.group} {directory.mode:04o}")
        outcome.changed = True
        if not request.check_mode:
            _set_metadata(directory.path, uid, gid, directory.mode)


def _metadata_differs(info, uid, gid, mode: int) -> bool:
    if uid is None:  # check mode, owner not created yet: it will differ
        return True
    return info.st_uid != uid or info.st_gid != gid or stat.S_IMODE(info.st_mode) != mode


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
    current = _read(wanted.path)
    content_differs = wanted.content is None or current is None or _digest(current) != _digest(wanted.content)
    if wanted.show_diff and content_differs:
        outcome.diff.append(
            {
                "before_header": wanted.path,
                "after_header": wanted.path,
                "before": _text(current),
                "after": _text(wanted.content) if wanted.content is not None else "(made by this run)\n",
            }
        )
    if content_differs:
        outcome.actions.append(f"write {wanted.path} ({wanted.owner}, {wanted.mode:04o})")
        outcome.changed = True
        if not request.check_mode:
            backup = _write(wanted, current is not None, uid, gid)
            if backup:
                outcome.backups.append(backup)
                _prune_backups(wanted.path, request.backups_kept)
        return
    if _metadata_differs(os.lstat(wanted.path), uid, gid, wanted.mode):
        outcome.actions.append(f"set {wanted.path} to {wanted.owner}:{wanted.group} {wanted.mode:04o}")
        outcome.changed = True
        if not request.check_mode:
            _set_metadata(wanted.path, uid, gid, wanted.mode)


def _digest(content: bytes) -> str:
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
    if request.applied_marker:
        applied = _mtime(request.applied_marker)
        outcome.was_provisioned = applied is not None
        outcome.apply_pending = applied is None or (previous_config_mtime or 0) > applied
    elif request.service:
        rc, stdout, _stderr = run(["systemctl", "is-active", request.service])
        outcome.was_provisioned = rc == 0 and stdout.strip() == "active"
        outcome.apply_pending = not outcome.was_provisioned
