"""Local emulators of Azure IoT Hub Device Provisioning Service and IoT Hub (see lab/README.md)."""

from __future__ import annotations

from lab.cloud.clock import ManualClock, SystemClock
from lab.cloud.runtime import LabSettings
from lab.cloud.server import CloudLab

__all__ = ["CloudLab", "LabSettings", "ManualClock", "SystemClock"]
