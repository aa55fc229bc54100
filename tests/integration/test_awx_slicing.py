"""AWX/AAP job slicing, simulated with ansible-runner, the library AWX runs every job with (docs/awx.md, "Job
slicing").

Each job gets a private data directory and a HOME of its own, as each AWX job gets a fresh execution-environment
container. The secrets come as the collection's credential type injects them: the connection strings as extra
variables in a file passed with `-e @` (ansible-runner's env/extravars, which AWX writes the same way), the
management token in the environment. The fleet CA is an input (made with openssl, handed in as PEM text with
edgefleet_pki_ca_create false), and the PKI directory is the path a job template exposes to every job, since the
device identities are state that outlives jobs. A slice's inventory holds its share of the hosts, hosts[k::3], as
AWX's sliced inventories do.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import ansible_runner
import pytest
import yaml
from existing_ca import existing_ca

REPO = Path(__file__).resolve().parents[2]
SLICES = 3
# What the credential type injects (docs/awx/credential-type-injectors.yml): never in the inventory.
CREDENTIAL_EXTRA_VARS = ("edgefleet_dps_connection_string", "edgefleet_iothub_connection_string")
CREDENTIAL_ENVIRONMENT = {"edgefleet_dps_management_token": "EDGEFLEET_DPS_MANAGEMENT_TOKEN"}


class Jobs:
    """Job templates of one fleet: each job run with ansible-runner in a directory and HOME of its own."""

    def __init__(self, fleet, work: Path):
        self.fleet = fleet
        self.work = work
        self.count = 0
        ca = existing_ca(work / "handed-in-ca", None)
        self.root_pem = ca["root.pem"].read_text()
        group_vars = {
            key: value
            for key, value in fleet.group_vars.items()
            if key not in CREDENTIAL_EXTRA_VARS and key not in CREDENTIAL_ENVIRONMENT
        }
        # The path exposed to every job ("Paths to expose to isolated jobs"), and the CA as an input of every job.
        group_vars.update(
            edgefleet_pki_dir=str(work / "exposed" / "pki"),
            edgefleet_pki_ca_create=False,
            edgefleet_pki_root_common_name="Contoso Fleet Root",
            edgefleet_pki_intermediate_common_name="Contoso Fleet Issuing",
            edgefleet_pki_ca_root_cert_content=self.root_pem,
            edgefleet_pki_ca_root_key_content=ca["root.key"].read_text(),
            edgefleet_pki_ca_intermediate_cert_content=ca["intermediate.pem"].read_text(),
            edgefleet_pki_ca_intermediate_key_content=ca["intermediate.key"].read_text(),
        )
        self.group_vars = group_vars
        self.hosts = yaml.safe_load((fleet.inventory / "hosts.yml").read_text())
        self.credential_extra_vars = {name: fleet.group_vars[name] for name in CREDENTIAL_EXTRA_VARS}
        self.credential_environment = {
            variable: fleet.group_vars[name] for name, variable in CREDENTIAL_ENVIRONMENT.items()
        }

    def inventory(self, name: str, hosts: list[str]) -> Path:
        """An inventory of these hosts only, with the fleet's group variables."""
        directory = self.work / "inventories" / name
        (directory / "group_vars").mkdir(parents=True)
        edge = self.hosts["all"]["children"]["edge"]
        sliced = {
            "all": {
                **{key: value for key, value in self.hosts["all"].items() if key != "children"},
                "children": {"edge": {"hosts": {host: edge["hosts"][host] for host in hosts}}},
            }
        }
        (directory / "hosts.yml").write_text(yaml.safe_dump(sliced))
        (directory / "group_vars" / "all.yml").write_text(yaml.safe_dump(self.group_vars))
        return directory

    def start(self, playbook: str, hosts: list[str]):
        """Start one job (a thread running ansible-runner); returns (thread, runner)."""
        self.count += 1
        name = f"job-{self.count}"
        private = self.work / "jobs" / name
        home = private / "home"
        home.mkdir(parents=True)
        environment = {
            "HOME": str(home),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
            "ANSIBLE_NOCOLOR": "1",
            **self.credential_environment,
        }
        return ansible_runner.run_async(
            private_data_dir=str(private),
            playbook=str(REPO / "playbooks" / playbook),
            inventory=str(self.inventory(name, hosts)),
            extravars=self.credential_extra_vars,
            envvars=environment,
            quiet=True,
        )

    def round(self) -> list:
        """The cloud job, then the device job in SLICES slices started together; every runner, in that order."""
        enrollments = self.fleet.state()["dps"]["enrollments"]
        runners = [self.finish(self.start("fleet_cloud.yml", self.fleet.hosts))]
        assert self.fleet.state()["dps"]["enrollments"] == enrollments  # the cloud job enrolls no device
        started = [self.start("fleet_devices.yml", self.fleet.hosts[k::SLICES]) for k in range(SLICES)]
        runners += [self.finish(job) for job in started]
        return runners

    @staticmethod
    def finish(job):
        thread, runner = job
        thread.join(timeout=900)
        assert not thread.is_alive()
        output = runner.stdout.read()
        assert (runner.status, runner.rc) == ("successful", 0), output
        assert not runner.stats["failures"] and not runner.stats["dark"], output
        return runner


@pytest.fixture
def short_tmp():
    """A directory with a short path: ssh's control sockets under each job's HOME must fit a unix socket's 108 bytes
    (AWX's HOME is /runner)."""
    path = Path(tempfile.mkdtemp(prefix="awx-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def chain_root(chain: str) -> str:
    """The last certificate of a PEM chain."""
    return re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n", chain, re.S)[-1]


def test_a_cloud_job_then_three_slices_make_one_fleet_and_a_second_round_changes_nothing(fleet_factory, short_tmp):
    fleet = fleet_factory(6)
    jobs = Jobs(fleet, short_tmp)

    first = jobs.round()
    assert all(sum(runner.stats["changed"].values()) > 0 for runner in first)

    # One fleet CA: the one handed in, in DPS once and verified, at the root of every host's chain.
    state = fleet.state()
    assert [(c["name"], c["isVerified"]) for c in state["dps"]["certificates"]] == [("edgefleet-root", True)]
    assert (short_tmp / "exposed/pki/ca/root.cert.pem").read_text() == jobs.root_pem
    enrollments = {e["registrationId"]: e for e in state["dps"]["enrollments"]}
    assert sorted(enrollments) == fleet.hosts
    registrations = {r["registrationId"]: (r["status"], r["deviceId"]) for r in state["dps"]["registrations"]}
    assert registrations == {host: ("assigned", host) for host in fleet.hosts}
    for host in fleet.hosts:
        assert chain_root(fleet.sh(host, "cat /var/aziot/certs/device-id.pem")) == jobs.root_pem, host
        assert re.search(r"^edgeAgent\s+running\s+Up", fleet.sh(host, "iotedge list"), re.M), host
    # Each slice worked on its own hosts only.
    for k, runner in enumerate(first[1:]):
        assert set(runner.stats["ok"]) == set(fleet.hosts[k::SLICES])

    # The same jobs again, each in a fresh directory and HOME: nothing to do anywhere.
    second = jobs.round()
    for runner in second:
        assert set(runner.stats["changed"].values()) <= {0}, runner.stats
    assert len(fleet.state()["dps"]["enrollments"]) == len(fleet.hosts)
    assert len(fleet.state()["dps"]["certificates"]) == 1
