"""The lab command's pure parts: mirror discovery, host seeding, naming, inventory (no podman needed)."""

from __future__ import annotations

import io
import tarfile
import threading
import time
from pathlib import Path

import yaml

from lab.fleet import image
from lab.fleet.hosts import HostSpec, generate_key, host_files, seed_digest, seed_tar
from lab.fleet.image import DEFAULT_MIRROR, debian_mirror, ensure_base_image, image_reference
from lab.fleet.lab import Lab, LabConfig


def test_the_mirror_comes_from_this_machines_apt_sources(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    assert debian_mirror(tmp_path) == DEFAULT_MIRROR
    (tmp_path / "sources.list").write_text("deb [arch=amd64] http://mirror.example/debian bookworm main\n")
    assert debian_mirror(tmp_path) == "http://mirror.example/debian"
    (tmp_path / "sources.list.d/debian.sources").write_text(
        "Types: deb\nURIs: http://deb822.example/debian\nSuites: bookworm\n\n"
    )
    assert debian_mirror(tmp_path) == "http://deb822.example/debian"


def test_the_image_tag_follows_the_recipe():
    assert image_reference().startswith("localhost/edgefleet-lab-base:")
    assert image_reference() == image_reference()


class StoreWithoutTheImage:
    """podman's image store as ensure_base_image sees it: empty until a build imports the image."""

    def __init__(self):
        self.images = set()

    def image_exists(self, reference):
        return reference in self.images


def test_labs_started_at_once_build_the_base_image_once(monkeypatch):
    store, builds = StoreWithoutTheImage(), []

    def build(podman, reference, **_options):
        builds.append(reference)
        time.sleep(0.3)  # long enough for the other lab to arrive while this one builds
        podman.images.add(reference)
        return reference

    monkeypatch.setattr(image, "_build_base_image", build)
    found = []

    def start_lab():
        found.append(ensure_base_image(store, log=str))

    starts = [threading.Thread(target=start_lab) for number in range(3)]
    for start in starts:
        start.start()
    for start in starts:
        start.join()
    assert builds == [image_reference()]
    assert found == [image_reference()] * 3


def test_hosts_get_their_own_names_ports_and_labels_per_lab(tmp_path):
    config = LabConfig(state_dir=tmp_path / "a", hosts=3, ssh_base_port=23001, container_prefix="x")
    assert config.host_specs() == [
        HostSpec("edge-01", "x-edge-01", 23001),
        HostSpec("edge-02", "x-edge-02", 23002),
        HostSpec("edge-03", "x-edge-03", 23003),
    ]
    assert config.lab_id != LabConfig(state_dir=tmp_path / "b").lab_id


def seeded(tmp_path: Path, port: int = 23001, ca: bytes = b"CA PEM\n"):
    host_key = generate_key(tmp_path / "host" / "key", "edge-01")
    client_key = generate_key(tmp_path / "client" / "key", "lab")
    (tmp_path / "ca.pem").write_bytes(ca)
    return host_files(HostSpec("edge-01", "c", port), host_key, client_key.with_suffix(".pub"), tmp_path / "ca.pem")


def test_seed_files_carry_the_modes_sshd_and_root_need(tmp_path):
    files = seeded(tmp_path)
    with tarfile.open(fileobj=io.BytesIO(seed_tar(files))) as archive:
        members = {member.name: member for member in archive.getmembers()}
        sshd = archive.extractfile("etc/ssh/sshd_config.d/edgefleet-lab.conf").read().decode()
    assert members["etc/ssh/ssh_host_ed25519_key"].mode == 0o600
    assert members["root/.ssh/authorized_keys"].mode == 0o600
    assert members["root/.ssh"].isdir() and members["root/.ssh"].mode == 0o700
    assert all(member.uid == 0 and member.gid == 0 for member in members.values())
    assert "Port 23001\nListenAddress 127.0.0.1\n" in sshd


def test_the_seed_digest_changes_with_port_keys_or_ca(tmp_path):
    first = seed_digest(seeded(tmp_path))
    assert seed_digest(seeded(tmp_path)) == first
    assert seed_digest(seeded(tmp_path, port=23002)) != first
    assert seed_digest(seeded(tmp_path, ca=b"another CA\n")) != first


def test_the_inventory_points_at_the_hosts_and_the_emulators(tmp_path):
    lab = Lab(LabConfig(state_dir=tmp_path / "lab", hosts=2, ssh_base_port=23001), log=lambda line: None)
    for spec in lab.config.host_specs():
        generate_key(lab.host_key(spec), spec.name)
    cloud = {
        "ca_bundle": "/lab/ca.pem",
        "dps": {
            "id_scope": "0ne00C0FFEE",
            "global_endpoint": "https://127.0.0.1:18444/",
            "connection_string": "HostName=127.0.0.1:18443;SharedAccessKeyName=p;SharedAccessKey=a2V5",
            "management_url": "https://127.0.0.1:18443",
            "management_resource_id": "/subscriptions/s/resourceGroups/g/providers/Microsoft.Devices/provisioningServices/d",
            "management_token": "token",
        },
        "iothub": {"connection_string": "HostName=127.0.0.1:18445;...", "host_name": "127.0.0.1:18445"},
    }
    inventory = lab.write_inventory(cloud, "http://127.0.0.1:18480/")
    hosts = yaml.safe_load((inventory / "hosts.yml").read_text())["all"]
    assert hosts["children"]["edge"]["hosts"]["edge-02"] == {"ansible_host": "127.0.0.1", "ansible_port": 23002}
    assert "StrictHostKeyChecking=yes" in hosts["vars"]["ansible_ssh_common_args"]
    known = lab.known_hosts.read_text().splitlines()
    assert [line.split()[0] for line in known] == ["[127.0.0.1]:23001", "[127.0.0.1]:23002"]
    group_vars = yaml.safe_load((inventory / "group_vars/all.yml").read_text())
    assert group_vars["edgefleet_dps_id_scope"] == "0ne00C0FFEE"
    assert group_vars["edgefleet_ca_bundle"] == "/lab/ca.pem"
    assert group_vars["edgefleet_iotedge_apt_uri"] == "http://127.0.0.1:18480/"
    assert group_vars["edgefleet_iotedge_apt_suite"] == "./"
    assert group_vars["edgefleet_iotedge_apt_trusted"] is True
    assert group_vars["edgefleet_iotedge_apt_update_scope"] == "repository"
    assert (inventory / "group_vars/all.yml").stat().st_mode & 0o777 == 0o600
