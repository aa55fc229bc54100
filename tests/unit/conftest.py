"""Shared fixtures for the PKI unit tests: a fixed clock and a ready-made CA."""

from __future__ import annotations

import pytest

from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki_ca import ensure_ca
from ansible_collections.edgefleet.iotedge.tests.unit.pki_factories import NOW, ca_request


@pytest.fixture
def ca_dir(tmp_path):
    path = tmp_path / "ca"
    ensure_ca(ca_request(path), check_mode=False, now=NOW)
    return path
