# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# PRIVATE to the edgefleet.iotedge collection. Do not use this from other collections:
# it may change at any time.

"""Per-device Edge CA certificates issued by the fleet root, beside each device's identity (`ensure_edge_cas`).

The Edge CA signs the server certificates of the device's modules (edgeHub) and, through them, what downstream
devices trust. It is issued by the fleet *root*: the fleet intermediate has pathlen 0 and cannot sign a CA. Profile
as the runtime makes its own (edge_ca.rs): CA:TRUE, critical, pathlen 0, digitalSignature and keyCertSign. IoT Edge
1.1 signs a workload CA under the device CA, so there the Edge CA has pathlen 1. Files, in the device's directory of
pki_identity: ``edge-ca.cert.pem``, ``edge-ca.key.pem`` (0600) and ``edge-ca.full-chain.cert.pem`` (Edge CA, root),
which the device gets as its Edge CA certificate. Renewed in place by the identities' rules (due within
``renew_before_days``, issued by another root, other key type or generation, unreadable); nothing else waits on it.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, field

from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki import (
    GENERATION_1_1_LIMIT,
    CertificateIssuer,
    PkiError,
    certificate_pem,
    certificate_summary,
    check_expiry_limits,
    common_name_of,
    file_mode,
    format_time,
    generate_private_key,
    key_matches_certificate,
    key_type_of,
    load_certificates,
    load_private_key,
    locked_directory,
    not_after_of,
    path_length_of,
    private_key_pem,
    read_file,
    signed_by,
    utcnow,
    validity_window,
    write_directory_atomically,
    write_files_atomically,
)
from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki_ca import ca_exists, load_ca, signing_ca_path
from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki_identity import (
    CERT_MODE,
    DEVICE_DIR_MODE,
    KEY_MODE,
    DeviceBatchRequest,
    normalize_devices,
    validate_batch,
)
from ansible_collections.edgefleet.iotedge.plugins.module_utils._shown import shown

EDGE_CA_CERT = "edge-ca.cert.pem"
EDGE_CA_KEY = "edge-ca.key.pem"
EDGE_CA_CHAIN = "edge-ca.full-chain.cert.pem"
# The Edge CA's path length: 0 on 1.2+ (it signs module certificates), 1 on 1.1 (it signs iotedged's workload CA).
PATH_LENGTHS = {"1.2+": 0, "1.1": 1}
# The CN must differ from the device's hostname and id (certGen.sh appends ".ca" for that reason); X.509 caps it at 64.
COMMON_NAME_SUFFIX = ".ca"


@dataclass
class EdgeCaRequest(DeviceBatchRequest):
    """pki_edge_ca's options: those of every per-device batch (state present or absent)."""


@dataclass
class _Plan:
    registration_id: str
    directory: str
    action: str = "none"  # none | create | renew | reissue | repair | remove
    reasons: list = field(default_factory=list)
    before: dict | None = None
    cert = None

    def path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def files(self) -> dict:
        return {
            "cert_path": self.path(EDGE_CA_CERT),
            "key_path": self.path(EDGE_CA_KEY),
            "chain_path": self.path(EDGE_CA_CHAIN),
        }


def edge_ca_files(identity_dir: str, registration_id: str) -> dict:
    """Where a device's Edge CA files are under ``identity_dir`` (see the identity_files filter)."""
    return _Plan(registration_id, os.path.join(identity_dir, registration_id)).files()


def common_name_for(registration_id: str) -> str:
    return registration_id[: 64 - len(COMMON_NAME_SUFFIX)] + COMMON_NAME_SUFFIX


def _validate(request: EdgeCaRequest) -> None:
    validate_batch(request)
    if request.state not in ("present", "absent"):
        raise PkiError(f"state: {shown(request.state)} is not known; use present or absent")


def ensure_edge_cas(request: EdgeCaRequest, *, check_mode: bool, now: datetime.datetime | None = None) -> dict:
    """Bring every listed device's Edge CA to the requested state; return the module result."""
    now = now or utcnow()
    _validate(request)
    plans = [_Plan(i, os.path.join(request.path, i)) for i in normalize_devices(request.devices)]
    if check_mode:
        return _ensure(request, plans, now, check_mode=True)
    with locked_directory(request.path, mode=DEVICE_DIR_MODE):
        return _ensure(request, plans, now, check_mode=False)


def _ensure(request: EdgeCaRequest, plans: list, now: datetime.datetime, *, check_mode: bool) -> dict:
    if request.state == "absent":
        return _remove(plans, check_mode=check_mode)
    if check_mode and not ca_exists(request.ca_path):
        for plan in plans:
            plan.action, plan.reasons = "create", ["no Edge CA yet; the CA in ca_path does not exist yet either"]
        return _result(plans, root=None)
    # During a CA rollover the new root issues, as it does the identities.
    ca = load_ca(signing_ca_path(request.ca_path), passphrase=request.passphrase)
    not_before, not_after = validity_window(now=now, valid_days=request.valid_days, cap=not_after_of(ca.root_cert))
    check_expiry_limits(
        not_after,
        generation=request.generation,
        what="valid_days: an Edge CA issued now",
        fix="lower edgefleet_pki_edge_ca_valid_days, or give the CA an earlier end (pki_ca not_after)",
    )
    renew_at = now + datetime.timedelta(days=request.renew_before_days)
    if not_after < renew_at:
        raise PkiError(
            f"ca_path: the root CA expires on {format_time(not_after_of(ca.root_cert))}, sooner than "
            f"renew_before_days ({request.renew_before_days}) from now, so new Edge CAs could not last; roll the CA "
            "over first"
        )
    chain_tail = certificate_pem(ca.root_cert)
    for plan in plans:
        _assess(plan, request=request, root=ca.root_cert, chain_tail=chain_tail, renew_at=renew_at)
    if not check_mode:
        issuer = CertificateIssuer(
            issuer_cert=ca.root_cert,
            issuer_key=ca.root_key,
            not_before=not_before,
            not_after=not_after,
            profile=f"edge-ca-{PATH_LENGTHS[request.generation]}",
        )
        for plan in plans:
            _apply(plan, request=request, issuer=issuer, chain_tail=chain_tail)
    return _result(plans, root=ca.root_cert, predicted_not_after=not_after)


def _assess(plan: _Plan, *, request: EdgeCaRequest, root, chain_tail: bytes, renew_at: datetime.datetime) -> None:
    cert_pem, key_pem = read_file(plan.path(EDGE_CA_CERT)), read_file(plan.path(EDGE_CA_KEY))
    if cert_pem is None or key_pem is None:
        plan.action = "create" if cert_pem is None and key_pem is None else "reissue"
        plan.reasons = ["no Edge CA yet"] if plan.action == "create" else ["certificate or key file is missing"]
        return
    try:
        cert = load_certificates(cert_pem, path=plan.path(EDGE_CA_CERT))[0]
        key = load_private_key(key_pem, path=plan.path(EDGE_CA_KEY), passphrase=None, passphrase_field=EDGE_CA_KEY)
    except PkiError as error:
        plan.action, plan.reasons = "reissue", [f"unreadable: {error}"]
        return
    plan.before = _view(cert)
    reasons = []
    if common_name_of(cert.subject) != common_name_for(plan.registration_id):
        reasons.append(f"CN is {common_name_of(cert.subject)!r}")
    if not signed_by(cert, root):
        reasons.append("not issued by the current root CA")
    if key_type_of(cert.public_key()) != request.key_type:
        reasons.append(f"key type is {key_type_of(cert.public_key())}, wanted {request.key_type}")
    if not key_matches_certificate(key, cert):
        reasons.append("key does not match the certificate")
    if path_length_of(cert) != PATH_LENGTHS[request.generation]:
        reasons.append(
            f"path length is {path_length_of(cert)}, IoT Edge {request.generation} needs "
            f"{PATH_LENGTHS[request.generation]}"
        )
    if request.generation == "1.1" and not_after_of(cert) >= GENERATION_1_1_LIMIT:
        reasons.append("expires on or after 2038-01-01, which IoT Edge 1.1 cannot use")
    if reasons:
        plan.action, plan.reasons = "reissue", reasons
        return
    if not_after_of(cert) < renew_at:
        plan.action, plan.reasons = "renew", [f"expires on {format_time(not_after_of(cert))}, within renew_before_days"]
        return
    plan.cert = cert
    expected_chain = (cert_pem if cert_pem.endswith(b"\n") else cert_pem + b"\n") + chain_tail
    repairs = []
    if read_file(plan.path(EDGE_CA_CHAIN)) != expected_chain:
        repairs.append("full chain file is missing or out of date")
    if file_mode(plan.path(EDGE_CA_KEY)) != KEY_MODE:
        repairs.append("key file mode is not 0600")
    if repairs:
        plan.action, plan.reasons = "repair", repairs


def _apply(plan: _Plan, *, request: EdgeCaRequest, issuer, chain_tail: bytes) -> None:
    if plan.action == "repair":
        cert_pem = read_file(plan.path(EDGE_CA_CERT))
        expected_chain = (cert_pem if cert_pem.endswith(b"\n") else cert_pem + b"\n") + chain_tail
        if read_file(plan.path(EDGE_CA_CHAIN)) != expected_chain:
            write_files_atomically([(plan.path(EDGE_CA_CHAIN), expected_chain, CERT_MODE)])
        if file_mode(plan.path(EDGE_CA_KEY)) != KEY_MODE:
            os.chmod(plan.path(EDGE_CA_KEY), KEY_MODE)
        return
    if plan.action not in ("create", "renew", "reissue"):
        return
    key = generate_private_key(request.key_type)
    cert = issuer.issue(common_name=common_name_for(plan.registration_id), public_key=key.public_key())
    cert_pem = certificate_pem(cert)
    files = [
        (EDGE_CA_KEY, private_key_pem(key), KEY_MODE),
        (EDGE_CA_CERT, cert_pem, CERT_MODE),
        (EDGE_CA_CHAIN, cert_pem + chain_tail, CERT_MODE),
    ]
    if os.path.isdir(plan.directory):
        write_files_atomically([(plan.path(name), data, mode) for name, data, mode in files])
    else:
        write_directory_atomically(plan.directory, files, mode=DEVICE_DIR_MODE)
    plan.cert = cert


def _view(cert) -> dict:
    summary = certificate_summary(cert)
    return {key: summary[key] for key in ("subject", "issuer", "serial", "not_after", "thumbprint_sha256")}


def _result(plans: list, *, root, predicted_not_after: datetime.datetime | None = None) -> dict:
    edge_cas, before, after = {}, {}, {}
    counts = {"create": 0, "renew": 0, "reissue": 0, "repair": 0, "none": 0, "remove": 0}
    for plan in plans:
        counts[plan.action] += 1
        view = (
            _view(plan.cert)
            if plan.cert is not None
            else {"not_after": format_time(predicted_not_after) if predicted_not_after else None}
        )
        entry = {
            "registration_id": plan.registration_id,
            "changed": plan.action != "none",
            "action": plan.action,
            "reasons": plan.reasons,
            **plan.files(),
            **view,
        }
        edge_cas[plan.registration_id] = entry
        if entry["changed"]:
            before[plan.registration_id] = plan.before
            after[plan.registration_id] = {"action": plan.action, **view}
    return {
        "changed": any(entry["changed"] for entry in edge_cas.values()),
        "edge_cas": edge_cas,
        "summary": {
            "created": counts["create"],
            "renewed": counts["renew"],
            "reissued": counts["reissue"],
            "repaired": counts["repair"],
            "removed": counts["remove"],
            "unchanged": counts["none"],
        },
        "issuer": root.subject.rfc4514_string() if root is not None else None,
        "diff": {"before": {"edge_cas": before}, "after": {"edge_cas": after}},
    }


def _remove(plans: list, *, check_mode: bool) -> dict:
    """state=absent: a device's Edge CA files go (its identity stays)."""
    for plan in plans:
        present = [path for path in plan.files().values() if os.path.exists(path)]
        if present:
            plan.action, plan.reasons = "remove", ["state=absent"]
            pem = read_file(plan.path(EDGE_CA_CERT))
            if pem:
                plan.before = _view(load_certificates(pem, path=plan.path(EDGE_CA_CERT))[0])
            if not check_mode:
                for path in present:
                    os.unlink(path)
    return _result(plans, root=None)


__all__ = ("EDGE_CA_CERT", "EDGE_CA_CHAIN", "EDGE_CA_KEY", "EdgeCaRequest", "edge_ca_files", "ensure_edge_cas")
