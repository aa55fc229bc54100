# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# PRIVATE to the edgefleet.iotedge collection. Do not use this from other collections:
# it may change at any time.

"""The fleet CA: a root and (by default) an intermediate in one directory.

`ensure_ca` creates, checks and rotates it; `load_ca` reads it for the cores that sign with it.
"""

from __future__ import annotations

import datetime
import os
import shutil
from dataclasses import dataclass

from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki import (
    KEY_TYPES,
    LOCK_NAME,
    PkiError,
    PkiPassphraseError,
    build_certificate,
    certificate_pem,
    certificate_summary,
    check_expiry_limits,
    common_name_of,
    common_name_problem,
    ensure_directory,
    file_mode,
    format_time,
    generate_private_key,
    key_is_encrypted,
    key_matches_certificate,
    key_type_of,
    load_certificates,
    load_private_key,
    locked_directory,
    not_after_of,
    parse_time,
    private_key_pem,
    read_file,
    remove_paths,
    signed_by,
    stale_temporaries,
    utcnow,
    validity_window,
    write_files_atomically,
)
from ansible_collections.edgefleet.iotedge.plugins.module_utils._shown import shown

ROOT_CERT = "root.cert.pem"
ROOT_KEY = "root.key.pem"
INTERMEDIATE_CERT = "intermediate.cert.pem"
INTERMEDIATE_KEY = "intermediate.key.pem"
# Intermediate then root: what a device or DPS needs above a leaf.
CA_CHAIN = "ca-chain.cert.pem"
RETIRED_DIR = "retired"

KEY_MODE = 0o600
CERT_MODE = 0o644


@dataclass
class LoadedCa:
    """A CA directory that passed its checks; `signer_*` issues identities."""

    path: str
    root_cert: object
    root_key: object
    intermediate_cert: object | None
    signer_cert: object
    signer_key: object
    chain_pem: bytes

    @property
    def signer_name(self) -> str:
        return "intermediate" if self.intermediate_cert is not None else "root"


def _load_pair(path: str, cert_name: str, key_name: str, *, read_key, ca_path_field: str):
    """Return (cert, key, key_state) for a cert/key pair, (None, None, None) when both are missing.

    ``read_key(pem, key_path)`` returns (key, state): how the key file is encrypted (see _key_reader).
    """
    cert_path, key_path = os.path.join(path, cert_name), os.path.join(path, key_name)
    cert_pem, key_pem = read_file(cert_path), read_file(key_path)
    if cert_pem is None and key_pem is None:
        return None, None, None
    if cert_pem is None or key_pem is None:
        present, missing = (cert_path, key_path) if key_pem is None else (key_path, cert_path)
        raise PkiError(
            f"{ca_path_field}: {present} exists but {missing} is missing; restore the missing file "
            "(or remove both to issue new ones, which invalidates every identity they signed)"
        )
    cert = load_certificates(cert_pem, path=cert_path)[0]
    key, key_state = read_key(key_pem, key_path)
    if not key_matches_certificate(key, cert):
        raise PkiError(
            f"{ca_path_field}: {key_path} does not belong to {cert_path}; restore the matching key and certificate"
        )
    return cert, key, key_state


def _key_reader(passphrase: str | None, previous_passphrase: str | None = None):
    """A key loader for _load_pair. States: ``plain`` (not encrypted), ``current`` (opened with ``passphrase``),
    ``previous`` (opened with ``previous_passphrase``, so it must be re-encrypted)."""

    def read(pem: bytes, key_path: str):
        if not key_is_encrypted(pem):
            return load_private_key(pem, path=key_path, passphrase=None), "plain"
        if previous_passphrase:
            for candidate, state in ((passphrase, "current"), (previous_passphrase, "previous")):
                if candidate:
                    try:
                        return load_private_key(pem, path=key_path, passphrase=candidate), state
                    except PkiPassphraseError:
                        continue
            raise PkiPassphraseError(
                f"previous_passphrase: cannot decrypt {key_path} with passphrase or previous_passphrase; give the "
                "passphrase the key is encrypted with now as previous_passphrase"
            )
        return load_private_key(pem, path=key_path, passphrase=passphrase), "current"

    return read


def ca_exists(path: str) -> bool:
    return os.path.exists(os.path.join(path, ROOT_CERT))


def load_ca(path: str, *, passphrase: str | None, ca_path_field: str = "ca_path") -> LoadedCa:
    """Read a pki_ca directory and check that it forms a usable chain, before anything is signed with it."""
    if not os.path.isdir(path):
        raise PkiError(f"{ca_path_field}: {path} is not a directory; create the CA first with edgefleet.iotedge.pki_ca")
    read_key = _key_reader(passphrase)
    root_cert, root_key, _root_state = _load_pair(
        path, ROOT_CERT, ROOT_KEY, read_key=read_key, ca_path_field=ca_path_field
    )
    if root_cert is None:
        raise PkiError(f"{ca_path_field}: {path} has no {ROOT_CERT}; create the CA first with edgefleet.iotedge.pki_ca")
    if not signed_by(root_cert, root_cert):
        raise PkiError(f"{ca_path_field}: {os.path.join(path, ROOT_CERT)} is not a self-signed root certificate")
    intermediate_cert, intermediate_key, _intermediate_state = _load_pair(
        path, INTERMEDIATE_CERT, INTERMEDIATE_KEY, read_key=read_key, ca_path_field=ca_path_field
    )
    if intermediate_cert is not None and not signed_by(intermediate_cert, root_cert):
        raise PkiError(
            f"{ca_path_field}: {os.path.join(path, INTERMEDIATE_CERT)} was not issued by "
            f"{os.path.join(path, ROOT_CERT)}; the root and intermediate do not chain. Restore the pair that "
            "belongs together, or run edgefleet.iotedge.pki_ca with force=true to issue a new intermediate"
        )
    chain = [c for c in (intermediate_cert, root_cert) if c is not None]
    return LoadedCa(
        path=path,
        root_cert=root_cert,
        root_key=root_key,
        intermediate_cert=intermediate_cert,
        signer_cert=intermediate_cert if intermediate_cert is not None else root_cert,
        signer_key=intermediate_key if intermediate_key is not None else root_key,
        chain_pem=b"".join(certificate_pem(c) for c in chain),
    )


@dataclass
class CaRequest:
    path: str
    root_common_name: str
    intermediate: bool
    intermediate_common_name: str
    key_type: str
    valid_days: int
    not_after: str | None
    passphrase: str | None
    state: str
    generation: str
    force: bool
    # Changing how existing keys are encrypted is an explicit step; the old key files are kept (retired/).
    reencrypt: bool = False
    previous_passphrase: str | None = None


def _validate(request: CaRequest, now: datetime.datetime) -> datetime.datetime | None:
    if request.key_type not in KEY_TYPES:
        raise PkiError(f"key_type: {shown(request.key_type)} is not supported; use one of {', '.join(KEY_TYPES)}")
    if request.valid_days < 1:
        raise PkiError(f"valid_days: must be at least 1, got {request.valid_days}")
    for field in ("passphrase", "previous_passphrase"):
        value = getattr(request, field)
        if value is not None and not isinstance(value, str):
            # A list or a number would be turned into its text and become the key's passphrase.
            raise PkiError(f"{field}: must be a string, got a {type(value).__name__}; give the passphrase as text")
    if request.previous_passphrase and not request.reencrypt:
        raise PkiError("previous_passphrase: only used with reencrypt=true, to change the passphrase of existing keys")
    for field in ("root_common_name", "intermediate_common_name"):
        problem = common_name_problem(getattr(request, field))
        if problem:
            raise PkiError(f"{field}: {problem}")
    if request.intermediate and request.root_common_name == request.intermediate_common_name:
        raise PkiError("intermediate_common_name: must differ from root_common_name so that chains can be told apart")
    cap = parse_time(request.not_after, field="not_after") if request.not_after else None
    if cap is not None and cap <= now:
        raise PkiError(f"not_after: {request.not_after} is in the past; give a date in the future")
    return cap


def _reasons_to_reissue(cert, *, common_name, key_type, cap, generation, now, force) -> list[str]:
    reasons = []
    if force:
        reasons.append("force=true")
    if common_name_of(cert.subject) != common_name:
        reasons.append(f"common name is {common_name_of(cert.subject)!r}, wanted {common_name!r}")
    current_type = key_type_of(cert.public_key())
    if current_type != key_type:
        reasons.append(f"key type is {current_type}, wanted {key_type}")
    expiry = not_after_of(cert)
    if expiry <= now:
        reasons.append(f"expired on {format_time(expiry)}")
    if cap is not None and expiry > cap:
        reasons.append(f"expires on {format_time(expiry)}, after not_after {format_time(cap)}")
    try:
        check_expiry_limits(expiry, generation=generation, what="it", fix="")
    except PkiError:
        reasons.append(f"expires on {format_time(expiry)}, past what IoT Edge {generation} accepts")
    return reasons


def _retire(path: str, names: list[str], now: datetime.datetime, *, copies: list[str] = ()) -> str | None:
    """Move replaced CA files aside instead of deleting them: identities they signed may still be in use.

    ``copies`` are kept in place and copied (key files about to be re-encrypted).
    """
    present = [n for n in names if os.path.exists(os.path.join(path, n))]
    copied = [n for n in copies if os.path.exists(os.path.join(path, n))]
    if not present and not copied:
        return None
    target = os.path.join(path, RETIRED_DIR, now.strftime("%Y%m%dT%H%M%SZ"))
    os.makedirs(target, mode=0o700, exist_ok=True)
    for name in present:
        shutil.move(os.path.join(path, name), os.path.join(target, name))
    for name in copied:
        shutil.copy2(os.path.join(path, name), os.path.join(target, name))
    return target


def _needs_reencryption(key_state: str, request: CaRequest, path: str, key_name: str) -> bool:
    """Whether a kept key must be written again to match ``passphrase``; refused unless ``reencrypt`` asks."""
    wanted = "current" if request.passphrase else "plain"
    if key_state == wanted:
        return False
    if not request.reencrypt:
        # Only reachable for an unencrypted key and a passphrase: an encrypted one fails to load without it.
        raise PkiError(
            f"passphrase: {os.path.join(path, key_name)} is not encrypted, but a passphrase is given. Encrypting "
            "existing CA keys is an explicit step: set reencrypt=true (role variable edgefleet_pki_reencrypt) for "
            "one run, which keeps the current key files under retired/; or give no passphrase"
        )
    return True


def _reencryption_action(label: str, request: CaRequest) -> str:
    if not request.passphrase:
        return f"store the {label} key without encryption (reencrypt, previous key kept in retired/)"
    return f"encrypt the {label} key with the passphrase (reencrypt, previous key kept in retired/)"


def _summary(cert, path: str, cert_name: str, key_name: str) -> dict:
    info = certificate_summary(cert)
    info.update(cert_path=os.path.join(path, cert_name), key_path=os.path.join(path, key_name))
    return info


def ensure_ca(request: CaRequest, *, check_mode: bool, now: datetime.datetime | None = None) -> dict:
    """Bring the CA directory to the requested state; return the module result (changed, root, intermediate...).

    A real run holds the directory's lock from the first read to the last write, so two runs started together
    never both create a CA: the second one finds the first one's.
    """
    now = now or utcnow()
    cap = _validate(request, now)
    if check_mode or (request.state == "absent" and not os.path.isdir(request.path)):
        return _ensure(request, cap, now, check_mode=check_mode)
    with locked_directory(request.path):
        return _ensure(request, cap, now, check_mode=False)


def _ensure(request: CaRequest, cap, now: datetime.datetime, *, check_mode: bool) -> dict:
    path = request.path
    if request.state == "absent":
        return _ensure_absent(path, check_mode=check_mode)

    read_key = _key_reader(request.passphrase, request.previous_passphrase if request.reencrypt else None)
    root_cert, root_key, root_key_state = _load_pair(path, ROOT_CERT, ROOT_KEY, read_key=read_key, ca_path_field="path")
    actions: list[str] = []
    writes: list[tuple[str, bytes, int]] = []
    retire: list[str] = []
    # Key files whose encryption changes: copied to retired/ first, so a lost passphrase loses nothing.
    reencrypted: list[str] = []
    before = {"root": None, "intermediate": None}
    debris = stale_temporaries(path)
    if debris:
        actions.append(f"remove {len(debris)} temporary file(s) an interrupted run left")

    if root_cert is not None:
        before["root"] = certificate_summary(root_cert)
        reasons = _reasons_to_reissue(
            root_cert,
            common_name=request.root_common_name,
            key_type=request.key_type,
            cap=cap,
            generation=request.generation,
            now=now,
            force=request.force,
        )
        if reasons:
            actions.append("reissue root: " + "; ".join(reasons))
            retire += [ROOT_CERT, ROOT_KEY]
            root_cert = None
        elif _needs_reencryption(root_key_state, request, path, ROOT_KEY):
            actions.append(_reencryption_action("root", request))
            reencrypted.append(ROOT_KEY)
            writes.append((os.path.join(path, ROOT_KEY), private_key_pem(root_key, request.passphrase), KEY_MODE))
    new_root = root_cert is None
    if new_root:
        if not actions:
            actions.append("create root")
        root_key = generate_private_key(request.key_type)
        not_before, not_after = validity_window(now=now, valid_days=request.valid_days, cap=cap)
        check_expiry_limits(
            not_after,
            generation=request.generation,
            what="valid_days: the root CA",
            fix="set not_after (e.g. '2037-12-31') or lower valid_days",
        )
        root_cert = build_certificate(
            common_name=request.root_common_name,
            public_key=root_key.public_key(),
            issuer_cert=None,
            issuer_key=root_key,
            not_before=not_before,
            not_after=not_after,
            profile="root",
        )
        writes.append((os.path.join(path, ROOT_KEY), private_key_pem(root_key, request.passphrase), KEY_MODE))
        writes.append((os.path.join(path, ROOT_CERT), certificate_pem(root_cert), CERT_MODE))

    inter_cert, inter_key, inter_key_state = _load_pair(
        path, INTERMEDIATE_CERT, INTERMEDIATE_KEY, read_key=read_key, ca_path_field="path"
    )
    if inter_cert is not None:
        before["intermediate"] = certificate_summary(inter_cert)
    if not request.intermediate:
        if inter_cert is not None:
            actions.append("retire intermediate (intermediate=false)")
            retire += [INTERMEDIATE_CERT, INTERMEDIATE_KEY]
        inter_cert = None
    else:
        if inter_cert is not None:
            if new_root:
                reasons = ["the root was reissued"]
            elif not signed_by(inter_cert, root_cert):
                raise PkiError(
                    f"path: {os.path.join(path, INTERMEDIATE_CERT)} was not issued by "
                    f"{os.path.join(path, ROOT_CERT)}; the root and intermediate do not chain. Restore the pair "
                    "that belongs together, or set force=true to issue a new CA"
                )
            else:
                reasons = _reasons_to_reissue(
                    inter_cert,
                    common_name=request.intermediate_common_name,
                    key_type=request.key_type,
                    cap=cap,
                    generation=request.generation,
                    now=now,
                    force=request.force,
                )
            if reasons:
                actions.append("reissue intermediate: " + "; ".join(reasons))
                retire += [INTERMEDIATE_CERT, INTERMEDIATE_KEY]
                inter_cert = None
            elif _needs_reencryption(inter_key_state, request, path, INTERMEDIATE_KEY):
                actions.append(_reencryption_action("intermediate", request))
                reencrypted.append(INTERMEDIATE_KEY)
                writes.append(
                    (os.path.join(path, INTERMEDIATE_KEY), private_key_pem(inter_key, request.passphrase), KEY_MODE)
                )
        if inter_cert is None:
            if not any(a.startswith("reissue intermediate") for a in actions):
                actions.append("create intermediate")
            inter_key = generate_private_key(request.key_type)
            not_before, not_after = validity_window(
                now=now, valid_days=request.valid_days, cap=min(not_after_of(root_cert), cap or not_after_of(root_cert))
            )
            inter_cert = build_certificate(
                common_name=request.intermediate_common_name,
                public_key=inter_key.public_key(),
                issuer_cert=root_cert,
                issuer_key=root_key,
                not_before=not_before,
                not_after=not_after,
                profile="intermediate",
            )
            writes.append(
                (os.path.join(path, INTERMEDIATE_KEY), private_key_pem(inter_key, request.passphrase), KEY_MODE)
            )
            writes.append((os.path.join(path, INTERMEDIATE_CERT), certificate_pem(inter_cert), CERT_MODE))

    chain_pem = b"".join(certificate_pem(c) for c in (inter_cert, root_cert) if c is not None)
    chain_path = os.path.join(path, CA_CHAIN)
    if read_file(chain_path) != chain_pem:
        if not actions:
            actions.append(f"rewrite {CA_CHAIN}")
        writes.append((chain_path, chain_pem, CERT_MODE))
    for name in (ROOT_KEY, INTERMEDIATE_KEY):
        mode = file_mode(os.path.join(path, name))
        staged = any(w[0] == os.path.join(path, name) for w in writes)
        if mode is not None and mode != KEY_MODE and not staged and name not in retire:
            actions.append(f"set mode 0600 on {name}")

    changed = bool(actions)
    retired_path = None
    if changed and not check_mode:
        ensure_directory(path)
        remove_paths(debris)
        retired_path = _retire(path, retire, now, copies=reencrypted)
        write_files_atomically(writes)
        for name in (ROOT_KEY, INTERMEDIATE_KEY):
            key_path = os.path.join(path, name)
            if file_mode(key_path) not in (None, KEY_MODE):
                os.chmod(key_path, KEY_MODE)

    after = {
        "root": certificate_summary(root_cert),
        "intermediate": certificate_summary(inter_cert) if inter_cert is not None else None,
    }
    return {
        "changed": changed,
        "actions": actions,
        "path": path,
        "root": _summary(root_cert, path, ROOT_CERT, ROOT_KEY),
        "intermediate": _summary(inter_cert, path, INTERMEDIATE_CERT, INTERMEDIATE_KEY) if inter_cert else None,
        "chain_path": chain_path,
        "signer": "intermediate" if inter_cert is not None else "root",
        "retired_path": retired_path,
        "diff": {"before": before, "after": after},
    }


def _ensure_absent(path: str, *, check_mode: bool) -> dict:
    names = [ROOT_CERT, ROOT_KEY, INTERMEDIATE_CERT, INTERMEDIATE_KEY, CA_CHAIN]
    present = [n for n in names if os.path.exists(os.path.join(path, n))]
    before = {}
    for cert_name in (ROOT_CERT, INTERMEDIATE_CERT):
        pem = read_file(os.path.join(path, cert_name))
        before[cert_name.split(".", maxsplit=1)[0]] = (
            certificate_summary(load_certificates(pem, path=cert_name)[0]) if pem else None
        )
    if present and not check_mode:
        remove_paths([os.path.join(path, name) for name in [*present, LOCK_NAME]])
    return {
        "changed": bool(present),
        "actions": [f"remove {n}" for n in present],
        "path": path,
        "root": None,
        "intermediate": None,
        "chain_path": None,
        "signer": None,
        "retired_path": None,
        "diff": {"before": before, "after": {"root": None, "intermediate": None}},
    }


__all__ = (
    "CA_CHAIN",
    "INTERMEDIATE_CERT",
    "INTERMEDIATE_KEY",
    "ROOT_CERT",
    "ROOT_KEY",
    "CaRequest",
    "LoadedCa",
    "ca_exists",
    "ensure_ca",
    "load_ca",
)
