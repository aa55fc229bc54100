"""The iotedge_host core on a real file system (tests run as root): directories, files, owners, modes, backups and
what the runtime applied, each read back from disk."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
import time
from pathlib import Path

import pytest

from ansible_collections.edgefleet.iotedge.plugins.module_utils import _iotedge_host
from ansible_collections.edgefleet.iotedge.plugins.module_utils._iotedge_host import (
    HostStateError,
    Request,
    WantedDirectory,
    WantedFile,
    converge,
    mode_value,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="sets owners: runs as root")

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


@pytest.mark.parametrize(
    ("text", "value"), [("0644", 0o644), ("600", 0o600), ("0", 0), ("8", None), ("0644\n", None), ("17777", None)]
)
def test_modes_are_octal_permission_bits(text, value):
    if value is None:
        with pytest.raises(HostStateError, match=r"files\[\]\.mode"):
            mode_value(text, "files[].mode")
    else:
        assert mode_value(text, "files[].mode") == value
