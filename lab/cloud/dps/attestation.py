"""X.509 attestation as DPS decides it (protocols.md 2.4), on the full chain the device sent over TLS."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from cryptography import x509

from lab.cloud.dps.errors import DpsError
from lab.cloud.dps.models import GROUP, CaCertificate, Enrollment
from lab.cloud.x509 import common_name, is_issued_by, is_self_signed, is_valid_at, sha256_thumbprint


@dataclass(frozen=True)
class AttestationResult:
    enrollment: Enrollment
    registration_id: str
    leaf: x509.Certificate
    signing_certificate: x509.Certificate | None = None


def _group_anchors(group: Enrollment, ca_certificates: Mapping[str, CaCertificate]) -> list[x509.Certificate]:
    x509_attestation = group.attestation.x509
    if x509_attestation is None:
        return []
    anchors = [stored.certificate for stored in x509_attestation.signing_certificates.values()]
    for name in x509_attestation.ca_references.values():
        registered = ca_certificates.get(name)
        if registered is not None:
            anchors.append(registered.certificate)
    return anchors


def _reaches_verified(chain: list[x509.Certificate], verified: list[x509.Certificate]) -> bool:
    """True when a CA certificate in the chain is verified, or a verified certificate signed the top of it."""
    verified_thumbprints = {sha256_thumbprint(cert) for cert in verified}
    if any(sha256_thumbprint(cert) in verified_thumbprints for cert in chain[1:]):
        return True
    return any(is_issued_by(chain[-1], anchor) for anchor in verified)


def authenticate_x509(
    chain: list[x509.Certificate],
    registration_id: str,
    enrollments: Mapping[str, Enrollment],
    groups: Iterable[Enrollment],
    ca_certificates: Mapping[str, CaCertificate],
    now: dt.datetime,
    require_verified_ca: bool = True,
) -> AttestationResult:
    """Find the enrollment that owns this chain or raise ``DpsError.unauthorized`` (401002) with the reason."""
    if not chain:
        raise DpsError.unauthorized("no client certificate was presented in the TLS handshake")
    leaf = chain[0]
    cn = common_name(leaf)
    if not cn or cn.lower() != registration_id.lower():
        raise DpsError.unauthorized(f"the device certificate CN {cn!r} differs from the registration id")
    for position, cert in enumerate(chain):
        if not is_valid_at(cert, now):
            raise DpsError.unauthorized(f"certificate {position} of the chain is expired or not yet valid")
        if position + 1 < len(chain) and not is_issued_by(cert, chain[position + 1]):
            raise DpsError.unauthorized(
                f"certificate {position} of the chain is not signed by certificate {position + 1}"
            )
    verified = [registered.certificate for registered in ca_certificates.values() if registered.is_verified]

    # An individual enrollment for the registration id wins over any group.
    individual = enrollments.get(registration_id.lower())
    if individual is not None:
        x509_attestation = individual.attestation.x509
        if x509_attestation is None:
            raise DpsError.unauthorized("the individual enrollment does not use X.509 attestation")
        thumbprints = {stored.sha256 for stored in x509_attestation.client_certificates.values()}
        if sha256_thumbprint(leaf) not in thumbprints:
            raise DpsError.unauthorized("the device certificate thumbprint does not match the individual enrollment")
        if require_verified_ca and not is_self_signed(leaf) and not _reaches_verified(chain, verified):
            raise DpsError.unauthorized("the CA-signed device certificate does not chain to a verified CA certificate")
        return AttestationResult(individual, cn, leaf)

    # Groups: the first intermediate in the chain decides, then the next one up, then whoever signed the top.
    ordered_groups = sorted(
        (g for g in groups if g.kind == GROUP and g.attestation.type == "x509"), key=lambda g: (g.created, g.key)
    )
    anchors = {group.key: _group_anchors(group, ca_certificates) for group in ordered_groups}
    for position in range(1, len(chain) + 1):
        for group in ordered_groups:
            for anchor in anchors[group.key]:
                within_chain = position < len(chain)
                matched = (
                    sha256_thumbprint(chain[position]) == sha256_thumbprint(anchor)
                    if within_chain
                    else is_issued_by(chain[-1], anchor)
                )
                if not matched:
                    continue
                full_chain = chain if position < len(chain) else [*chain, anchor]
                if require_verified_ca and not _reaches_verified(full_chain, verified):
                    raise DpsError.unauthorized(
                        f"the chain for enrollment group '{group.record_id}' does not reach a verified CA certificate"
                    )
                return AttestationResult(group, cn, leaf, anchor)
    raise DpsError.unauthorized("no individual enrollment or enrollment group matches the device certificate chain")
