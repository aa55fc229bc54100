"""Deployment manifests for lab hosts (tests, benchmarks): the deployment.json shape that `az iot edge deployment`
and the portal write, with the runtime images the double reports."""

from __future__ import annotations

AGENT_IMAGE = "mcr.microsoft.com/azureiotedge-agent:1.5"
HUB_IMAGE = "mcr.microsoft.com/azureiotedge-hub:1.5"


def standard_manifest(modules: dict[str, str]) -> dict:
    """A standard deployment: edgeAgent, edgeHub and ``modules`` (name -> image), each running, restarted always;
    one route of every message upstream."""
    module = {"type": "docker", "status": "running", "restartPolicy": "always"}
    return {
        "modulesContent": {
            "$edgeAgent": {
                "properties.desired": {
                    "schemaVersion": "1.1",
                    "runtime": {"type": "docker", "settings": {"minDockerVersion": "v1.25"}},
                    "systemModules": {
                        "edgeAgent": {"type": "docker", "settings": {"image": AGENT_IMAGE}},
                        "edgeHub": {**module, "settings": {"image": HUB_IMAGE}},
                    },
                    "modules": {name: {**module, "settings": {"image": image}} for name, image in modules.items()},
                }
            },
            "$edgeHub": {
                "properties.desired": {
                    "schemaVersion": "1.1",
                    "routes": {"upstream": "FROM /messages/* INTO $upstream"},
                    "storeAndForwardConfiguration": {"timeToLiveSecs": 7200},
                }
            },
        }
    }


def running_modules(modules: dict[str, str]) -> dict[str, str]:
    """What `iotedge list` shows (name -> image) on a host that runs ``standard_manifest(modules)``."""
    return {"edgeAgent": AGENT_IMAGE, "edgeHub": HUB_IMAGE, **modules}
