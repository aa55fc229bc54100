"""DPS state and logic. Pure Python: no HTTP here; errors are ``DpsError``/``ArmError`` named constructors."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography import x509

from lab.cloud.clock import Clock, IdGenerator
from lab.cloud.dps.attestation import AttestationResult, authenticate_x509
from lab.cloud.dps.errors import ArmError, DpsError
from lab.cloud.dps.models import (
    GROUP,
    INDIVIDUAL,
    REGISTRATION_ID,
    CaCertificate,
    Enrollment,
    Operation,
    RegistrationRecord,
    parse_enrollment,
)
from lab.cloud.http import strip_etag
from lab.cloud.x509 import CertificateParseError, certificate_info, common_name, is_issued_by, is_valid_at
from lab.cloud.x509 import load_certificate as parse_certificate

BULK_LIMIT = 10
DEFAULT_PAGE_SIZE = 100
BULK_MODES = ("create", "update", "updateIfMatchETag", "delete")


class ProvisioningTarget(Protocol):
    """What DPS needs from an IoT hub: create or update the device it assigns there."""

    host_name: str

    def provision_device(
        self,
        device_id: str,
        authentication: dict[str, Any],
        iot_edge: bool,
        initial_twin: dict[str, Any] | None,
        twin_policy: str,
        migrated_twin: dict[str, Any] | None,
    ) -> None: ...

    def export_twin(self, device_id: str) -> dict[str, Any] | None: ...


@dataclass
class DpsSettings:
    id_scope: str = "0ne00C0FFEE"
    dps_name: str = "edgefleet-lab-dps"
    require_verified_ca: bool = True
    assigning_polls: int = 0
    retry_after: int = 3


def check_if_match(
    if_match: str | None, current_etag: str | None, record_id: str, error: Callable[[str], Exception]
) -> None:
    """RFC 7232 If-Match: ``*`` matches any existing record; any If-Match on a missing record fails."""
    wanted = strip_etag(if_match)
    if wanted is None:
        return
    if current_etag is None or (wanted != "*" and wanted != current_etag):
        raise error(record_id)


class DpsBackend:
    def __init__(self, clock: Clock, ids: IdGenerator, settings: DpsSettings | None = None) -> None:
        self.clock = clock
        self.ids = ids
        self.settings = settings or DpsSettings()
        self.hubs: dict[str, ProvisioningTarget] = {}
        self.reset()

    def reset(self) -> None:
        self.enrollments: dict[str, Enrollment] = {}
        self.groups: dict[str, Enrollment] = {}
        self.registrations: dict[str, RegistrationRecord] = {}
        self.operations: dict[str, Operation] = {}
        self.certificates: dict[str, CaCertificate] = {}

    def link_hub(self, hub: ProvisioningTarget) -> None:
        self.hubs[hub.host_name.lower()] = hub

    # ---- enrollments and groups (service API) ----------------------------------------------------------------

    def _table(self, kind: str) -> dict[str, Enrollment]:
        return self.enrollments if kind == INDIVIDUAL else self.groups

    @staticmethod
    def _not_found(kind: str) -> Callable[[str], DpsError]:
        return DpsError.enrollment_not_found if kind == INDIVIDUAL else DpsError.enrollment_group_not_found

    def _validate_references(self, enrollment: Enrollment) -> None:
        x509_attestation = enrollment.attestation.x509
        if x509_attestation is None:
            return
        for slot, name in x509_attestation.ca_references.items():
            if name not in self.certificates:
                raise DpsError.bad_request(
                    f"'attestation.x509.caReferences.{slot}' names unknown certificate '{name}'."
                )

    def get_enrollment(self, kind: str, record_id: str) -> Enrollment:
        found = self._table(kind).get(record_id.lower())
        if found is None:
            raise self._not_found(kind)(record_id)
        return found

    def registration_for(self, enrollment: Enrollment) -> RegistrationRecord | None:
        return self.registrations.get(enrollment.key) if enrollment.kind == INDIVIDUAL else None

    def put_enrollment(self, kind: str, record_id: str, body: Any, if_match: str | None) -> Enrollment:
        """Create (no If-Match) or update (If-Match etag or ``*``); no If-Match on an existing record is 409."""
        table = self._table(kind)
        existing = table.get(record_id.lower())
        label = "Enrollment" if kind == INDIVIDUAL else "Enrollment group"
        if existing is not None and if_match is None:
            raise DpsError.already_exists(label, record_id)
        check_if_match(if_match, existing.etag if existing else None, record_id, DpsError.etag_mismatch)
        enrollment = parse_enrollment(
            body, kind, record_id, existing, etag=self.ids.dps_etag(), now=self.clock.now(), new_key=self.ids.key
        )
        self._validate_references(enrollment)
        table[enrollment.key] = enrollment
        return enrollment

    def delete_enrollment(self, kind: str, record_id: str, if_match: str | None) -> None:
        table = self._table(kind)
        existing = table.get(record_id.lower())
        if existing is None:
            raise self._not_found(kind)(record_id)
        check_if_match(if_match, existing.etag, record_id, DpsError.etag_mismatch)
        del table[existing.key]
        if kind == INDIVIDUAL:
            # An individual enrollment's registration state lives and dies with it; hub devices stay.
            self.registrations.pop(existing.key, None)

    def bulk(self, kind: str, body: Any) -> dict[str, Any]:
        """Run a bulk operation item by item (not atomic); per-item failures go to ``errors`` with HTTP 200."""
        items_key = "enrollments" if kind == INDIVIDUAL else "enrollmentGroups"
        id_field = "registrationId" if kind == INDIVIDUAL else "enrollmentGroupId"
        if not isinstance(body, dict):
            raise DpsError.bad_request("Bulk operation body must be a JSON object.")
        mode = body.get("mode")
        if mode not in BULK_MODES:
            raise DpsError.bad_request(f"'mode' must be one of {list(BULK_MODES)}.")
        items = body.get(items_key)
        if not isinstance(items, list) or not items:
            raise DpsError.bad_request(f"'{items_key}' must be a non-empty list.")
        if len(items) > BULK_LIMIT:
            raise DpsError.too_many_bulk_items(len(items))
        table = self._table(kind)
        errors: list[dict[str, Any]] = []
        for item in items:
            record_id = item.get(id_field) if isinstance(item, dict) else None
            try:
                if not isinstance(record_id, str) or not record_id:
                    raise DpsError.bad_request(f"'{id_field}' is required.")
                existing = table.get(record_id.lower())
                if mode == "delete":
                    self.delete_enrollment(kind, record_id, None)
                    continue
                if mode == "create" and existing is not None:
                    raise DpsError.already_exists("Enrollment" if kind == INDIVIDUAL else "Enrollment group", record_id)
                if mode == "updateIfMatchETag":
                    if existing is None:
                        raise self._not_found(kind)(record_id)
                    check_if_match(item.get("etag") or None, existing.etag, record_id, DpsError.etag_mismatch)
                enrollment = parse_enrollment(
                    item, kind, None, existing, etag=self.ids.dps_etag(), now=self.clock.now(), new_key=self.ids.key
                )
                self._validate_references(enrollment)
                table[enrollment.key] = enrollment
            except DpsError as error:
                errors.append({id_field: record_id, "errorCode": error.code, "errorStatus": error.message})
        return {"isSuccessful": not errors, "errors": errors}

    # ---- queries with continuation tokens ------------------------------------------------------------------

    def _page(
        self, scope: str, rows: list[Any], page_size: int | None, continuation: str | None
    ) -> tuple[list[Any], str | None]:
        size = page_size or DEFAULT_PAGE_SIZE
        if size < 1:
            raise DpsError.bad_request("'x-ms-max-item-count' must be a positive integer.")
        offset = 0
        if continuation:
            try:
                token = json.loads(base64.b64decode(continuation, validate=True))
                offset = int(token["offset"])
                same_scope = token["scope"] == scope
            except (binascii.Error, ValueError, KeyError, TypeError) as exc:
                raise DpsError.bad_request("'x-ms-continuation' is not a token this service issued.") from exc
            if not same_scope:
                raise DpsError.bad_request("'x-ms-continuation' belongs to a different query.")
        page = rows[offset : offset + size]
        next_offset = offset + size
        token_out = None
        if next_offset < len(rows):
            token_out = base64.b64encode(json.dumps({"scope": scope, "offset": next_offset}).encode()).decode()
        return page, token_out

    def query_enrollments(
        self, kind: str, query: Any, page_size: int | None, continuation: str | None
    ) -> tuple[list[Enrollment], str | None]:
        if not isinstance(query, dict) or not isinstance(query.get("query"), str):
            raise DpsError.bad_request('Query body must be {"query": "*"}.')
        text = " ".join(query["query"].split())
        table_name = "enrollments" if kind == INDIVIDUAL else "enrollmentgroups"
        if text != "*" and text.lower() != f"select * from {table_name}":
            raise DpsError.bad_request(f"The emulator supports only the query '*' (or 'SELECT * FROM {table_name}').")
        rows = [self._table(kind)[key] for key in sorted(self._table(kind))]
        return self._page(f"{kind}:*", rows, page_size, continuation)

    # ---- registration states (service API) -----------------------------------------------------------------

    def get_registration(self, registration_id: str) -> RegistrationRecord:
        found = self.registrations.get(registration_id.lower())
        if found is None:
            raise DpsError.registration_not_found(registration_id)
        return found

    def delete_registration(self, registration_id: str, if_match: str | None) -> None:
        found = self.get_registration(registration_id)
        check_if_match(if_match, found.etag, registration_id, DpsError.etag_mismatch)
        del self.registrations[registration_id.lower()]

    def query_registrations(
        self, group_id: str, page_size: int | None, continuation: str | None
    ) -> tuple[list[RegistrationRecord], str | None]:
        rows = [
            self.registrations[key]
            for key in sorted(self.registrations)
            if (self.registrations[key].enrollment_group_id or "").lower() == group_id.lower()
        ]
        return self._page(f"registrations:{group_id.lower()}", rows, page_size, continuation)

    # ---- device registration (device API) ------------------------------------------------------------------

    def _check_scope(self, id_scope: str) -> None:
        if id_scope.lower() != self.settings.id_scope.lower():
            raise DpsError.unauthorized(f"unknown ID scope '{id_scope}'")

    def _authenticate(self, registration_id: str, chain: list[x509.Certificate]) -> AttestationResult:
        return authenticate_x509(
            chain,
            registration_id,
            self.enrollments,
            self.groups.values(),
            self.certificates,
            self.clock.now(),
            self.settings.require_verified_ca,
        )

    def register(self, id_scope: str, registration_id: str, body: Any, chain: list[x509.Certificate]) -> Operation:
        self._check_scope(id_scope)
        if not isinstance(body, dict) or body.get("registrationId") != registration_id:
            raise DpsError.bad_request("'registrationId' in the body must equal the registration id in the URL.")
        if not REGISTRATION_ID.fullmatch(registration_id):
            raise DpsError.bad_request(
                f"registration id {registration_id!r} is invalid: use alphanumerics and - . _ : "
                "(at most 128, ending alphanumeric or -)."
            )
        result = self._authenticate(registration_id, chain)
        record = self._assign(result, body.get("payload"))
        operation = Operation(
            operation_id=f"5.{self.ids.hex(16).lower()}.{self.ids.guid()}",
            registration_id=registration_id,
            polls_remaining=self.settings.assigning_polls,
            record=record,
        )
        self.operations[operation.operation_id] = operation
        return operation

    def operation_status(
        self, id_scope: str, registration_id: str, operation_id: str, chain: list[x509.Certificate]
    ) -> tuple[bool, Operation]:
        """``(done, operation)``; not done means the caller answers 202 ``assigning``."""
        self._check_scope(id_scope)
        self._require_device_identity(registration_id, chain)
        operation = self.operations.get(operation_id)
        if operation is None or operation.registration_id.lower() != registration_id.lower():
            raise DpsError.operation_not_found(operation_id)
        if operation.polls_remaining > 0:
            operation.polls_remaining -= 1
            return False, operation
        return True, operation

    def status_lookup(self, id_scope: str, registration_id: str, chain: list[x509.Certificate]) -> RegistrationRecord:
        self._check_scope(id_scope)
        self._require_device_identity(registration_id, chain)
        return self.get_registration(registration_id)

    @staticmethod
    def _require_device_identity(registration_id: str, chain: list[x509.Certificate]) -> None:
        if not chain:
            raise DpsError.unauthorized("no client certificate was presented in the TLS handshake")
        cn = common_name(chain[0])
        if not cn or cn.lower() != registration_id.lower():
            raise DpsError.unauthorized(f"the device certificate CN {cn!r} differs from the registration id")

    def _candidate_hubs(self, enrollment: Enrollment) -> list[str]:
        linked = sorted(self.hubs)
        if enrollment.iot_hubs:
            return [hub.lower() for hub in enrollment.iot_hubs if hub.lower() in self.hubs]
        if enrollment.iot_hub_host_name and enrollment.iot_hub_host_name.lower() in self.hubs:
            return [enrollment.iot_hub_host_name.lower()]
        return linked

    def _allocate(self, enrollment: Enrollment, registration_id: str) -> str:
        """Pick a linked hub: static -> the first listed; hashed (default) -> stable hash; geoLatency -> first."""
        candidates = self._candidate_hubs(enrollment)
        if not candidates:
            raise DpsError.bad_request("no linked IoT hub matches the enrollment's iotHubs")
        policy = enrollment.allocation_policy or "hashed"
        if policy == "custom":
            raise DpsError.bad_request("custom allocation (webhook) is not supported by the emulator")
        if policy == "hashed":
            digest = hashlib.sha256(registration_id.lower().encode()).digest()
            return sorted(candidates)[int.from_bytes(digest[:4], "big") % len(candidates)]
        return candidates[0]

    def _assign(self, result: AttestationResult, payload: Any) -> RegistrationRecord:
        enrollment = result.enrollment
        now = self.clock.now()
        key = result.registration_id.lower()
        previous = self.registrations.get(key)
        group_id = enrollment.record_id if enrollment.kind == GROUP else None
        record = RegistrationRecord(
            registration_id=result.registration_id,
            created=previous.created if previous else now,
            updated=now,
            status="assigning",
            etag=self.ids.dps_etag(),
            enrollment_group_id=group_id,
            certificate_info=certificate_info(result.leaf),
            signing_certificate_info=certificate_info(result.signing_certificate)
            if result.signing_certificate
            else None,
            payload=payload,
        )
        if enrollment.provisioning_status == "disabled":
            record.status = "disabled"
            self.registrations[key] = record
            return record
        try:
            hub_name = self._allocate(enrollment, result.registration_id)
        except DpsError as error:
            record.status, record.error_code, record.error_message = "failed", int(error.code), error.message
            self.registrations[key] = record
            return record
        device_id = (enrollment.device_id if enrollment.kind == INDIVIDUAL else None) or result.registration_id
        hub_name, twin_policy, substatus = self._reprovision(enrollment, previous, hub_name)
        hub = self.hubs[hub_name]
        migrated = None
        if (
            twin_policy == "migrate"
            and previous
            and previous.assigned_hub
            and previous.assigned_hub.lower() != hub_name
        ):
            old_hub = self.hubs.get(previous.assigned_hub.lower())
            migrated = old_hub.export_twin(previous.device_id or device_id) if old_hub else None
        hub.provision_device(
            device_id,
            self._hub_authentication(enrollment),
            enrollment.iot_edge,
            enrollment.initial_twin,
            twin_policy,
            migrated,
        )
        record.status, record.substatus = "assigned", substatus
        record.assigned_hub, record.device_id = hub.host_name, device_id
        self.registrations[key] = record
        return record

    @staticmethod
    def _reprovision(
        enrollment: Enrollment, previous: RegistrationRecord | None, allocated: str
    ) -> tuple[str, str, str]:
        """(hub, twin policy, substatus) following the enrollment's reprovisionPolicy."""
        if previous is None or previous.status != "assigned" or not previous.assigned_hub:
            return allocated, "initial", "initialAssignment"
        policy = enrollment.reprovision_policy
        if not policy.get("updateHubAssignment", True):
            return previous.assigned_hub.lower(), "keep", "reprovisionedToInitialAssignment"
        if policy.get("migrateDeviceData", True):
            return allocated, "migrate", "deviceDataMigrated"
        return allocated, "reset", "deviceDataReset"

    @staticmethod
    def _hub_authentication(enrollment: Enrollment) -> dict[str, Any]:
        x509_attestation = enrollment.attestation.x509
        if enrollment.kind == INDIVIDUAL and x509_attestation and x509_attestation.client_certificates:
            certs = x509_attestation.client_certificates
            thumbprints = {"primaryThumbprint": certs["primary"].sha1}
            if "secondary" in certs:
                thumbprints["secondaryThumbprint"] = certs["secondary"].sha1
            return {"type": "selfSigned", "x509Thumbprint": thumbprints}
        return {"type": "certificateAuthority"}

    # ---- CA certificates and proof of possession (resource-manager API) ------------------------------------

    def _certificate(self, name: str) -> CaCertificate:
        found = self.certificates.get(name)
        if found is None:
            raise ArmError.certificate_not_found(name)
        return found

    def get_certificate(self, name: str) -> CaCertificate:
        return self._certificate(name)

    def list_certificates(self) -> list[CaCertificate]:
        return [self.certificates[name] for name in sorted(self.certificates)]

    @staticmethod
    def _parse_arm_certificate(text: Any, field_name: str) -> x509.Certificate:
        if not isinstance(text, str) or not text.strip():
            raise ArmError.bad_request(f"'{field_name}' is required (PEM or base64 DER).")
        try:
            return parse_certificate(text)
        except CertificateParseError as exc:
            raise ArmError.bad_request(f"'{field_name}' is not a valid certificate: {exc}") from exc

    def put_certificate(self, name: str, body: Any, if_match: str | None) -> CaCertificate:
        if not isinstance(body, dict):
            raise ArmError.bad_request('Body must be {"certificate": ..., "isVerified": bool}.')
        properties = body.get("properties") if isinstance(body.get("properties"), dict) else body
        certificate = self._parse_arm_certificate(properties.get("certificate"), "certificate")
        is_verified = properties.get("isVerified", False)
        if not isinstance(is_verified, bool):
            raise ArmError.bad_request("'isVerified' must be a boolean.")
        existing = self.certificates.get(name)
        if existing is not None:
            if if_match is None:
                raise ArmError.certificate_exists(name)
            check_if_match(if_match, existing.etag, name, ArmError.etag_mismatch)
            # Changing the certificate drops any proof of possession made for the old one.
            same = existing.certificate == certificate
            is_verified = is_verified or (same and existing.is_verified)
        now = self.clock.now()
        record = CaCertificate(
            name=name,
            certificate=certificate,
            is_verified=is_verified,
            etag=self.ids.hub_etag(),
            created=existing.created if existing else now,
            updated=now,
        )
        self.certificates[name] = record
        return record

    def delete_certificate(self, name: str, if_match: str | None) -> None:
        found = self._certificate(name)
        if not if_match:
            raise ArmError.if_match_required("Deleting a certificate")
        check_if_match(if_match, found.etag, name, ArmError.etag_mismatch)
        del self.certificates[name]

    def generate_verification_code(self, name: str, if_match: str | None) -> CaCertificate:
        found = self._certificate(name)
        if not if_match:
            raise ArmError.if_match_required("generateVerificationCode")
        check_if_match(if_match, found.etag, name, ArmError.etag_mismatch)
        found.verification_code = self.ids.hex(48)
        found.etag = self.ids.hub_etag()
        found.updated = self.clock.now()
        return found

    def verify_certificate(self, name: str, if_match: str | None, body: Any) -> CaCertificate:
        """Proof of possession: a certificate with CN = the last code, signed by the stored CA's key."""
        found = self._certificate(name)
        if not if_match:
            raise ArmError.if_match_required("verify")
        check_if_match(if_match, found.etag, name, ArmError.etag_mismatch)
        if not isinstance(body, dict):
            raise ArmError.bad_request('Body must be {"certificate": "<PEM or base64 DER>"}.')
        proof = self._parse_arm_certificate(body.get("certificate"), "certificate")
        if found.verification_code is None:
            raise ArmError.verification_failed("no verification code was generated for this certificate")
        if common_name(proof) != found.verification_code:
            raise ArmError.verification_failed("the certificate CN is not the current verification code")
        if not is_issued_by(proof, found.certificate):
            raise ArmError.verification_failed("the certificate is not signed by the uploaded CA certificate's key")
        if not is_valid_at(proof, self.clock.now()):
            raise ArmError.verification_failed("the verification certificate is expired or not yet valid")
        found.is_verified = True
        found.verification_code = None
        found.etag = self.ids.hub_etag()
        found.updated = self.clock.now()
        return found

    # ---- state dump ----------------------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        return {
            "idScope": self.settings.id_scope,
            "linkedHubs": [self.hubs[name].host_name for name in sorted(self.hubs)],
            "enrollments": [
                self.enrollments[k].to_state(self.registration_for(self.enrollments[k]))
                for k in sorted(self.enrollments)
            ],
            "enrollmentGroups": [self.groups[k].to_state() for k in sorted(self.groups)],
            "registrations": [self.registrations[k].to_state() for k in sorted(self.registrations)],
            "operations": [op.to_state() for op in self.operations.values()],
            "certificates": [self.certificates[k].to_state() for k in sorted(self.certificates)],
        }
