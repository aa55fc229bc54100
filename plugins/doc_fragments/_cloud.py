# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# PRIVATE to the edgefleet.iotedge collection. Do not use this from other collections.

from __future__ import annotations


class ModuleDocFragment:
    # TLS, timeout and retry options of every module that calls an Azure API (module_utils/_module.py).
    HTTP = r"""
options:
  ca_bundle:
    description:
      - PEM file with the CA certificates to trust for the service's TLS certificate, instead of the system store.
      - The lab writes one (C(ca.pem)); real Azure needs none.
      - If not set, the value of the E(EDGEFLEET_CA_BUNDLE) environment variable is used.
    type: path
  validate_certs:
    description: Verify the service's TLS certificate. Turn off only for throw-away tests.
    type: bool
    default: true
  timeout:
    description: Seconds to wait for one HTTP answer.
    type: float
    default: 30
  max_retries:
    description:
      - How often one request is retried after a transient failure (HTTP 408, 429, 500, 502, 503, 504, a dropped or
        refused connection, a timeout).
      - Retries wait with jittered exponential backoff; an answer with C(Retry-After) (seconds or an HTTP date),
        C(retry-after-ms) or C(x-ms-retry-after-ms) waits as long as it says, and fails at once when that is longer
        than what O(retry_budget_seconds) has left.
    type: int
    default: 8
  retry_budget_seconds:
    description:
      - Total seconds one module run may spend waiting between retries. When it is spent the module fails with the last
        error; a re-run continues where it stopped.
    type: float
    default: 300
requirements:
  - cryptography
"""

    # The DPS service connection (dps_enrollment, dps_enrollment_group, *_info).
    DPS = r"""
options:
  connection_string:
    description:
      - Service connection string of the Device Provisioning Service, from one of its shared access policies
        (C(HostName=<dps>.azure-devices-provisioning.net;SharedAccessKeyName=<policy>;SharedAccessKey=<key>)).
      - Read operations need C(EnrollmentRead) (and C(RegistrationStatusRead)), writes C(EnrollmentWrite).
      - If not set, the value of the E(EDGEFLEET_DPS_CONNECTION_STRING) environment variable is used.
      - Never logged. Keep it in ansible-vault. A value that is not a string is refused.
    type: raw
"""
