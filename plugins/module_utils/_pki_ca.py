# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# PRIVATE to the edgefleet.iotedge collection. Do not use this from other collections:
# it may change at any time.

"""The fleet CA: a root and (by default) an intermediate in one directory.

`ensure_ca` creates, checks and rotates it, or installs one that is handed in (`*_content`); `load_ca` reads it
for the cores that sign with it. With `staged=True` a new root does not replace the current CA: it waits in `next/`
(a CA rollover; pki_identity signs with it and DPS references both) until `promote` makes it the current one, once
every identity is issued by it. With `create=False` the CA is an input: no new root key is ever made, and a
directory that lacks the CA is an error (see `missing_ca_files`), which matters where every run starts empty
(AWX/AAP execution environments).
"""

from __future__ import annotations

import datetime
import os
import shutil
from dataclasses import dataclass, replace

from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki import (
    IDENTITY_CERT,
    KEY_TYPES,
    LOCK_NAME,
    PkiError,
    PkiPassphraseError,
    basic_constraints_ca,
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
# A CA rollover's new CA waits here, inside the CA directory, until it is promoted.
NEXT_DIR = "next"
# The files of a complete CA, in the order they are named in messages.
ROOT_FILES = (ROOT_CERT, ROOT_KEY)
INTERMEDIATE_FILES = (INTERMEDIATE_CERT, INTERMEDIATE_KEY)
# Options that hand the CA in as PEM text, by the file each one becomes.
CONTENT_OPTIONS = {
    ROOT_CERT: "root_cert_content",
    ROOT_KEY: "root_key_content",
    INTERMEDIATE_CERT: "intermediate_cert_content",
    INTERMEDIATE_KEY: "intermediate_key_content",
}

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

    @property
    def is_staged(self) -> bool:
        """Whether this is a rollover's new CA, waiting in next/ (see signing_ca_path)."""
        return os.path.basename(os.path.normpath(self.path)) == NEXT_DIR


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


def next_ca_path(path: str) -> str:
    """Where a CA rollover's new CA waits (see `staged`); a CA in its own right, for pki_identity and DPS proofs."""
    return os.path.join(path, NEXT_DIR)


def signing_ca_path(path: str) -> str:
    """The CA that issues identities now: the one a rollover staged, else the current one."""
    staged = next_ca_path(path)
    return staged if ca_exists(staged) else path


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


# --- a CA handed in as PEM text -------------------------------------------------------------------------------


@dataclass
class HandedInCa:
    """CA files given as PEM text (a credential, ansible-vault): checked, then installed exactly as given.

    ``files`` are the (file name, bytes, mode) pairs to install; the intermediate is None when only the root is given.
    """

    root_cert: object
    root_key: object
    intermediate_cert: object | None
    intermediate_key: object | None
    files: list


def _named(names: dict | None):
    return (lambda option: names.get(option, option)) if names else (lambda option: option)


def _pem_text(value, option: str, name) -> bytes:
    """The PEM text as it is installed: surrounding blank space removed (lookup('file') strips the last line
    break), Unix line ends, one final line break. The value itself never appears in a message."""
    if not isinstance(value, str):
        kind = "a list" if isinstance(value, (list, tuple)) else f"a {type(value).__name__}"
        raise PkiError(f"{name(option)}: must be PEM text, got {kind}. Give the file's content as a string")
    text = value.strip().replace("\r\n", "\n")
    if "-----BEGIN " not in text:
        hint = (
            "; it looks like a file name: give the content, e.g. \"{{ lookup('ansible.builtin.file', '<path>') }}\""
            if "\n" not in text and text.startswith(("/", "~", ".", "files/"))
            else ""
        )
        raise PkiError(f"{name(option)}: is not PEM text (it has no '-----BEGIN' line){hint}")
    return (text + "\n").encode("utf-8")


def _handed_in_certificate(pem: bytes, option: str, name, what: str):
    certificates = load_certificates(pem, path=name(option))
    if len(certificates) != 1:
        raise PkiError(
            f"{name(option)}: holds {len(certificates)} certificates; give the {what} certificate alone "
            "(each CA certificate has a variable of its own)"
        )
    certificate = certificates[0]
    if not basic_constraints_ca(certificate):
        raise PkiError(
            f"{name(option)}: {common_name_of(certificate.subject)!r} is not a CA certificate (basicConstraints "
            f"CA:TRUE is missing); give the {what} CA's certificate"
        )
    return certificate


def _handed_in_key(pem: bytes, option: str, name, *, passphrase: str | None, certificate, cert_option: str):
    if key_is_encrypted(pem):
        key = load_private_key(pem, path=name(option), passphrase=passphrase, passphrase_field=name("passphrase"))
    elif passphrase:
        raise PkiError(
            f"{name(option)}: is not encrypted, but {name('passphrase')} is set. A key that is handed in is installed "
            f"as it is, never re-encrypted: hand it in encrypted with that passphrase (openssl pkcs8 -topk8 -v2 "
            f"aes-256-cbc -in <key>), or leave {name('passphrase')} empty and protect the content with ansible-vault "
            "or the credential"
        )
    else:
        try:
            key = load_private_key(pem, path=name(option), passphrase=None)
        except PkiError:
            raise PkiError(f"{name(option)}: is not a readable PEM private key; give the key file's content") from None
    if not key_matches_certificate(key, certificate):
        raise PkiError(f"{name(option)}: is not the key of {name(cert_option)}; give the matching key and certificate")
    return key


def handed_in_ca(
    contents: dict, *, passphrase: str | None, intermediate: bool, names: dict | None = None
) -> HandedInCa | None:
    """Check CA files handed in as text (``contents``: option -> text, empty or None when not given).

    Returns None when nothing is handed in. Raises PkiError, led by the option (or, with ``names``, by what the caller
    calls it), when a text is no PEM, a key does not open with the passphrase or does not match its certificate,
    the root is not self-signed or the intermediate not issued by it. Never shows a key or a passphrase.
    """
    name = _named(names)
    given = {option for option in CONTENT_OPTIONS.values() if contents.get(option) not in (None, "")}
    if not given:
        return None
    root_cert_option, root_key_option = CONTENT_OPTIONS[ROOT_CERT], CONTENT_OPTIONS[ROOT_KEY]
    inter_cert_option, inter_key_option = CONTENT_OPTIONS[INTERMEDIATE_CERT], CONTENT_OPTIONS[INTERMEDIATE_KEY]
    for cert_option, key_option in ((root_cert_option, root_key_option), (inter_cert_option, inter_key_option)):
        if (cert_option in given) != (key_option in given):
            present, missing = (cert_option, key_option) if cert_option in given else (key_option, cert_option)
            raise PkiError(
                f"{name(missing)}: is empty while {name(present)} is given; a CA is handed in as certificate and key "
                "together (the key signs: identities, and the root's the DPS proof of possession)"
            )
    if root_cert_option not in given:
        raise PkiError(
            f"{name(root_cert_option)}: is empty while {name(inter_cert_option)} is given; hand in the root "
            f"certificate and key ({name(root_cert_option)}, {name(root_key_option)}) with the intermediate"
        )
    if inter_cert_option in given and not intermediate:
        raise PkiError(
            f"{name(inter_cert_option)}: is given while {name('intermediate')} is false; remove it (identities are "
            f"then signed by the root) or set {name('intermediate')} to true"
        )
    pem = {option: _pem_text(contents[option], option, name) for option in sorted(given)}
    root_cert = _handed_in_certificate(pem[root_cert_option], root_cert_option, name, "root")
    if not signed_by(root_cert, root_cert):
        raise PkiError(
            f"{name(root_cert_option)}: {common_name_of(root_cert.subject)!r} is not a self-signed root certificate "
            f"(it was issued by {common_name_of(root_cert.issuer)!r}); give the root of the chain"
        )
    root_key = _handed_in_key(
        pem[root_key_option],
        root_key_option,
        name,
        passphrase=passphrase,
        certificate=root_cert,
        cert_option=root_cert_option,
    )
    files = [(ROOT_CERT, certificate_pem(root_cert), CERT_MODE), (ROOT_KEY, pem[root_key_option], KEY_MODE)]
    inter_cert = inter_key = None
    if inter_cert_option in given:
        inter_cert = _handed_in_certificate(pem[inter_cert_option], inter_cert_option, name, "intermediate")
        if not signed_by(inter_cert, root_cert):
            raise PkiError(
                f"{name(inter_cert_option)}: {common_name_of(inter_cert.subject)!r} was not issued by the root "
                f"handed in ({common_name_of(root_cert.subject)!r}); give the intermediate and root that chain"
            )
        inter_key = _handed_in_key(
            pem[inter_key_option],
            inter_key_option,
            name,
            passphrase=passphrase,
            certificate=inter_cert,
            cert_option=inter_cert_option,
        )
        files += [
            (INTERMEDIATE_CERT, certificate_pem(inter_cert), CERT_MODE),
            (INTERMEDIATE_KEY, pem[inter_key_option], KEY_MODE),
        ]
    return HandedInCa(
        root_cert=root_cert, root_key=root_key, intermediate_cert=inter_cert, intermediate_key=inter_key, files=files
    )


def handed_in_problems(
    handed: HandedInCa,
    *,
    root_common_name: str,
    intermediate_common_name: str,
    key_type: str,
    cap: datetime.datetime | None,
    generation: str,
    now: datetime.datetime,
    force: bool = False,
    names: dict | None = None,
) -> list[str]:
    """Why a CA handed in cannot be used as the request describes it (a generated CA would be reissued for these
    reasons; a handed-in one is never replaced, so each is an error). Messages are led by the option to change."""
    name = _named(names)
    problems = []
    for label, certificate, cert_option, common_name, cn_option in (
        ("root", handed.root_cert, CONTENT_OPTIONS[ROOT_CERT], root_common_name, "root_common_name"),
        (
            "intermediate",
            handed.intermediate_cert,
            CONTENT_OPTIONS[INTERMEDIATE_CERT],
            intermediate_common_name,
            "intermediate_common_name",
        ),
    ):
        if certificate is None:
            continue
        reasons = _reasons_to_reissue(
            certificate,
            common_name=common_name,
            key_type=key_type,
            cap=cap,
            generation=generation,
            now=now,
            force=force,
        )
        for reason in reasons:
            if reason.startswith("common name is"):
                problems.append(
                    f"{name(cn_option)}: the {label} CA handed in ({name(cert_option)}) has the common name "
                    f"{common_name_of(certificate.subject)!r}; set {name(cn_option)} to it"
                )
            elif reason.startswith("key type is"):
                problems.append(
                    f"{name('key_type')}: the {label} CA handed in ({name(cert_option)}) has a "
                    f"{key_type_of(certificate.public_key())} key; set {name('key_type')} to that"
                )
            else:
                problems.append(
                    f"{name(cert_option)}: the {label} CA handed in cannot be used: {reason}. A CA that is handed in "
                    "is never replaced by a new one; hand in one that fits (renewed where it is kept)"
                )
    return problems


def missing_ca_files(path: str, *, intermediate: bool, handed: HandedInCa | None = None) -> list[str]:
    """The files of the CA in ``path`` that are neither there nor handed in (full paths, in a fixed order)."""
    expected = [] if handed is not None else list(ROOT_FILES)
    if intermediate and (handed is None or handed.intermediate_cert is None):
        expected += INTERMEDIATE_FILES
    return [os.path.join(path, n) for n in expected if not os.path.isfile(os.path.join(path, n))]


def _refuse_to_create(request: CaRequest, missing: list[str], *, reasons: list[str] = ()) -> PkiError:
    """The error of create=false: what is missing (or why a new root would be made) and how to provide the CA.

    Led by ``create:``; the edge_pki role replaces that with its variable, edgefleet_pki_ca_create.
    """
    if reasons:
        return PkiError(
            f"create: is false and the root CA in {request.path} would be issued again ({'; '.join(reasons)}), "
            "which makes a new root key that DPS and the devices do not trust. Match the request to the CA "
            "(root_common_name, key_type, not_after; role: edgefleet_pki_root_common_name, edgefleet_pki_ca_key_type, "
            "edgefleet_pki_ca_not_after), hand in a renewed CA, or set create to true for one run to rotate the "
            "fleet CA on purpose. Nothing was changed"
        )
    names = ", ".join(os.path.basename(p) for p in missing)
    only_intermediate = all(os.path.basename(p) in INTERMEDIATE_FILES for p in missing)
    alternative = (
        " Or set intermediate to false (role: edgefleet_pki_intermediate) to sign identities with the root."
        if only_intermediate
        else ""
    )
    return PkiError(
        f"create: is false and the fleet CA in {request.path} is not complete ({names} missing there), so no new "
        "CA is made. Provide the existing one: point path (role: edgefleet_pki_ca_dir) at the directory that holds "
        "it (a mounted volume, a restored copy), or hand its files in with root_cert_content, root_key_content, "
        "intermediate_cert_content and intermediate_key_content (role: edgefleet_pki_ca_root_cert_content, "
        "edgefleet_pki_ca_root_key_content, edgefleet_pki_ca_intermediate_cert_content, "
        f"edgefleet_pki_ca_intermediate_key_content; from a credential or ansible-vault).{alternative} Set create "
        "to true only where a new fleet CA is wanted. Nothing was changed"
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
    # False: the CA is an input - never make a new root key, and fail when the CA is not there (or handed in).
    create: bool = True
    # The CA handed in as PEM text: installed into path exactly as given, never reissued or re-encrypted.
    root_cert_content: str | None = None
    root_key_content: str | None = None
    intermediate_cert_content: str | None = None
    intermediate_key_content: str | None = None
    # CA rollover: a new root waits in next/ beside the current CA; promote ends the rollover once every identity in
    # identity_path is issued by it.
    staged: bool = False
    promote: bool = False
    identity_path: str | None = None

    def contents(self) -> dict:
        return {option: getattr(self, option) for option in CONTENT_OPTIONS.values()}


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
    if request.promote and not request.staged:
        raise PkiError("promote: ends a CA rollover, which needs staged=true")
    if request.promote and not request.identity_path:
        raise PkiError(
            "identity_path: needed with promote (the pki_identity directory whose identities must all be issued by "
            "the new CA before it replaces the current one)"
        )
    if request.intermediate and request.root_common_name == request.intermediate_common_name:
        raise PkiError("intermediate_common_name: must differ from root_common_name so that chains can be told apart")
    cap = parse_time(request.not_after, field="not_after") if request.not_after else None
    if cap is not None and cap <= now:
        raise PkiError(f"not_after: {request.not_after} is in the past; give a date in the future")
    return cap


def _validate_handed_in(request: CaRequest, cap, now: datetime.datetime) -> HandedInCa | None:
    """The CA handed in (None when none is): readable, chaining, and usable as the request describes it."""
    if request.state == "absent":
        given = [option for option, value in request.contents().items() if value not in (None, "")]
        if given:
            raise PkiError(f"{given[0]}: only used with state=present; remove it to remove the CA")
        return None
    handed = handed_in_ca(request.contents(), passphrase=request.passphrase, intermediate=request.intermediate)
    if handed is None:
        return None
    problems = handed_in_problems(
        handed,
        root_common_name=request.root_common_name,
        intermediate_common_name=request.intermediate_common_name,
        key_type=request.key_type,
        cap=cap,
        generation=request.generation,
        now=now,
        force=request.force,
    )
    if problems:
        raise PkiError(problems[0] if len(problems) == 1 else " | ".join(problems))
    return handed


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
    handed = _validate_handed_in(request, cap, now)
    _check_create(request, handed)  # before the lock: a refused run leaves not even a lock file behind
    if check_mode or (request.state == "absent" and not os.path.isdir(request.path)):
        result = _ensure_with_rollover(request, cap, now, check_mode=check_mode, handed=handed)
    else:
        with locked_directory(request.path):
            result = _ensure_with_rollover(request, cap, now, check_mode=False, handed=handed)
    return {"next": None, "waiting": [], "promoted": False, **result}


# --- CA rollover (staged) ------------------------------------------------------------------------------------------


def _ensure_with_rollover(request: CaRequest, cap, now: datetime.datetime, *, check_mode: bool, handed) -> dict:
    """With staged=true a new root waits in next/ beside the current CA instead of replacing it.

    Devices chained to the current CA keep working while their identities are reissued under the new one (DPS
    references both); promote then makes the new CA the current one. A CA handed in is the truth and never staged.
    """
    if not request.staged or handed is not None or request.state == "absent":
        return _ensure(request, cap, now, check_mode=check_mode, handed=handed)
    next_path = next_ca_path(request.path)
    if ca_exists(next_path):
        return _continue_rollover(request, cap, now, check_mode=check_mode)
    preview = _ensure(request, cap, now, check_mode=True)
    root_reasons = [action for action in preview["actions"] if action.startswith("reissue root")]
    if not root_reasons:
        return _ensure(request, cap, now, check_mode=check_mode)
    # The current CA stays as it is; the new one is made from nothing in next/.
    staged = _ensure(replace(request, path=next_path, force=False), cap, now, check_mode=check_mode)
    current = _current_view(request)
    actions = [
        f"stage a new CA in {NEXT_DIR}/ (CA rollover; the current CA stays until every identity is issued by the new "
        f"one): {root_reasons[0]}"
    ]
    return {
        **current,
        "changed": True,
        "actions": actions,
        "next": _next_view(staged),
        "diff": {
            "before": {**current["diff"]["after"], "next": None},
            "after": {**current["diff"]["after"], "next": staged["diff"]["after"]},
        },
    }


def _continue_rollover(request: CaRequest, cap, now: datetime.datetime, *, check_mode: bool) -> dict:
    """A rollover is under way: keep the staged CA as requested, and promote it once no identity needs the old one."""
    next_path = next_ca_path(request.path)
    # force asked for the rollover that is already under way; it is not asked again.
    staged = _ensure(replace(request, path=next_path, force=False), cap, now, check_mode=check_mode)
    current = _current_view(request)
    before = {**current["diff"]["after"], "next": staged["diff"]["before"]}
    actions = [f"{NEXT_DIR}/: {action}" for action in staged["actions"]]
    waiting = identities_not_issued_by(request.identity_path, _signer_cert_of(staged)) if request.promote else []
    if not request.promote or waiting:
        return {
            **current,
            "changed": bool(actions),
            "actions": actions,
            "next": _next_view(staged),
            "waiting": waiting,
            "diff": {"before": before, "after": {**current["diff"]["after"], "next": staged["diff"]["after"]}},
        }
    actions.append(
        f"promote the CA in {NEXT_DIR}/: every identity in identity_path is issued by it; the current CA moves to "
        f"{RETIRED_DIR}/"
    )
    retired_path = None
    if not check_mode:
        retired_path = _promote_next(request.path, now)
    promoted = {
        "root": _summary_of_staged(staged["root"], request.path),
        "intermediate": _summary_of_staged(staged["intermediate"], request.path),
        "chain_path": os.path.join(request.path, CA_CHAIN),
        "signer": staged["signer"],
    }
    return {
        "changed": True,
        "actions": actions,
        "path": request.path,
        **promoted,
        "retired_path": retired_path,
        "promoted": True,
        "diff": {"before": before, "after": {**staged["diff"]["after"], "next": None}},
    }


def _current_view(request: CaRequest) -> dict:
    """The current CA, read and left as it is while a rollover is staged."""
    ca = load_ca(request.path, passphrase=request.passphrase, ca_path_field="path")
    view = {
        "root": certificate_summary(ca.root_cert),
        "intermediate": certificate_summary(ca.intermediate_cert) if ca.intermediate_cert is not None else None,
    }
    return {
        "changed": False,
        "actions": [],
        "path": request.path,
        "root": _summary(ca.root_cert, request.path, ROOT_CERT, ROOT_KEY),
        "intermediate": (
            _summary(ca.intermediate_cert, request.path, INTERMEDIATE_CERT, INTERMEDIATE_KEY)
            if ca.intermediate_cert is not None
            else None
        ),
        "chain_path": os.path.join(request.path, CA_CHAIN),
        "signer": ca.signer_name,
        "retired_path": None,
        "diff": {"before": view, "after": view},
    }


def _next_view(staged: dict) -> dict:
    return {key: staged[key] for key in ("path", "root", "intermediate", "chain_path", "signer")}


def _signer_cert_of(staged: dict):
    """The certificate that signs identities in the staged CA, as written (None when check mode has not written it)."""
    cert_path = (staged["intermediate"] or staged["root"])["cert_path"]
    pem = read_file(cert_path)
    return load_certificates(pem, path=cert_path)[0] if pem is not None else None


def _summary_of_staged(summary: dict | None, path: str) -> dict | None:
    """A staged certificate's summary, with the paths it has once promoted into ``path``."""
    if summary is None:
        return None
    return {
        **summary,
        "cert_path": os.path.join(path, os.path.basename(summary["cert_path"])),
        "key_path": os.path.join(path, os.path.basename(summary["key_path"])),
    }


def identities_not_issued_by(identity_path: str, signer_cert) -> list[str]:
    """The devices in a pki_identity directory whose current identity the given CA did not issue (sorted).

    A device without an identity file is left out (nothing of it depends on a CA); an unreadable one counts, so that
    a rollover never ends while a device may still need the old CA.
    """
    if not identity_path or not os.path.isdir(identity_path):
        return []
    waiting = []
    for device in sorted(os.listdir(identity_path)):
        if device.startswith(".") or not os.path.isdir(os.path.join(identity_path, device)):
            continue  # the directory's lock file, an interrupted run's temporaries
        cert_path = os.path.join(identity_path, device, IDENTITY_CERT)
        pem = read_file(cert_path)
        if pem is None:
            continue
        try:
            issued = signer_cert is not None and signed_by(load_certificates(pem, path=cert_path)[0], signer_cert)
        except PkiError:
            issued = False
        if not issued:
            waiting.append(device)
    return waiting


def _promote_next(path: str, now: datetime.datetime) -> str | None:
    """The current CA's files move to retired/<time>/ (never deleted), then next/'s files take their place."""
    names = [*ROOT_FILES, *INTERMEDIATE_FILES, CA_CHAIN]
    next_path = next_ca_path(path)
    retired_path = _retire(path, names, now)
    for name in names:
        staged = os.path.join(next_path, name)
        if os.path.exists(staged):
            os.replace(staged, os.path.join(path, name))
    remove_paths([os.path.join(next_path, LOCK_NAME), *stale_temporaries(next_path)])
    if not os.listdir(next_path):
        os.rmdir(next_path)
    return retired_path


def _check_create(request: CaRequest, handed: HandedInCa | None) -> None:
    if request.create or request.state == "absent":
        return
    missing = missing_ca_files(request.path, intermediate=request.intermediate, handed=handed)
    if missing:
        raise _refuse_to_create(request, missing)


def _issued_by_another_root(cert_path: str, root_cert) -> bool:
    """Whether the certificate file exists and was not issued by ``root_cert`` (unreadable counts as another's)."""
    pem = read_file(cert_path)
    if pem is None:
        return False
    try:
        return not signed_by(load_certificates(pem, path=cert_path)[0], root_cert)
    except PkiError:
        return True


def _certificate_summary_of(path: str) -> dict | None:
    """What the diff shows of a certificate file about to be replaced (None when it is missing or unreadable)."""
    pem = read_file(path)
    if pem is None:
        return None
    try:
        return certificate_summary(load_certificates(pem, path=path)[0])
    except PkiError:
        return None


def _plan_install(path: str, files: list, actions: list[str], writes: list, copies: list[str]) -> bool:
    """Stage the handed-in files that differ from those in ``path``; the ones they replace are kept (retired/)."""
    changed = False
    for file_name, data, mode in files:
        target = os.path.join(path, file_name)
        current = read_file(target)
        if current == data:
            continue
        changed = True
        writes.append((target, data, mode))
        if current is None:
            actions.append(f"install {file_name} from {CONTENT_OPTIONS[file_name]}")
        else:
            actions.append(
                f"replace {file_name} with {CONTENT_OPTIONS[file_name]} (the previous file is kept in retired/)"
            )
            copies.append(file_name)
    return changed


def _ensure(
    request: CaRequest, cap, now: datetime.datetime, *, check_mode: bool, handed: HandedInCa | None = None
) -> dict:
    path = request.path
    if request.state == "absent":
        return _ensure_absent(path, check_mode=check_mode)
    _check_create(request, handed)

    read_key = _key_reader(request.passphrase, request.previous_passphrase if request.reencrypt else None)
    actions: list[str] = []
    writes: list[tuple[str, bytes, int]] = []
    retire: list[str] = []
    # Key files whose encryption changes: copied to retired/ first, so a lost passphrase loses nothing.
    reencrypted: list[str] = []
    before = {"root": None, "intermediate": None}
    debris = stale_temporaries(path)
    if debris:
        actions.append(f"remove {len(debris)} temporary file(s) an interrupted run left")

    # A root handed in replaces whatever is in the directory; it is never reissued or re-encrypted.
    root_installed = False
    if handed is not None:
        before["root"] = _certificate_summary_of(os.path.join(path, ROOT_CERT))
        root_cert, root_key = handed.root_cert, handed.root_key
        root_installed = _plan_install(
            path, [f for f in handed.files if f[0] in ROOT_FILES], actions, writes, reencrypted
        )
    else:
        root_cert, root_key, root_key_state = _load_pair(
            path, ROOT_CERT, ROOT_KEY, read_key=read_key, ca_path_field="path"
        )

    root_reasons: list[str] = []
    if root_cert is not None and handed is None:
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
        root_reasons = reasons
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
        if not request.create:
            # Only reissue reasons lead here: a missing root was refused by _check_create.
            raise _refuse_to_create(request, [], reasons=root_reasons or ["no root CA"])
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

    inter_cert, inter_key, inter_key_state, foreign = None, None, None, False
    if handed is not None and handed.intermediate_cert is not None:
        before["intermediate"] = _certificate_summary_of(os.path.join(path, INTERMEDIATE_CERT))
        inter_cert, inter_key = handed.intermediate_cert, handed.intermediate_key
        _plan_install(path, [f for f in handed.files if f[0] in INTERMEDIATE_FILES], actions, writes, reencrypted)
    else:
        foreign = root_installed and _issued_by_another_root(os.path.join(path, INTERMEDIATE_CERT), root_cert)
        if foreign:
            # The directory's intermediate belongs to the CA the handed-in root replaces: its key is not read.
            before["intermediate"] = _certificate_summary_of(os.path.join(path, INTERMEDIATE_CERT))
            retire += [n for n in INTERMEDIATE_FILES if os.path.exists(os.path.join(path, n))]
        else:
            inter_cert, inter_key, inter_key_state = _load_pair(
                path, INTERMEDIATE_CERT, INTERMEDIATE_KEY, read_key=read_key, ca_path_field="path"
            )
            if inter_cert is not None:
                before["intermediate"] = certificate_summary(inter_cert)
    if not request.intermediate:
        if inter_cert is not None or foreign:
            actions.append("retire intermediate (intermediate=false)")
            retire += [n for n in INTERMEDIATE_FILES if n not in retire]
        inter_cert = None
    elif handed is None or handed.intermediate_cert is None:
        # Renewing an intermediate under the same root is allowed with create=false; making one where there was
        # none (or only another root's) is not: each run that starts without it would make its own.
        renewal = False
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
                renewal = True
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
        elif foreign:
            actions.append("reissue intermediate: not issued by the root handed in")
        if inter_cert is None:
            if not request.create and not renewal:
                raise PkiError(
                    f"create: is false and {os.path.join(path, INTERMEDIATE_CERT)} was not issued by the root handed "
                    "in (root_cert_content), so a new intermediate would be made. Hand in the intermediate as well "
                    "(intermediate_cert_content and intermediate_key_content; role: "
                    "edgefleet_pki_ca_intermediate_cert_content and edgefleet_pki_ca_intermediate_key_content), or "
                    "set intermediate to false (role: edgefleet_pki_intermediate) to sign identities with the root. "
                    "Nothing was changed"
                )
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
    "CONTENT_OPTIONS",
    "INTERMEDIATE_CERT",
    "INTERMEDIATE_FILES",
    "INTERMEDIATE_KEY",
    "NEXT_DIR",
    "ROOT_CERT",
    "ROOT_FILES",
    "ROOT_KEY",
    "CaRequest",
    "HandedInCa",
    "LoadedCa",
    "ca_exists",
    "ensure_ca",
    "handed_in_ca",
    "handed_in_problems",
    "identities_not_issued_by",
    "load_ca",
    "missing_ca_files",
    "next_ca_path",
    "signing_ca_path",
)
