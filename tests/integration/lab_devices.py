"""A device as the lab sees it: the fleet PKI from the collection's own cores, CA upload, X.509 registration.

Shared by the integration tests that need devices registered over mutual TLS.
"""

from __future__ import annotations

import http.client
import json
import ssl
import time
from pathlib import Path

from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki_ca import (
    INTERMEDIATE_CERT,
    ROOT_CERT,
    CaRequest,
    ensure_ca,
)
from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki_identity import IdentityRequest, ensure_identities

DEVICE_API = "api-version=2021-06-01"
MANAGEMENT_API = "api-version=2022-02-05"


class FleetPki:
    """One fleet's CA directory and device identities, made by the collection's PKI cores."""

    def __init__(self, directory: Path, name: str, devices: list[str]):
        self.ca_path = directory / name / "ca"
        ensure_ca(
            CaRequest(
                path=str(self.ca_path),
                root_common_name=f"{name} root CA",
                intermediate=True,
                intermediate_common_name=f"{name} intermediate CA",
                key_type="ec-p256",
                valid_days=3650,
                not_after=None,
                passphrase=None,
                state="present",
                generation="1.2+",
                force=False,
            ),
            check_mode=False,
        )
        result = ensure_identities(
            IdentityRequest(ca_path=str(self.ca_path), path=str(directory / name / "identities"), devices=devices),
            check_mode=False,
        )
        self.identities = result["identities"]

    @property
    def root_pem(self) -> str:
        return (self.ca_path / ROOT_CERT).read_text()

    @property
    def intermediate_pem(self) -> str:
        return (self.ca_path / INTERMEDIATE_CERT).read_text()

    def leaf_pem(self, device: str) -> str:
        return Path(self.identities[device]["cert_path"]).read_text()

    def device_tls(self, device: str, ca_bundle: Path) -> ssl.SSLContext:
        """What an edge device holds: identity cert file = leaf + intermediate (DPS needs the chain), and its key."""
        fullchain = Path(self.identities[device]["cert_path"]).with_name("device-fullchain.pem")
        fullchain.write_text(self.leaf_pem(device) + self.intermediate_pem)
        context = ssl.create_default_context(cafile=str(ca_bundle))
        context.load_cert_chain(str(fullchain), self.identities[device]["key_path"])
        return context


def https_json(port: int, context: ssl.SSLContext, method: str, path: str, body=None, headers=None):
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=30)
    try:
        payload = json.dumps(body).encode() if body is not None else None
        all_headers = {"Accept": "application/json", **(headers or {})}
        if payload is not None:
            all_headers["Content-Type"] = "application/json"
        connection.request(method, path, body=payload, headers=all_headers)
        response = connection.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw else None
    finally:
        connection.close()


def upload_ca(lab, name: str, pem: str, *, verified: bool) -> dict:
    """DpsCertificate_CreateOrUpdate with isVerified (automatic verification) on the management API."""
    status, body = https_json(
        lab.dps_port,
        ssl.create_default_context(cafile=str(lab.ca_bundle)),
        "PUT",
        f"{lab.management_resource_id}/certificates/{name}?{MANAGEMENT_API}",
        {"certificate": pem, "isVerified": verified},
        {"Authorization": f"Bearer {lab.management_token}"},
    )
    assert status == 200, body
    return body


def register(lab, context: ssl.SSLContext, registration_id: str, url_id: str | None = None, polls: int = 10):
    """aziot-identityd's flow: PUT register (202 + operationId), then GET the operation until it is done.

    Returns (register status, register body, final operation body or None when register was refused).
    """
    url_id = url_id or registration_id
    status, body = https_json(
        lab.device_port,
        context,
        "PUT",
        f"/{lab.id_scope}/registrations/{url_id}/register?{DEVICE_API}",
        {"registrationId": url_id},
    )
    if status != 202:
        return status, body, None
    operation = f"/{lab.id_scope}/registrations/{url_id}/operations/{body['operationId']}?{DEVICE_API}"
    for _attempt in range(polls):
        poll_status, polled = https_json(lab.device_port, context, "GET", operation)
        if poll_status == 200 and polled["status"] != "assigning":
            return status, body, polled
        assert poll_status in (200, 202), polled
        time.sleep(0.05)
    raise AssertionError(f"{url_id} still assigning after {polls} polls")


def x509_individual(registration_id: str, pem: str, **extra) -> dict:
    return {
        "registrationId": registration_id,
        "attestation": {"type": "x509", "x509": {"clientCertificates": {"primary": {"certificate": pem}}}},
        "capabilities": {"iotEdge": True},
        **extra,
    }


def x509_group(group_id: str, signing_pem: str, **extra) -> dict:
    return {
        "enrollmentGroupId": group_id,
        "attestation": {"type": "x509", "x509": {"signingCertificates": {"primary": {"certificate": signing_pem}}}},
        "capabilities": {"iotEdge": True},
        **extra,
    }
