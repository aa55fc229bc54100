# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# PRIVATE to the edgefleet.iotedge collection. Do not use this from other collections:
# it may change at any time.

"""Read-only views of DPS enrollments and registration states (dps_enrollment_info, dps_registration_info).

DPS's camelCase records become snake_case dicts. Certificates appear as DPS's ``info`` (thumbprints, subject,
validity), never as PEM, and symmetric keys of non-X.509 enrollments are left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ansible_collections.edgefleet.iotedge.plugins.module_utils._dps_client import QUERY_PAGE_SIZE
from ansible_collections.edgefleet.iotedge.plugins.module_utils._dps_records import reprovision_policy_view
from ansible_collections.edgefleet.iotedge.plugins.module_utils._http import ConfigurationError

INDIVIDUAL = "individual"
GROUP = "group"
REGISTRATION_STATUSES = ("unassigned", "assigning", "assigned", "failed", "disabled")
CERTIFICATE_SLOTS = ("primary", "secondary")


@dataclass
class EnrollmentInfoRequest:
    """``kind`` None means: group when enrollment_group_ids are given, otherwise individual."""

    kind: str | None = None
    registration_ids: list = field(default_factory=list)
    enrollment_group_ids: list = field(default_factory=list)
    page_size: int = QUERY_PAGE_SIZE


@dataclass
class RegistrationInfoRequest:
    registration_ids: list = field(default_factory=list)
    enrollment_group_id: str | None = None
    page_size: int = QUERY_PAGE_SIZE


def _unique(ids) -> list:
    """The ids in the order given, each once (DPS ids are case-insensitive)."""
    seen, unique = set(), []
    for record_id in ids or []:
        if not isinstance(record_id, str) or not record_id.strip():
            raise ConfigurationError(f"ids must be non-empty strings, got {record_id!r}")
        if record_id.lower() not in seen:
            seen.add(record_id.lower())
            unique.append(record_id)
    return unique


def certificate_view(value) -> dict | None:
    """``{"info": X509CertificateInfo}`` -> the fields people compare; None when the slot is empty."""
    if not isinstance(value, dict):
        return None
    info = value.get("info")
    if not isinstance(info, dict):
        return None
    return {
        "subject": info.get("subjectName"),
        "issuer": info.get("issuerName"),
        "thumbprint_sha1": info.get("sha1Thumbprint"),
        "thumbprint_sha256": info.get("sha256Thumbprint"),
        "serial_number": info.get("serialNumber"),
        "not_before": info.get("notBeforeUtc"),
        "not_after": info.get("notAfterUtc"),
    }


def _certificates(slots) -> dict:
    slots = slots if isinstance(slots, dict) else {}
    return {slot: certificate_view(slots.get(slot)) for slot in CERTIFICATE_SLOTS}


def _initial_twin(twin) -> dict | None:
    if not isinstance(twin, dict):
        return None
    return {
        "tags": twin.get("tags") or {},
        "desired_properties": (twin.get("properties") or {}).get("desired") or {},
    }


def registration_view(state) -> dict | None:
    """DeviceRegistrationState -> snake_case (None stays None: the device never registered)."""
    if not isinstance(state, dict):
        return None
    return {
        "registration_id": state.get("registrationId"),
        "device_id": state.get("deviceId"),
        "status": state.get("status"),
        "substatus": state.get("substatus"),
        "assigned_hub": state.get("assignedHub"),
        "error_code": state.get("errorCode"),
        "error_message": state.get("errorMessage"),
        "etag": state.get("etag"),
        "created": state.get("createdDateTimeUtc"),
        "updated": state.get("lastUpdatedDateTimeUtc"),
    }


def enrollment_view(record: dict, kind: str) -> dict:
    """IndividualEnrollment / EnrollmentGroup -> snake_case; keys and PEM text are never copied."""
    attestation = record.get("attestation") or {}
    x509_attestation = attestation.get("x509") or {}
    view = {}
    if kind == INDIVIDUAL:
        view["registration_id"] = record.get("registrationId")
        # DPS uses the registration id (the certificate CN) when the enrollment sets no device id.
        view["device_id"] = record.get("deviceId")
        view["certificates"] = _certificates(x509_attestation.get("clientCertificates"))
        view["registration_state"] = registration_view(record.get("registrationState"))
    else:
        view["enrollment_group_id"] = record.get("enrollmentGroupId")
        view["certificates"] = _certificates(x509_attestation.get("signingCertificates"))
        references = x509_attestation.get("caReferences") or {}
        view["ca_references"] = {slot: references.get(slot) for slot in CERTIFICATE_SLOTS}
    view.update(
        {
            "provisioning_status": record.get("provisioningStatus"),
            "iot_edge": bool((record.get("capabilities") or {}).get("iotEdge", False)),
            "attestation_type": attestation.get("type"),
            "allocation_policy": record.get("allocationPolicy"),
            "iot_hubs": record.get("iotHubs"),
            "iot_hub_host_name": record.get("iotHubHostName"),
            "initial_twin": _initial_twin(record.get("initialTwin")),
            "reprovision_policy": reprovision_policy_view(record.get("reprovisionPolicy")),
            "etag": record.get("etag"),
            "created": record.get("createdDateTimeUtc"),
            "updated": record.get("lastUpdatedDateTimeUtc"),
        }
    )
    return view


def _resolve_kind(request: EnrollmentInfoRequest) -> str:
    kind = request.kind or (GROUP if request.enrollment_group_ids else INDIVIDUAL)
    if kind not in (INDIVIDUAL, GROUP):
        raise ConfigurationError(f"kind must be {INDIVIDUAL!r} or {GROUP!r}, got {kind!r}")
    if kind == INDIVIDUAL and request.enrollment_group_ids:
        raise ConfigurationError("enrollment_group_ids name enrollment groups; use them with kind=group")
    if kind == GROUP and request.registration_ids:
        raise ConfigurationError("registration_ids name individual enrollments; use them with kind=individual")
    return kind


def enrollment_info(client, request: EnrollmentInfoRequest) -> dict:
    """The named enrollments (GET each; unknown ids go to ``missing``) or, with no ids, all of them (paged query)."""
    kind = _resolve_kind(request)
    ids = _unique(request.registration_ids if kind == INDIVIDUAL else request.enrollment_group_ids)
    get = client.get_enrollment if kind == INDIVIDUAL else client.get_enrollment_group
    missing = []
    if ids:
        records = []
        for record_id in ids:
            record = get(record_id)
            if record is None:
                missing.append(record_id)
            else:
                records.append(record)
    elif kind == INDIVIDUAL:
        records = client.query_enrollments(page_size=request.page_size)
    else:
        records = client.query_enrollment_groups(page_size=request.page_size)
    views = [enrollment_view(record, kind) for record in records]
    return {
        "changed": False,
        "kind": kind,
        "enrollments": views if kind == INDIVIDUAL else [],
        "enrollment_groups": views if kind == GROUP else [],
        "missing": missing,
    }


def registration_summary(views: list) -> dict:
    counts = dict.fromkeys(REGISTRATION_STATUSES, 0)
    for view in views:
        status = view.get("status") or "unassigned"
        counts[status] = counts.get(status, 0) + 1
    counts["total"] = len(views)
    return counts


def registration_info(client, request: RegistrationInfoRequest) -> dict:
    """Registration states by registration id (GET each) or of one enrollment group (paged query)."""
    ids = _unique(request.registration_ids)
    if ids and request.enrollment_group_id:
        raise ConfigurationError("registration_ids and enrollment_group_id are mutually exclusive")
    if not ids and not request.enrollment_group_id:
        raise ConfigurationError(
            "name the registrations: registration_ids, or enrollment_group_id for every device of a group "
            "(DPS cannot list the registrations of individual enrollments in one call)"
        )
    missing = []
    if ids:
        states = []
        for registration_id in ids:
            state = client.get_registration(registration_id)
            if state is None:
                missing.append(registration_id)
            else:
                states.append(state)
    else:
        states = client.query_registrations(request.enrollment_group_id, page_size=request.page_size)
    views = [registration_view(state) for state in states]
    return {"changed": False, "registrations": views, "missing": missing, "summary": registration_summary(views)}


__all__ = (
    "EnrollmentInfoRequest",
    "RegistrationInfoRequest",
    "certificate_view",
    "enrollment_info",
    "enrollment_view",
    "registration_info",
    "registration_summary",
    "registration_view",
)
