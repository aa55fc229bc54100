# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# PRIVATE to the edgefleet.iotedge collection. Do not use this from other collections:
# it may change at any time.

"""Per-device X.509 identity chains for DPS attestation, for a whole fleet in one call.

For each registration id: `<path>/<id>/identity.key.pem` (0600), `identity.cert.pem` (the leaf, CN = the id)
and `identity.full-chain.cert.pem` (leaf, intermediate, root). Everything is validated before any write.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass, field

from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki import (
    GENERATION_1_1_LIMIT,
    KEY_TYPES,
    CertificateIssuer,
    PkiError,
    certificate_pem,
    check_expiry_limits,
    common_name_of,
    directory_lock,
    file_mode,
    fingerprints,
    format_time,
    generate_private_key,
    key_matches_certificate,
    key_type_of,
    load_certificates,
    load_private_key,
    locked_directory,
    not_after_of,
    private_key_pem,
    read_file,
    remove_paths,
    signed_by,
    stale_temporaries,
    utcnow,
    validate_registration_id,
    validity_window,
    write_directory_atomically,
    write_files_atomically,
)
from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki_ca import CA_CHAIN, ROOT_CERT, ca_exists, load_ca
from ansible_collections.edgefleet.iotedge.plugins.module_utils._shown import shown

IDENTITY_CERT = "identity.cert.pem"
IDENTITY_KEY = "identity.key.pem"
IDENTITY_CHAIN = "identity.full-chain.cert.pem"
GENERATIONS = ("1.1", "1.2+")

KEY_MODE = 0o600
CERT_MODE = 0o644
DEVICE_DIR_MODE = 0o700


@dataclass
class IdentityRequest:
    ca_path: str
    path: str
    devices: list
    key_type: str = "ec-p256"
    valid_days: int = 365
    renew_before_days: int = 30
    generation: str = "1.2+"
    passphrase: str | None = None
    state: str = "present"


@dataclass
class _Plan:
    registration_id: str
    directory: str
    action: str = "none"  # none | create | renew | reissue | repair | remove
    reasons: list = field(default_factory=list)
    before: dict | None = None
    cert = None
    key = None
    chain_pem: bytes | None = None

    @property
    def cert_path(self) -> str:
        return os.path.join(self.directory, IDENTITY_CERT)

    @property
    def key_path(self) -> str:
        return os.path.join(self.directory, IDENTITY_KEY)

    @property
    def chain_path(self) -> str:
        return os.path.join(self.directory, IDENTITY_CHAIN)

    def files(self) -> dict:
        return {"cert_path": self.cert_path, "key_path": self.key_path, "chain_path": self.chain_path}


def identity_files(identity_dir: str, registration_id: str) -> dict:
    """Where a device's files are under ``identity_dir``; the roles read them through the identity_files filter."""
    return _Plan(registration_id=registration_id, directory=os.path.join(identity_dir, registration_id)).files()


def normalize_devices(devices) -> list[str]:
    """Accept registration ids or dicts with `registration_id`; return the ids, all checked, no duplicates."""
    if not isinstance(devices, list):
        raise PkiError("devices: give a list of registration ids (strings or dicts with registration_id)")
    ids: list[str] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(devices):
        where = f"devices[{index}]"
        if isinstance(entry, dict):
            unknown = sorted(set(entry) - {"registration_id"})
            if unknown:
                raise PkiError(f"{where}: unknown key(s) {', '.join(unknown)}; the only key is registration_id")
            if "registration_id" not in entry:
                raise PkiError(f"{where}: a device given as a dict needs registration_id")
            entry = entry["registration_id"]
        registration_id = validate_registration_id(entry, field=where)
        if registration_id in seen:
            raise PkiError(
                f"{where}: registration id {registration_id!r} is also devices[{seen[registration_id]}]; "
                "each device needs its own id"
            )
        seen[registration_id] = index
        ids.append(registration_id)
    return ids


def _validate(request: IdentityRequest) -> None:
    if request.key_type not in KEY_TYPES:
        raise PkiError(f"key_type: {shown(request.key_type)} is not supported; use one of {', '.join(KEY_TYPES)}")
    if request.generation not in GENERATIONS:
        raise PkiError(f"generation: {shown(request.generation)} is not known; use '1.1' or '1.2+'")
    if request.valid_days < 1:
        raise PkiError(f"valid_days: must be at least 1, got {request.valid_days}")
    if request.renew_before_days < 0:
        raise PkiError(f"renew_before_days: must be 0 or more, got {request.renew_before_days}")
    if request.renew_before_days >= request.valid_days:
        raise PkiError(
            f"renew_before_days: {request.renew_before_days} is not below valid_days ({request.valid_days}), so "
            "every run would renew every identity; lower renew_before_days or raise valid_days"
        )


def _assess(plan: _Plan, *, request, ca, chain_tail: bytes, renew_at: datetime.datetime) -> None:
    """Decide what one device needs, from what is on disk; fills plan.action/reasons/before."""
    cert_pem = read_file(plan.cert_path)
    key_pem = read_file(plan.key_path)
    if cert_pem is None or key_pem is None:
        if cert_pem is not None or key_pem is not None:
            plan.action, plan.reasons = "reissue", ["certificate or key file is missing"]
        else:
            plan.action, plan.reasons = "create", ["no identity yet"]
        return
    try:
        cert = load_certificates(cert_pem, path=plan.cert_path)[0]
        key = load_private_key(key_pem, path=plan.key_path, passphrase=None, passphrase_field=plan.key_path)
    except PkiError as exc:
        plan.action, plan.reasons = "reissue", [f"unreadable: {exc}"]
        return
    plan.before = _identity_view(cert)
    reasons = []
    common_name = common_name_of(cert.subject)
    if common_name != plan.registration_id:
        reasons.append(f"CN is {common_name!r}")
    if not signed_by(cert, ca.signer_cert):
        reasons.append("not issued by the current CA")
    current_type = key_type_of(cert.public_key())
    if current_type != request.key_type:
        reasons.append(f"key type is {current_type}, wanted {request.key_type}")
    if not key_matches_certificate(key, cert):
        reasons.append("key does not match the certificate")
    if request.generation == "1.1" and not_after_of(cert) >= GENERATION_1_1_LIMIT:
        reasons.append("expires on or after 2038-01-01, which IoT Edge 1.1 cannot use")
    if reasons:
        plan.action, plan.reasons = "reissue", reasons
        return
    if not_after_of(cert) < renew_at:
        plan.action = "renew"
        plan.reasons = [f"expires on {format_time(not_after_of(cert))}, within renew_before_days"]
        return
    repairs = []
    expected_chain = cert_pem if cert_pem.endswith(b"\n") else cert_pem + b"\n"
    if read_file(plan.chain_path) != expected_chain + chain_tail:
        repairs.append("full chain file is missing or out of date")
    if file_mode(plan.key_path) != KEY_MODE:
        repairs.append("key file mode is not 0600")
    if repairs:
        plan.action, plan.reasons = "repair", repairs
        plan.chain_pem = expected_chain + chain_tail
    plan.cert = cert


def _identity_view(cert) -> dict:
    """The part of an identity that diffs and results show: fingerprints and dates, never the key."""
    prints = fingerprints(cert)
    return {
        "thumbprint_sha1": prints["sha1"],
        "thumbprint_sha256": prints["sha256"],
        "not_after": format_time(not_after_of(cert)),
        "issuer": cert.issuer.rfc4514_string(),
    }


def _new_identity_window(request: IdentityRequest, *, now, cap) -> tuple[datetime.datetime, datetime.datetime]:
    """Validity of identities issued now, never past `cap`, refused when the generation cannot use it."""
    not_before, not_after = validity_window(now=now, valid_days=request.valid_days, cap=cap)
    check_expiry_limits(
        not_after,
        generation=request.generation,
        what=f"valid_days: an identity valid for {request.valid_days} days",
        fix="lower valid_days",
    )
    return not_before, not_after


def ensure_identities(request: IdentityRequest, *, check_mode: bool, now: datetime.datetime | None = None) -> dict:
    """Bring every listed device's identity chain to the requested state; return the module result.

    A real run holds the identity directory's lock (and a shared lock on the CA's) from the first read to the
    last write, and first removes what an interrupted run left behind (staged files that may hold a private key).
    """
    now = now or utcnow()
    _validate(request)
    ids = normalize_devices(request.devices)
    plans = [_Plan(registration_id=i, directory=os.path.join(request.path, i)) for i in ids]
    if check_mode:
        return _ensure(request, plans, now, check_mode=True)
    with locked_directory(request.path, mode=DEVICE_DIR_MODE), _ca_read_lock(request.ca_path):
        return _ensure(request, plans, now, check_mode=False)


def _ca_read_lock(ca_path: str):
    """A shared lock on the CA directory while identities are signed with it (pki_ca may be rotating it)."""
    return directory_lock(ca_path, shared=True) if os.path.isdir(ca_path) else contextlib.nullcontext()


def _ensure(request: IdentityRequest, plans: list, now: datetime.datetime, *, check_mode: bool) -> dict:
    debris = stale_temporaries(request.path)
    for plan in plans:
        debris += stale_temporaries(plan.directory)
    if debris and not check_mode:
        remove_paths(debris)
    if request.state == "absent":
        return _with_debris(_remove(plans, check_mode=check_mode), debris)

    if check_mode and not ca_exists(request.ca_path):
        # pki_ca in check mode created nothing: every identity would be created once the CA exists.
        not_after = _new_identity_window(request, now=now, cap=None)[1]
        for plan in plans:
            plan.action, plan.reasons = "create", ["no identity yet; the CA in ca_path does not exist yet either"]
        return _with_debris(_result(plans, ca=None, ca_path=request.ca_path, predicted_not_after=not_after), debris)

    ca = load_ca(request.ca_path, passphrase=request.passphrase)
    for certificate, label in ((ca.root_cert, "root"), (ca.intermediate_cert, "intermediate")):
        if certificate is not None:
            check_expiry_limits(
                not_after_of(certificate),
                generation=request.generation,
                what=f"ca_path: the CA's {label} certificate",
                fix="re-create the CA with edgefleet.iotedge.pki_ca not_after: '2037-12-31' (and force: true)",
            )
    not_before, not_after = _new_identity_window(request, now=now, cap=not_after_of(ca.signer_cert))
    renew_at = now + datetime.timedelta(days=request.renew_before_days)
    if not_after < renew_at:
        raise PkiError(
            f"ca_path: the CA's {ca.signer_name} certificate expires on {format_time(not_after_of(ca.signer_cert))}, "
            f"sooner than renew_before_days ({request.renew_before_days}) from now, so new identities could not "
            "last; rotate the CA with edgefleet.iotedge.pki_ca first"
        )

    chain_tail = ca.chain_pem
    for plan in plans:
        _assess(plan, request=request, ca=ca, chain_tail=chain_tail, renew_at=renew_at)

    to_issue = [p for p in plans if p.action in ("create", "renew", "reissue")]
    if not check_mode:
        _apply(plans, to_issue, request=request, ca=ca, chain_tail=chain_tail, window=(not_before, not_after))
    return _with_debris(_result(plans, ca=ca, ca_path=request.ca_path, predicted_not_after=not_after), debris)


def _with_debris(result: dict, debris: list) -> dict:
    """Temporary files of an interrupted run are removed (or, in check mode, would be): a change, and said so."""
    result["temporaries_removed"] = debris
    result["changed"] = result["changed"] or bool(debris)
    return result


def _result(plans, *, ca, ca_path: str, predicted_not_after: datetime.datetime) -> dict:
    """The module result; identities not issued yet (check mode) show the predicted end of validity."""
    identities = {}
    diff_before, diff_after = {}, {}
    counts = {"create": 0, "renew": 0, "reissue": 0, "repair": 0, "none": 0}
    for plan in plans:
        counts[plan.action] += 1
        if plan.cert is not None:
            view = _identity_view(plan.cert)
        else:
            view = {
                "thumbprint_sha1": None,
                "thumbprint_sha256": None,
                "not_after": format_time(predicted_not_after),
                "issuer": ca.signer_cert.subject.rfc4514_string() if ca is not None else None,
            }
        changed = plan.action != "none"
        identities[plan.registration_id] = {
            "registration_id": plan.registration_id,
            "changed": changed,
            "action": plan.action,
            "reasons": plan.reasons,
            **plan.files(),
            **view,
        }
        if changed:
            diff_before[plan.registration_id] = plan.before
            diff_after[plan.registration_id] = dict(view, action=plan.action)
    return {
        "changed": any(p.action != "none" for p in plans),
        "identities": identities,
        "summary": {
            "created": counts["create"],
            "renewed": counts["renew"],
            "reissued": counts["reissue"],
            "repaired": counts["repair"],
            "unchanged": counts["none"],
        },
        "ca": {
            "signer": ca.signer_name if ca is not None else None,
            "root_cert_path": os.path.join(ca_path, ROOT_CERT),
            "chain_path": os.path.join(ca_path, CA_CHAIN) if ca is not None else None,
        },
        "diff": {"before": {"identities": diff_before}, "after": {"identities": diff_after}},
    }


def _apply(plans, to_issue, *, request, ca, chain_tail, window) -> None:
    """Issue, then write; each device's files are staged and renamed together."""
    not_before, not_after = window
    for plan in plans:
        if plan.action == "repair":
            if plan.chain_pem is not None and read_file(plan.chain_path) != plan.chain_pem:
                write_files_atomically([(plan.chain_path, plan.chain_pem, CERT_MODE)])
            if file_mode(plan.key_path) != KEY_MODE:
                os.chmod(plan.key_path, KEY_MODE)
    if not to_issue:
        return
    os.makedirs(request.path, mode=DEVICE_DIR_MODE, exist_ok=True)
    issuer = CertificateIssuer(
        issuer_cert=ca.signer_cert,
        issuer_key=ca.signer_key,
        not_before=not_before,
        not_after=not_after,
        profile="client",
    )
    for plan in to_issue:
        key = generate_private_key(request.key_type)
        cert = issuer.issue(common_name=plan.registration_id, public_key=key.public_key())
        cert_pem = certificate_pem(cert)
        files = [
            (IDENTITY_KEY, private_key_pem(key), KEY_MODE),
            (IDENTITY_CERT, cert_pem, CERT_MODE),
            (IDENTITY_CHAIN, cert_pem + chain_tail, CERT_MODE),
        ]
        if os.path.isdir(plan.directory):
            write_files_atomically([(os.path.join(plan.directory, name), data, mode) for name, data, mode in files])
        else:
            write_directory_atomically(plan.directory, files, mode=DEVICE_DIR_MODE)
        plan.cert = cert


def _remove(plans, *, check_mode: bool) -> dict:
    identities, diff_before = {}, {}
    for plan in plans:
        present = [p for p in (plan.cert_path, plan.key_path, plan.chain_path) if os.path.exists(p)]
        if present:
            cert_pem = read_file(plan.cert_path)
            diff_before[plan.registration_id] = (
                _identity_view(load_certificates(cert_pem, path=plan.cert_path)[0]) if cert_pem else {}
            )
            if not check_mode:
                for file_path in present:
                    os.unlink(file_path)
                if os.path.isdir(plan.directory) and not os.listdir(plan.directory):
                    os.rmdir(plan.directory)
        identities[plan.registration_id] = {
            "registration_id": plan.registration_id,
            "changed": bool(present),
            "action": "remove" if present else "none",
            "reasons": [],
        }
    return {
        "changed": bool(diff_before),
        "identities": identities,
        "summary": {"removed": len(diff_before), "unchanged": len(plans) - len(diff_before)},
        "diff": {"before": {"identities": diff_before}, "after": {"identities": dict.fromkeys(diff_before)}},
    }


__all__ = ("GENERATIONS", "IDENTITY_CERT", "IDENTITY_CHAIN", "IDENTITY_KEY", "IdentityRequest", "ensure_identities")
