# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# PRIVATE to the edgefleet.iotedge collection. Do not use this from other collections:
# it may change at any time.

"""Core of dps_certificate: a CA certificate registered in DPS, verified by proof of possession.

Read, compare (SHA-1 thumbprint and isVerified), act. Proof of possession signs the verification code with the CA
key of a pki_ca directory in memory: no file is written and the throw-away key is never kept.
"""

from __future__ import annotations

import email.utils
import os
import re
from dataclasses import dataclass, replace

from ansible_collections.edgefleet.iotedge.plugins.module_utils._http import (
    LOST_WRITE_STATUSES,
    ApiError,
    ConfigurationError,
    settle_lost_write,
)
from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki import (
    PkiError,
    certificate_pem,
    fingerprints,
    not_after_of,
    utcnow,
)
from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki_ca import ca_exists, load_ca
from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki_verification import (
    SIGNERS,
    issue_verification_certificate,
)
from ansible_collections.edgefleet.iotedge.plugins.module_utils._shown import shown

# ARM resource names: no path or query characters; DPS caps certificate names at 256.
CERTIFICATE_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-._]{0,255}")
# The verification certificate only has to live through the verify call.
VERIFICATION_VALID_DAYS = 2


@dataclass
class DpsCertificateRequest:
    name: str
    state: str = "present"
    certificate: str | None = None
    certificate_path: str | None = None
    verify: bool = True
    is_verified: bool = False
    ca_path: str | None = None
    signer: str = "root"
    passphrase: str | None = None
    # CA rollover: the certificate may be registered under either name, so that the old and the new CA are both
    # registered (and referenced) while devices move, without one replacing the other.
    alternate_name: str | None = None
    preserve_certificate_path: str | None = None

    @classmethod
    def from_params(cls, params) -> DpsCertificateRequest:
        return cls(**{name: params.get(name) for name in cls.__dataclass_fields__ if params.get(name) is not None})


def load_first_certificate(text, *, field: str):
    """The first certificate of a PEM text (ConfigurationError naming ``field``)."""
    from cryptography import x509  # optional at import time; run_cloud_core checks it

    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    if not isinstance(text, str) or "-----BEGIN CERTIFICATE-----" not in text:
        raise ConfigurationError(
            f"{field}: not a PEM certificate; give the text from -----BEGIN CERTIFICATE----- to "
            "-----END CERTIFICATE----- (a private key is never needed here)"
        )
    try:
        return x509.load_pem_x509_certificates(text.encode("utf-8"))[0]
    except ValueError as error:
        raise ConfigurationError(f"{field}: the PEM certificate cannot be read ({error})") from None


def read_certificate_file(path: str, *, field: str):
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        raise ConfigurationError(
            f"{field}: {path} does not exist; create it first (edgefleet.iotedge.pki_ca)"
        ) from None
    return load_first_certificate(data, field=f"{field} ({path})")


def _rfc1123(value) -> str:
    return email.utils.format_datetime(value, usegmt=True)


def certificate_view(record) -> dict | None:
    """The managed view of a CertificateResponse: no certificate bytes, nothing secret."""
    if record is None:
        return None
    properties = record.get("properties") or {}
    thumbprint = properties.get("thumbprint")
    return {
        "name": record.get("name"),
        "subject": properties.get("subject"),
        "thumbprint": thumbprint.upper() if isinstance(thumbprint, str) else thumbprint,
        "is_verified": bool(properties.get("isVerified")),
        "expiry": properties.get("expiry"),
        "etag": record.get("etag"),
    }


def _predicted_view(name, cert, *, is_verified, etag) -> dict:
    return {
        "name": name,
        "subject": cert.subject.rfc4514_string(),
        "thumbprint": fingerprints(cert)["sha1"],
        "is_verified": is_verified,
        "expiry": _rfc1123(not_after_of(cert)),
        "etag": etag,
    }


def _diff_view(view):
    # The etag changes on every write; showing it would make every diff noisy.
    return None if view is None else {k: v for k, v in view.items() if k != "etag"}


def _result(changed, before, after, actions) -> dict:
    return {
        "changed": changed,
        "actions": actions,
        "certificate": after,
        "diff": {"before": _diff_view(before), "after": _diff_view(after)},
    }


def _validate(request: DpsCertificateRequest):
    """Check every option before anything is sent; return the certificate to upload (None for absent)."""
    if not isinstance(request.name, str) or not CERTIFICATE_NAME_PATTERN.fullmatch(request.name):
        raise ConfigurationError(
            f"name: {shown(request.name)} is not a DPS certificate name; use letters, digits, '-', '.' and '_' "
            "(starting with a letter or digit, at most 256)"
        )
    if request.alternate_name is not None:
        if not isinstance(request.alternate_name, str) or not CERTIFICATE_NAME_PATTERN.fullmatch(
            request.alternate_name
        ):
            raise ConfigurationError(
                f"alternate_name: {shown(request.alternate_name)} is not a DPS certificate name; use letters, "
                "digits, '-', '.' and '_' (starting with a letter or digit, at most 256)"
            )
        if request.alternate_name == request.name:
            raise ConfigurationError("alternate_name: must differ from name (the two names a CA rollover alternates)")
    if request.state not in ("present", "absent"):
        raise ConfigurationError(f"state: {shown(request.state)} is not known; use present or absent")
    if request.state == "absent":
        return None
    if request.signer not in SIGNERS:
        raise ConfigurationError(f"signer: {shown(request.signer)} is not known; use root or intermediate")
    if bool(request.certificate) == bool(request.certificate_path):
        raise ConfigurationError(
            "certificate: give exactly one of certificate (PEM text) or certificate_path (a PEM file) "
            "with state=present"
        )
    if request.verify and not request.is_verified and not request.ca_path:
        raise ConfigurationError(
            "ca_path: proof of possession (verify=true) signs DPS's verification code with the CA key; give the "
            "edgefleet.iotedge.pki_ca directory, or set is_verified=true (automatic verification), or verify=false"
        )
    if request.certificate:
        return load_first_certificate(request.certificate, field="certificate")
    return read_certificate_file(request.certificate_path, field="certificate_path")


def _not_written_yet(request: DpsCertificateRequest) -> bool:
    return (
        request.state == "present" and bool(request.certificate_path) and not os.path.exists(request.certificate_path)
    )


def _load_signer(request: DpsCertificateRequest, cert):
    """The pki_ca directory whose root or intermediate *is* the uploaded certificate, or a clear error."""
    ca = load_ca(request.ca_path, passphrase=request.passphrase)
    signer_cert = ca.intermediate_cert if request.signer == "intermediate" else ca.root_cert
    if signer_cert is None:
        raise ConfigurationError("signer: the CA in ca_path has no intermediate; use signer=root")
    if fingerprints(signer_cert)["sha256"] != fingerprints(cert)["sha256"]:
        other = "intermediate" if request.signer == "root" else "root"
        raise ConfigurationError(
            f"signer: the {request.signer} certificate in {request.ca_path} is not the certificate being "
            f"uploaded, so its key cannot prove possession; use signer={other} or the ca_path of that CA"
        )
    return ca


def ensure_dps_certificate(client, request: DpsCertificateRequest, *, check_mode: bool) -> dict:
    """Make the DPS certificate ``request.name`` match the request; return changed, certificate view and diff."""
    if check_mode and _not_written_yet(request):
        # pki_ca ran in check mode too and wrote nothing: whatever DPS holds, this certificate would be new.
        current = client.get_certificate(request.name)
        actions = ["create" if current is None else "replace certificate"]
        if request.verify and not request.is_verified:
            actions.append("proof of possession")
        return {"name": request.name, **_result(True, certificate_view(current), None, actions)}
    cert = _validate(request)
    proof_wanted = request.state == "present" and request.verify and not request.is_verified
    ca = None
    if proof_wanted and not (check_mode and not ca_exists(request.ca_path)):
        # Before any request: a wrong passphrase or CA must not leave an unverified upload behind.
        ca = _load_signer(request, cert)

    alternate = None
    if request.alternate_name and request.state == "present":
        request, current, alternate = _choose_name(client, request, cert)
    else:
        current = client.get_certificate(request.name)
    result = _ensure(client, request, cert, ca, current, proof_wanted=proof_wanted, check_mode=check_mode)
    if request.alternate_name and request.state == "present":
        result["alternate"] = _diff_view(certificate_view(alternate))
    return {"name": request.name, **result}


def _choose_name(client, request: DpsCertificateRequest, cert):
    """Which of name and alternate_name the certificate goes under: the one that holds it already, else name unless
    name holds the certificate to preserve (the other CA of a rollover). Returns (request, its record, the other's)."""
    records = {name: client.get_certificate(name) for name in (request.name, request.alternate_name)}
    thumbprints = {name: (certificate_view(record) or {}).get("thumbprint") for name, record in records.items()}
    wanted = fingerprints(cert)["sha1"]
    preserved = None
    if request.preserve_certificate_path and os.path.exists(request.preserve_certificate_path):
        preserved = fingerprints(
            read_certificate_file(request.preserve_certificate_path, field="preserve_certificate_path")
        )["sha1"]
    if thumbprints[request.name] == wanted:
        chosen = request.name
    elif thumbprints[request.alternate_name] == wanted or (
        preserved is not None and thumbprints[request.name] == preserved
    ):
        chosen = request.alternate_name
    else:
        chosen = request.name
    other = request.alternate_name if chosen == request.name else request.name
    return replace(request, name=chosen), records[chosen], records[other]


def _ensure(client, request: DpsCertificateRequest, cert, ca, current, *, proof_wanted: bool, check_mode: bool):
    before = certificate_view(current)

    if request.state == "absent":
        if current is None:
            return _result(False, None, None, [])
        if not check_mode:
            client.delete_certificate(request.name, current.get("etag") or "*")
        return _result(True, before, None, ["delete"])

    thumbprint = fingerprints(cert)["sha1"]
    same_certificate = before is not None and before["thumbprint"] == thumbprint
    actions = []
    if before is None:
        actions.append("create")
    elif not same_certificate:
        actions.append("replace certificate")
    elif request.is_verified and not before["is_verified"]:
        actions.append("mark verified")
    verified_after_upload = request.is_verified or (same_certificate and before["is_verified"])
    if proof_wanted and not verified_after_upload:
        actions.append("proof of possession")
    if not actions:
        return _result(False, before, before, actions)
    if check_mode:
        after = _predicted_view(
            request.name,
            cert,
            is_verified=request.is_verified or request.verify or verified_after_upload,
            etag=before["etag"] if before else None,
        )
        return _result(True, before, after, actions)

    record = current
    if actions[0] in ("create", "replace certificate", "mark verified"):
        record = settle_lost_write(
            lambda: client.create_or_update_certificate(
                request.name,
                certificate_pem(cert).decode("ascii"),
                is_verified=request.is_verified,
                etag=current.get("etag") if current else None,
            ),
            lambda: client.get_certificate(request.name),
            lambda found: _is_uploaded(certificate_view(found), thumbprint, request.is_verified),
        )
    if proof_wanted and not certificate_view(record)["is_verified"]:
        record = _prove_possession(client, request, ca, record)
    return _result(True, before, certificate_view(record), actions)


def _is_uploaded(view, thumbprint: str, is_verified: bool) -> bool:
    """The upload asked for is in place (an upload whose answer was lost, then retried, meets its own record)."""
    return view["thumbprint"] == thumbprint and (view["is_verified"] or not is_verified)


def _prove_possession(client, request: DpsCertificateRequest, ca, record) -> dict:
    """generateVerificationCode -> a certificate with CN = code, signed by the CA key -> verify.

    Each step changes the certificate's etag. When a step's answer was lost after DPS acted, its retry meets a new
    etag (412): the certificate is read again, and the proof starts over with a fresh code unless DPS already
    verified it. One fresh start; a second conflict is someone else working on the same certificate.
    """
    try:
        return _prove_once(client, request, ca, record)
    except ApiError as error:
        if error.status not in LOST_WRITE_STATUSES:
            raise
        record = client.get_certificate(request.name)
        if record is None:
            raise
    if certificate_view(record)["is_verified"]:
        return record
    return _prove_once(client, request, ca, record)


def _prove_once(client, request: DpsCertificateRequest, ca, record) -> dict:
    code_response = client.generate_verification_code(request.name, record.get("etag") or "*")
    code = (code_response.get("properties") or {}).get("verificationCode")
    if not code:
        raise PkiError(f"DPS returned no verification code for certificate {shown(request.name)}; re-run the task")
    proof = issue_verification_certificate(
        ca,
        verification_code=code,
        signer=request.signer,
        key_type="ec-p256",
        valid_days=VERIFICATION_VALID_DAYS,
        now=utcnow(),
    )
    return settle_lost_write(
        lambda: client.verify_certificate(
            request.name, code_response.get("etag"), certificate_pem(proof).decode("ascii")
        ),
        lambda: client.get_certificate(request.name),
        lambda found: certificate_view(found)["is_verified"],
    )


__all__ = ("DpsCertificateRequest", "certificate_view", "ensure_dps_certificate", "load_first_certificate")
