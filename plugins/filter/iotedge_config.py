# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: iotedge_config
short_description: Render an IoT Edge device configuration (config.toml or config.yaml) from settings
version_added: 0.1.0
description:
  - Returns the full text of C(/etc/aziot/config.toml) (IoT Edge 1.2 and later, applied with C(iotedge config apply))
    or C(/etc/iotedge/config.yaml) (IoT Edge 1.1) for a device that provisions through DPS with X.509 attestation.
  - Every setting is validated, then the document is written by a real serializer (tomli-w for TOML, PyYAML for
    YAML), so a quote, a newline, C([section]) or C(#) in a value can never add keys to the file.
  - The settings are the collection's role variables without their C(edgefleet_) prefix. An error names the
    variable to change and what to do (an error about a missing ID scope starts with C(edgefleet_dps_id_scope)),
    and never repeats a secret (EST password, PKCS#11 URIs, which may hold a PIN).
  - Settings that only the other generation uses are ignored; a choice the chosen generation cannot do (EST or
    PKCS#11 with 1.1) is an error.
  - The same settings always give the same text, byte for byte, so M(ansible.builtin.copy) reports no change on
    later runs. The text starts with a comment saying that Ansible manages the file.
  - Needs the Python library C(tomli-w) on the controller for 1.2+ (it is in the collection's C(requirements.txt)).
author: edgefleet developers (@edgefleet)
options:
  _input:
    description: The settings, a flat dictionary. Unknown keys are an error.
    type: dict
    required: true
    suboptions:
      generation:
        description: IoT Edge generation of the device.
        type: str
        choices: ["1.2+", "1.1"]
        required: true
      registration_id:
        description:
          - DPS registration id (lowercase letters, digits and C(- . _ :), ending with a letter, a digit or C(-), at
            most 64 characters).
          - Empty leaves it out of the file; the runtime then uses the identity certificate's common name.
            Required with O(_input.iotedge_identity_cert_method=est), where it is the issued certificate's common name.
        type: str
      iotedge_hostname:
        description:
          - The device's DNS name (RFC 1123).
          - Required with 1.1. With 1.2+, empty leaves it out and C(iotedge config apply) uses the machine's hostname.
        type: str
      dps_global_endpoint:
        description: DPS global device endpoint, an C(https://) URL.
        type: str
        default: https://global.azure-devices-provisioning.net
      dps_id_scope:
        description:
          - ID scope of the DPS instance (letters and digits, like C(0ne00C0FFEE)); DPS overview page or
            C(az iot dps show --name <dps> --query properties.idScope -o tsv).
        type: str
        required: true
      iotedge_identity_cert_method:
        description:
          - C(file) uses the identity certificate at O(_input.iotedge_identity_cert_path).
          - C(est) has the runtime request it from an EST server (1.2+ only).
        type: str
        choices: [file, est]
        default: file
      iotedge_identity_cert_path:
        description: Absolute path on the device of the identity full-chain certificate (method C(file)); written as a C(file:///) URI.
        type: str
      iotedge_identity_key_method:
        description:
          - C(file) uses the key at O(_input.iotedge_identity_key_path).
          - C(pkcs11) uses a key in an HSM (1.2+ only) and writes C([aziot_keys]); with certificate method C(est)
            the runtime then creates the identity key in the token of O(_input.iotedge_pkcs11_base_slot).
        type: str
        choices: [file, pkcs11]
        default: file
      iotedge_identity_key_path:
        description: Absolute path on the device of the identity private key (key method C(file), certificate method C(file)).
        type: str
      iotedge_identity_key_pkcs11_uri:
        description: PKCS#11 URI of the identity key (key method C(pkcs11), certificate method C(file)); starts with C(pkcs11:).
        type: str
      iotedge_pkcs11_lib_path:
        description: Absolute path on the device of the PKCS#11 library. Required with key method C(pkcs11).
        type: str
      iotedge_pkcs11_base_slot:
        description: PKCS#11 URI of the base slot, for example C(pkcs11:slot-id=0?pin-value=1234). Required with key method C(pkcs11).
        type: str
      iotedge_est_url:
        description:
          - URL of the EST server, required with certificate method C(est). C(http://) is accepted, but the runtime
            warns that unencrypted HTTP exposes the device to man-in-the-middle attacks.
        type: str
      iotedge_est_trusted_certs:
        description: Absolute paths on the device of CA certificates for the EST server's TLS certificate.
        type: list
        elements: str
      iotedge_est_username:
        description: EST user name; give it together with O(_input.iotedge_est_password).
        type: str
      iotedge_est_password:
        description: EST password; give it together with O(_input.iotedge_est_username). Keep it in ansible-vault.
        type: str
      iotedge_est_bootstrap_cert_path:
        description: Absolute path on the device of the EST bootstrap certificate; together with O(_input.iotedge_est_bootstrap_key_path).
        type: str
      iotedge_est_bootstrap_key_path:
        description: Absolute path on the device of the EST bootstrap key; together with O(_input.iotedge_est_bootstrap_cert_path).
        type: str
      iotedge_est_expiry_days:
        description: Validity of the EST-issued identity certificate in days (above 0); empty for the server's default.
        type: int
      iotedge_est_auto_renew:
        description:
          - Renew the EST-issued identity certificate with a new key at 80% of its life (retry every 4%).
          - Only for devices in an enrollment group (CA-based enrollment), as the IoT Edge template warns.
        type: bool
        default: false
      iotedge_auto_reprovisioning_mode:
        description: When the 1.2+ runtime provisions again through DPS.
        type: str
        choices: [Dynamic, AlwaysOnStartup, OnErrorOnly]
        default: Dynamic
      iotedge_always_reprovision_on_startup:
        description: 1.1 only. Provision through DPS at every start.
        type: bool
        default: true
      iotedge_dynamic_reprovisioning:
        description: 1.1 only. Stop and provision again when the cloud changes the device's provisioning (for example moves it to another hub).
        type: bool
        default: false
      iotedge_agent_image:
        description:
          - Edge Agent image. Empty means C(mcr.microsoft.com/azureiotedge-agent:1.5) with 1.2+ and
            C(mcr.microsoft.com/azureiotedge-agent:1.1) with 1.1.
        type: str
      iotedge_trust_bundle_cert_path:
        description: 1.2+ only. Absolute path on the device of extra trusted CA certificates (C(trust_bundle_cert)).
        type: str
      edge_ca:
        description:
          - V(quickstart) (default) - the runtime's own Edge CA. Nothing is written unless its lifetime or renewal
            differ from the runtime's defaults.
          - V(fleet) - the Edge CA the fleet PKI issued, at C(iotedge_edge_ca_cert_path) and C(iotedge_edge_ca_key_path) -
            C([edge_ca] cert)/C(pk) as file URIs (1.2+), C(certificates.device_ca_cert)/C(device_ca_pk)/C(trusted_ca_certs)
            (1.1; the full chain is also the trusted CAs).
        type: str
        choices: [quickstart, fleet]
      iotedge_edge_ca_cert_path:
        description: With O(_input.edge_ca=fleet), absolute path on the device of the Edge CA's full chain.
        type: str
      iotedge_edge_ca_key_path:
        description: With O(_input.edge_ca=fleet), absolute path on the device of the Edge CA's key.
        type: str
      iotedge_edge_ca_expiry_days:
        description:
          - The runtime's own Edge CA's lifetime in days (1.2+ C(auto_generated_edge_ca_expiry_days), 1 to 4294967295;
            1.1 C(auto_generated_ca_lifetime_days), 1 to 65535). Default 90, which writes nothing.
        type: int
      iotedge_edge_ca_renew_threshold:
        description:
          - 1.2+ C([edge_ca.auto_renew] threshold) of the runtime's own Edge CA - V(N%) (below 100), V(Nmin) or V(Nday).
            Default C(80%). Refused with 1.1, which does not renew it.
        type: str
      iotedge_edge_ca_renew_retry:
        description: 1.2+ C([edge_ca.auto_renew] retry), in the same units. Default C(4%).
        type: str
seealso:
  - name: Configure IoT Edge device settings
    link: https://learn.microsoft.com/azure/iot-edge/configure-device
    description: The settings of C(/etc/aziot/config.toml).
"""

EXAMPLES = r"""
- name: Write the IoT Edge configuration
  ansible.builtin.copy:
    dest: /etc/aziot/config.toml
    mode: "0600"
    content: "{{ settings | edgefleet.iotedge.iotedge_config }}"
  vars:
    settings:
      generation: "1.2+"
      registration_id: "{{ inventory_hostname | lower }}"
      iotedge_hostname: "{{ inventory_hostname }}"
      dps_id_scope: 0ne00C0FFEE
      iotedge_identity_cert_path: /var/aziot/certs/device-id.pem
      iotedge_identity_key_path: /var/aziot/secrets/device-id.key.pem

- name: IoT Edge 1.1
  ansible.builtin.copy:
    dest: /etc/iotedge/config.yaml
    owner: iotedge
    group: iotedge
    mode: "0400"
    content: "{{ settings | edgefleet.iotedge.iotedge_config }}"
  vars:
    settings:
      generation: "1.1"
      iotedge_hostname: "{{ inventory_hostname }}"
      dps_id_scope: 0ne00C0FFEE
      iotedge_identity_cert_path: /var/iotedge/certs/device-id.pem
      iotedge_identity_key_path: /var/iotedge/secrets/device-id.key.pem
"""

RETURN = r"""
_value:
  description: The full text of the configuration file, starting with a comment that Ansible manages it.
  type: str
"""

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError

from ansible_collections.edgefleet.iotedge.plugins.module_utils._edge_config import (
    EdgeConfigError,
    EdgeConfigLibraryError,
    render_edge_config,
)


def iotedge_config(settings) -> str:
    """``{{ settings | edgefleet.iotedge.iotedge_config }}``: the config.toml or config.yaml text."""
    if not isinstance(settings, Mapping):
        raise AnsibleFilterError(
            f"edgefleet.iotedge.iotedge_config expects a dictionary of settings, got a {type(settings).__name__}"
        )
    try:
        return render_edge_config(settings)
    except (EdgeConfigError, EdgeConfigLibraryError) as error:
        # The core's message names the variable and never holds a secret value; no chained exception either.
        raise AnsibleFilterError(str(error)) from None


class FilterModule:
    """edgefleet.iotedge.iotedge_config."""

    def filters(self):
        return {"iotedge_config": iotedge_config}
