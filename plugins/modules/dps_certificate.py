#!/usr/bin/python
# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: dps_certificate
short_description: Register a CA certificate in Azure IoT Hub DPS and prove possession of its key
version_added: 0.1.0
description:
  - Uploads a CA certificate to a Device Provisioning Service through the Azure resource-manager API, so that
    enrollment groups can reference it (O(edgefleet.iotedge.dps_enrollment_group#module:ca_reference)).
  - With O(verify=true) (the default) an unverified certificate is verified by proof of possession - DPS issues a
    verification code, the module signs a certificate whose CN is that code with the CA key from an
    M(edgefleet.iotedge.pki_ca) directory, and sends it back. This happens in memory; no file is written and the
    throw-away key of the verification certificate is discarded.
  - With O(is_verified=true) the certificate is uploaded as verified ("automatic verification"); no CA key is needed.
  - Idempotent - the stored certificate is compared by SHA-1 thumbprint and verification state. A different
    certificate under the same name is replaced (with the etag that was read), which drops its verification until
    it is proved again.
  - Authentication is a bearer token (O(bearer_token)) or Microsoft Entra ID through the C(azure-identity) library -
    a service principal (O(tenant_id), O(client_id), O(client_secret)) or, when none is given,
    C(DefaultAzureCredential) (managed identity, environment, C(az login)).
  - Requests go through Microsoft's C(azure-mgmt-iothubprovisioningservices) client at API version 2022-12-12. Its
    own retries are off; throttling (429 with C(Retry-After) in seconds or as a date, or C(x-ms-retry-after-ms)),
    5xx answers and dropped connections are retried with jittered backoff within O(max_retries) and
    O(retry_budget_seconds).
  - The token is requested for the audience of O(management_url) (C(<management_url>/.default)), which is right for
    the public and the sovereign clouds (for example C(https://management.chinacloudapi.cn)).
author: edgefleet developers (@edgefleet)
extends_documentation_fragment:
  - edgefleet.iotedge._attributes
  - edgefleet.iotedge._cloud.HTTP
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details: The diff shows name, subject, thumbprint, expiry and verification state, never certificate bytes or keys.
requirements:
  - azure-mgmt-iothubprovisioningservices >= 2.1
  - azure-identity (only when O(bearer_token) is not given)
options:
  name:
    description: Name of the certificate in DPS. Letters, digits, C(-), C(.) and C(_).
    type: str
    required: true
  state:
    description: Whether the certificate should be registered.
    type: str
    choices: [present, absent]
    default: present
  certificate:
    description:
      - The CA certificate (PEM text). When the text holds several certificates, the first one is used.
      - With O(state=present) give exactly one of O(certificate) or O(certificate_path).
    type: str
  certificate_path:
    description: A PEM file holding the CA certificate, for example C(root.cert.pem) of an M(edgefleet.iotedge.pki_ca) directory.
    type: path
  verify:
    description:
      - Prove possession of the CA key when the stored certificate is not verified. Needs O(ca_path).
      - With V(false) the certificate is uploaded and left unverified (devices cannot provision through it yet).
    type: bool
    default: true
  is_verified:
    description: Upload the certificate as already verified, without proof of possession.
    type: bool
    default: false
  ca_path:
    description: The M(edgefleet.iotedge.pki_ca) directory whose key proves possession.
    type: path
  signer:
    description: Which certificate of O(ca_path) is being uploaded, V(root) or V(intermediate).
    type: str
    choices: [root, intermediate]
    default: root
  passphrase:
    description: Passphrase of the CA keys in O(ca_path), when M(edgefleet.iotedge.pki_ca) encrypted them.
    type: raw
  alternate_name:
    description:
      - A second name the certificate may be registered under, for a CA rollover - the old and the new CA are
        registered (and referenced by an enrollment group) at the same time, so each needs a name of its own, and
        after the rollover the new CA keeps the name it got.
      - The certificate stays under whichever of O(name) and O(alternate_name) holds it already. Otherwise it goes under
        O(name), unless O(name) holds the certificate of O(preserve_certificate_path) (the other CA of the rollover);
        then under O(alternate_name), replacing what is there.
      - RV(name) says which name was used; RV(alternate) what the other name holds.
    type: str
  preserve_certificate_path:
    description:
      - With O(alternate_name), a PEM file of a certificate that must stay registered (the other CA of a rollover).
        The name that holds it is never overwritten. A path that does not exist is ignored.
    type: path
  management_url:
    description: Base URL of the Azure resource-manager API. The lab prints its own.
    type: str
    default: https://management.azure.com
  subscription_id:
    description: Azure subscription of the DPS. Give it with O(resource_group) and O(dps_name), or give O(resource_id).
    type: str
  resource_group:
    description: Resource group of the DPS.
    type: str
  dps_name:
    description: Name of the DPS resource.
    type: str
  resource_id:
    description:
      - Full resource id of the DPS
        (C(/subscriptions/<id>/resourceGroups/<group>/providers/Microsoft.Devices/provisioningServices/<name>)).
    type: str
  bearer_token:
    description:
      - An access token for C(https://management.azure.com), for example from
        C(az account get-access-token --query accessToken -o tsv). Takes precedence over Entra ID sign-in.
      - If not set, the value of the E(EDGEFLEET_DPS_MANAGEMENT_TOKEN) environment variable is used.
      - Never logged. A value that is not a string is refused.
    type: raw
  tenant_id:
    description:
      - Microsoft Entra tenant of the service principal. If not set, E(AZURE_TENANT_ID) is used, else E(AZURE_TENANT)
        (what the Azure Resource Manager credential of AWX and Ansible Automation Platform injects).
    type: str
  client_id:
    description: Application (client) id of the service principal. If not set, E(AZURE_CLIENT_ID) is used.
    type: str
  client_secret:
    description:
      - Secret of the service principal. If not set, E(AZURE_CLIENT_SECRET) is used, else E(AZURE_SECRET) (what the
        Azure Resource Manager credential of AWX and Ansible Automation Platform injects). Never logged.
    type: raw
seealso:
  - module: edgefleet.iotedge.dps_enrollment_group
  - module: edgefleet.iotedge.pki_ca
  - module: edgefleet.iotedge.pki_verification_cert
  - name: Proof of possession for X.509 CA certificates in DPS
    description: How DPS verifies a CA certificate.
    link: https://learn.microsoft.com/azure/iot-dps/how-to-verify-certificates
"""

EXAMPLES = r"""
- name: Register the fleet root CA and prove possession of its key
  edgefleet.iotedge.dps_certificate:
    name: fleet-root
    certificate_path: "{{ playbook_dir }}/pki/ca/root.cert.pem"
    ca_path: "{{ playbook_dir }}/pki/ca"
    passphrase: "{{ vault_pki_passphrase }}"
    subscription_id: "{{ azure_subscription_id }}"
    resource_group: rg-iot
    dps_name: contoso-dps
  delegate_to: localhost
  run_once: true

- name: Register the intermediate as verified, signing in with a service principal
  edgefleet.iotedge.dps_certificate:
    name: fleet-intermediate
    certificate_path: "{{ playbook_dir }}/pki/ca/intermediate.cert.pem"
    is_verified: true
    resource_id: /subscriptions/{{ azure_subscription_id }}/resourceGroups/rg-iot/providers/Microsoft.Devices/provisioningServices/contoso-dps
    tenant_id: "{{ azure_tenant_id }}"
    client_id: "{{ azure_client_id }}"
    client_secret: "{{ vault_azure_client_secret }}"
  delegate_to: localhost
  run_once: true

- name: Remove a certificate
  edgefleet.iotedge.dps_certificate:
    name: fleet-root
    state: absent
    resource_id: "{{ dps_resource_id }}"
  delegate_to: localhost
"""

RETURN = r"""
certificate:
  description: The certificate in DPS after the run (predicted in check mode); V(null) when absent.
  returned: always
  type: dict
  contains:
    name:
      description: Name of the certificate.
      type: str
    subject:
      description: Subject of the certificate.
      type: str
    thumbprint:
      description: SHA-1 thumbprint, uppercase hex.
      type: str
    is_verified:
      description: Whether DPS considers the certificate verified.
      type: bool
    expiry:
      description: Expiry of the certificate, as DPS shows it (RFC 1123).
      type: str
    etag:
      description: Etag of the certificate resource (the current one in check mode, V(null) before creation).
      type: str
  sample:
    name: fleet-root
    subject: CN=edgefleet Root CA
    thumbprint: 6A0C4C3E0E4F0D7B6F7C1D2E3F405162738495A6
    is_verified: true
    expiry: Sat, 31 Dec 2039 23:59:59 GMT
    etag: AAAAAAExpNs=
name:
  description: The name the certificate is (or would be) registered under - O(name), or O(alternate_name) when it goes there.
  returned: always
  type: str
alternate:
  description:
    - With O(alternate_name), what the other of the two names holds (RV(certificate)'s keys without the etag), or
      V(null) when it holds nothing. After a CA rollover ended, this is the old CA - delete it once no enrollment
      group references it.
  returned: when O(alternate_name) is given and O(state=present)
  type: dict
actions:
  description: What was (or would be) done, among V(create), V(replace certificate), V(mark verified), V(proof of possession) and V(delete).
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule, env_fallback

from ansible_collections.edgefleet.iotedge.plugins.module_utils._dps_certificate import (
    DpsCertificateRequest,
    ensure_dps_certificate,
)
from ansible_collections.edgefleet.iotedge.plugins.module_utils._dps_management import (
    CREDENTIAL_ENVIRONMENT,
    DEFAULT_MANAGEMENT_URL,
    management_client,
)
from ansible_collections.edgefleet.iotedge.plugins.module_utils._module import (
    http_argument_spec,
    http_options,
    run_cloud_core,
    secret_option,
)


def main(module_class=AnsibleModule):
    """module_class: AnsibleModule, or its stand-in when the action plugin runs this in the controller's worker."""
    module = module_class(
        argument_spec={
            **http_argument_spec(),
            "name": {"type": "str", "required": True},
            "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
            "certificate": {"type": "str"},
            "certificate_path": {"type": "path"},
            "verify": {"type": "bool", "default": True},
            "is_verified": {"type": "bool", "default": False},
            "ca_path": {"type": "path"},
            "signer": {"type": "str", "choices": ["root", "intermediate"], "default": "root"},
            "passphrase": secret_option(),
            "alternate_name": {"type": "str"},
            "preserve_certificate_path": {"type": "path"},
            "management_url": {"type": "str", "default": DEFAULT_MANAGEMENT_URL},
            "subscription_id": {"type": "str"},
            "resource_group": {"type": "str"},
            "dps_name": {"type": "str"},
            "resource_id": {"type": "str"},
            "bearer_token": secret_option(fallback=(env_fallback, ["EDGEFLEET_DPS_MANAGEMENT_TOKEN"])),
            "tenant_id": {"type": "str", "fallback": (env_fallback, CREDENTIAL_ENVIRONMENT["tenant_id"])},
            "client_id": {"type": "str", "fallback": (env_fallback, CREDENTIAL_ENVIRONMENT["client_id"])},
            "client_secret": secret_option(fallback=(env_fallback, CREDENTIAL_ENVIRONMENT["client_secret"])),
        },
        mutually_exclusive=[
            ["certificate", "certificate_path"],
            ["resource_id", "subscription_id"],
            ["resource_id", "resource_group"],
            ["resource_id", "dps_name"],
        ],
        required_by={"preserve_certificate_path": "alternate_name"},
        required_one_of=[["resource_id", "subscription_id"]],
        required_together=[["subscription_id", "resource_group", "dps_name"]],
        required_if=[["state", "present", ["certificate", "certificate_path"], True]],
        supports_check_mode=True,
    )
    request = DpsCertificateRequest.from_params(module.params)
    run_cloud_core(
        module,
        lambda: ensure_dps_certificate(
            management_client(module.params, **http_options(module.params)),
            request,
            check_mode=module.check_mode,
        ),
    )


if __name__ == "__main__":
    main()
