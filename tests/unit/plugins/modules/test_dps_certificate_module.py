"""dps_certificate executed as Ansible executes it, signing in with what AWX's Azure credential injects."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

MODULE = Path(__file__).resolve().parents[4] / "plugins" / "modules" / "dps_certificate.py"
SECRET = "a-service-principal-secret-that-must-not-leak"

# A stand-in for azure-identity, first on the module's path: azure is a namespace package, so azure.core stays the
# real one. Its credential refuses the sign-in with what it was given (never the secret itself).
FAKE_IDENTITY = """
from azure.core.exceptions import ClientAuthenticationError


class ClientSecretCredential:
    def __init__(self, tenant_id, client_id, client_secret):
        self.given = (tenant_id, client_id, len(client_secret))

    def get_token(self, *scopes):
        tenant_id, client_id, secret_length = self.given
        raise ClientAuthenticationError(
            f"fake sign-in of {client_id} in {tenant_id} with a {secret_length}-character secret for {scopes[0]}"
        )


class DefaultAzureCredential:
    def get_token(self, *scopes):
        raise ClientAuthenticationError("fake DefaultAzureCredential: nothing configured")
"""


def run_dps_certificate(tmp_path: Path, env: dict) -> dict:
    (tmp_path / "azure" / "identity").mkdir(parents=True)
    (tmp_path / "azure" / "identity" / "__init__.py").write_text(FAKE_IDENTITY)
    args_file = tmp_path / "args.json"
    args = {
        "name": "fleet-root",
        "state": "absent",
        "resource_id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Devices/provisioningServices/dps",
        "management_url": "https://127.0.0.1:9",
        "max_retries": 1,
        "retry_budget_seconds": 2,
        "timeout": 2,
    }
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "EDGEFLEET_"))}
    environment.update(PYTHONPATH=os.pathsep.join([str(tmp_path), *sys.path]), **env)
    completed = subprocess.run(
        [sys.executable, str(MODULE), str(args_file)], env=environment, capture_output=True, text=True, check=False
    )
    assert SECRET not in completed.stdout + completed.stderr
    return json.loads(completed.stdout)


def test_the_awx_azure_credential_s_environment_signs_in_as_its_service_principal(tmp_path):
    result = run_dps_certificate(
        tmp_path, {"AZURE_CLIENT_ID": "app-1", "AZURE_SECRET": SECRET, "AZURE_TENANT": "tenant-1"}
    )
    assert result["failed"] is True
    assert result["msg"].startswith(
        "Microsoft Entra ID sign-in (ClientSecretCredential) failed: fake sign-in of app-1 in "
    )
    assert f"tenant-1 with a {len(SECRET)}-character secret for https://127.0.0.1:9/.default" in result["msg"]


def test_azure_identity_s_own_names_win_over_the_awx_ones(tmp_path):
    result = run_dps_certificate(
        tmp_path,
        {
            "AZURE_CLIENT_ID": "app-1",
            "AZURE_CLIENT_SECRET": SECRET,
            "AZURE_SECRET": "x",
            "AZURE_TENANT_ID": "tenant-2",
            "AZURE_TENANT": "tenant-1",
        },
    )
    assert f"fake sign-in of app-1 in tenant-2 with a {len(SECRET)}-character secret" in result["msg"]


def test_without_a_service_principal_the_default_credential_signs_in(tmp_path):
    result = run_dps_certificate(tmp_path, {})
    assert "DefaultAzureCredential" in result["msg"] and "nothing configured" in result["msg"]
