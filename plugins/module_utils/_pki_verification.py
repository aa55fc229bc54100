# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# PRIVATE to the edgefleet.iotedge collection. Do not use this from other collections:
# it may change at any time.

"""Proof-of-possession ("verification") certificates: CN = the code DPS or IoT Hub gave, signed by the CA key."""

from __future__ import annotations

import datetime
import os
import re
from dataclasses import dataclass

from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki import (
    KEY_TYPES,
    PkiError,
    build_certificate,
    certificate_pem,
    certificate_summary,
    common_name_of,
    generate_private_key,
    load_certificates,
    not_after_of,
    read_file,
    signed_by,
    utcnow,
    validity_window,
    write_files_atomically,
)
from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki_ca import ca_exists, load_ca
from ansible_collections.edgefleet.iotedge.plugins.module_utils._shown import shown

SIGNERS = ("root", "intermediate")
# DPS hands out hex codes; anything printable that fits a CN is accepted so other issuers work too.
VERIFICATION_CODE_PATTERN = re.compile(r"[A-Za-z0-9\-._:]{1,64}")
CERT_MODE = 0o644


@dataclass
class VerificationRequest:
    ca_path: str
    path: str
    verification_code: str
    signer: str = "root"
    key_type: str = "ec-p256"
    valid_days: int = 30
    passphrase: str | None = None
    force: bool = False


def issue_verification_certificate(ca, *, verification_code: str, signer: str, key_type: str, valid_days: int, now):
    """Return a certificate with CN = the code, signed by the root or the intermediate of a LoadedCa."""
    if signer == "intermediate":
        if ca.intermediate_cert is None:
            raise PkiError("signer: the CA in ca_path has no intermediate; use signer=root")
        issuer_cert, issuer_key = ca.intermediate_cert, ca.signer_key
    else:
        issuer_cert, issuer_key = ca.root_cert, ca.root_key
    not_before, not_after = validity_window(now=now, valid_days=valid_days, cap=not_after_of(issuer_cert))
    key = generate_private_key(key_type)
    return build_certificate(
        common_name=verification_code,
        public_key=key.public_key(),
        issuer_cert=issuer_cert,
        issuer_key=issuer_key,
        not_before=not_before,
        not_after=not_after,
        profile="client",
    )


def ensure_verification_certificate(
    request: VerificationRequest, *, check_mode: bool, now: datetime.datetime | None = None
) -> dict:
    now = now or utcnow()
    if not isinstance(request.verification_code, str) or not VERIFICATION_CODE_PATTERN.fullmatch(
        request.verification_code
    ):
        raise PkiError(
            f"verification_code: {shown(request.verification_code)} is not a verification code; pass the code DPS "
            "returned from generateVerificationCode (letters, digits, '-', '.', '_', ':'; at most 64)"
        )
    if request.signer not in SIGNERS:
        raise PkiError(f"signer: {shown(request.signer)} is not known; use root or intermediate")
    if request.key_type not in KEY_TYPES:
        raise PkiError(f"key_type: {shown(request.key_type)} is not supported; use one of {', '.join(KEY_TYPES)}")
    if request.valid_days < 1:
        raise PkiError(f"valid_days: must be at least 1, got {request.valid_days}")
    if check_mode and not ca_exists(request.ca_path):
        # pki_ca in check mode created nothing; a real run would issue this certificate.
        return _result(True, request.path, None, None, ["the CA in ca_path does not exist yet"])
    ca = load_ca(request.ca_path, passphrase=request.passphrase)
    if request.signer == "intermediate" and ca.intermediate_cert is None:
        raise PkiError("signer: the CA in ca_path has no intermediate; use signer=root")
    issuer_cert = ca.intermediate_cert if request.signer == "intermediate" else ca.root_cert

    current = None
    existing_pem = read_file(request.path)
    reasons = []
    if existing_pem is None:
        reasons.append("no verification certificate yet")
    else:
        current = load_certificates(existing_pem, path=request.path)[0]
        if common_name_of(current.subject) != request.verification_code:
            reasons.append("CN is not the verification code")
        if not signed_by(current, issuer_cert):
            reasons.append(f"not signed by the {request.signer}")
        if not_after_of(current) <= now + datetime.timedelta(days=1):
            reasons.append("expires within a day")
        if request.force:
            reasons.append("force=true")

    if not reasons:
        return _result(False, request.path, current, current, reasons)
    if check_mode:
        return _result(True, request.path, current, None, reasons)
    cert = issue_verification_certificate(
        ca,
        verification_code=request.verification_code,
        signer=request.signer,
        key_type=request.key_type,
        valid_days=request.valid_days,
        now=now,
    )
    directory = os.path.dirname(request.path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    write_files_atomically([(request.path, certificate_pem(cert), CERT_MODE)])
    return _result(True, request.path, current, cert, reasons)


def _result(changed, path, before_cert, after_cert, reasons) -> dict:
    after = certificate_summary(after_cert) if after_cert is not None else None
    return {
        "changed": changed,
        "path": path,
        "reasons": reasons,
        "certificate": after,
        "thumbprint_sha1": after["thumbprint_sha1"] if after else None,
        "thumbprint_sha256": after["thumbprint_sha256"] if after else None,
        "diff": {
            "before": certificate_summary(before_cert) if before_cert is not None else None,
            "after": after,
        },
    }


__all__ = ("SIGNERS", "VerificationRequest", "ensure_verification_certificate", "issue_verification_certificate")
