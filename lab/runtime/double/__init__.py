"""Installed on lab hosts as ``edgefleet_iotedge_double`` by the aziot-identity-service and aziot-edge test doubles.

Runs with the host's python3 (Debian 12: 3.11) and the standard library only.
"""

EDGE_VERSION = "1.5.44"
IDENTITY_SERVICE_VERSION = "1.5.6"
