"""DPS records and their wire shapes (spec: specs/dps-data-plane/stable/2021-10-01/service.json)."""

from __future__ import annotations

import base64
import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from lab.cloud.clock import iso_utc, rfc1123
from lab.cloud.dps.errors import DpsError
from lab.cloud.x509 import (
    CertificateParseError,
    certificate_info,
    distinguished_name,
    load_certificate,
    sha1_thumbprint,
    sha256_thumbprint,
    to_pem,
)

INDIVIDUAL = "enrollment"
GROUP = "enrollmentGroup"

# Registration ids: alphanumerics and - . _ : ; at most 128; ends with an alphanumeric or '-' (protocols.md 1.7).
# fullmatch everywhere: '$' would also match before a trailing newline.
REGISTRATION_ID = re.compile(r"[A-Za-z0-9\-._:]{0,127}[A-Za-z0-9\-]")
ALLOCATION_POLICIES = ("hashed", "geoLatency", "static", "custom")
ATTESTATION_TYPES = ("x509", "symmetricKey", "tpm")


@dataclass
class StoredCertificate:
    """A certificate kept as uploaded; the wire shows only its ``info`` as DPS does."""

    certificate: x509.Certificate

    @property
    def sha1(self) -> str:
        return sha1_thumbprint(self.certificate)

    @property
    def sha256(self) -> str:
        return sha256_thumbprint(self.certificate)

    def to_wire(self) -> dict[str, Any]:
        return {"info": certificate_info(self.certificate)}

    def to_state(self) -> dict[str, Any]:
        return {"info": certificate_info(self.certificate), "certificate": to_pem(self.certificate)}

    @classmethod
    def from_wire(cls, value: Any, where: str, existing: StoredCertificate | None) -> StoredCertificate | None:
        """Accept ``{"certificate": PEM}``; an ``info``-only object keeps the stored certificate (az CLI updates)."""
        if value is None:
            return None
        if not isinstance(value, dict):
            raise DpsError.bad_request(f"'{where}' must be an object with a 'certificate' field.")
        text = value.get("certificate")
        if text:
            try:
                return cls(load_certificate(str(text)))
            except CertificateParseError as exc:
                raise DpsError.bad_request(f"'{where}.certificate' is not a valid certificate: {exc}.") from exc
        info = value.get("info") or {}
        given = (
            {
                (info.get("sha1Thumbprint") or "").upper(): existing.sha1 if existing else None,
                (info.get("sha256Thumbprint") or "").upper(): existing.sha256 if existing else None,
            }
            if isinstance(info, dict)
            else {}
        )
        given.pop("", None)
        if existing and given and all(sent == stored for sent, stored in given.items()):
            return existing
        raise DpsError.bad_request(f"'{where}.certificate' is required (info alone does not match a stored one).")


@dataclass
class X509Attestation:
    client_certificates: dict[str, StoredCertificate] = field(default_factory=dict)
    signing_certificates: dict[str, StoredCertificate] = field(default_factory=dict)
    ca_references: dict[str, str] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if self.client_certificates:
            body["clientCertificates"] = {slot: c.to_wire() for slot, c in self.client_certificates.items()}
        if self.signing_certificates:
            body["signingCertificates"] = {slot: c.to_wire() for slot, c in self.signing_certificates.items()}
        if self.ca_references:
            body["caReferences"] = dict(self.ca_references)
        return body

    def to_state(self) -> dict[str, Any]:
        body = self.to_wire()
        for key, certs in (
            ("clientCertificates", self.client_certificates),
            ("signingCertificates", self.signing_certificates),
        ):
            if certs:
                body[key] = {slot: c.to_state() for slot, c in certs.items()}
        return body


@dataclass
class Attestation:
    type: str
    x509: X509Attestation | None = None
    symmetric_key: dict[str, str] | None = None
    tpm: dict[str, Any] | None = None

    def to_wire(self) -> dict[str, Any]:
        body: dict[str, Any] = {"type": self.type}
        if self.x509 is not None:
            body["x509"] = self.x509.to_wire()
        if self.symmetric_key is not None:
            body["symmetricKey"] = dict(self.symmetric_key)
        if self.tpm is not None:
            body["tpm"] = dict(self.tpm)
        return body

    def to_state(self) -> dict[str, Any]:
        body = self.to_wire()
        if self.x509 is not None:
            body["x509"] = self.x509.to_state()
        return body


def _parse_slots(value: Any, where: str, existing: dict[str, StoredCertificate]) -> dict[str, StoredCertificate]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise DpsError.bad_request(f"'{where}' must be an object with 'primary' and optional 'secondary'.")
    slots: dict[str, StoredCertificate] = {}
    for slot in ("primary", "secondary"):
        parsed = StoredCertificate.from_wire(value.get(slot), f"{where}.{slot}", existing.get(slot))
        if parsed is not None:
            slots[slot] = parsed
    if slots and "primary" not in slots:
        raise DpsError.bad_request(f"'{where}.primary' is required.")
    return slots


def parse_attestation(value: Any, kind: str, existing: Attestation | None, new_key: Any) -> Attestation:
    """Validate an AttestationMechanism; ``new_key`` generates symmetric keys the caller left empty."""
    if not isinstance(value, dict):
        raise DpsError.bad_request("'attestation' is required and must be an object.")
    attestation_type = value.get("type")
    if attestation_type not in ATTESTATION_TYPES:
        raise DpsError.bad_request(f"'attestation.type' must be one of {list(ATTESTATION_TYPES)}.")
    if attestation_type == "x509":
        raw = value.get("x509")
        if not isinstance(raw, dict):
            raise DpsError.bad_request("'attestation.x509' is required for x509 attestation.")
        old = existing.x509 if existing and existing.x509 else X509Attestation()
        x509_attestation = X509Attestation(
            client_certificates=_parse_slots(
                raw.get("clientCertificates"), "attestation.x509.clientCertificates", old.client_certificates
            ),
            signing_certificates=_parse_slots(
                raw.get("signingCertificates"), "attestation.x509.signingCertificates", old.signing_certificates
            ),
            ca_references={
                k: str(v) for k, v in (raw.get("caReferences") or {}).items() if k in ("primary", "secondary") and v
            },
        )
        given = [
            bool(x509_attestation.client_certificates),
            bool(x509_attestation.signing_certificates),
            bool(x509_attestation.ca_references),
        ]
        if sum(given) != 1:
            raise DpsError.bad_request(
                "'attestation.x509' needs exactly one of clientCertificates, signingCertificates or caReferences."
            )
        if kind == GROUP and x509_attestation.client_certificates:
            raise DpsError.bad_request(
                "Enrollment groups take signingCertificates or caReferences, not clientCertificates."
            )
        if kind == INDIVIDUAL and not x509_attestation.client_certificates:
            raise DpsError.bad_request("Individual enrollments take 'attestation.x509.clientCertificates'.")
        return Attestation("x509", x509=x509_attestation)
    if attestation_type == "symmetricKey":
        raw = value.get("symmetricKey") or {}
        return Attestation(
            "symmetricKey",
            symmetric_key={
                "primaryKey": raw.get("primaryKey") or new_key(),
                "secondaryKey": raw.get("secondaryKey") or new_key(),
            },
        )
    if kind == GROUP:
        raise DpsError.bad_request("Enrollment groups do not support TPM attestation.")
    return Attestation("tpm", tpm=dict(value.get("tpm") or {}))


@dataclass
class RegistrationRecord:
    """The outcome of a device registration (service: DeviceRegistrationState; device: DeviceRegistrationResult)."""

    registration_id: str
    created: dt.datetime
    updated: dt.datetime
    status: str
    etag: str
    device_id: str | None = None
    assigned_hub: str | None = None
    substatus: str | None = None
    error_code: int | None = None
    error_message: str | None = None
    enrollment_group_id: str | None = None
    certificate_info: dict[str, Any] | None = None
    signing_certificate_info: dict[str, Any] | None = None
    payload: Any = None

    def to_service_wire(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "registrationId": self.registration_id,
            "createdDateTimeUtc": iso_utc(self.created),
            "assignedHub": self.assigned_hub,
            "deviceId": self.device_id,
            "status": self.status,
            "substatus": self.substatus,
            "errorCode": self.error_code,
            "errorMessage": self.error_message,
            "lastUpdatedDateTimeUtc": iso_utc(self.updated),
            "etag": self.etag,
            "payload": self.payload,
        }
        return {key: value for key, value in body.items() if value is not None}

    def to_device_wire(self) -> dict[str, Any]:
        body = self.to_service_wire()
        x509_result: dict[str, Any] = {}
        if self.enrollment_group_id:
            x509_result = {
                "enrollmentGroupId": self.enrollment_group_id,
                "certificateInfo": self.certificate_info,
                "signingCertificateInfo": self.signing_certificate_info,
            }
        return {"x509": x509_result, **body}

    def to_state(self) -> dict[str, Any]:
        return {**self.to_device_wire(), "enrollmentGroupId": self.enrollment_group_id}


@dataclass
class Enrollment:
    """An individual enrollment (``kind == INDIVIDUAL``) or an enrollment group (``kind == GROUP``)."""

    kind: str
    record_id: str
    attestation: Attestation
    etag: str
    created: dt.datetime
    updated: dt.datetime
    iot_edge: bool = False
    provisioning_status: str = "enabled"
    device_id: str | None = None
    initial_twin: dict[str, Any] | None = None
    reprovision_policy: dict[str, bool] = field(
        default_factory=lambda: {"updateHubAssignment": True, "migrateDeviceData": True}
    )
    allocation_policy: str | None = None
    iot_hubs: list[str] | None = None
    iot_hub_host_name: str | None = None
    custom_allocation_definition: dict[str, str] | None = None
    optional_device_information: dict[str, Any] | None = None

    @property
    def key(self) -> str:
        return self.record_id.lower()

    @property
    def id_field(self) -> str:
        return "registrationId" if self.kind == INDIVIDUAL else "enrollmentGroupId"

    def to_wire(self, registration: RegistrationRecord | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {self.id_field: self.record_id}
        if self.kind == INDIVIDUAL:
            if self.device_id:
                body["deviceId"] = self.device_id
            if registration is not None:
                body["registrationState"] = registration.to_service_wire()
            if self.optional_device_information is not None:
                body["optionalDeviceInformation"] = self.optional_device_information
        body["attestation"] = self.attestation.to_wire()
        body["capabilities"] = {"iotEdge": self.iot_edge}
        if self.iot_hub_host_name:
            body["iotHubHostName"] = self.iot_hub_host_name
        if self.initial_twin is not None:
            body["initialTwin"] = self.initial_twin
        body["etag"] = self.etag
        body["provisioningStatus"] = self.provisioning_status
        body["reprovisionPolicy"] = dict(self.reprovision_policy)
        body["createdDateTimeUtc"] = iso_utc(self.created)
        body["lastUpdatedDateTimeUtc"] = iso_utc(self.updated)
        if self.allocation_policy:
            body["allocationPolicy"] = self.allocation_policy
        if self.iot_hubs is not None:
            body["iotHubs"] = list(self.iot_hubs)
        if self.custom_allocation_definition is not None:
            body["customAllocationDefinition"] = self.custom_allocation_definition
        return body

    def to_state(self, registration: RegistrationRecord | None = None) -> dict[str, Any]:
        body = self.to_wire(registration)
        body["attestation"] = self.attestation.to_state()
        return body


def parse_enrollment(
    body: Any,
    kind: str,
    record_id: str | None,
    existing: Enrollment | None,
    *,
    etag: str,
    now: dt.datetime,
    new_key: Any,
) -> Enrollment:
    """Build a new version of a record from its wire JSON; ``record_id`` is the id in the URL, if any."""
    label = "Individual enrollment" if kind == INDIVIDUAL else "Enrollment group"
    if not isinstance(body, dict):
        raise DpsError.bad_request(f"{label} body must be a JSON object.")
    id_field = "registrationId" if kind == INDIVIDUAL else "enrollmentGroupId"
    body_id = body.get(id_field)
    if not isinstance(body_id, str) or not body_id:
        raise DpsError.bad_request(f"'{id_field}' is required.")
    if record_id is not None and body_id.lower() != record_id.lower():
        raise DpsError.bad_request(f"'{id_field}' in the body ('{body_id}') differs from the URL ('{record_id}').")
    if not REGISTRATION_ID.fullmatch(body_id):
        raise DpsError.bad_request(
            f"'{id_field}' '{body_id}' is invalid: use alphanumerics and - . _ : "
            "(at most 128, ending alphanumeric or -)."
        )
    attestation = parse_attestation(body.get("attestation"), kind, existing.attestation if existing else None, new_key)
    capabilities = body.get("capabilities") or {}
    if not isinstance(capabilities, dict) or not isinstance(capabilities.get("iotEdge", False), bool):
        raise DpsError.bad_request("'capabilities.iotEdge' must be a boolean.")
    status = body.get("provisioningStatus") or "enabled"
    if status not in ("enabled", "disabled"):
        raise DpsError.bad_request("'provisioningStatus' must be 'enabled' or 'disabled'.")
    allocation = body.get("allocationPolicy")
    if allocation is not None and allocation not in ALLOCATION_POLICIES:
        raise DpsError.bad_request(f"'allocationPolicy' must be one of {list(ALLOCATION_POLICIES)}.")
    reprovision = body.get("reprovisionPolicy")
    if reprovision is None:
        reprovision = {"updateHubAssignment": True, "migrateDeviceData": True}
    elif not isinstance(reprovision, dict) or not all(
        isinstance(reprovision.get(k), bool) for k in ("updateHubAssignment", "migrateDeviceData")
    ):
        raise DpsError.bad_request("'reprovisionPolicy' needs boolean 'updateHubAssignment' and 'migrateDeviceData'.")
    initial_twin = body.get("initialTwin")
    if initial_twin is not None and not isinstance(initial_twin, dict):
        raise DpsError.bad_request("'initialTwin' must be an object with 'tags' and 'properties.desired'.")
    iot_hubs = body.get("iotHubs")
    if iot_hubs is not None and (not isinstance(iot_hubs, list) or not all(isinstance(h, str) for h in iot_hubs)):
        raise DpsError.bad_request("'iotHubs' must be a list of IoT hub host names.")
    custom = body.get("customAllocationDefinition")
    if allocation == "custom" and not (
        isinstance(custom, dict) and custom.get("webhookUrl") and custom.get("apiVersion")
    ):
        raise DpsError.bad_request(
            "'customAllocationDefinition' with webhookUrl and apiVersion is required for custom."
        )
    device_id = body.get("deviceId") if kind == INDIVIDUAL else None
    return Enrollment(
        kind=kind,
        record_id=existing.record_id if existing else body_id,
        attestation=attestation,
        etag=etag,
        created=existing.created if existing else now,
        updated=now,
        iot_edge=bool(capabilities.get("iotEdge", False)),
        provisioning_status=status,
        device_id=device_id or None,
        initial_twin=initial_twin,
        reprovision_policy={k: reprovision[k] for k in ("updateHubAssignment", "migrateDeviceData")},
        allocation_policy=allocation,
        iot_hubs=list(iot_hubs) if iot_hubs is not None else None,
        iot_hub_host_name=body.get("iotHubHostName"),
        custom_allocation_definition=custom,
        optional_device_information=body.get("optionalDeviceInformation") if kind == INDIVIDUAL else None,
    )


@dataclass
class Operation:
    """A register call in flight; polls answer ``assigning`` until ``polls_remaining`` reaches zero."""

    operation_id: str
    registration_id: str
    polls_remaining: int
    record: RegistrationRecord

    def to_state(self) -> dict[str, Any]:
        return {
            "operationId": self.operation_id,
            "registrationId": self.registration_id,
            "pollsRemaining": self.polls_remaining,
            "status": self.record.status,
        }


@dataclass
class CaCertificate:
    """A CA certificate registered through the resource-manager API, with its proof-of-possession state."""

    name: str
    certificate: x509.Certificate
    is_verified: bool
    etag: str
    created: dt.datetime
    updated: dt.datetime
    verification_code: str | None = None

    def properties(self) -> dict[str, Any]:
        return {
            "subject": distinguished_name(self.certificate.subject),
            "expiry": rfc1123(self.certificate.not_valid_after_utc),
            "thumbprint": sha1_thumbprint(self.certificate),
            "isVerified": self.is_verified,
            "certificate": base64.b64encode(self.certificate.public_bytes(serialization.Encoding.DER)).decode(),
            "created": rfc1123(self.created),
            "updated": rfc1123(self.updated),
        }

    def to_wire(self, resource_prefix: str) -> dict[str, Any]:
        return {
            "id": f"{resource_prefix}/certificates/{self.name}",
            "name": self.name,
            "type": "Microsoft.Devices/ProvisioningServices/Certificates",
            "etag": self.etag,
            "properties": self.properties(),
        }

    def to_state(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "etag": self.etag,
            "isVerified": self.is_verified,
            "verificationCode": self.verification_code,
            "info": certificate_info(self.certificate),
        }
