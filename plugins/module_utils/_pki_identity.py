# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# PRIVATE to the edgefleet.iotedge collection. Do not use this from other collections:
# it may change at any time.

"""Per-device X.509 identity chains for DPS attestation, for a whole fleet in one call.

For each registration id: `<path>/<id>/identity.key.pem` (0600), `identity.cert.pem` (the leaf, CN = the id)
and `identity.full-chain.cert.pem` (leaf, intermediate, root). Everything is validated before any write.

A device that makes its own key (`csrs`) sends a certificate signing request instead: its certificate is issued for
the key in the CSR and no key file is ever written here. A CSR that asks for another name, another key type or is
not signed by its key is refused for that device alone (`refused`); the others go on.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
from dataclasses import dataclass, field

from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki import (
    GENERATION_1_1_LIMIT,
    IDENTITY_CERT,
    KEY_TYPES,
    CertificateIssuer,
    PkiError,
    certificate_pem,
    check_expiry_limits,
    common_name_of,
    csr_problem,
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
    public_key_der,
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
from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki_ca import (
    CA_CHAIN,
    ROOT_CERT,
    ca_exists,
    load_ca,
    signing_ca_path,
)
from ansible_collections.edgefleet.iotedge.plugins.module_utils._shown import shown

IDENTITY_KEY = "identity.key.pem"
IDENTITY_CHAIN = "identity.full-chain.cert.pem"
GENERATIONS = ("1.1", "1.2+")

# A rotation's new identity waits in <device>/next/ until the device has registered with it; the identity it replaces
# is then kept in <device>/retired/<serial>/, never deleted.
NEXT_DIR = "next"
RETIRED_DIR = "retired"

KEY_MODE = 0o600
CERT_MODE = 0o644
DEVICE_DIR_MODE = 0o700


@dataclass
class DeviceBatchRequest:
    """What a per-device batch of the fleet PKI takes: pki_identity's, and pki_edge_ca's beside it."""

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
class IdentityRequest(DeviceBatchRequest):
    # Rotation: a renewal is written beside the current identity (next/) instead of over it, until it is promoted.
    staged: bool = False
    rotate: list = field(default_factory=list)
    promote: list = field(default_factory=list)
    # Devices that make their own key: registration id -> the PEM CSR it sent, or None (none this run: check mode,
    # or the device was not reached). Their certificates are issued for the CSR's key; no key file is written.
    csrs: dict = field(default_factory=dict)
    # Devices that keep a next key beside their current one (edgefleet_identity_rotate_key): registration id -> the
    # PEM CSR for it, or None. A staged renewal is issued for that key, so the renewal replaces the key too.
    next_csrs: dict = field(default_factory=dict)


@dataclass
class _Plan:
    registration_id: str
    directory: str
    action: str = "none"  # none | create | renew | reissue | repair | remove | refused
    reasons: list = field(default_factory=list)
    before: dict | None = None
    cert = None
    key = None
    chain_pem: bytes | None = None
    # Rotation: none | stage (a new identity is written to next/) | staged (a valid one waits there) | promote.
    rotation: str = "none"
    current_cert = None
    next_cert = None
    retired_path: str | None = None
    # The device makes its own key: its CSR's public key (None when it sent none), never a key file here.
    device_key: bool = False
    csr_public_key = None
    # The device's next key (its next CSR's public key): what a staged renewal is issued for, when there is one.
    next_public_key = None
    # The device's CSR carries another key than its certificate: the device no longer holds the old one.
    key_replaced: bool = False
    refused: str | None = None

    @property
    def cert_path(self) -> str:
        return os.path.join(self.directory, IDENTITY_CERT)

    @property
    def key_path(self) -> str:
        return os.path.join(self.directory, IDENTITY_KEY)

    @property
    def chain_path(self) -> str:
        return os.path.join(self.directory, IDENTITY_CHAIN)

    @property
    def next_dir(self) -> str:
        return os.path.join(self.directory, NEXT_DIR)

    def files(self) -> dict:
        key_path = None if self.device_key else self.key_path
        return {"cert_path": self.cert_path, "key_path": key_path, "chain_path": self.chain_path}

    def file_names(self) -> tuple:
        """The files this device's identity has here: no key for a device that made its own."""
        names = (IDENTITY_CERT, IDENTITY_CHAIN)
        return names if self.device_key else (IDENTITY_KEY, *names)

    def next_files(self) -> dict:
        return {
            key: os.path.join(self.next_dir, os.path.basename(path)) if path else None
            for key, path in self.files().items()
        }


def identity_files(identity_dir: str, registration_id: str) -> dict:
    """Where a device's files are under ``identity_dir``, and its rotation's (``next``); see the identity_files filter."""
    plan = _Plan(registration_id=registration_id, directory=os.path.join(identity_dir, registration_id))
    return {**plan.files(), "next": plan.next_files()}


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


def validate_batch(request: DeviceBatchRequest) -> None:
    """The options every per-device batch shares, before anything is read or written."""
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
            "every run would renew every certificate; lower renew_before_days or raise valid_days"
        )


def _validate_rotation(request: IdentityRequest, ids: list) -> None:
    for name in ("rotate", "promote"):
        listed = getattr(request, name) or []
        if not isinstance(listed, list) or not all(isinstance(item, str) for item in listed):
            raise PkiError(f"{name}: must be a list of registration ids, got {shown(listed)}")
        unknown = sorted(set(listed) - set(ids))
        if unknown:
            raise PkiError(f"{name}: {', '.join(unknown)} not among devices; list only registration ids of devices")
        if listed and not request.staged:
            raise PkiError(f"{name}: needs staged=true (a rotation stages the new identity in next/ first)")


def _validate_csrs(request: IdentityRequest, ids: list) -> None:
    for name in ("csrs", "next_csrs"):
        _validate_csr_map(name, getattr(request, name), ids)
    without_csr = sorted(set(request.next_csrs) - set(request.csrs))
    if without_csr:
        raise PkiError(
            f"next_csrs: {', '.join(map(str, without_csr))} not in csrs; a next key belongs to a device that makes its "
            "own key"
        )


def _validate_csr_map(name: str, csrs, ids: list) -> None:
    if not isinstance(csrs, dict):
        raise PkiError(f"{name}: must map registration ids to PEM CSRs (or null), got {shown(csrs)}")
    unknown = sorted(set(csrs) - set(ids))
    if unknown:
        raise PkiError(
            f"{name}: {', '.join(map(str, unknown))} not among devices; list only registration ids of devices"
        )
    for registration_id, pem in csrs.items():
        if pem is not None and not isinstance(pem, str):
            raise PkiError(f"{name}[{registration_id}]: must be PEM text or null, got {shown(pem)}")


def _take_csr(plan: _Plan, request: IdentityRequest) -> None:
    """A device that makes its own key: check the CSR it sent; a bad one refuses the device alone."""
    if plan.registration_id not in request.csrs:
        return
    plan.device_key = True
    pem = request.csrs[plan.registration_id]
    if pem is None:
        return
    public_key, problem = csr_problem(pem, registration_id=plan.registration_id, key_type=request.key_type)
    if problem:
        plan.action, plan.refused = "refused", f"csrs[{plan.registration_id}]: the device's CSR {problem}"
        plan.reasons = [plan.refused]
    plan.csr_public_key = public_key
    next_pem = request.next_csrs.get(plan.registration_id)
    if next_pem is None or problem:
        return
    next_key, next_problem = csr_problem(next_pem, registration_id=plan.registration_id, key_type=request.key_type)
    if next_problem is None and public_key_der(next_key) == public_key_der(public_key):
        next_problem = "is for the device's current key, not a second one"
    if next_problem:
        plan.action, plan.refused = "refused", f"next_csrs[{plan.registration_id}]: the device's CSR {next_problem}"
        plan.reasons = [plan.refused]
        return
    plan.next_public_key = next_key


def _parse_identity(cert_pem: bytes, key_pem: bytes, *, cert_path: str, key_path: str):
    """(certificate, key) from the two files' bytes; PkiError, naming the file, when one cannot be read."""
    cert = load_certificates(cert_pem, path=cert_path)[0]
    key = load_private_key(key_pem, path=key_path, passphrase=None, passphrase_field=key_path)
    return cert, key


def _identity_problems(cert, key, *, registration_id: str, request, ca) -> list:
    """Why an identity cannot stay as it is (empty when it can), whatever its expiry."""
    problems = []
    common_name = common_name_of(cert.subject)
    if common_name != registration_id:
        problems.append(f"CN is {common_name!r}")
    if not signed_by(cert, ca.signer_cert):
        signer = "the new CA of the rollover (ca_path/next/)" if ca.is_staged else "the current CA"
        problems.append(f"not issued by {signer}")
    current_type = key_type_of(cert.public_key())
    if current_type != request.key_type:
        problems.append(f"key type is {current_type}, wanted {request.key_type}")
    if key is not None and not key_matches_certificate(key, cert):
        problems.append("key does not match the certificate")
    if request.generation == "1.1" and not_after_of(cert) >= GENERATION_1_1_LIMIT:
        problems.append("expires on or after 2038-01-01, which IoT Edge 1.1 cannot use")
    return problems


def _reissue_or_renew(plan: _Plan, cert, problems: list, renew_at: datetime.datetime) -> bool:
    """An identity with a problem is reissued, one inside renew_before_days renewed; True when either was decided."""
    if problems:
        plan.action, plan.reasons = "reissue", problems
        return True
    if not_after_of(cert) < renew_at:
        plan.action = "renew"
        plan.reasons = [f"expires on {format_time(not_after_of(cert))}, within renew_before_days"]
        return True
    return False


def _csr_key_differs(plan: _Plan, cert) -> bool:
    return _key_differs(plan.csr_public_key, cert)


def _key_differs(public_key, cert) -> bool:
    return public_key is not None and public_key_der(public_key) != public_key_der(cert.public_key())


def _staged_key(plan: _Plan):
    """The key a staged renewal is for: the device's next key when it keeps one, else the current one."""
    return plan.next_public_key if plan.next_public_key is not None else plan.csr_public_key


def _assess_device_key(plan: _Plan, *, request, ca, chain_tail: bytes, renew_at: datetime.datetime) -> None:
    """`_assess` for a device that makes its own key: the certificate must be for the key of the device's CSR."""
    cert_pem = read_file(plan.cert_path)
    if cert_pem is None:
        plan.action, plan.reasons = "create", ["no identity yet"]
        return
    try:
        cert = load_certificates(cert_pem, path=plan.cert_path)[0]
    except PkiError as exc:
        plan.action, plan.reasons = "reissue", [f"unreadable: {exc}"]
        return
    plan.before = _identity_view(cert)
    plan.current_cert = cert
    if os.path.lexists(plan.key_path):
        plan.reasons = [
            "the controller holds a copy of this device's key (made here before it made its own): remove the key "
            "on the device to have a new one made there"
        ]
    reasons = _identity_problems(cert, None, registration_id=plan.registration_id, request=request, ca=ca)
    if _csr_key_differs(plan, cert):
        # The device no longer holds the key of its certificate (re-imaged, key deleted): nothing to roll from.
        plan.key_replaced = True
        reasons.append("the device's CSR carries another key than its certificate")
    if _reissue_or_renew(plan, cert, reasons, renew_at):
        return
    expected_chain = cert_pem if cert_pem.endswith(b"\n") else cert_pem + b"\n"
    if read_file(plan.chain_path) != expected_chain + chain_tail:
        plan.action, plan.reasons = "repair", ["full chain file is missing or out of date"]
        plan.chain_pem = expected_chain + chain_tail
    plan.cert = cert


def _without_csr(plan: _Plan, *, check_mode: bool) -> None:
    """A device that makes its own key sent no CSR: nothing can be issued for it in this run."""
    if plan.csr_public_key is not None or (
        plan.action not in ("create", "renew", "reissue") and plan.rotation != "stage"
    ):
        return
    if plan.action == "create" and check_mode:
        return  # the device's key would be made by this run's key phase: predicted as created
    if plan.current_cert is None:
        plan.action, plan.refused = (
            "refused",
            (
                f"csrs[{plan.registration_id}]: the device sent no CSR, and a device that makes its own key gets a "
                "certificate only for one. Run the key phase on the host (provision_edge.yml, tag pki) and re-run"
            ),
        )
        plan.reasons = [plan.refused]
        return
    plan.reasons = [*plan.reasons, "kept: the device sent no CSR in this run"]
    plan.action, plan.rotation, plan.cert = "none", "none", plan.current_cert


def _assess(plan: _Plan, *, request, ca, chain_tail: bytes, renew_at: datetime.datetime) -> None:
    """Decide what one device needs, from what is on disk; fills plan.action/reasons/before."""
    if plan.device_key:
        _assess_device_key(plan, request=request, ca=ca, chain_tail=chain_tail, renew_at=renew_at)
        return
    cert_pem = read_file(plan.cert_path)
    key_pem = read_file(plan.key_path)
    if cert_pem is None or key_pem is None:
        if cert_pem is not None or key_pem is not None:
            plan.action, plan.reasons = "reissue", ["certificate or key file is missing"]
        else:
            plan.action, plan.reasons = "create", ["no identity yet"]
        return
    try:
        cert, key = _parse_identity(cert_pem, key_pem, cert_path=plan.cert_path, key_path=plan.key_path)
    except PkiError as exc:
        plan.action, plan.reasons = "reissue", [f"unreadable: {exc}"]
        return
    plan.before = _identity_view(cert)
    plan.current_cert = cert
    reasons = _identity_problems(cert, key, registration_id=plan.registration_id, request=request, ca=ca)
    if _reissue_or_renew(plan, cert, reasons, renew_at):
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


def _staged_identity(plan: _Plan, *, request, ca, renew_at: datetime.datetime) -> tuple:
    """(the certificate of a usable identity waiting in next/ (issued by today's CA, not due) or None; whether what
    waits there is, for a device that keeps a next key, unreadable or for another key than that one: it was staged
    before the device made a next key, or the next key was made anew, so it is staged again)."""
    files = plan.next_files()
    cert_pem = read_file(files["cert_path"])
    key_pem = None if plan.device_key else read_file(files["key_path"])
    if cert_pem is None or (key_pem is None and not plan.device_key):
        return None, False
    keeps_next_key = plan.device_key and plan.next_public_key is not None
    try:
        if plan.device_key:
            cert, key = load_certificates(cert_pem, path=files["cert_path"])[0], None
        else:
            cert, key = _parse_identity(cert_pem, key_pem, cert_path=files["cert_path"], key_path=files["key_path"])
    except PkiError:
        return None, keeps_next_key
    for_another_key = keeps_next_key and _key_differs(plan.next_public_key, cert)
    if _identity_problems(cert, key, registration_id=plan.registration_id, request=request, ca=ca):
        return None, for_another_key
    if plan.device_key and _key_differs(_staged_key(plan), cert):
        return None, for_another_key
    return (cert if not_after_of(cert) >= renew_at else None), for_another_key


def _plan_rotation(plan: _Plan, *, request, ca, renew_at: datetime.datetime) -> None:
    """With staging, a renewal of a readable identity goes to next/ and the current one stays until promoted."""
    if not request.staged:
        return
    plan.next_cert, for_another_key = _staged_identity(plan, request=request, ca=ca, renew_at=renew_at)
    if plan.next_cert is not None and plan.registration_id in request.promote:
        plan.rotation, plan.reasons = "promote", ["the device registered with the new identity"]
        plan.action, plan.cert = "none", plan.current_cert
        return
    # A device that replaced its key cannot use the old identity meanwhile: its new one is issued in place.
    due = plan.action in ("renew", "reissue") and plan.before is not None and not plan.key_replaced
    asked = plan.registration_id in request.rotate and plan.next_cert is None
    if plan.next_cert is not None:
        plan.rotation = "staged"
        plan.reasons = ["a new identity waits in next/ until the device registers with it"]
    elif due or asked or for_another_key:
        plan.rotation = "stage"
        if for_another_key and not due:
            plan.reasons = ["the identity waiting in next/ is for another key than the device's next key"]
        elif asked and not due:
            plan.reasons = ["rotation asked for (rotate)"]
    if plan.rotation != "none" and plan.action in ("renew", "reissue"):
        plan.action, plan.cert = "none", plan.current_cert


def _identity_view(cert) -> dict:
    """The part of an identity that diffs and results show: fingerprints and dates, never the key."""
    prints = fingerprints(cert)
    return {
        "thumbprint_sha1": prints["sha1"],
        "thumbprint_sha256": prints["sha256"],
        "not_after": format_time(not_after_of(cert)),
        "issuer": cert.issuer.rfc4514_string(),
    }


def _public_key_sha256(cert) -> str | None:
    """What a device finds its key by (identity_csr's activate): SHA-256 of the certificate's public key, hex."""
    return hashlib.sha256(public_key_der(cert.public_key())).hexdigest() if cert is not None else None


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
    validate_batch(request)
    ids = normalize_devices(request.devices)
    _validate_rotation(request, ids)
    _validate_csrs(request, ids)
    plans = [_Plan(registration_id=i, directory=os.path.join(request.path, i)) for i in ids]
    for plan in plans:
        _take_csr(plan, request)
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
    if request.state == "retired":
        return _with_debris(_retire(plans, retired_root(request.path), now, check_mode=check_mode), debris)

    if check_mode and not ca_exists(request.ca_path):
        # pki_ca in check mode created nothing: every identity would be created once the CA exists.
        not_after = _new_identity_window(request, now=now, cap=None)[1]
        for plan in plans:
            if plan.action != "refused":
                plan.action, plan.reasons = "create", ["no identity yet; the CA in ca_path does not exist yet either"]
        return _with_debris(_result(plans, ca=None, ca_path=request.ca_path, predicted_not_after=not_after), debris)

    # During a CA rollover (pki_ca staged=true) the new CA in ca_path/next/ issues every identity.
    ca = load_ca(signing_ca_path(request.ca_path), passphrase=request.passphrase)
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
        if plan.action == "refused":
            continue
        _assess(plan, request=request, ca=ca, chain_tail=chain_tail, renew_at=renew_at)
        _plan_rotation(plan, request=request, ca=ca, renew_at=renew_at)
        if plan.device_key:
            _without_csr(plan, check_mode=check_mode)

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
    predicted = {
        "thumbprint_sha1": None,
        "thumbprint_sha256": None,
        "not_after": format_time(predicted_not_after),
        "issuer": ca.signer_cert.subject.rfc4514_string() if ca is not None else None,
    }
    identities = {}
    diff_before, diff_after = {}, {}
    counts = {"create": 0, "renew": 0, "reissue": 0, "repair": 0, "none": 0, "refused": 0}
    rotations = {"none": 0, "stage": 0, "staged": 0, "promote": 0}
    for plan in plans:
        counts[plan.action] += 1
        rotations[plan.rotation] += 1
        promoted = plan.rotation == "promote"
        shown_cert = (plan.next_cert if promoted else plan.cert) if plan.cert is not None else None
        view = _identity_view(shown_cert) if shown_cert is not None else predicted
        changed = plan.action not in ("none", "refused") or plan.rotation in ("stage", "promote")
        identity = {
            "registration_id": plan.registration_id,
            "changed": changed,
            "action": plan.action,
            "rotation": plan.rotation,
            "reasons": plan.reasons,
            "key_origin": "device" if plan.device_key else "controller",
            **plan.files(),
            **view,
            "public_key_sha256": _public_key_sha256(shown_cert),
        }
        if plan.rotation in ("stage", "staged"):
            staged_view = _identity_view(plan.next_cert) if plan.next_cert is not None else predicted
            identity["next"] = {
                **plan.next_files(),
                **staged_view,
                "public_key_sha256": _public_key_sha256(plan.next_cert),
            }
        if promoted:
            identity["retired_path"] = plan.retired_path
        identities[plan.registration_id] = identity
        if changed:
            diff_before[plan.registration_id] = plan.before
            after = identity["next"] if plan.rotation == "stage" else view
            diff_after[plan.registration_id] = {
                key: after[key] for key in ("thumbprint_sha1", "thumbprint_sha256", "not_after", "issuer")
            } | {"action": plan.action if plan.rotation == "none" else plan.rotation}
    return {
        "changed": any(identity["changed"] for identity in identities.values()),
        "identities": identities,
        "refused": {plan.registration_id: plan.refused for plan in plans if plan.refused},
        "summary": {
            "created": counts["create"],
            "renewed": counts["renew"],
            "reissued": counts["reissue"],
            "repaired": counts["repair"],
            "unchanged": counts["none"] - rotations["stage"] - rotations["promote"],
            "staged": rotations["stage"],
            "rotating": rotations["stage"] + rotations["staged"],
            "promoted": rotations["promote"],
            "refused": counts["refused"],
        },
        "ca": {
            "signer": ca.signer_name if ca is not None else None,
            # The CA that signed: during a rollover, the new one in ca_path/next/.
            "root_cert_path": os.path.join(ca.path if ca is not None else ca_path, ROOT_CERT),
            "chain_path": os.path.join(ca.path, CA_CHAIN) if ca is not None else None,
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
            if not plan.device_key and file_mode(plan.key_path) != KEY_MODE:
                os.chmod(plan.key_path, KEY_MODE)
        if plan.rotation == "promote":
            _promote(plan)
    to_stage = [p for p in plans if p.rotation == "stage"]
    if not to_issue and not to_stage:
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
        if plan.device_key and plan.current_cert is not None and os.path.lexists(plan.key_path):
            plan.retired_path = _keep_current(plan)  # the device switched from a key made here to its own
        plan.cert = _issue_into(plan, plan.directory, issuer, request.key_type, chain_tail)
        _drop_controller_key(plan)
    for plan in to_stage:
        plan.next_cert = _issue_into(plan, plan.next_dir, issuer, request.key_type, chain_tail, staged=True)


def _issue_into(plan: _Plan, directory: str, issuer, key_type: str, chain_tail: bytes, *, staged: bool = False):
    """The device's certificate (with a new key, unless the device made its own: then for its CSR's key, or for its
    next key when staged), written into ``directory`` together; returns the certificate."""
    key = None if plan.device_key else generate_private_key(key_type)
    device_key = _staged_key(plan) if staged else plan.csr_public_key
    cert = issuer.issue(common_name=plan.registration_id, public_key=device_key if key is None else key.public_key())
    cert_pem = certificate_pem(cert)
    files = [
        (IDENTITY_CERT, cert_pem, CERT_MODE),
        (IDENTITY_CHAIN, cert_pem + chain_tail, CERT_MODE),
    ]
    if key is not None:
        files.insert(0, (IDENTITY_KEY, private_key_pem(key), KEY_MODE))
    if os.path.isdir(directory):
        write_files_atomically([(os.path.join(directory, name), data, mode) for name, data, mode in files])
    else:
        write_directory_atomically(directory, files, mode=DEVICE_DIR_MODE)
    return cert


def _keep_current(plan: _Plan) -> str:
    """The current identity's files (its key too, if one is here) are kept under retired/<serial>/; returns where."""
    retired = os.path.join(plan.directory, RETIRED_DIR, f"{plan.current_cert.serial_number:x}")
    if not os.path.isdir(retired):
        os.makedirs(os.path.dirname(retired), mode=DEVICE_DIR_MODE, exist_ok=True)
        names = (IDENTITY_KEY, IDENTITY_CERT, IDENTITY_CHAIN)
        current = [(name, read_file(os.path.join(plan.directory, name))) for name in names]
        write_directory_atomically(
            retired,
            [(name, data, KEY_MODE if name == IDENTITY_KEY else CERT_MODE) for name, data in current if data],
            mode=DEVICE_DIR_MODE,
        )
    return retired


def _drop_controller_key(plan: _Plan) -> None:
    """A device that makes its own key: a key made here before it did (kept in retired/) is not its key any more."""
    if plan.device_key and os.path.lexists(plan.key_path):
        remove_paths([plan.key_path])


def _promote(plan: _Plan) -> None:
    """The staged identity becomes the current one; the one it replaces is kept under retired/<serial>/."""
    names = plan.file_names()
    retired = _keep_current(plan)
    staged = [(os.path.join(plan.next_dir, name), os.path.join(plan.directory, name)) for name in names]
    write_files_atomically(
        [
            (target, read_file(source), KEY_MODE if target.endswith(IDENTITY_KEY) else CERT_MODE)
            for source, target in staged
        ]
    )
    remove_paths([plan.next_dir])
    _drop_controller_key(plan)
    plan.retired_path = retired
    plan.cert = plan.next_cert


def retired_root(identity_dir: str) -> str:
    """Where retired devices' directories go: beside the identity directory, so no registration id can clash."""
    return os.path.normpath(identity_dir) + ".retired"


def _retire(plans, root: str, now: datetime.datetime, *, check_mode: bool) -> dict:
    """A retired device's whole directory (identity, next/, retired/) moves to <root>/<id>/<UTC time>/, never deleted;
    its leaf is also copied to <root>/<id>/identity.cert.pem, where later runs find it."""
    identities, diff_before = {}, {}
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    for plan in plans:
        target = os.path.join(root, plan.registration_id, stamp)
        present = os.path.isdir(plan.directory)
        if present:
            cert_pem = read_file(plan.cert_path)
            diff_before[plan.registration_id] = (
                _identity_view(load_certificates(cert_pem, path=plan.cert_path)[0]) if cert_pem else {}
            )
            if not check_mode:
                os.makedirs(os.path.dirname(target), mode=DEVICE_DIR_MODE, exist_ok=True)
                os.rename(plan.directory, target)
                if cert_pem:
                    # The certificate DPS keeps for the retired device (its disabled enrollment), at a fixed path.
                    write_files_atomically(
                        [(os.path.join(os.path.dirname(target), IDENTITY_CERT), cert_pem, CERT_MODE)]
                    )
        identities[plan.registration_id] = {
            "registration_id": plan.registration_id,
            "changed": present,
            "action": "retire" if present else "none",
            "reasons": [],
            "retired_path": target if present else None,
        }
    return {
        "changed": bool(diff_before),
        "identities": identities,
        "summary": {"retired": len(diff_before), "unchanged": len(plans) - len(diff_before)},
        "diff": {"before": {"identities": diff_before}, "after": {"identities": dict.fromkeys(diff_before)}},
    }


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
