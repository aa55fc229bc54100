"""The in-process cloud emulators (real HTTPS on loopback) for the cores' tests against DPS and IoT Hub."""

from __future__ import annotations

import pytest

from lab.cloud import CloudLab


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """One emulator per test module: starting it costs more than resetting it."""
    with CloudLab.start(tmp_path_factory.mktemp("cloud")) as started:
        yield started


@pytest.fixture
def cloud(lab, monkeypatch):
    """The emulator, reset; TLS trust must come from ca_bundle, not from the environment."""
    lab.reset()
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    return lab
