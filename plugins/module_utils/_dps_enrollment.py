# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# PRIVATE to the edgefleet.iotedge collection. Do not use this from other collections:
# it may change at any time.

"""Desired state for many DPS individual enrollments (X.509) at once: read, compare, write in bulk.

Reads: one GET per enrollment for a few, the paged query for many. Comparison: managed fields only, certificates
by thumbprint (DPS returns `info`, never the PEM). Writes: the bulk API in chunks of 10 - `create` for new
records, `updateIfMatchETag` with the etag that was read for changed ones, `delete` for absent ones. A per-item
failure is re-read before it counts: a write whose answer was lost (and then retried) is already in place.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field

from ansible_collections.edgefleet.iotedge.plugins.module_utils._dps_certificate import load_first_certificate
from ansible_collections.edgefleet.iotedge.plugins.module_utils._dps_client import BULK_LIMIT
from ansible_collections.edgefleet.iotedge.plugins.module_utils._dps_records import (
    ALLOCATION_POLICIES,
    PROVISIONING_STATUSES,
    STATES,
    check_choice,
    check_iot_hubs,
    initial_twin_view,
    initial_twin_wire,
    reprovision_policy_view,
    reprovision_policy_wire,
    validate_initial_twin,
    validate_reprovision_policy,
)
from ansible_collections.edgefleet.iotedge.plugins.module_utils._http import ApiError, ConfigurationError
from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki import (
    PkiError,
    common_name_of,
    fingerprints,
    validate_registration_id,
)

# Up to this many enrollments are read one GET each; more are read with the paged query (100 per page).
GET_READ_LIMIT = 10
# Fields DPS computes; an update body must not carry them.
READ_ONLY_FIELDS = ("registrationState", "createdDateTimeUtc", "lastUpdatedDateTimeUtc")
# Options that may be set once for every enrollment and overridden per item.
SHARED_OPTIONS = (
    "state",
    "provisioning_status",
    "iot_edge",
    "initial_twin",
    "allocation_policy",
    "iot_hubs",
    "reprovision_policy",
)


@dataclass
class EnrollmentSpec:
    """One desired enrollment, validated. Certificates are PEM text; other options left None keep DPS's value."""

    registration_id: str
    state: str = "present"
    device_id: str | None = None
    primary_certificate: str | None = None
    secondary_certificate: str | None = None
    provisioning_status: str = "enabled"
    iot_edge: bool = True
    initial_twin: dict | None = None
    allocation_policy: str | None = None
    iot_hubs: list | None = None
    reprovision_policy: dict | None = None
    thumbprints: dict = field(default_factory=dict)  # slot -> {"sha1", "sha256"}


@dataclass
class Plan:
    spec: EnrollmentSpec
    current: dict | None
    action: str  # create | update | delete | none
    before: dict | None
    after: dict | None


# ---- input ---------------------------------------------------------------------------------------------


# In check mode a certificate file may not exist yet: pki_identity in check mode only predicted it.
PENDING_CERTIFICATE = "(certificate to be issued)"


def _read_pem(item: dict, slot: str, where: str, check_mode: bool) -> str | None:
    text, path = item.get(f"{slot}_certificate"), item.get(f"{slot}_certificate_path")
    if text and path:
        raise ConfigurationError(f"{where}: give {slot}_certificate or {slot}_certificate_path, not both")
    if path and check_mode and not os.path.exists(path):
        return PENDING_CERTIFICATE
    if path:
        try:
            with open(path, "rb") as handle:
                return handle.read().decode("ascii")
        except OSError as exc:
            raise ConfigurationError(
                f"{where}.{slot}_certificate_path: cannot read {path} ({exc.strerror}); point it at the device's "
                "certificate (pki_identity's cert or chain file)"
            ) from None
        except UnicodeDecodeError:
            raise ConfigurationError(f"{where}.{slot}_certificate_path: {path} is not a PEM file") from None
    return text or None


def _leaf_certificate(pem: str, *, registration_id: str, where: str):
    """The first certificate of a PEM (a full chain is fine): its CN must be the registration id."""
    leaf = load_first_certificate(pem, field=where)
    common_name = common_name_of(leaf.subject)
    if common_name != registration_id:
        raise ConfigurationError(
            f"{where}: the certificate's CN is {common_name!r} but the registration id is {registration_id!r}; "
            "DPS takes an X.509 device's registration id from its certificate CN, so the device could never "
            "register. Issue the certificate for this id (pki_identity) or fix registration_id"
        )
    return leaf


def build_specs(enrollments, defaults: dict, check_mode: bool = False) -> list:
    """Validate every item (merged over the shared options) before any request is sent."""
    if not isinstance(enrollments, list) or not enrollments:
        raise ConfigurationError("enrollments: give at least one enrollment ({registration_id: ..., ...})")
    specs, seen = [], {}
    for index, raw in enumerate(enrollments):
        where = f"enrollments[{index}]"
        if not isinstance(raw, dict):
            raise ConfigurationError(f"{where}: must be a dict with registration_id and the enrollment's options")
        item = {key: value for key, value in defaults.items() if value is not None}
        item.update({key: value for key, value in raw.items() if value is not None})
        try:
            registration_id = validate_registration_id(item.get("registration_id"), field=f"{where}.registration_id")
        except PkiError as exc:
            raise ConfigurationError(str(exc)) from None
        if registration_id in seen:
            raise ConfigurationError(
                f"{where}.registration_id: {registration_id!r} is listed twice (also at enrollments[{seen[registration_id]}])"
            )
        seen[registration_id] = index
        state = item.get("state", "present")
        check_choice(state, STATES, f"{where}.state")
        check_choice(item.get("provisioning_status"), PROVISIONING_STATUSES, f"{where}.provisioning_status")
        check_choice(item.get("allocation_policy"), ALLOCATION_POLICIES, f"{where}.allocation_policy")
        iot_hubs = item.get("iot_hubs")
        check_iot_hubs(iot_hubs, f"{where}.iot_hubs")
        device_id = item.get("device_id")
        if device_id is not None and (not isinstance(device_id, str) or not device_id or len(device_id) > 128):
            raise ConfigurationError(f"{where}.device_id: must be a non-empty string of at most 128 characters")
        spec = EnrollmentSpec(
            registration_id=registration_id,
            state=state,
            device_id=device_id,
            provisioning_status=item.get("provisioning_status", "enabled"),
            iot_edge=bool(item.get("iot_edge", True)),
            initial_twin=validate_initial_twin(item.get("initial_twin"), f"{where}.initial_twin"),
            allocation_policy=item.get("allocation_policy"),
            iot_hubs=list(iot_hubs) if iot_hubs is not None else None,
            reprovision_policy=validate_reprovision_policy(
                item.get("reprovision_policy"), f"{where}.reprovision_policy"
            ),
        )
        if state == "present":
            for slot in ("primary", "secondary"):
                pem = _read_pem(item, slot, where, check_mode)
                if pem is None:
                    continue
                if pem == PENDING_CERTIFICATE:
                    setattr(spec, f"{slot}_certificate", pem)
                    spec.thumbprints[slot] = {"sha1": PENDING_CERTIFICATE, "sha256": PENDING_CERTIFICATE}
                    continue
                leaf = _leaf_certificate(pem, registration_id=registration_id, where=f"{where}.{slot}_certificate")
                setattr(spec, f"{slot}_certificate", pem)
                spec.thumbprints[slot] = fingerprints(leaf)
            if spec.primary_certificate is None:
                raise ConfigurationError(
                    f"{where}: state=present needs primary_certificate or primary_certificate_path (the device's "
                    "X.509 certificate)"
                )
        specs.append(spec)
    return specs


# ---- views -----------------------------------------------------------------------------------------------


def _certificate_info(record: dict, slot: str) -> dict:
    certificates = (((record.get("attestation") or {}).get("x509") or {}).get("clientCertificates")) or {}
    return (certificates.get(slot) or {}).get("info") or {}


def current_view(record: dict | None, managed_twin: dict | None = None) -> dict | None:
    """The managed fields of a DPS record, snake_case (what diff and results show).

    ``managed_twin`` is the initial_twin asked for: a key of it named like DPS's counters is the user's.
    """
    if record is None:
        return None
    return {
        "registration_id": record.get("registrationId"),
        "device_id": record.get("deviceId"),
        "provisioning_status": record.get("provisioningStatus", "enabled"),
        "iot_edge": bool((record.get("capabilities") or {}).get("iotEdge", False)),
        "primary_thumbprint": _certificate_info(record, "primary").get("sha256Thumbprint"),
        "secondary_thumbprint": _certificate_info(record, "secondary").get("sha256Thumbprint"),
        "initial_twin": initial_twin_view(record.get("initialTwin") or {}, managed_twin),
        "allocation_policy": record.get("allocationPolicy"),
        "iot_hubs": sorted(record.get("iotHubs") or []),
        "reprovision_policy": reprovision_policy_view(record.get("reprovisionPolicy")),
    }


def desired_view(spec: EnrollmentSpec, current: dict | None) -> dict:
    """The view after the write: options left unset keep what DPS has (or its default on create)."""
    view = copy.deepcopy(current) if current else current_view({"registrationId": spec.registration_id})
    view["registration_id"] = current["registration_id"] if current else spec.registration_id
    view["provisioning_status"] = spec.provisioning_status
    view["iot_edge"] = spec.iot_edge
    if spec.device_id is not None:
        view["device_id"] = spec.device_id
    # The attestation is managed as a whole: a secondary left out is removed (the end of a rotation).
    for slot in ("primary", "secondary"):
        view[f"{slot}_thumbprint"] = spec.thumbprints[slot]["sha256"] if slot in spec.thumbprints else None
    if spec.initial_twin is not None:
        view["initial_twin"] = {**view["initial_twin"], **spec.initial_twin}
    if spec.allocation_policy is not None:
        view["allocation_policy"] = spec.allocation_policy
    if spec.iot_hubs is not None:
        view["iot_hubs"] = sorted(spec.iot_hubs)
    if spec.reprovision_policy is not None:
        view["reprovision_policy"] = dict(spec.reprovision_policy)
    return view


def wire_record(spec: EnrollmentSpec, current_record: dict | None) -> dict:
    """The body DPS gets: the current record (unmanaged fields kept) with the managed fields set."""
    body = {k: v for k, v in (current_record or {}).items() if k not in READ_ONLY_FIELDS}
    body["registrationId"] = (current_record or {}).get("registrationId", spec.registration_id)
    certificates = {
        slot: {"certificate": getattr(spec, f"{slot}_certificate")}
        for slot in ("primary", "secondary")
        if getattr(spec, f"{slot}_certificate") is not None
    }
    body["attestation"] = {"type": "x509", "x509": {"clientCertificates": certificates}}
    body["capabilities"] = {"iotEdge": spec.iot_edge}
    body["provisioningStatus"] = spec.provisioning_status
    if spec.device_id is not None:
        body["deviceId"] = spec.device_id
    if spec.initial_twin is not None:
        # A part left out keeps what DPS has.
        body["initialTwin"] = initial_twin_wire(
            {**initial_twin_view(body.get("initialTwin") or {}), **spec.initial_twin}
        )
    if spec.allocation_policy is not None:
        body["allocationPolicy"] = spec.allocation_policy
    if spec.iot_hubs is not None:
        body["iotHubs"] = list(spec.iot_hubs)
    if spec.reprovision_policy is not None:
        body["reprovisionPolicy"] = reprovision_policy_wire(spec.reprovision_policy)
    return body


# ---- plan and apply --------------------------------------------------------------------------------------


def read_current(client, specs) -> dict:
    """registration id (lowercase) -> DPS record, for the ids asked about."""
    wanted = {spec.registration_id.lower() for spec in specs}
    if len(wanted) <= GET_READ_LIMIT:
        records = {}
        for spec in specs:
            record = client.get_enrollment(spec.registration_id)
            if record is not None:
                records[spec.registration_id.lower()] = record
        return records
    return {
        record["registrationId"].lower(): record
        for record in client.query_enrollments()
        if isinstance(record, dict) and str(record.get("registrationId", "")).lower() in wanted
    }


def plan_enrollments(specs, current_records: dict) -> list:
    plans = []
    for spec in specs:
        record = current_records.get(spec.registration_id.lower())
        before = current_view(record, spec.initial_twin)
        if spec.state == "absent":
            plans.append(Plan(spec, record, "delete" if record else "none", before, None))
            continue
        after = desired_view(spec, before)
        if record is None:
            action = "create"
        elif after != before:
            action = "update"
        else:
            action = "none"
        plans.append(Plan(spec, record, action, before, after))
    return plans


def _chunks(items, size=BULK_LIMIT):
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _settled(client, plan: Plan) -> bool:
    """After a per-item bulk error: is the record already as wanted (our lost-then-retried write, or a peer's)?"""
    record = client.get_enrollment(plan.spec.registration_id)
    if plan.action == "delete":
        return record is None
    if record is None:
        return False
    # Compare what the spec manages only: DPS fills in defaults (reprovisionPolicy) that the plan did not predict.
    view = current_view(record, plan.spec.initial_twin)
    return desired_view(plan.spec, view) == view


def apply_plans(client, plans) -> list:
    """Run the writes in bulk; return the per-item failures that did not settle."""
    failures = []
    for action, mode in (("create", "create"), ("update", "updateIfMatchETag"), ("delete", "delete")):
        selected = [plan for plan in plans if plan.action == action]
        for chunk in _chunks(selected):
            if action == "delete":
                items = [{"registrationId": p.current["registrationId"], "etag": p.current.get("etag")} for p in chunk]
            else:
                items = []
                for plan in chunk:
                    body = wire_record(plan.spec, plan.current)
                    if plan.current is not None:
                        body["etag"] = plan.current.get("etag")
                    items.append(body)
            result = client.bulk_enrollments(mode, items)
            by_id = {plan.spec.registration_id.lower(): plan for plan in chunk}
            for error in result.get("errors") or []:
                plan = by_id.get(str(error.get("registrationId", "")).lower())
                if plan is None or not _settled(client, plan):
                    failures.append(
                        {
                            "registration_id": error.get("registrationId"),
                            "action": action,
                            "error_code": error.get("errorCode"),
                            "error": error.get("errorStatus"),
                        }
                    )
    return failures


def _registration_status(plan: Plan) -> str | None:
    """DPS's registration state of the device as read with the enrollment (None: never registered, or re-created).

    Deleting an individual enrollment deletes its registration state: a re-created one has none until the device
    registers again, which a device that keeps its hub assignment does only when it is told to reprovision.
    """
    if plan.action == "create" or plan.current is None:
        return None
    return (plan.current.get("registrationState") or {}).get("status")


def ensure_enrollments(
    client, enrollments, defaults: dict, *, check_mode: bool, fail_on_item_errors: bool = True
) -> dict:
    """The dps_enrollment core: validate all, read, compare, write (not in check mode), report.

    With ``fail_on_item_errors`` false, writes DPS refused are reported in ``failures`` instead of raised, so a
    caller acting for many hosts can fail just those hosts.
    """
    specs = build_specs(enrollments, defaults, check_mode)
    plans = plan_enrollments(specs, read_current(client, specs))
    writes = [plan for plan in plans if plan.action != "none"]
    failures = [] if check_mode else apply_plans(client, writes)
    failed_ids = {failure["registration_id"].lower() for failure in failures if failure["registration_id"]}
    changed_ids = {p.spec.registration_id for p in writes if p.spec.registration_id.lower() not in failed_ids}
    changed_plans = [p for p in writes if p.spec.registration_id in changed_ids]
    result = {
        "changed": bool(changed_plans),
        "enrollments": [
            {
                "registration_id": plan.spec.registration_id,
                "action": plan.action,
                "changed": plan.spec.registration_id in changed_ids,
                "enrollment": plan.after,
                "registration_status": _registration_status(plan),
            }
            for plan in plans
        ],
        "created": [p.spec.registration_id for p in changed_plans if p.action == "create"],
        "updated": [p.spec.registration_id for p in changed_plans if p.action == "update"],
        "deleted": [p.spec.registration_id for p in changed_plans if p.action == "delete"],
        "failures": failures,
        "http_requests": client.requests_sent,
        "diff": {
            "before": {p.spec.registration_id: p.before for p in changed_plans},
            "after": {p.spec.registration_id: p.after for p in changed_plans},
        },
    }
    if failures and fail_on_item_errors:
        listed = "; ".join(f"{f['registration_id']} ({f['action']}: {f['error_code']} {f['error']})" for f in failures)
        raise ApiError(
            f"DPS refused {len(failures)} of {len(writes)} enrollment writes: {listed}. The others were applied; "
            "fix the cause and re-run.",
            status=200,
            operation="IndividualEnrollment_RunBulkOperation",
        )
    return result


__all__ = (
    "ALLOCATION_POLICIES",
    "PROVISIONING_STATUSES",
    "SHARED_OPTIONS",
    "STATES",
    "EnrollmentSpec",
    "build_specs",
    "current_view",
    "desired_view",
    "ensure_enrollments",
    "plan_enrollments",
    "read_current",
    "wire_record",
)
