# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# PRIVATE to the edgefleet.iotedge collection. Do not use this from other collections:
# it may change at any time.

"""Core of dps_enrollment_group: one DPS enrollment group with X.509 attestation, as desired state.

Read (GET), compare the managed fields, act (PUT without If-Match to create, with the etag to update; DELETE with
the etag). DPS returns certificate ``info`` only, never the PEM, so certificates are compared by thumbprint.
Options left unset (None) are not managed: their current values are kept and sent back on update.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass

from ansible_collections.edgefleet.iotedge.plugins.module_utils._dps_certificate import (
    load_first_certificate,
    read_certificate_file,
)
from ansible_collections.edgefleet.iotedge.plugins.module_utils._dps_records import (
    ALLOCATION_POLICIES,
    PROVISIONING_STATUSES,
    STATES,
    TWIN_PARTS,
    check_choice,
    check_iot_hubs,
    initial_twin_view,
    initial_twin_wire,
    reprovision_policy_view,
    reprovision_policy_wire,
    validate_initial_twin,
    validate_reprovision_policy,
)
from ansible_collections.edgefleet.iotedge.plugins.module_utils._http import ConfigurationError, settle_lost_write
from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki import (
    REGISTRATION_ID_PATTERN,
    certificate_pem,
    fingerprints,
    format_time,
    not_after_of,
)
from ansible_collections.edgefleet.iotedge.plugins.module_utils._shown import shown

# Group ids follow the registration-id character rules (protocols.md 1.7) but may be twice as long.
ENROLLMENT_GROUP_ID_MAX_LENGTH = 128
SLOTS = ("primary", "secondary")
FRACTION = re.compile(r"\.\d+(?=Z$)")
# The group's settings besides its attestation, compared field by field.
SETTING_KEYS = (
    "provisioning_status",
    "iot_edge",
    "initial_twin",
    "allocation_policy",
    "iot_hubs",
    "reprovision_policy",
)
VIEW_KEYS = ("enrollment_group_id", "attestation", *SETTING_KEYS, "etag")


@dataclass
class EnrollmentGroupRequest:
    enrollment_group_id: str
    state: str = "present"
    signing_certificate: str | None = None
    signing_certificate_path: str | None = None
    secondary_signing_certificate: str | None = None
    secondary_signing_certificate_path: str | None = None
    ca_reference: str | None = None
    secondary_ca_reference: str | None = None
    provisioning_status: str = "enabled"
    iot_edge: bool = True
    initial_twin: dict | None = None
    allocation_policy: str | None = None
    iot_hubs: list | None = None
    reprovision_policy: dict | None = None

    @classmethod
    def from_params(cls, params) -> EnrollmentGroupRequest:
        return cls(**{name: params.get(name) for name in cls.__dataclass_fields__ if params.get(name) is not None})


def validate_enrollment_group_id(value, field: str = "enrollment_group_id") -> str:
    problem = enrollment_group_id_problem(value)
    if problem:
        raise ConfigurationError(f"{field}: {problem}")
    return value


def enrollment_group_id_problem(value) -> str | None:
    """What is wrong with an enrollment group id (registration-id characters, up to 128), or None."""
    if not isinstance(value, str) or not value:
        return f"must be a non-empty string, got {shown(value)}"
    if len(value) > ENROLLMENT_GROUP_ID_MAX_LENGTH:
        return f"{shown(value)} has {len(value)} characters; DPS allows at most {ENROLLMENT_GROUP_ID_MAX_LENGTH}"
    if value != value.lower() and REGISTRATION_ID_PATTERN.fullmatch(value.lower()):
        return f"{shown(value)} has uppercase letters; use {value.lower()!r} (DPS compares ids case-insensitively)"
    if not REGISTRATION_ID_PATTERN.fullmatch(value):
        return (
            f"{shown(value)} is not valid for DPS; use lowercase letters, digits and '-', '.', '_', ':' only "
            "(no spaces, quotes or line breaks), ending with a letter, a digit or '-'"
        )
    return None


# ---- desired state ----------------------------------------------------------------------------------------


@dataclass
class _Desired:
    """The validated request: certificates loaded, twin and reprovision policy in snake_case."""

    signing: dict  # slot -> cryptography certificate
    ca_references: dict  # slot -> certificate name in DPS
    initial_twin: dict | None
    reprovision_policy: dict | None


def _certificate_option(request, slot):
    prefix = "" if slot == "primary" else "secondary_"
    text = getattr(request, f"{prefix}signing_certificate")
    path = getattr(request, f"{prefix}signing_certificate_path")
    if text and path:
        raise ConfigurationError(
            f"{prefix}signing_certificate: give either {prefix}signing_certificate (PEM text) or "
            f"{prefix}signing_certificate_path (a file), not both"
        )
    if text:
        return load_first_certificate(text, field=f"{prefix}signing_certificate")
    if path:
        return read_certificate_file(path, field=f"{prefix}signing_certificate_path")
    return None


def _validate(request: EnrollmentGroupRequest) -> _Desired | None:
    """Every option is checked here, before any request; None for state=absent."""
    validate_enrollment_group_id(request.enrollment_group_id)
    check_choice(request.state, STATES, "state")
    if request.state == "absent":
        return None
    signing = {slot: cert for slot in SLOTS if (cert := _certificate_option(request, slot)) is not None}
    references = {
        slot: name
        for slot, name in (("primary", request.ca_reference), ("secondary", request.secondary_ca_reference))
        if name
    }
    if signing and references:
        raise ConfigurationError(
            "ca_reference: a group attests either with signing certificates (signing_certificate / "
            "signing_certificate_path) or with ca_reference to a certificate uploaded by "
            "edgefleet.iotedge.dps_certificate, not both"
        )
    if not signing and not references:
        raise ConfigurationError(
            "signing_certificate: state=present needs the group's CA: signing_certificate, "
            "signing_certificate_path or ca_reference"
        )
    if signing and "primary" not in signing:
        raise ConfigurationError("signing_certificate: a secondary signing certificate needs a primary one")
    if references and "primary" not in references:
        raise ConfigurationError("ca_reference: secondary_ca_reference needs ca_reference")
    check_choice(request.provisioning_status, PROVISIONING_STATUSES, "provisioning_status")
    if not isinstance(request.iot_edge, bool):
        raise ConfigurationError(f"iot_edge: must be true or false, got {request.iot_edge!r}")
    check_choice(request.allocation_policy, ALLOCATION_POLICIES, "allocation_policy")
    check_iot_hubs(request.iot_hubs, "iot_hubs")
    initial_twin = validate_initial_twin(request.initial_twin, "initial_twin")
    if initial_twin is not None:
        # The group's initial twin is managed whole: a part left out is empty.
        initial_twin = {part: initial_twin.get(part, {}) for part in TWIN_PARTS}
    reprovision = validate_reprovision_policy(request.reprovision_policy, "reprovision_policy")
    return _Desired(
        signing=signing, ca_references=references, initial_twin=initial_twin, reprovision_policy=reprovision
    )


# ---- normalized (managed) view ---------------------------------------------------------------------------


def _certificate_info_view(info) -> dict:
    info = info or {}
    return {
        "subject": info.get("subjectName"),
        "sha1_thumbprint": (info.get("sha1Thumbprint") or "").upper() or None,
        "sha256_thumbprint": (info.get("sha256Thumbprint") or "").upper() or None,
        # DPS writes 7 fraction digits; seconds are what a person compares.
        "not_after": FRACTION.sub("", info["notAfterUtc"]) if info.get("notAfterUtc") else None,
    }


def group_view(record, desired_twin=None) -> dict | None:
    """Snake_case managed view of an EnrollmentGroup as DPS returns it (thumbprints, no PEM)."""
    if record is None:
        return None
    x509 = ((record.get("attestation") or {}).get("x509")) or {}
    attestation = {"type": (record.get("attestation") or {}).get("type")}
    if x509.get("signingCertificates"):
        attestation["signing_certificates"] = {
            slot: _certificate_info_view((x509["signingCertificates"].get(slot) or {}).get("info"))
            for slot in SLOTS
            if x509["signingCertificates"].get(slot)
        }
    if x509.get("caReferences"):
        attestation["ca_references"] = {
            slot: x509["caReferences"][slot] for slot in SLOTS if x509["caReferences"].get(slot)
        }
    twin = record.get("initialTwin")
    return {
        "enrollment_group_id": record.get("enrollmentGroupId"),
        "attestation": attestation,
        "provisioning_status": record.get("provisioningStatus") or "enabled",
        "iot_edge": bool((record.get("capabilities") or {}).get("iotEdge", False)),
        "initial_twin": None if twin is None else initial_twin_view(twin, desired_twin),
        "allocation_policy": record.get("allocationPolicy"),
        "iot_hubs": record.get("iotHubs"),
        "reprovision_policy": reprovision_policy_view(record.get("reprovisionPolicy")),
        "etag": record.get("etag"),
    }


def _local_certificate_view(cert) -> dict:
    prints = fingerprints(cert)
    return {
        "subject": cert.subject.rfc4514_string(),
        "sha1_thumbprint": prints["sha1"],
        "sha256_thumbprint": prints["sha256"],
        "not_after": format_time(not_after_of(cert)),
    }


def _same_certificate(current: dict, desired: dict) -> bool:
    if current.get("sha256_thumbprint") and desired.get("sha256_thumbprint"):
        return current["sha256_thumbprint"] == desired["sha256_thumbprint"]
    return bool(current.get("sha1_thumbprint")) and current.get("sha1_thumbprint") == desired.get("sha1_thumbprint")


def _desired_view(request, desired: _Desired, current_view) -> dict:
    """The view after applying the request to ``current_view`` (unmanaged fields keep their current value)."""
    view = (
        copy.deepcopy(current_view)
        if current_view
        else {
            "enrollment_group_id": request.enrollment_group_id,
            "initial_twin": None,
            "allocation_policy": None,
            "iot_hubs": None,
            "reprovision_policy": None,
            "etag": None,
        }
    )
    view["enrollment_group_id"] = (current_view or {}).get("enrollment_group_id") or request.enrollment_group_id
    if desired.signing:
        view["attestation"] = {
            "type": "x509",
            "signing_certificates": {slot: _local_certificate_view(c) for slot, c in desired.signing.items()},
        }
    else:
        view["attestation"] = {"type": "x509", "ca_references": dict(desired.ca_references)}
    view["provisioning_status"] = request.provisioning_status
    view["iot_edge"] = request.iot_edge
    if desired.initial_twin is not None:
        view["initial_twin"] = copy.deepcopy(desired.initial_twin)
    if request.allocation_policy is not None:
        view["allocation_policy"] = request.allocation_policy
    if request.iot_hubs is not None:
        view["iot_hubs"] = list(request.iot_hubs)
    if desired.reprovision_policy is not None:
        view["reprovision_policy"] = dict(desired.reprovision_policy)
    return {key: view.get(key) for key in VIEW_KEYS}


def _is_as_requested(request, desired: _Desired, view) -> bool:
    """The record already is what the request asks (what it leaves unmanaged, DPS's defaults included, aside)."""
    return not _differences(view, _desired_view(request, desired, view))


def _differences(current_view, desired_view) -> list:
    """Names of the managed fields that differ (certificates by thumbprint)."""
    if current_view is None:
        return ["create"]
    changed = []
    current_att, desired_att = current_view["attestation"], desired_view["attestation"]
    if "signing_certificates" in desired_att:
        current_certs = current_att.get("signing_certificates") or {}
        for slot in SLOTS:
            want, have = desired_att["signing_certificates"].get(slot), current_certs.get(slot)
            if (want is None) != (have is None) or (want and not _same_certificate(have, want)):
                changed.append(f"{slot} signing certificate")
        if current_att.get("ca_references"):
            changed.append("attestation kind")
    elif current_att.get("ca_references") != desired_att.get("ca_references"):
        changed.append("ca references")
    for key in SETTING_KEYS:
        if current_view.get(key) != desired_view.get(key):
            changed.append(key)
    return changed


# ---- wire body --------------------------------------------------------------------------------------------

# Fields of the current record that are sent back unchanged on update, so a PUT never drops what the module does
# not manage.
_CARRIED_OVER = (
    "initialTwin",
    "allocationPolicy",
    "iotHubs",
    "iotHubHostName",
    "reprovisionPolicy",
    "customAllocationDefinition",
)


def _wire_body(request, desired: _Desired, current) -> dict:
    body = {key: copy.deepcopy(current[key]) for key in _CARRIED_OVER if current and current.get(key) is not None}
    body["enrollmentGroupId"] = current.get("enrollmentGroupId") if current else request.enrollment_group_id
    if desired.signing:
        x509 = {
            "signingCertificates": {
                slot: {"certificate": certificate_pem(cert).decode("ascii")} for slot, cert in desired.signing.items()
            }
        }
    else:
        x509 = {"caReferences": dict(desired.ca_references)}
    body["attestation"] = {"type": "x509", "x509": x509}
    body["capabilities"] = {"iotEdge": request.iot_edge}
    body["provisioningStatus"] = request.provisioning_status
    if desired.initial_twin is not None:
        body["initialTwin"] = initial_twin_wire(copy.deepcopy(desired.initial_twin))
    if request.allocation_policy is not None:
        body["allocationPolicy"] = request.allocation_policy
    if request.iot_hubs is not None:
        body["iotHubs"] = list(request.iot_hubs)
    if desired.reprovision_policy is not None:
        body["reprovisionPolicy"] = reprovision_policy_wire(desired.reprovision_policy)
    if body.get("allocationPolicy") == "custom" and not body.get("customAllocationDefinition"):
        raise ConfigurationError(
            "allocation_policy: custom needs a webhook (customAllocationDefinition), which this module does not "
            "set; configure custom allocation in the portal first, or use hashed, geoLatency or static"
        )
    return body


# ---- the core ---------------------------------------------------------------------------------------------


def _diff_view(view):
    return None if view is None else {k: v for k, v in view.items() if k != "etag"}


def _result(changed, before, after, reasons) -> dict:
    return {
        "changed": changed,
        "reasons": reasons,
        "enrollment_group": after,
        "diff": {"before": _diff_view(before), "after": _diff_view(after)},
    }


def ensure_enrollment_group(client, request: EnrollmentGroupRequest, *, check_mode: bool) -> dict:
    """Make the DPS enrollment group match ``request``; return changed, the managed view and a diff."""
    desired = _validate(request)
    current = client.get_enrollment_group(request.enrollment_group_id)
    desired_twin = desired.initial_twin if desired else None
    before = group_view(current, desired_twin)

    if request.state == "absent":
        if current is None:
            return _result(False, None, None, [])
        if not check_mode:
            client.delete_enrollment_group(request.enrollment_group_id, current.get("etag") or "*")
        return _result(True, before, None, ["delete"])

    after = _desired_view(request, desired, before)
    reasons = _differences(before, after)
    if not reasons:
        return _result(False, before, before, [])
    body = _wire_body(request, desired, current)  # also checks what depends on the current record
    if check_mode:
        return _result(True, before, after, reasons)
    written = settle_lost_write(
        lambda: client.put_enrollment_group(body, current.get("etag") if current else None),
        lambda: client.get_enrollment_group(request.enrollment_group_id),
        lambda record: _is_as_requested(request, desired, group_view(record, desired_twin)),
    )
    return _result(True, before, group_view(written, desired_twin), reasons)


__all__ = (
    "ALLOCATION_POLICIES",
    "EnrollmentGroupRequest",
    "enrollment_group_id_problem",
    "ensure_enrollment_group",
    "group_view",
    "validate_enrollment_group_id",
)
