# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# PRIVATE to the edgefleet.iotedge collection. Do not use this from other collections:
# it may change at any time.

"""The device's identity key, made on the device, and a certificate signing request for it.

Runs on the host. The key is made once, in a file only its owner can read or inside a PKCS#11 token, and never
replaced by this code: a device that lost its key sends a CSR for a new one and the controller reissues. The CSR is
public; the key never leaves the host (or the token) and is never read into this process.

A file key needs the ``openssl`` command (Debian's openssl package, which ca-certificates pulls in). A token key needs
GnuTLS's ``p11tool`` and ``certtool`` (Debian's gnutls-bin): they take PINs from their environment, never from a
command line, and run as the user the runtime uses the token as (aziotks), so that the token's files are that
user's (iot-identity-service docs/pkcs11).
"""

from __future__ import annotations

import base64
import dataclasses
import grp
import hashlib
import os
import pwd
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

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
KEY_STORES = ("file", "pkcs11")
# `p11tool --generate-privkey` options per key type, and the type names `p11tool --list-privkeys` prints.
P11TOOL_KEY_OPTIONS = {
    "ec-p256": ["--generate-privkey=ecdsa", "--curve=secp256r1"],
    "ec-p384": ["--generate-privkey=ecdsa", "--curve=secp384r1"],
    "rsa-2048": ["--generate-privkey=rsa", "--bits=2048"],
    "rsa-3072": ["--generate-privkey=rsa", "--bits=3072"],
    "rsa-4096": ["--generate-privkey=rsa", "--bits=4096"],
}
P11TOOL_KEY_TYPES = {
    "EC/ECDSA-SECP256R1": "ec-p256",
    "EC/ECDSA-SECP384R1": "ec-p384",
    "RSA-2048": "rsa-2048",
    "RSA-3072": "rsa-3072",
    "RSA-4096": "rsa-4096",
}
# What `p11tool --list-privkeys` exits with when nothing matches.
P11TOOL_NO_MATCH = 2
# A renewal with a new key: the next key waits beside the current one until the rotation makes it current, and the
# replaced key stays as the previous one until the controller has promoted the new identity (for a rollback).
NEXT_SUFFIX = ".next"
PREVIOUS_SUFFIX = ".previous"
# In a token the keys are objects: the next and previous ones carry the current label with these endings.
TOKEN_LABEL_SUFFIXES = {"next": "-next", "previous": "-previous"}


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
    # file: key_path; pkcs11: the key inside a token, by its URI (pkcs11:token=<label>;object=<label>?pin-value=<PIN>).
    key_store: str = "file"
    pkcs11_lib_path: str = ""
    pkcs11_key_uri: str = ""
    # Initialise the token when the owner sees none of that label (its security officer PIN; the user PIN is the
    # URI's), and groups the owner must be in to reach the token (softhsm for SoftHSM's token directory).
    pkcs11_init_token: bool = False
    pkcs11_so_pin: str = ""
    pkcs11_user_groups: list = field(default_factory=list)
    # A second key beside the current one, for the next renewal to be issued for (edgefleet_identity_rotate_key).
    next_key: bool = False


@dataclass(frozen=True)
class TokenKeyUri:
    """The parts of an RFC 7512 URI that find a key and log in: token label, object label, PIN."""

    token: str
    label: str
    pin: str

    @classmethod
    def parse(cls, value: str) -> TokenKeyUri:
        fix = "Give pkcs11:token=<token label>;object=<key label>?pin-value=<user PIN>"
        if not isinstance(value, str) or not value.startswith("pkcs11:"):
            raise CsrError(f"pkcs11_key_uri: does not start with 'pkcs11:'. {fix}")
        path, _question, query = value[len("pkcs11:") :].partition("?")
        parts = dict(component.partition("=")[::2] for component in path.split(";") if component)
        parts.update(component.partition("=")[::2] for component in query.split("&") if component)
        parts = {unquote(key): unquote(text) for key, text in parts.items()}
        if "slot-id" in parts:
            raise CsrError(f"pkcs11_key_uri: names a slot-id, which a token gets anew when it is made. {fix}")
        missing = [name for name in ("token", "object", "pin-value") if not parts.get(name)]
        if missing:
            raise CsrError(f"pkcs11_key_uri: has no {', '.join(missing)}. {fix}")
        return cls(parts["token"], parts["object"], parts["pin-value"])

    def token_url(self) -> str:
        return f"pkcs11:token={quote(self.token, safe='')}"

    def object_url(self, kind: str) -> str:
        return f"{self.token_url()};object={quote(self.label, safe='')};type={kind}"

    def shown(self) -> str:
        """The key's URI without its PIN."""
        return f"{self.token_url()};object={quote(self.label, safe='')}"


def validate(request: CsrRequest) -> None:
    problem = registration_id_problem(request.registration_id)
    if problem:
        raise CsrError(f"registration_id: {problem}")
    if request.key_type not in GENPKEY_OPTIONS:
        raise CsrError(f"key_type: {request.key_type!r} is not supported; use one of {', '.join(GENPKEY_OPTIONS)}")
    if request.key_store not in KEY_STORES:
        raise CsrError(f"key_store: {request.key_store!r} is not one of {', '.join(KEY_STORES)}")
    if request.key_store == "pkcs11":
        TokenKeyUri.parse(request.pkcs11_key_uri)
        if not os.path.isabs(request.pkcs11_lib_path or ""):
            raise CsrError("pkcs11_lib_path: give the absolute path of the token's PKCS#11 library")
        if request.pkcs11_init_token and not request.pkcs11_so_pin:
            raise CsrError("pkcs11_so_pin: initialising a token (pkcs11_init_token) needs its security officer PIN")
        return
    if not os.path.isabs(request.key_path) or os.path.normpath(request.key_path) != request.key_path:
        raise CsrError(f"key_path: {request.key_path!r} must be an absolute, normalised path on the host")


def ensure_identity_csr(request: CsrRequest, run) -> dict:
    """Make the key if the host has none, then return a CSR for it; with ``next_key``, the same for the next key.
    ``run(argv, environ_update=None)`` -> (rc, stdout, stderr)."""
    validate(request)
    if request.key_store == "pkcs11":
        return ensure_token_csr(request, run)
    if shutil.which("openssl") is None:
        raise CsrError(
            "the host has no openssl command, which makes the identity key and its CSR on the device. Install it "
            "(apt-get install openssl) or let the controller make the key (edgefleet_identity_key_origin: controller)"
        )
    result = _ensure_file_key(request, run)
    if not request.next_key:
        return {**result, **_no_next_key()}
    upcoming = _ensure_file_key(dataclasses.replace(request, key_path=request.key_path + NEXT_SUFFIX), run)
    return {
        **result,
        "changed": result["changed"] or upcoming["changed"],
        "actions": result["actions"] + upcoming["actions"],
        "next_key_path": upcoming["key_path"],
        "next_csr": upcoming["csr"],
        "next_public_key_sha256": upcoming["public_key_sha256"],
    }


def _no_next_key() -> dict:
    return {"next_key_path": None, "next_key_uri": None, "next_csr": None, "next_public_key_sha256": None}


def _ensure_file_key(request: CsrRequest, run) -> dict:
    """The key in ``request.key_path`` (made when missing, its mode corrected) and a CSR for it."""
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
        "key_uri": None,
        "key_created": key_created,
        "token_created": False,
        "key_type": None,
        "csr": None,
        "public_key_sha256": None,
    }
    if key_created and request.check_mode:
        return result  # no key yet, so no CSR: the controller predicts a new identity
    result["key_type"], result["public_key_sha256"] = _public_key(request.key_path, run)
    result["csr"] = _csr(request, run)
    return result


def move_key(request: CsrRequest, activate: str | None, run, *, remove_all: bool = False) -> dict:
    """A rotation's step on the host: make the key with public key ``activate`` the current one, or (without it)
    remove the previous key; ``remove_all`` removes every key of a token's rotation slots (a retired host)."""
    validate(dataclasses.replace(request, next_key=False))
    if activate and not re.fullmatch(r"[0-9a-fA-F]{64}", activate):
        raise CsrError(f"activate: give the SHA-256 of a public key as 64 hex digits, got {activate!r}")
    if request.key_store == "pkcs11":
        slots = _TokenSlots(request, run)
        if remove_all:
            return slots.remove(("current", "next", "previous"))
        return slots.activate(activate) if activate else slots.remove(("previous",))
    if remove_all:
        raise CsrError(
            "remove_all: removes the keys inside a token (key_store: pkcs11); a key file is removed as a file"
        )
    if activate:
        return activate_key(request.key_path, activate, run, check_mode=request.check_mode)
    return remove_previous_key(request.key_path, check_mode=request.check_mode)


def activate_key(key_path: str, public_key_sha256: str, run, *, check_mode: bool) -> dict:
    """Make the key with this public key the current one (``key_path``): the next key, the current one then kept as
    the previous one (a rotation); or the previous key, the current one going back to next (a rollback). Each step
    replaces a name at once, so the runtime always finds a key at ``key_path``."""
    slots = {"current": key_path, "next": key_path + NEXT_SUFFIX, "previous": key_path + PREVIOUS_SUFFIX}
    held = {name: _public_key(path, run)[1] for name, path in slots.items() if os.path.isfile(path)}
    wanted = public_key_sha256.lower()
    result = {"changed": False, "actions": [], "key_path": key_path, "public_key_sha256": wanted}
    source = _activation_source(held, wanted, "on the host")
    if source is None:
        return result
    keep_as = "previous" if source == "next" else "next"
    result["changed"] = True
    result["actions"] = [f"keep {key_path} as {slots[keep_as]}", f"make {slots[source]} the current key {key_path}"]
    if not check_mode:
        if os.path.lexists(slots[keep_as]):
            os.unlink(slots[keep_as])
        os.link(key_path, slots[keep_as])
        os.replace(slots[source], key_path)
    return result


def _activation_source(held: dict, wanted: str, where: str) -> str | None:
    """Which slot (next or previous) holds the wanted key; None when the current one does already."""
    if held.get("current") == wanted:
        return None
    source = next((name for name in ("next", "previous") if held.get(name) == wanted), None)
    if source is None or "current" not in held:
        found = ", ".join(f"{name} {held[name][:16]}" for name in held) or "none"
        raise CsrError(
            f"activate: no key {where} has the public key {wanted[:16]}... (SHA-256; keys found: {found}). The key of "
            "the new certificate is gone: remove the identity's next/ directory on the controller to have a new key "
            "made and certified"
        )
    return source


def remove_previous_key(key_path: str, *, check_mode: bool) -> dict:
    """The key a completed rotation replaced: nothing can use it any more (DPS dropped its certificate)."""
    previous = key_path + PREVIOUS_SUFFIX
    present = os.path.lexists(previous)
    if present and not check_mode:
        os.unlink(previous)
    return {"changed": present, "actions": [f"remove {previous}"] if present else [], "key_path": key_path}


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


# ---- a key inside a PKCS#11 token ---------------------------------------------------------------------------------


def ensure_token_csr(request: CsrRequest, run) -> dict:
    """The token and its key as the owner sees them (made when missing), and a CSR the token signs."""
    uri = TokenKeyUri.parse(request.pkcs11_key_uri)
    for tool in ("p11tool", "certtool"):
        if shutil.which(tool) is None:
            raise CsrError(
                f"the host has no {tool} command, which makes the identity key inside the PKCS#11 token and its CSR. "
                "Install Debian's gnutls-bin on the device image (and the token's PKCS#11 library)"
            )
    try:
        entry = pwd.getpwnam(request.owner)
    except KeyError:
        raise CsrError(
            f"owner: there is no user {request.owner!r} yet, and the token is made and used as that user, which the "
            "runtime's packages create: install the runtime first (provision_edge.yml runs the install phase before "
            "the key phase for hosts with a PKCS#11 key)"
        ) from None
    token = _Token(request, uri, entry, run)
    actions: list = []
    for group in request.pkcs11_user_groups:
        if not token.in_group(group):
            actions.append(f"add {request.owner} to group {group}")
            if not request.check_mode:
                token.join(group)
    if actions and request.check_mode:
        # The owner reaches the token only once it is in those groups: what the token holds is known after that.
        return _token_result(actions, uri, key_created=False, token_created=False, key_type=None)
    token_created = key_created = False
    if not token.exists():
        if not request.pkcs11_init_token:
            raise CsrError(
                f"pkcs11_key_uri: {request.owner} sees no token labelled {uri.token!r} in {request.pkcs11_lib_path}. "
                "Initialise it as that user, or let the role do it (pkcs11_init_token with the SO PIN)"
            )
        actions.append(f"initialise token {uri.token!r} as {request.owner}")
        token_created = True
        if not request.check_mode:
            token.initialise()
    key_type = None if token_created else token.key_type()
    if token_created or key_type is False:
        actions.append(f"generate {request.key_type} key {uri.label!r} inside token {uri.token!r}")
        key_created = True
        if not request.check_mode:
            token.generate()
            key_type = token.key_type()
    result = _token_result(actions, uri, key_created=key_created, token_created=token_created, key_type=key_type)
    if not (key_created and request.check_mode):
        result["public_key_sha256"] = token.public_key_sha256()
        result["csr"] = token.csr()
    if request.next_key:
        _ensure_next_token_key(token.slot("next"), result, request.check_mode, token_created)
    return result


def _ensure_next_token_key(upcoming: _Token, result: dict, check_mode: bool, token_created: bool) -> None:
    """The next key inside the same token (``<label>-next``), made once, and a CSR the token signs with it."""
    if token_created or upcoming.key_type() is False:
        result["actions"].append(f"generate {upcoming.request.key_type} key {upcoming.uri.label!r} inside token "
                                 f"{upcoming.uri.token!r}")  # fmt: skip
        result["changed"] = True
        if check_mode:
            return
        upcoming.generate()
    result["next_key_uri"] = upcoming.uri.shown()
    result["next_public_key_sha256"] = upcoming.public_key_sha256()
    result["next_csr"] = upcoming.csr()


def _token_result(actions: list, uri: TokenKeyUri, *, key_created: bool, token_created: bool, key_type) -> dict:
    return {
        "changed": bool(actions),
        "actions": actions,
        "key_path": None,
        "key_uri": uri.shown(),
        "key_created": key_created,
        "token_created": token_created,
        "key_type": key_type or None,
        "csr": None,
        "public_key_sha256": None,
        **_no_next_key(),
    }


class _Token:
    """p11tool and certtool, run as the owner with the PINs in their environment."""

    def __init__(self, request: CsrRequest, uri: TokenKeyUri, owner, run):
        self.request, self.uri, self.owner, self._run = request, uri, owner, run

    def _as_owner(self, argv: list, **pins) -> tuple:
        environment = {"HOME": self.owner.pw_dir, **{f"GNUTLS_{name.upper()}": pin for name, pin in pins.items()}}
        return self._run(["runuser", "-u", self.owner.pw_name, "--", *argv], environ_update=environment)

    def _p11tool(self, *argv: str, **pins) -> tuple:
        return self._as_owner(["p11tool", "--provider", self.request.pkcs11_lib_path, *argv], **pins)

    def slot(self, name: str) -> _Token:
        """The same token's key of another rotation slot (next, previous): the label with its ending."""
        label = self.uri.label + TOKEN_LABEL_SUFFIXES[name]
        return _Token(self.request, dataclasses.replace(self.uri, label=label), self.owner, self._run)

    def relabel(self, label: str) -> None:
        """The key pair (its private and public objects) takes another label; the key itself never moves."""
        for kind in ("private", "public"):
            rc, _stdout, stderr = self._p11tool(
                "--login", f"--set-label={label}", self.uri.object_url(kind), pin=self.uri.pin
            )
            if rc != 0:
                raise CsrError(f"could not relabel {self.uri.shown()} ({kind}) as {label!r}: {_last_line(stderr)}")

    def delete(self) -> None:
        for kind in ("private", "public"):
            rc, _stdout, stderr = self._p11tool(
                "--login", "--batch", "--delete", self.uri.object_url(kind), pin=self.uri.pin
            )
            if rc != 0 and "No matching objects" not in stderr:
                raise CsrError(f"could not delete {self.uri.shown()} ({kind}): {_last_line(stderr)}")

    def in_group(self, group: str) -> bool:
        try:
            found = grp.getgrnam(group)
        except KeyError:
            raise CsrError(f"pkcs11_user_groups: there is no group {group!r} on the host") from None
        return self.owner.pw_gid == found.gr_gid or self.owner.pw_name in found.gr_mem

    def join(self, group: str) -> None:
        rc, _stdout, stderr = self._run(["usermod", "--append", "--groups", group, self.owner.pw_name])
        if rc != 0:
            raise CsrError(f"could not add {self.owner.pw_name} to group {group}: {_last_line(stderr)}")

    def exists(self) -> bool:
        rc, stdout, stderr = self._p11tool("--list-tokens")
        if rc != 0:
            raise CsrError(
                f"pkcs11_lib_path: p11tool cannot list the tokens of {self.request.pkcs11_lib_path} as "
                f"{self.owner.pw_name}: {_last_line(stderr)}"
            )
        return any(line.strip() == f"Label: {self.uri.token}" for line in stdout.splitlines())

    def initialise(self) -> None:
        # An uninitialised token has an empty label: "token=" finds it.
        steps = (
            (["--initialize", "--label", self.uri.token, "pkcs11:token="], {"so_pin": self.request.pkcs11_so_pin}),
            (["--initialize-pin", self.uri.token_url()], {"so_pin": self.request.pkcs11_so_pin, "pin": self.uri.pin}),
        )
        for argv, pins in steps:
            rc, _stdout, stderr = self._p11tool(*argv, **pins)
            if rc != 0:
                raise CsrError(f"could not initialise token {self.uri.token!r}: {_last_line(stderr)}")

    def key_type(self):
        """The key's type; False when the token has no key of that label."""
        rc, stdout, stderr = self._p11tool(
            "--login", "--list-privkeys", self.uri.object_url("private"), pin=self.uri.pin
        )
        if rc == P11TOOL_NO_MATCH and "No matching objects" in stdout + stderr:
            return False
        if rc != 0:
            raise CsrError(f"pkcs11_key_uri: cannot list the keys of token {self.uri.token!r}: {_last_line(stderr)}")
        found = re.search(r"Type: Private key \(([^)]+)\)", stdout)
        return P11TOOL_KEY_TYPES.get(found.group(1)) if found else None

    def generate(self) -> None:
        options = P11TOOL_KEY_OPTIONS[self.request.key_type]
        argv = ["--login", *options, f"--label={self.uri.label}", "--outfile=/dev/null", self.uri.token_url()]
        rc, _stdout, stderr = self._p11tool(*argv, pin=self.uri.pin)
        if rc != 0:
            raise CsrError(f"could not generate the key inside token {self.uri.token!r}: {_last_line(stderr)}")

    def public_key_sha256(self) -> str:
        rc, stdout, stderr = self._p11tool(
            "--login", "--export-pubkey", self.uri.object_url("public"), pin=self.uri.pin
        )
        body = re.search(r"-----BEGIN PUBLIC KEY-----(.*?)-----END PUBLIC KEY-----", stdout, re.S)
        if rc != 0 or body is None:
            raise CsrError(f"cannot read the public key of {self.uri.shown()}: {_last_line(stderr)}")
        return hashlib.sha256(base64.b64decode("".join(body.group(1).split()))).hexdigest()

    def csr(self) -> str:
        # certtool reads its subject from a template file, in a directory only the owner can read.
        private = tempfile.mkdtemp(prefix=".edgefleet-csr.")
        try:
            template = os.path.join(private, "template")
            with open(template, "w", encoding="utf-8") as handle:
                handle.write(f'cn = "{self.request.registration_id}"\n')
            for path in (private, template):
                os.chown(path, self.owner.pw_uid, self.owner.pw_gid)
            argv = [
                "certtool", "--provider", self.request.pkcs11_lib_path, "--generate-request", "--hash", "SHA256",
                "--load-privkey", self.uri.object_url("private"), "--template", template,
            ]  # fmt: skip
            rc, stdout, stderr = self._as_owner(argv, pin=self.uri.pin)
        finally:
            shutil.rmtree(private, ignore_errors=True)
        if rc != 0:
            raise CsrError(f"certtool could not make the CSR with the token's key: {_last_line(stderr)}")
        return _pem_csr(stdout)


class _TokenSlots:
    """A rotation's moves inside a token, by label: the current key, ``<label>-next`` and ``<label>-previous``."""

    def __init__(self, request: CsrRequest, run):
        try:
            owner = pwd.getpwnam(request.owner)
        except KeyError:
            raise CsrError(f"owner: there is no user {request.owner!r}, as whom the token is used") from None
        current = _Token(request, TokenKeyUri.parse(request.pkcs11_key_uri), owner, run)
        self.check_mode = request.check_mode
        self.slots = {"current": current, "next": current.slot("next"), "previous": current.slot("previous")}

    def _held(self) -> dict:
        return {name: token.public_key_sha256() for name, token in self.slots.items() if token.key_type() is not False}

    def activate(self, public_key_sha256: str) -> dict:
        """As activate_key for files: from next (the current key relabelled previous) or from previous (a rollback;
        the current key relabelled next). Between the two relabels no key has the current label."""
        held, wanted = self._held(), public_key_sha256.lower()
        current = self.slots["current"]
        result = {"changed": False, "actions": [], "key_uri": current.uri.shown(), "public_key_sha256": wanted}
        source = _activation_source(held, wanted, f"in token {current.uri.token!r}")
        if source is None:
            return result
        keep_as = "previous" if source == "next" else "next"
        displaced, promoted = self.slots[keep_as], self.slots[source]
        result["changed"] = True
        result["actions"] = [
            f"relabel {current.uri.shown()} as {displaced.uri.label!r}",
            f"relabel {promoted.uri.shown()} as {current.uri.label!r}",
        ]
        if not self.check_mode:
            if keep_as in held:
                displaced.delete()
            current.relabel(displaced.uri.label)
            promoted.relabel(current.uri.label)
        return result

    def remove(self, names: tuple) -> dict:
        """Delete the key pairs of these slots that the token holds."""
        actions = []
        for name in names:
            token = self.slots[name]
            if token.key_type() is False:
                continue
            actions.append(f"delete {token.uri.shown()}")
            if not self.check_mode:
                token.delete()
        return {"changed": bool(actions), "actions": actions, "key_uri": self.slots["current"].uri.shown()}


def _pem_csr(text: str) -> str:
    """The PEM CSR in certtool's or openssl's output, as -----BEGIN CERTIFICATE REQUEST-----."""
    found = re.search(
        r"-----BEGIN (NEW )?CERTIFICATE REQUEST-----(.*?)-----END (NEW )?CERTIFICATE REQUEST-----", text, re.S
    )
    if found is None:
        raise CsrError("the CSR tool printed no PEM certificate signing request")
    return f"-----BEGIN CERTIFICATE REQUEST-----{found.group(2)}-----END CERTIFICATE REQUEST-----\n"


def _last_line(text: str) -> str:
    lines = [line for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else "no message"
