"""Builders shared by the PKI unit tests."""

from __future__ import annotations

import datetime

from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki_ca import CaRequest

NOW = datetime.datetime(2026, 11, 26, 12, 0, 0, tzinfo=datetime.UTC)


def ca_request(path, **overrides) -> CaRequest:
    values = {
        "path": str(path),
        "root_common_name": "Test Root CA",
        "intermediate": True,
        "intermediate_common_name": "Test Intermediate CA",
        "key_type": "ec-p256",
        "valid_days": 3650,
        "not_after": None,
        "passphrase": None,
        "state": "present",
        "generation": "1.2+",
        "force": False,
    }
    values.update(overrides)
    return CaRequest(**values)
