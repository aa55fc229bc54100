"""Lab edge hosts (podman + systemd + sshd on loopback) and the lab command that runs them with the emulators."""

from __future__ import annotations

from lab.fleet.lab import Lab, LabConfig, LabError

__all__ = ["Lab", "LabConfig", "LabError"]
