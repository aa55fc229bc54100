# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# PRIVATE to the edgefleet.iotedge collection. Do not use this from other collections:
# it may change at any time.

"""The device's identity key, made on the device, and a certificate signing request for it.

Runs on the host. The key is made once, in a file only its owner can read, and never replaced by this code: a device
that lost its key sends a CSR for a new one and the controller reissues. The CSR is public; the key never leaves the
host and is never read into this process. The host needs the ``openssl`` command (Debian's openssl package, which
ca-certificates pulls in), not a Python library.
"""

from __future__ import annotations

import base64
import grp
import hashlib
import os
import pwd
import re
import shutil
import tempfile
from dataclasses import dataclass

# The rule DPS and the controller apply; it also keeps '/', '=' and '\\' out of the CSR's subject (/CN=<id>).
from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki import registration_id_problem

# `openssl genpkey` options per key type, the key types of the fleet PKI (edgefleet_pki_key_type).
GENPKEY_OPTIONS = {
    "ec-p256": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-pkeyopt", "ec_param_enc:named_curve"],
    "ec-p384": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384", "-pkeyopt", "ec_param_enc:named_curve"],
    "rsa-2048": ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    "rsa-3072": ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:3072"],
    "rsa-4096": ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:4096"],
}
KEY_MODE = 0o600
DIRECTORY_MODE = 0o700
PARENT_MODE = 0o755
EC_CURVES = {"prime256v1": "ec-p256", "P-256": "ec-p256", "secp384r1": "ec-p384", "P-384": "ec-p384"}


class CsrError(Exception):
    """A problem on the host; the message names the option or the file and says what to do."""


@dataclass
class CsrRequest:
    registration_id: str
    key_path: str
    key_type: str = "ec-p256"
    # The user the runtime reads the key as (aziotks on 1.2+, iotedge on 1.1). Until the runtime is installed it
    # does not exist: the key is then made as root, and the provision phase hands it over.
    owner: str = ""
    check_mode: bool = False


def validate(request: CsrRequest) -> None:
    problem = registration_id_problem(request.registration_id)
    if problem:
        raise CsrError(f"registration_id: {problem}")
    if request.key_type not in GENPKEY_OPTIONS:
        raise CsrError(f"key_type: {request.key_type!r} is not supported; use one of {', '.join(GENPKEY_OPTIONS)}")
    if not os.path.isabs(request.key_path) or os.path.normpath(request.key_path) != request.key_path:
        raise CsrError(f"key_path: {request.key_path!r} must be an absolute, normalised path on the host")


def ensure_identity_csr(request: CsrRequest, run) -> dict:
    """Make the key if the host has none, then return a CSR for it. ``run(argv)`` -> (rc, stdout, stderr)."""
    validate(request)
    if shutil.which("openssl") is None:
        raise CsrError(
            "the host has no openssl command, which makes the identity key and its CSR on the device. Install it "
            "(apt-get install openssl) or let the controller make the key (edgefleet_identity_key_origin: controller)"
        )
    actions: list = []
    uid, gid = _owner_ids(request.owner)
    _ensure_directory(os.path.dirname(request.key_path), uid, gid, actions, request.check_mode)
    key_created = False
    if os.path.lexists(request.key_path):
        if os.path.islink(request.key_path) or not os.path.isfile(request.key_path):
            raise CsrError(f"key_path: {request.key_path} exists and is not a regular file. Move it away and re-run")
        if os.stat(request.key_path).st_mode & 0o777 != KEY_MODE:
            actions.append(f"set {request.key_path} to mode {KEY_MODE:04o}")
            if not request.check_mode:
                os.chmod(request.key_path, KEY_MODE)
    else:
        actions.append(f"create {request.key_path} ({request.key_type}, {KEY_MODE:04o})")
        key_created = True
        if not request.check_mode:
            _generate_key(request, uid, gid, run)
    result = {
        "changed": bool(actions),
        "actions": actions,
        "key_path": request.key_path,
        "key_created": key_created,
        "key_type": None,
        "csr": None,
        "public_key_sha256": None,
    }
    if key_created and request.check_mode:
        return result  # no key yet, so no CSR: the controller predicts a new identity
    result["key_type"], result["public_key_sha256"] = _public_key(request.key_path, run)
    result["csr"] = _csr(request, run)
    return result


def _owner_ids(owner: str) -> tuple:
    """The owner's uid and gid, or root's while the runtime (which creates the user) is not installed."""
    if not owner:
        return 0, 0
    try:
        entry = pwd.getpwnam(owner)
    except KeyError:
        return 0, 0
    try:
        return entry.pw_uid, grp.getgrnam(owner).gr_gid
    except KeyError:
        return entry.pw_uid, entry.pw_gid


def _ensure_directory(directory: str, uid: int, gid: int, actions: list, check_mode: bool) -> None:
    missing = []
    path = directory
    while not os.path.lexists(path):
        missing.append(path)
        path = os.path.dirname(path)
    if not os.path.isdir(path):
        raise CsrError(f"key_path: {path} exists and is not a directory. Move it away or choose another key_path")
    for index, path in enumerate(reversed(missing)):
        is_key_directory = index == len(missing) - 1
        mode = DIRECTORY_MODE if is_key_directory else PARENT_MODE
        actions.append(f"create {path} ({mode:04o})")
        if not check_mode:
            os.mkdir(path, mode)
            os.chmod(path, mode)
            if is_key_directory:
                os.chown(path, uid, gid)


def _generate_key(request: CsrRequest, uid: int, gid: int, run) -> None:
    """A new key in a 0600 temporary file beside the target, renamed into place once complete."""
    directory = os.path.dirname(request.key_path)
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(request.key_path)}.")
    os.close(handle)
    try:
        rc, _stdout, stderr = run(["openssl", "genpkey", *GENPKEY_OPTIONS[request.key_type], "-out", temporary])
        if rc != 0:
            raise CsrError(f"openssl genpkey could not make the identity key: {_last_line(stderr)}")
        os.chown(temporary, uid, gid)
        os.chmod(temporary, KEY_MODE)
        os.rename(temporary, request.key_path)
    finally:
        if os.path.lexists(temporary):
            os.unlink(temporary)


def _public_key(key_path: str, run) -> tuple:
    """(key type, SHA-256 of the SubjectPublicKeyInfo) of the key file; the key itself is read by openssl only."""
    rc, stdout, stderr = run(["openssl", "pkey", "-in", key_path, "-pubout", "-text_pub"])
    if rc != 0:
        raise CsrError(
            f"key_path: openssl cannot read {key_path} as a private key ({_last_line(stderr)}). Move the file away to "
            "have a new key made (the device then needs a new certificate) and re-run"
        )
    body = re.search(r"-----BEGIN PUBLIC KEY-----(.*?)-----END PUBLIC KEY-----", stdout, re.S)
    if body is None:
        raise CsrError(f"key_path: openssl printed no public key for {key_path}")
    fingerprint = hashlib.sha256(base64.b64decode("".join(body.group(1).split()))).hexdigest()
    return _key_type(stdout), fingerprint


def _key_type(text: str) -> str | None:
    """The fleet PKI's name for the key `openssl pkey -text_pub` described, or None for another kind."""
    curve = re.search(r"(?:ASN1 OID|NIST CURVE): (\S+)", text)
    if curve:
        return EC_CURVES.get(curve.group(1))
    bits = re.search(r"Public-Key: \((\d+) bit\)", text)
    if bits and "Modulus" in text:
        name = f"rsa-{bits.group(1)}"
        return name if name in GENPKEY_OPTIONS else None
    return None


def _csr(request: CsrRequest, run) -> str:
    argv = ["openssl", "req", "-new", "-batch", "-sha256", "-key", request.key_path]
    rc, stdout, stderr = run([*argv, "-subj", f"/CN={request.registration_id}"])
    if rc != 0 or "-----BEGIN CERTIFICATE REQUEST-----" not in stdout:
        raise CsrError(f"openssl req could not make the CSR: {_last_line(stderr)}")
    return stdout[stdout.index("-----BEGIN CERTIFICATE REQUEST-----") :]


def _last_line(text: str) -> str:
    lines = [line for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else "no message"
