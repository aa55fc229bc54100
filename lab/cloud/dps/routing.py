"""DPS routing tables: method + path template -> operation name (swagger operationId) -> responses handler.

The operation names double as fault-injection match keys and as rows of the README coverage table.
"""

from __future__ import annotations

from lab.cloud.http import Route

ENROLLMENT_READ = "EnrollmentRead"
ENROLLMENT_WRITE = "EnrollmentWrite"
REGISTRATION_READ = "RegistrationStatusRead"
REGISTRATION_WRITE = "RegistrationStatusWrite"

SERVICE_ROUTES = [
    Route("POST", "/enrollments", "IndividualEnrollment_RunBulkOperation", "bulk_enrollments", ENROLLMENT_WRITE),
    Route("POST", "/enrollments/query", "IndividualEnrollment_Query", "query_enrollments", ENROLLMENT_READ),
    Route("GET", "/enrollments/{record_id}", "IndividualEnrollment_Get", "get_enrollment", ENROLLMENT_READ),
    Route("PUT", "/enrollments/{record_id}", "IndividualEnrollment_CreateOrUpdate", "put_enrollment", ENROLLMENT_WRITE),
    Route("DELETE", "/enrollments/{record_id}", "IndividualEnrollment_Delete", "delete_enrollment", ENROLLMENT_WRITE),
    Route(
        "POST",
        "/enrollments/{record_id}/attestationmechanism",
        "IndividualEnrollment_GetAttestationMechanism",
        "enrollment_attestation",
        ENROLLMENT_READ,
    ),
    Route("POST", "/enrollmentGroups", "EnrollmentGroup_RunBulkOperation", "bulk_groups", ENROLLMENT_WRITE),
    Route("POST", "/enrollmentGroups/query", "EnrollmentGroup_Query", "query_groups", ENROLLMENT_READ),
    Route("GET", "/enrollmentGroups/{record_id}", "EnrollmentGroup_Get", "get_group", ENROLLMENT_READ),
    Route("PUT", "/enrollmentGroups/{record_id}", "EnrollmentGroup_CreateOrUpdate", "put_group", ENROLLMENT_WRITE),
    Route("DELETE", "/enrollmentGroups/{record_id}", "EnrollmentGroup_Delete", "delete_group", ENROLLMENT_WRITE),
    Route(
        "POST",
        "/enrollmentGroups/{record_id}/attestationmechanism",
        "EnrollmentGroup_GetAttestationMechanism",
        "group_attestation",
        ENROLLMENT_READ,
    ),
    Route("GET", "/registrations/{record_id}", "DeviceRegistrationState_Get", "get_registration", REGISTRATION_READ),
    Route(
        "DELETE",
        "/registrations/{record_id}",
        "DeviceRegistrationState_Delete",
        "delete_registration",
        REGISTRATION_WRITE,
    ),
    Route(
        "POST",
        "/registrations/{record_id}/query",
        "DeviceRegistrationState_Query",
        "query_registrations",
        REGISTRATION_READ,
    ),
]

DEVICE_ROUTES = [
    Route(
        "PUT", "/{idScope}/registrations/{registrationId}/register", "RuntimeRegistration_RegisterDevice", "register"
    ),
    Route(
        "GET",
        "/{idScope}/registrations/{registrationId}/operations/{operationId}",
        "RuntimeRegistration_OperationStatusLookup",
        "operation_status",
    ),
    Route(
        "POST",
        "/{idScope}/registrations/{registrationId}",
        "RuntimeRegistration_DeviceRegistrationStatusLookup",
        "status_lookup",
    ),
]

MANAGEMENT_PREFIX = (
    "/subscriptions/{subscription}/resourceGroups/{resourceGroup}"
    "/providers/Microsoft.Devices/provisioningServices/{dpsName}"
)

MANAGEMENT_ROUTES = [
    Route("GET", f"{MANAGEMENT_PREFIX}/certificates", "DpsCertificate_List", "list_certificates"),
    Route("GET", f"{MANAGEMENT_PREFIX}/certificates/{{name}}", "DpsCertificate_Get", "get_certificate"),
    Route("PUT", f"{MANAGEMENT_PREFIX}/certificates/{{name}}", "DpsCertificate_CreateOrUpdate", "put_certificate"),
    Route("DELETE", f"{MANAGEMENT_PREFIX}/certificates/{{name}}", "DpsCertificate_Delete", "delete_certificate"),
    Route(
        "POST",
        f"{MANAGEMENT_PREFIX}/certificates/{{name}}/generateVerificationCode",
        "DpsCertificate_GenerateVerificationCode",
        "generate_verification_code",
    ),
    Route("POST", f"{MANAGEMENT_PREFIX}/certificates/{{name}}/verify", "DpsCertificate_VerifyCertificate", "verify"),
]
