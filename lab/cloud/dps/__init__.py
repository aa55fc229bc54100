"""Device Provisioning Service emulator: service API, device registration API and CA proof of possession."""

from __future__ import annotations
