"""The iotedge_host core on a real file system (tests run as root): directories, files, owners, modes, backups and
what the runtime applied, each read back from disk. Packages against a fake dpkg and apt-get (any user)."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import shutil
import stat
import tempfile
import time
from pathlib import Path

import pytest

from ansible_collections.edgefleet.iotedge.plugins.module_utils import _iotedge_host
from ansible_collections.edgefleet.iotedge.plugins.module_utils._iotedge_host import (
    APT_ENVIRONMENT,
    HostStateError,
    Observed,
    Request,
    WantedDirectory,
    WantedFile,
    converge,
    mode_value,
    observe,
    unchanged_outcome,
)

USER = "nobody"
GROUP = "nogroup"


def no_systemd(argv):
    raise AssertionError(f"unexpected command {argv}")


def owner_mode(path) -> tuple:
    info = os.stat(path)
    return info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)


def ids() -> tuple:
    import grp
    import pwd

    return pwd.getpwnam(USER).pw_uid, grp.getgrnam(GROUP).gr_gid


def request_for(root, config=b"mode = 1\n", **overrides) -> Request:
    fields = {
        "directories": [
            WantedDirectory(str(root / "var/aziot/certs"), USER, GROUP, 0o755, "edgefleet_iotedge_cert_dir"),
            WantedDirectory(str(root / "var/aziot/secrets"), USER, GROUP, 0o700, "edgefleet_iotedge_secrets_dir"),
        ],
        "files": [
            WantedFile(str(root / "var/aziot/certs/device-id.pem"), USER, GROUP, 0o644, b"CERT\n"),
            WantedFile(str(root / "var/aziot/secrets/device-id.key.pem"), USER, GROUP, 0o600, b"KEY\n"),
            WantedFile(str(root / "etc/config.toml"), "root", "root", 0o600, config, backup=True, show_diff=True),
        ],
        "runtime_users": [USER],
        "config_path": str(root / "etc/config.toml"),
        "applied_marker": str(root / "etc/applied.toml"),
    }
    fields.update(overrides)
    return Request(**fields)


@pytest.fixture
def root():
    if os.geteuid() != 0:
        pytest.skip("sets owners: runs as root")
    # Under /var/tmp, not pytest's tmp_path: its parents are 0700, which the core rightly refuses.
    path = Path(tempfile.mkdtemp(prefix="edgefleet-iotedge-host-", dir="/var/tmp"))
    os.chmod(path, 0o755)
    (path / "etc").mkdir()
    yield path
    shutil.rmtree(path)


def test_a_fresh_host_gets_everything_and_a_second_pass_changes_nothing(root):
    outcome = converge(request_for(root), no_systemd)
    uid, gid = ids()
    assert outcome.changed
    assert owner_mode(root / "var") == (0, 0, 0o755)
    assert owner_mode(root / "var/aziot") == (0, 0, 0o755)
    assert owner_mode(root / "var/aziot/certs") == (uid, gid, 0o755)
    assert owner_mode(root / "var/aziot/secrets") == (uid, gid, 0o700)
    assert owner_mode(root / "var/aziot/secrets/device-id.key.pem") == (uid, gid, 0o600)
    assert (root / "var/aziot/secrets/device-id.key.pem").read_bytes() == b"KEY\n"
    assert owner_mode(root / "etc/config.toml") == (0, 0, 0o600)
    # Nothing applied yet: the runtime was never provisioned and the configuration waits for its apply.
    assert (outcome.was_provisioned, outcome.apply_pending) == (False, True)
    assert outcome.backups == [] and not list((root / "etc").glob("*~"))
    assert [d["before"] for d in outcome.diff] == [""]

    again = converge(request_for(root), no_systemd)
    assert (again.changed, again.actions, again.diff) == (False, [], [])


def test_only_what_differs_changes_and_a_new_configuration_is_backed_up(root):
    converge(request_for(root), no_systemd)
    key = root / "var/aziot/secrets/device-id.key.pem"
    inode = os.stat(key).st_ino
    os.chmod(key, 0o644)
    (root / "etc/applied.toml").write_text("applied")

    outcome = converge(request_for(root, config=b"mode = 2\n"), no_systemd)
    assert outcome.actions == [f"set {key} to {USER}:{GROUP} 0600", f"write {root}/etc/config.toml (root, 0600)"]
    assert os.stat(key).st_ino == inode and owner_mode(key)[2] == 0o600  # metadata only: not rewritten
    assert [os.path.basename(b) for b in outcome.backups] == [p.name for p in (root / "etc").glob("config.toml.*~")]
    assert Path(outcome.backups[0]).read_bytes() == b"mode = 1\n"
    assert (root / "etc/config.toml").read_bytes() == b"mode = 2\n"
    assert outcome.diff == [
        {
            "before_header": f"{root}/etc/config.toml",
            "after_header": f"{root}/etc/config.toml",
            "before": "mode = 1\n",
            "after": "mode = 2\n",
        }
    ]
    assert outcome.was_provisioned


def test_only_the_newest_backups_stay(root, monkeypatch):
    converge(request_for(root), no_systemd)
    stamps = iter(range(10))
    monkeypatch.setattr(_iotedge_host.time, "strftime", lambda _format: f"2026-11-30@00:00:0{next(stamps)}")
    for value in range(2, 6):
        converge(request_for(root, config=f"mode = {value}\n".encode(), backups_kept=2), no_systemd)
        time.sleep(0.01)  # distinct mtimes
    kept = sorted((root / "etc").glob("config.toml.*~"))
    assert [path.read_text() for path in kept] == ["mode = 3\n", "mode = 4\n"]


def test_check_mode_predicts_and_writes_nothing(root):
    outcome = converge(request_for(root, check_mode=True), no_systemd)
    assert outcome.changed and len(outcome.actions) == 7
    assert not (root / "var").exists() and not (root / "etc/config.toml").exists()
    assert outcome.diff[0]["after"] == "mode = 1\n"


def test_check_mode_on_a_host_without_the_runtime_predicts_unknown_content(root):
    files = [WantedFile(str(root / "etc/device-id.pem"), "aziotcs-absent", "aziotcs-absent", 0o644, None)]
    request = request_for(root, files=files, directories=[], runtime_users=["aziotcs-absent"], check_mode=True)
    outcome = converge(request, no_systemd)
    assert (outcome.changed, outcome.runtime_installed) == (True, False)
    with pytest.raises(HostStateError, match=r"No user aziotcs-absent on this host: .* install phase"):
        converge(request_for(root, files=files, directories=[], runtime_users=["aziotcs-absent"]), no_systemd)


def test_a_parent_the_runtime_cannot_enter_is_refused_before_any_change(root):
    (root / "var").mkdir(mode=0o700)
    os.chmod(root / "var", 0o700)
    with pytest.raises(HostStateError) as raised:
        converge(request_for(root), no_systemd)
    message = str(raised.value)
    assert message.startswith(f"edgefleet_iotedge_cert_dir: {root}/var is not a directory others can enter (mode 0700)")
    assert f"so {USER} could not read" in message and f"chmod o+x {root}/var" in message
    assert list((root / "var").iterdir()) == [] and not (root / "etc/config.toml").exists()
    # The preflight reports the same and never writes.
    with pytest.raises(HostStateError, match="edgefleet_iotedge_cert_dir"):
        converge(request_for(root, preflight=True), no_systemd)


def test_a_failed_backup_leaves_the_file_in_use_and_no_partial_backup(root, monkeypatch):
    converge(request_for(root), no_systemd)

    def disk_full(source, target):
        open(target, "wb").close()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(_iotedge_host.shutil, "copy2", disk_full)
    with pytest.raises(HostStateError) as raised:
        converge(request_for(root, config=b"mode = 2\n"), no_systemd)
    assert f"could not write {root}/etc/config.toml" in str(raised.value)
    assert "No space left on device" in str(raised.value) and "the empty backup file was removed" in str(raised.value)
    assert (root / "etc/config.toml").read_bytes() == b"mode = 1\n"
    assert sorted(path.name for path in (root / "etc").iterdir()) == ["config.toml"]


def test_a_failed_write_leaves_the_file_in_use_and_removes_its_temporary(root, monkeypatch):
    converge(request_for(root), no_systemd)

    def failing_disk(_descriptor):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(_iotedge_host.os, "fsync", failing_disk)
    with pytest.raises(HostStateError, match="its backup was removed"):
        converge(request_for(root, config=b"mode = 2\n"), no_systemd)
    assert sorted(path.name for path in (root / "etc").iterdir()) == ["config.toml"]


def device_made_key(root, **overrides) -> WantedFile:
    fields = {"content": None, "made_on_host": True, "variable": "edgefleet_identity_key_origin"}
    fields.update(overrides)
    return WantedFile(str(root / "var/aziot/secrets/device-id.key.pem"), USER, GROUP, 0o600, **fields)


def test_a_key_made_on_the_host_is_handed_to_its_owner_and_never_written(root):
    secrets = root / "var/aziot/secrets"
    secrets.mkdir(parents=True, mode=0o700)
    key = secrets / "device-id.key.pem"
    key.write_bytes(b"DEVICE KEY\n")
    os.chmod(key, 0o640)
    files = [
        WantedFile(str(root / "var/aziot/certs/device-id.pem"), USER, GROUP, 0o644, b"CERT\n"),
        device_made_key(root),
    ]
    outcome = converge(request_for(root, files=files), no_systemd)
    assert f"set {key} to {USER}:{GROUP} 0600" in outcome.actions
    assert owner_mode(key) == (*ids(), 0o600) and key.read_bytes() == b"DEVICE KEY\n"
    again = converge(request_for(root, files=files), no_systemd)
    assert (again.changed, again.actions) == (False, [])
    (root / "etc/config.toml").write_bytes(b"mode = 1\n")
    (root / "etc/applied.toml").write_text("applied")
    decided = unchanged_outcome(request_for(root, files=files), observed_state(request_for(root, files=files)), KEY)
    assert decided is not None and decided.changed is False


def test_a_missing_key_made_on_the_host_names_the_variable_and_is_predicted_in_check_mode(root):
    files = [device_made_key(root)]
    predicted = converge(request_for(root, files=files, check_mode=True), no_systemd)
    assert predicted.changed and not (root / "var").exists()
    with pytest.raises(
        HostStateError, match=r"edgefleet_identity_key_origin: .* is missing\. It is made on the device"
    ):
        converge(request_for(root, files=files), no_systemd)


def test_a_configuration_newer_than_what_was_applied_is_pending(root):
    converge(request_for(root), no_systemd)
    marker = root / "etc/applied.toml"
    marker.write_text("applied")
    os.utime(marker, (1, 1))
    outcome = converge(request_for(root), no_systemd)
    assert (outcome.changed, outcome.was_provisioned, outcome.apply_pending) == (False, True, True)
    os.utime(marker)
    assert converge(request_for(root), no_systemd).apply_pending is False


@pytest.mark.parametrize(("answer", "provisioned"), [((0, "active\n", ""), True), ((3, "inactive\n", ""), False)])
def test_the_1_1_daemon_tells_whether_the_configuration_runs(root, answer, provisioned):
    asked = []
    outcome = converge(
        request_for(root, applied_marker="", service="iotedge"), lambda argv: asked.append(argv) or answer
    )
    assert asked == [["systemctl", "is-active", "iotedge"]]
    assert (outcome.was_provisioned, outcome.apply_pending) == (provisioned, not provisioned)


def test_a_file_where_a_directory_belongs_is_refused(root):
    (root / "var/aziot").mkdir(parents=True)
    (root / "var/aziot/certs").write_text("")
    with pytest.raises(HostStateError, match=r"edgefleet_iotedge_cert_dir: .* exists and is not a directory"):
        converge(request_for(root), no_systemd)


KEY = "Key-Of-This-Run-7431"


def observed_state(request: Request, run=no_systemd, key: str = KEY) -> dict:
    """What the host check reads for the paths, users, packages and runtime a request names (digests keyed with this
    run's key), through JSON as it travels to the controller."""
    wanted = Observed(
        digest_key=key,
        directories=[directory.path for directory in request.directories],
        files=[wanted.path for wanted in request.files],
        runtime_users=request.runtime_users,
        packages=list(request.packages),
        config_path=request.config_path,
        applied_marker=request.applied_marker,
        service=request.service,
    )
    return json.loads(json.dumps(observe(wanted, run)))


def converged_and_applied(root) -> None:
    converge(request_for(root), no_systemd)
    (root / "etc/applied.toml").write_text("applied")


def test_a_host_already_right_is_decided_from_its_observation_as_a_module_run_would(root):
    converged_and_applied(root)
    decided = unchanged_outcome(request_for(root), observed_state(request_for(root)), KEY)
    assert decided is not None
    assert decided.to_result() == converge(request_for(root), no_systemd).to_result()
    assert (decided.changed, decided.was_provisioned, decided.apply_pending) == (False, True, False)


def differ_in_content(root):
    return request_for(root, config=b"mode = 2\n")


def differ_in_mode(root):
    os.chmod(root / "var/aziot/secrets/device-id.key.pem", 0o644)


def differ_in_owner(root):
    os.chown(root / "var/aziot/certs/device-id.pem", 0, 0)


def lose_a_directory(root):
    shutil.rmtree(root / "var/aziot/secrets")


def leave_the_configuration_unapplied(root):
    os.utime(root / "etc/applied.toml", (1, 1))


def without_the_runtime(root):
    return request_for(root, runtime_users=["aziotcs-absent"])


def with_unknown_content(root):
    files = [WantedFile(str(root / "var/aziot/certs/device-id.pem"), USER, GROUP, 0o644, None)]
    return request_for(root, files=files)


@pytest.mark.parametrize(
    "difference",
    [
        differ_in_content,
        differ_in_mode,
        differ_in_owner,
        lose_a_directory,
        leave_the_configuration_unapplied,
        without_the_runtime,
        with_unknown_content,
    ],
)
def test_any_difference_or_pending_apply_leaves_the_decision_to_a_module_run(root, difference):
    converged_and_applied(root)
    request = difference(root) or request_for(root)
    assert unchanged_outcome(request, observed_state(request), KEY) is None
    # And the module run, reading the host itself, finds it too.
    outcome = converge(dataclasses.replace(request, check_mode=True), no_systemd)
    assert outcome.changed or outcome.apply_pending or not outcome.runtime_installed


def test_the_digests_are_keyed_and_another_key_decides_nothing(root):
    converged_and_applied(root)
    request = request_for(root)
    observed = observed_state(request)
    config = (root / "etc/config.toml").read_bytes()
    assert observed["paths"][str(root / "etc/config.toml")]["digest"] != hashlib.sha256(config).hexdigest()
    assert unchanged_outcome(request, observed, KEY) is not None
    assert unchanged_outcome(request, observed, "another key") is None
    assert unchanged_outcome(request, observed) is None


def test_an_observation_that_does_not_cover_the_request_decides_nothing(root):
    converged_and_applied(root)
    request = request_for(root)
    without_files = observed_state(request_for(root, files=[]))
    assert unchanged_outcome(request, without_files) is None
    other_runtime = observed_state(request_for(root, applied_marker=str(root / "etc/other.toml")))
    assert unchanged_outcome(request, other_runtime, KEY) is None
    # A request that names no runtime (the install phase's) needs none.
    assert unchanged_outcome(request_for(root, config_path="", applied_marker=""), without_files) is None
    files_only = request_for(root, directories=[], runtime_users=[], config_path="", applied_marker="")
    assert unchanged_outcome(files_only, observed_state(request), KEY).to_result()["was_provisioned"] is False


@pytest.mark.parametrize(
    ("text", "value"), [("0644", 0o644), ("600", 0o600), ("0", 0), ("8", None), ("0644\n", None), ("17777", None)]
)
def test_modes_are_octal_permission_bits(text, value):
    if value is None:
        with pytest.raises(HostStateError, match=r"files\[\]\.mode"):
            mode_value(text, "files[].mode")
    else:
        assert mode_value(text, "files[].mode") == value


# ---- packages: dpkg-query and apt-get, faked ------------------------------------------------------------------------

APT_INSTALL = [
    "apt-get",
    "install",
    "-y",
    "-q",
    "-o",
    "Dpkg::Options::=--force-confdef",
    "-o",
    "Dpkg::Options::=--force-confold",
    "-o",
    "DPkg::Lock::Timeout=60",
]
RUNTIME = {"moby-engine": "", "aziot-edge": "1.5.44-1", "aziot-identity-service": "1.5.6-1"}


class FakeApt:
    """dpkg's database and an apt repository: apt-get install sets the asked versions (and the repository's
    dependencies); every command is recorded with the environment it was given."""

    def __init__(
        self, installed=None, repository=None, depends=None, failures=None, update_stderr="", unknown_until_update=()
    ):
        self.installed = dict(installed or {"adduser": "3.134", "base-files": "12.4"})
        self.repository = repository or {"moby-engine": "25.0.0-1", "aziot-edge": "1.5.44-1"}
        self.repository.setdefault("aziot-identity-service", "1.5.6-1")
        self.depends = depends or {}
        self.failures = failures or {}  # first argument after apt-get -> (rc, stdout, stderr)
        self.update_stderr = update_stderr
        # Packages the cache lacks until an apt-get update (a sources list written by a run stopped before its update).
        self.unknown_until_update = set(unknown_until_update)
        self.commands = []

    def __call__(self, argv, environ_update=None):
        self.commands.append((list(argv), environ_update))
        if argv[0] == "dpkg-query":
            return self._query(argv[4:], argv[3])
        assert argv[0] == "apt-get" and environ_update == APT_ENVIRONMENT, argv
        failure = self.failures.get(argv[1]) or self.failures.get(
            tuple(argv[argv.index("--") + 1 :]) if "--" in argv else None
        )
        if failure:
            return failure
        if argv[1] == "update":
            self.unknown_until_update.clear()
            return 0, "Reading package lists...\n", self.update_stderr
        for spec in argv[argv.index("--") + 1 :]:
            name, _eq, version = spec.partition("=")
            if name in self.unknown_until_update:
                return 100, "Reading package lists...\n", f"E: Unable to locate package {name}\n"
            wanted = version or self.repository[name]
            if self.installed.get(name, wanted) > wanted and "--allow-downgrades" not in argv:
                return 100, "", "E: Packages were downgraded and -y was used without --allow-downgrades.\n"
            self.installed[name] = wanted
            for dependency in self.depends.get(name, []):
                self.installed.setdefault(dependency, self.repository[dependency])
        return 0, "Setting up ...\n", ""

    def _query(self, names, showformat):
        rows = [(name, version) for name, version in self.installed.items() if not names or name in names]
        assert showformat.startswith("${Package}" if names else "${binary:Package}")
        stdout = "".join(f"{name}\tinstall ok installed\t{version}\n" for name, version in rows)
        return (1 if set(names) - set(self.installed) else 0), stdout, ""

    def apt_commands(self):
        return [argv for argv, _environment in self.commands if argv[0] == "apt-get"]


@pytest.fixture
def apt_cache(tmp_path, monkeypatch):
    """The cache's lists directory and success stamp, fresh (one Packages file, modified now)."""
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages").write_text("")
    monkeypatch.setattr(_iotedge_host, "APT_LISTS_PATH", str(lists))
    monkeypatch.setattr(_iotedge_host, "APT_UPDATE_SUCCESS_STAMP_PATH", str(tmp_path / "update-success-stamp"))
    return lists


def age(path, seconds):
    stamp = time.time() - seconds
    os.utime(path, (stamp, stamp))


def install(packages=None, **overrides) -> Request:
    return Request(packages=dict(RUNTIME if packages is None else packages), install=True, **overrides)


def test_a_fresh_cache_is_not_updated_and_only_missing_packages_are_installed_container_engine_first(apt_cache):
    apt = FakeApt(
        installed={"adduser": "3.134", "aziot-identity-service": "1.5.6-1"},
        repository={"moby-engine": "25.0.0-1", "aziot-edge": "1.5.44-1", "hostname": "3.23"},
        depends={"aziot-edge": ["hostname"]},
    )
    outcome = converge(install(install_first=["moby-engine"]), apt)
    # Pinned as name=version, in two runs: the engine first; the installed identity service is not passed to apt.
    assert apt.apt_commands() == [[*APT_INSTALL, "--", "moby-engine"], [*APT_INSTALL, "--", "aziot-edge=1.5.44-1"]]
    assert outcome.packages_to_install == ["moby-engine", "aziot-edge=1.5.44-1"]
    assert (outcome.changed, outcome.cache_updated) == (True, False)
    assert outcome.actions == ["install moby-engine", "install aziot-edge=1.5.44-1"]
    # What dpkg shows changed, dependencies too, with the version each had before.
    assert outcome.installed == [
        {"name": "aziot-edge", "version": "1.5.44-1", "previous_version": ""},
        {"name": "hostname", "version": "3.23", "previous_version": ""},
        {"name": "moby-engine", "version": "25.0.0-1", "previous_version": ""},
    ]
    assert outcome.removed == []
    assert outcome.to_result()["installed"] == outcome.installed


def test_nothing_to_install_runs_no_apt_and_changes_nothing(apt_cache):
    age(apt_cache, 10 * 86400)  # even a stale cache is left alone
    apt = FakeApt(installed={"moby-engine": "24.0.9-1", **{k: v for k, v in RUNTIME.items() if v}})
    outcome = converge(install(), apt)
    assert apt.apt_commands() == []
    assert [argv[0] for argv, _env in apt.commands] == ["dpkg-query"]
    assert (outcome.changed, outcome.actions, outcome.installed, outcome.cache_updated) == (False, [], [], False)


def test_a_stale_cache_is_updated_once_before_the_first_install(apt_cache):
    age(apt_cache, 3601)
    apt = FakeApt()
    outcome = converge(install(install_first=["moby-engine"]), apt)
    assert [argv[:2] for argv in apt.apt_commands()] == [
        ["apt-get", "update"],
        ["apt-get", "install"],
        ["apt-get", "install"],
    ]
    assert apt.apt_commands()[0] == ["apt-get", "update", "-q"]
    assert outcome.cache_updated and outcome.actions[0] == "update the apt cache"


@pytest.mark.parametrize(
    ("apt_update", "cache_age", "valid_time", "updated"),
    [
        ("if_stale", 100, 3600, False),
        ("if_stale", 100, 60, True),
        ("if_stale", 100, 0, True),
        ("always", 0, 3600, True),  # the sources changed: a fresh cache does not know the new repository
        ("never", 10 * 86400, 3600, False),
    ],
)
def test_the_cache_refresh_follows_apt_update_and_the_cache_age(apt_cache, apt_update, cache_age, valid_time, updated):
    age(apt_cache, cache_age)
    apt = FakeApt()
    outcome = converge(install(apt_update=apt_update, apt_cache_valid_time=valid_time), apt)
    assert (["apt-get", "update", "-q"] in apt.apt_commands()) is updated
    assert outcome.cache_updated is updated


def test_the_success_stamp_decides_the_age_before_the_lists_directory(apt_cache, tmp_path):
    # As ansible.builtin.apt reads it: a fresh stamp wins over an old directory, and an old stamp over a new one.
    stamp = tmp_path / "update-success-stamp"
    stamp.write_text("")
    age(apt_cache, 10 * 86400)
    apt = FakeApt()
    converge(install(), apt)
    assert ["apt-get", "update", "-q"] not in apt.apt_commands()
    age(stamp, 10 * 86400)
    os.utime(apt_cache)
    apt = FakeApt()
    converge(install(), apt)
    assert apt.apt_commands()[0] == ["apt-get", "update", "-q"]


def test_a_cache_without_package_lists_is_updated_however_young(apt_cache):
    # A minimal image that removed /var/lib/apt/lists/*: the directory is new, apt knows no package.
    for entry in apt_cache.iterdir():
        entry.unlink()
    apt = FakeApt()
    assert converge(install(), apt).cache_updated
    assert apt.apt_commands()[0] == ["apt-get", "update", "-q"]


def test_apt_update_warnings_are_returned(apt_cache):
    age(apt_cache, 86400)
    warning = "W: Failed to fetch http://deb.debian.org/debian/dists/bookworm/InRelease  Temporary failure resolving"
    apt = FakeApt(update_stderr=f"{warning}\nW: Some index files failed to download.\n")
    outcome = converge(install(), apt)
    assert outcome.warnings == [f"apt-get update: {warning}", "apt-get update: W: Some index files failed to download."]


def test_a_pin_older_than_the_installed_version_needs_allow_downgrade(apt_cache):
    installed = {"moby-engine": "25.0.0-1", "aziot-edge": "1.5.45-1", "aziot-identity-service": "1.5.6-1"}
    apt = FakeApt(installed=installed)
    with pytest.raises(HostStateError) as raised:
        converge(install(), apt)
    message = str(raised.value)
    assert message.startswith(
        "apt-get install failed (rc 100): E: Packages were downgraded and -y was used without --allow-downgrades. "
        "Command: apt-get install -y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "
        "-o DPkg::Lock::Timeout=60 -- aziot-edge=1.5.44-1."
    )
    assert "set allow_downgrade" in message and "Traceback" not in message

    apt = FakeApt(installed=installed)
    outcome = converge(install(allow_downgrade=True), apt)
    assert apt.apt_commands() == [[*APT_INSTALL, "--allow-downgrades", "--", "aziot-edge=1.5.44-1"]]
    assert outcome.installed == [{"name": "aziot-edge", "version": "1.5.44-1", "previous_version": "1.5.45-1"}]


def test_a_failing_apt_get_names_its_last_lines_the_command_and_what_an_earlier_run_installed(apt_cache):
    stderr = "".join(f"line {number}\n" for number in range(1, 8)) + "E: Version '9.9' for 'aziot-edge' was not found\n"
    apt = FakeApt(failures={("aziot-edge=9.9",): (100, "Reading package lists...\n", stderr)})
    packages = {"moby-engine": "", "aziot-edge": "9.9"}
    with pytest.raises(HostStateError) as raised:
        converge(install(packages, install_first=["moby-engine"]), apt)
    message = str(raised.value)
    # The cache was fresh by its age: apt-get update ran once before the second, final attempt.
    assert message == (
        "apt-get install failed (rc 100): line 5 line 6 line 7 E: Version '9.9' for 'aziot-edge' was not found. "
        f"Command: {' '.join(APT_INSTALL)} -- aziot-edge=9.9. Check that the repository serves it (apt-cache policy "
        "aziot-edge). Done before the failure: moby-engine 25.0.0-1 installed."
    )
    assert [argv[1] for argv in apt.apt_commands()] == ["install", "install", "update", "install"]


def test_a_package_missing_from_a_cache_fresh_by_its_age_is_installed_after_one_update(apt_cache):
    # A run wrote the sources list and lost the host before its apt-get update; the re-run's cache looks fresh.
    apt = FakeApt(unknown_until_update={"moby-engine", "aziot-edge"})
    outcome = converge(install(install_first=["moby-engine"]), apt)
    assert [argv[1] for argv in apt.apt_commands()] == ["install", "update", "install", "install"]
    assert outcome.cache_updated
    assert outcome.actions[:2] == ["update the apt cache", "install moby-engine"]
    assert {item["name"] for item in outcome.installed} >= {"moby-engine", "aziot-edge", "aziot-identity-service"}


def test_with_apt_update_never_a_package_missing_from_the_cache_fails_and_says_so(apt_cache):
    apt = FakeApt(unknown_until_update={"moby-engine"})
    with pytest.raises(HostStateError, match=r"Unable to locate package moby-engine.*apt_update is never\)\.$"):
        converge(install(install_first=["moby-engine"], apt_update="never"), apt)
    assert [argv[1] for argv in apt.apt_commands()] == ["install"]


def test_a_failing_apt_get_update_stops_before_any_install(apt_cache):
    apt = FakeApt(
        failures={"update": (100, "", "E: The repository 'http://127.0.0.1:18480 ./ Release' is not signed.\n")}
    )
    with pytest.raises(
        HostStateError, match=r"^apt-get update failed \(rc 100\): E: The repository .* Command: apt-get update -q\.$"
    ):
        converge(install(apt_update="always"), apt)
    assert [argv[:2] for argv in apt.apt_commands()] == [["apt-get", "update"]]


def test_apt_that_succeeds_without_installing_the_pin_is_an_error(apt_cache):
    apt = FakeApt(failures={("aziot-edge=1.5.44-1",): (0, "", "")})
    with pytest.raises(HostStateError, match=r"dpkg does not show aziot-edge=1\.5\.44-1 installed as asked"):
        converge(install({"aziot-edge": "1.5.44-1"}), apt)


def test_check_mode_predicts_the_install_and_runs_only_dpkg_query(apt_cache):
    age(apt_cache, 86400)
    apt = FakeApt()
    outcome = converge(install(install_first=["moby-engine"], check_mode=True), apt)
    assert [argv for argv, _env in apt.commands if argv[0] != "dpkg-query"] == []
    assert len(apt.commands) == 1  # the comparison only
    assert outcome.changed and outcome.cache_updated
    assert outcome.actions == [
        "update the apt cache",
        "install moby-engine",
        "install aziot-edge=1.5.44-1, aziot-identity-service=1.5.6-1",
    ]
    assert outcome.packages_to_install == ["moby-engine", "aziot-edge=1.5.44-1", "aziot-identity-service=1.5.6-1"]
    assert (outcome.installed, apt.installed) == ([], {"adduser": "3.134", "base-files": "12.4"})


def test_without_install_packages_are_only_compared(apt_cache):
    apt = FakeApt()
    outcome = converge(Request(packages=dict(RUNTIME)), apt)
    assert apt.apt_commands() == [] and not outcome.changed
    assert outcome.packages_to_install == ["moby-engine", "aziot-edge=1.5.44-1", "aziot-identity-service=1.5.6-1"]


@pytest.mark.parametrize(
    ("request_fields", "message"),
    [
        ({"packages": {"-oAPT::Get::Foo=1": ""}}, r"packages: '-oAPT::Get::Foo=1' is not a Debian package name"),
        ({"packages": {"Aziot-Edge": ""}}, "not a Debian package name"),
        ({"packages": {"aziot-edge": "1.5 -y"}}, r"packages: aziot-edge: '1\.5 -y' is not an apt version string"),
        ({"packages": {"aziot-edge": ""}, "install_first": ["moby-engine"]}, "install_first: moby-engine not in"),
        ({"apt_update": "sometimes"}, "apt_update: 'sometimes' is not one of if_stale, always, never"),
        ({"apt_cache_valid_time": -1}, "apt_cache_valid_time: must be 0 or more seconds"),
    ],
)
def test_package_names_pins_and_apt_options_are_refused_before_anything_runs(request_fields, message):
    apt = FakeApt()
    with pytest.raises(HostStateError, match=message):
        converge(Request(install=True, **request_fields), apt)
    assert apt.commands == []


LAB_SOURCES = "# Managed by Ansible\ndeb [trusted=yes] http://127.0.0.1:18480/ ./\n"
ONE_REPOSITORY_UPDATE = [
    "apt-get",
    "update",
    "-q",
    "-o",
    "Dir::Etc::sourcelist={}",
    "-o",
    "Dir::Etc::sourceparts=-",
    "-o",
    "APT::Get::List-Cleanup=0",
]


@pytest.fixture
def sources(apt_cache, tmp_path, monkeypatch):
    """A sources list of the lab's flat repository, older than everything else, and no list of it yet. A list's
    write time (its ctime, which a test cannot set back) is read from its mtime here."""
    monkeypatch.setattr(_iotedge_host, "list_written", lambda info: info.st_mtime)
    path = tmp_path / "edgefleet-iotedge.list"
    path.write_text(LAB_SOURCES)
    age(path, 86400)
    return path


def one_repository_update(path) -> list:
    return [part.format(path) for part in ONE_REPOSITORY_UPDATE]


@pytest.mark.parametrize(
    ("line", "prefix"),
    [
        ("deb [trusted=yes] http://127.0.0.1:18480/ ./", "127.0.0.1:18480_._"),
        ("deb http://deb.debian.org/debian bookworm main", "deb.debian.org_debian_dists_bookworm_"),
        (
            "deb [arch=amd64 signed-by=/etc/apt/keyrings/k.asc] https://packages.microsoft.com/debian/12/prod/ "
            "bookworm main",
            "packages.microsoft.com_debian_12_prod_dists_bookworm_",
        ),
        (
            "deb https://user:secret@mirror.example:8443/my_repo/ stable/ # flat",
            "mirror.example:8443_my%5frepo_stable_",
        ),
        ("deb file:/srv/repo ./", "_srv_repo_._"),
        ("deb-src http://deb.debian.org/debian bookworm main", None),
        ("# deb http://deb.debian.org/debian bookworm main", None),
    ],
)
def test_list_names_follow_apts_uri_to_file_name(line, prefix):
    assert _iotedge_host.list_prefixes(line.encode()) == ((prefix,) if prefix else ())


def test_one_sources_list_every_update_refreshes_only_its_repository(apt_cache, sources):
    apt = FakeApt(unknown_until_update={"aziot-edge"})
    outcome = converge(install(install_first=["moby-engine"], apt_update_sources=str(sources)), apt)
    # No list of the repository yet: refreshed before the first install, with the other lists kept.
    assert apt.apt_commands()[0] == one_repository_update(sources)
    assert [argv[1] for argv in apt.apt_commands()] == ["update", "install", "install"]
    assert outcome.cache_updated

    # The one-time refresh when a package is missing from a cache fresh by its age reads the same list.
    (apt_cache / "127.0.0.1:18480_._Packages").write_text("")
    apt = FakeApt(unknown_until_update={"aziot-edge"})
    converge(install(apt_update_sources=str(sources)), apt)
    assert [argv[1] for argv in apt.apt_commands()] == ["install", "update", "install"]
    assert apt.apt_commands()[1] == one_repository_update(sources)

    apt = FakeApt()
    converge(install(apt_update="always", apt_update_sources=str(sources)), apt)
    assert apt.apt_commands()[0] == one_repository_update(sources)


@pytest.mark.parametrize(
    ("repository_list_age", "sources_age", "valid_time", "updated"),
    [
        (None, 86400, 3600, True),  # no list of the repository: the other lists' age does not count
        (100, 86400, 3600, False),
        (7200, 86400, 3600, True),
        (100, 10, 3600, True),  # the sources list changed after its lists were fetched
    ],
)
def test_one_sources_list_the_cache_age_is_that_of_its_repositorys_lists(
    apt_cache, sources, repository_list_age, sources_age, valid_time, updated
):
    # The distribution's lists are fresh (and the directory too): they must not decide.
    if repository_list_age is not None:
        listed = apt_cache / "127.0.0.1:18480_._Packages"
        listed.write_text("")
        age(listed, repository_list_age)
        (apt_cache / "127.0.0.1:18480_._Release").write_text("")
        age(apt_cache / "127.0.0.1:18480_._Release", repository_list_age + 50)
    age(sources, sources_age)
    os.utime(apt_cache)
    apt = FakeApt()
    outcome = converge(install(apt_update_sources=str(sources), apt_cache_valid_time=valid_time), apt)
    assert (one_repository_update(sources) in apt.apt_commands()) is updated
    assert outcome.cache_updated is updated
    assert ["apt-get", "update", "-q"] not in apt.apt_commands()


def test_an_old_distribution_list_does_not_make_the_repository_stale(apt_cache, sources):
    for entry in apt_cache.iterdir():
        age(entry, 10 * 86400)
    (apt_cache / "127.0.0.1:18480_._Packages").write_text("")
    apt = FakeApt()
    assert not converge(install(apt_update_sources=str(sources)), apt).cache_updated
    assert [argv[1] for argv in apt.apt_commands()] == ["install"]


def test_a_relative_sources_list_is_refused_before_anything_runs(apt_cache):
    apt = FakeApt()
    with pytest.raises(HostStateError, match=r"apt_update_sources: 'edgefleet\.list' is not an absolute path"):
        converge(install(apt_update_sources="edgefleet.list"), apt)
    assert apt.commands == []


def test_packages_at_their_pins_are_decided_from_the_observation_and_a_missing_or_other_version_is_not(apt_cache):
    apt = FakeApt(installed={"moby-engine": "25.0.0-1", "aziot-edge": "1.5.44-1", "aziot-identity-service": "1.5.6-1"})
    request = Request(packages=dict(RUNTIME))
    observed = observed_state(request, apt)
    assert observed["packages"] == {
        "moby-engine": "25.0.0-1",
        "aziot-edge": "1.5.44-1",
        "aziot-identity-service": "1.5.6-1",
    }
    assert unchanged_outcome(request, observed).to_result()["packages_to_install"] == []
    assert unchanged_outcome(Request(packages={**RUNTIME, "aziot-edge": "1.5.45-1"}), observed) is None
    assert unchanged_outcome(Request(packages={**RUNTIME, "aziot-keys-extra": ""}), observed) is None
    apt.installed.pop("moby-engine")
    assert observed_state(request, apt)["packages"]["moby-engine"] is None
    assert unchanged_outcome(request, observed_state(request, apt)) is None
    # A request the module would refuse is left to it.
    assert unchanged_outcome(Request(packages={"-oAPT::X=1": ""}), observed) is None
