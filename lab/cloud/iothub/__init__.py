"""IoT Hub service emulator on the routes and api-version the ``azure-iot-hub`` 2.7 SDK uses."""

from __future__ import annotations
