"""Installed on lab hosts as ``edgefleet_iotedge_double`` by the test doubles of aziot-identity-service (1.2+) and
libiothsm-std (1.1).

Runs with the host's python3 (Debian 12: 3.11) and its standard library; the 1.1 daemon also reads YAML
(python3-yaml, a dependency of the 1.1 ``iotedge`` double).
"""

EDGE_VERSION = "1.5.44"
IDENTITY_SERVICE_VERSION = "1.5.6"
IOTEDGE_1_1_VERSION = "1.1.19"
