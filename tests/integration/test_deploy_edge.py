"""playbooks/deploy_edge.yml on 4 provisioned lab hosts (edge-01 canary, edge-02..04 main), the issue's acceptance 1-4:
a version reaches the canary ring, then main, and every host runs exactly its modules; a version with an image that
cannot be pulled stops at the canary ring while main keeps the version before, and a rollback brings the canary back;
a layered deployment adds a module to the hosts with a tag and leaves the host whose tag inventory removed;
`--check --diff` shows what would be created and retargeted and changes nothing in the hub."""

from __future__ import annotations

import json
import re

import yaml

from ansible_collections.edgefleet.iotedge.plugins.module_utils._iothub import parse_hub_connection_string
from ansible_collections.edgefleet.iotedge.plugins.module_utils._iothub_deployment import (
    DeploymentInfoRequest,
    IoTHubDeployments,
    deployment_info,
)
from lab.runtime.manifests import AGENT_IMAGE, HUB_IMAGE, standard_manifest

PROVISION = "playbooks/provision_edge.yml"
DEPLOY = "playbooks/deploy_edge.yml"
MAIN = ["edge-02", "edge-03", "edge-04"]


GPU_LAYER = {
    "modulesContent": {
        "$edgeAgent": {
            "properties.desired.modules.gpu": {
                "type": "docker",
                "status": "running",
                "restartPolicy": "always",
                "settings": {"image": "contoso.example/gpu:1.0"},
            }
        },
        "$edgeHub": {"properties.desired.routes.gpu": "FROM /messages/modules/gpu/* INTO $upstream"},
    }
}


def listed(fleet, host: str) -> dict[str, str]:
    """`iotedge list` on the host: module name -> image (the Config column)."""
    lines = fleet.sh(host, "iotedge list").splitlines()
    assert lines[0].split()[:3] == ["NAME", "STATUS", "DESCRIPTION"], lines
    return {line.split()[0]: line.split()[-1] for line in lines[1:] if line.strip()}


class Hub:
    """The lab hub as the collection's own client reads it (configurations with their metrics, devices)."""

    def __init__(self, fleet):
        self.fleet = fleet
        connection = parse_hub_connection_string(fleet.group_vars["edgefleet_iothub_connection_string"])
        self.client = IoTHubDeployments(connection, ca_bundle=fleet.group_vars["edgefleet_ca_bundle"])

    def info(self) -> dict:
        return deployment_info(self.client, DeploymentInfoRequest(devices=True))

    def deployments(self) -> dict:
        return {view["id"]: view for view in self.info()["deployments"]}

    def devices(self) -> dict:
        return {view["device_id"]: view for view in self.info()["devices"]}

    def tags(self) -> dict:
        return {device["deviceId"]: device["twin"]["tags"] for device in self.fleet.state()["iothubs"][0]["devices"]}

    def stored(self) -> dict:
        """What a check run must leave alone: every configuration, each twin's tags and edgeAgent's desired."""
        hub = self.fleet.state()["iothubs"][0]
        return {
            "configurations": sorted(hub["configurations"], key=lambda record: record["id"]),
            "devices": {
                device["deviceId"]: (
                    device["twin"]["tags"],
                    next(m for m in device["modules"] if m["moduleId"] == "$edgeAgent")["twin"]["properties"][
                        "desired"
                    ],
                )
                for device in hub["devices"]
            },
        }


def version_id(deployments: dict, modules: dict) -> str:
    """The id of the sensors version whose images are ``modules``."""
    return next(key for key, view in deployments.items() if view["name"] == "sensors" and view["images"] == modules)


def test_rings_failure_rollback_layers_and_check_mode(fleet_factory, ansible_playbook, tmp_path):
    fleet = fleet_factory(4)
    provisioned = ansible_playbook(PROVISION, inventory=fleet.inventory)
    assert provisioned.returncode == 0, provisioned.output
    hub = Hub(fleet)

    v1, v2, gpu = tmp_path / "sensors-v1.json", tmp_path / "sensors-v2.json", tmp_path / "gpu.yml"
    v1.write_text(
        json.dumps(standard_manifest({"sensor": "contoso.example/sensor:1.0", "filter": "contoso.example/filter:1.0"}))
    )
    v2.write_text(
        json.dumps(
            standard_manifest({"sensor": "unpullable.invalid/sensor:2.0", "filter": "contoso.example/filter:1.0"})
        )
    )
    gpu.write_text(yaml.safe_dump(GPU_LAYER))
    host_vars = fleet.inventory / "host_vars"
    host_vars.mkdir(exist_ok=True)
    (host_vars / "edge-01.yml").write_text(yaml.safe_dump({"edgefleet_deployment_ring": "canary"}))
    group_vars = fleet.inventory / "group_vars" / "edge.yml"

    def deploy_vars(manifest, **extra):
        settings = {
            "edgefleet_deployment_name": "sensors",
            "edgefleet_deployment_manifest_path": str(manifest),
            "edgefleet_deployment_wait_timeout": 180,
            "edgefleet_deployment_poll_interval": 3,
            **extra,
        }
        group_vars.write_text("---\n" + yaml.safe_dump(settings))

    # 1. v1 reaches the canary ring first, then main; every host runs exactly v1's modules.
    deploy_vars(v1)
    first = ansible_playbook(DEPLOY, inventory=fleet.inventory)
    assert first.returncode == 0, first.output
    out = first.stdout
    canary_wait = out.index("Wait until every device reports success, or too many fail, for ring canary")
    assert canary_wait < out.index("Apply the version to the rings up to main") < out.index("for ring main")
    deployments = hub.deployments()
    v1_id = version_id(deployments, {"sensor": "contoso.example/sensor:1.0", "filter": "contoso.example/filter:1.0"})
    assert list(deployments) == [v1_id]
    assert deployments[v1_id]["target_condition"] == "tags.ring IN ['canary', 'main']"
    assert deployments[v1_id]["system_metrics"] == {
        "targetedCount": 4,
        "appliedCount": 4,
        "reportedSuccessfulCount": 4,
        "reportedFailedCount": 0,
    }
    assert hub.tags() == {"edge-01": {"ring": "canary"}, **{host: {"ring": "main"} for host in MAIN}}
    v1_modules = {
        "edgeAgent": AGENT_IMAGE,
        "edgeHub": HUB_IMAGE,
        "sensor": "contoso.example/sensor:1.0",
        "filter": "contoso.example/filter:1.0",
    }
    for host in fleet.hosts:
        assert listed(fleet, host) == v1_modules, host
    summary_line = f"canary  edge-01  {v1_id.removeprefix('sensors-')}"
    assert summary_line in out and "ring main: 3 host(s), 3 ok, 0 failed, 0 waiting" in out

    again = ansible_playbook(DEPLOY, inventory=fleet.inventory)
    assert again.returncode == 0, again.output
    # The role runs once, on the controller, for the play's first host: only that host is in the recap.
    assert again.recap("edge-01")["changed"] == 0, again.stdout
    assert re.findall(r"^\S+(?=\s+: ok=)", again.stdout, re.M) == ["edge-01"]

    # 4. --check --diff with v2: shows the version it would create for the canary ring and the retargets, writes
    # nothing.
    deploy_vars(v2)
    before = hub.stored()
    checked = ansible_playbook(DEPLOY, "--check", "--diff", inventory=fleet.inventory)
    assert checked.returncode == 0, checked.output
    assert hub.stored() == before
    assert "targetCondition: tags.ring='canary'" in checked.stdout
    assert "targetCondition: tags.ring IN ['canary', 'main']" in checked.stdout
    assert "+            priority: 9" in checked.stdout  # v1 would go one below the new version

    # 2. v2 cannot pull its sensor image: the canary ring stops the rollout, main keeps v1.
    failed = ansible_playbook(DEPLOY, inventory=fleet.inventory)
    assert failed.returncode != 0
    deployments = hub.deployments()
    v2_id = next(key for key in deployments if key != v1_id)
    assert f"ring canary ({v2_id}): 1 of 1 device(s) failed, 0 allowed" in failed.stdout
    assert 'pull image "unpullable.invalid/sensor:2.0"' in failed.stdout
    assert "The rollout stopped at ring canary" in failed.stdout
    assert "ring canary: 1 host(s), 0 ok, 1 failed, 0 waiting" in failed.stdout  # the summary still shows
    assert (deployments[v2_id]["target_condition"], deployments[v2_id]["priority"]) == ("tags.ring='canary'", 10)
    assert (deployments[v1_id]["target_condition"], deployments[v1_id]["priority"]) == (
        "tags.ring IN ['canary', 'main']",
        9,
    )
    devices = hub.devices()
    assert devices["edge-01"]["applied"] == [v2_id]
    assert devices["edge-01"]["last_desired_status"]["code"] == 500
    for host in MAIN:
        assert devices[host]["applied"] == [v1_id] and devices[host]["last_desired_status"]["code"] == 200, host
        assert listed(fleet, host) == v1_modules, host
    # The double keeps the module whose new image failed on its previous one, as edgeAgent does.
    assert listed(fleet, "edge-01") == v1_modules

    # Rollback: v1 again, above v2, on every ring; v2 is kept for a later attempt.
    rolled_back = ansible_playbook(
        DEPLOY, inventory=fleet.inventory, extra_vars={"edgefleet_deployment_rollback": True}
    )
    assert rolled_back.returncode == 0, rolled_back.output
    deployments = hub.deployments()
    assert (deployments[v1_id]["priority"], deployments[v1_id]["target_condition"]) == (
        110,
        "tags.ring IN ['canary', 'main']",
    )
    assert deployments[v1_id]["labels"]["edgefleet_rollback_of"] == v2_id.removeprefix("sensors-")
    assert deployments[v2_id]["priority"] == 10
    devices = hub.devices()
    for host in fleet.hosts:
        assert devices[host]["applied"] == [v1_id], host
        assert devices[host]["in_sync"] and devices[host]["last_desired_status"]["code"] == 200, host
    assert deployments[v1_id]["system_metrics"]["reportedSuccessfulCount"] == 4
    assert listed(fleet, "edge-01") == v1_modules

    # 3. Back to v1 as the manifest, with a layer for the hosts tagged gpu (edge-02, edge-03).
    deploy_vars(v1, edgefleet_deployment_layers=[{"name": "gpu", "manifest_path": str(gpu), "tags": {"gpu": True}}])
    for host in ("edge-02", "edge-03"):
        (host_vars / f"{host}.yml").write_text(yaml.safe_dump({"edgefleet_dps_twin_tags": {"gpu": True}}))
    layered = ansible_playbook(DEPLOY, inventory=fleet.inventory)
    assert layered.returncode == 0, layered.output
    deployments = hub.deployments()
    gpu_id = next(key for key in deployments if key.startswith("gpu-"))
    assert deployments[gpu_id]["layered"] and deployments[gpu_id]["priority"] == 111
    assert deployments[gpu_id]["target_condition"] == "tags.gpu=true AND tags.ring IN ['canary', 'main']"
    assert deployments[v1_id]["priority"] == 10 and v2_id not in deployments  # taken over, then removed
    with_gpu = {**v1_modules, "gpu": "contoso.example/gpu:1.0"}
    assert {host: listed(fleet, host) == with_gpu for host in fleet.hosts} == {
        "edge-01": False,
        "edge-02": True,
        "edge-03": True,
        "edge-04": False,
    }
    assert listed(fleet, "edge-04") == v1_modules

    # edge-03's tag leaves inventory: the run removes it from its twin and the layer's module from the host.
    (host_vars / "edge-03.yml").write_text("---\n{}\n")
    untagged = ansible_playbook(DEPLOY, inventory=fleet.inventory)
    assert untagged.returncode == 0, untagged.output
    assert hub.tags()["edge-03"] == {"ring": "main"} and hub.tags()["edge-02"] == {"gpu": True, "ring": "main"}
    assert listed(fleet, "edge-03") == v1_modules
    assert listed(fleet, "edge-02") == with_gpu
    devices = hub.devices()
    assert devices["edge-03"]["applied"] == [v1_id] and devices["edge-02"]["applied"] == sorted([gpu_id, v1_id])
