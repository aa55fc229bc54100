# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# PRIVATE to the edgefleet.iotedge collection. Do not use this from other collections:
# it may change at any time.

"""X.509 primitives shared by the PKI cores: keys, certificate profiles, loading, checks, atomic files.

Nothing here imports AnsibleModule; callers pass plain values and get plain values or a PkiError back.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import os
import re
import shutil
import tempfile
import traceback

try:
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
except ImportError:
    HAS_CRYPTOGRAPHY = False
    CRYPTOGRAPHY_IMPORT_ERROR: str | None = traceback.format_exc()
else:
    HAS_CRYPTOGRAPHY = True
    CRYPTOGRAPHY_IMPORT_ERROR = None

from ansible_collections.edgefleet.iotedge.plugins.module_utils._shown import shown

KEY_TYPES = ("ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096")

# libiothsm (IoT Edge 1.1) stores times in a 32-bit time_t.
GENERATION_1_1_LIMIT = datetime.datetime(2038, 1, 1, tzinfo=datetime.timezone.utc)
# UTCTime ends with 2049; later dates need GeneralizedTime, which IoT Edge rejects ("unsupported not after format").
UTCTIME_LIMIT = datetime.datetime(2049, 12, 31, 23, 59, 59, tzinfo=datetime.timezone.utc)

# DPS: alphanumerics and - . _ : ; the last character alphanumeric or '-'; the X.509 CN caps it at 64.
# Applied with fullmatch: '$' would also match before a trailing newline.
REGISTRATION_ID_PATTERN = re.compile(r"[a-z0-9\-._:]*[a-z0-9\-]")
REGISTRATION_ID_MAX_LENGTH = 64

# Prefix of the temporary files and directories that atomic writes stage beside their targets.
TEMP_PREFIX = ".tmp-"
# Held while a PKI directory is read or changed, so two runs never both create a CA or write one identity.
LOCK_NAME = ".edgefleet.lock"

# A device identity in pki_identity's directory (<path>/<registration id>/); pki_ca reads them before a CA rollover ends.
IDENTITY_CERT = "identity.cert.pem"

# Backdate notBefore so that hosts whose clocks lag slightly behind the controller accept new certificates.
CLOCK_SKEW_ALLOWANCE = datetime.timedelta(minutes=5)


class PkiError(Exception):
    """Base of every error the PKI cores raise; the message says what is wrong and how to fix it."""


class PkiPassphraseError(PkiError):
    """A CA key could not be decrypted with the passphrase given (or none was given)."""


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def not_after_of(cert) -> datetime.datetime:
    value = getattr(cert, "not_valid_after_utc", None)
    return value if value is not None else cert.not_valid_after.replace(tzinfo=datetime.timezone.utc)


def not_before_of(cert) -> datetime.datetime:
    value = getattr(cert, "not_valid_before_utc", None)
    return value if value is not None else cert.not_valid_before.replace(tzinfo=datetime.timezone.utc)


def format_time(value: datetime.datetime) -> str:
    return value.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str, *, field: str) -> datetime.datetime:
    """Accept `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM:SSZ` or an ISO 8601 time with offset; return aware UTC."""
    if not isinstance(value, str) or value != value.strip():
        raise PkiError(f"{field}: {shown(value)} is not a date; use YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ")
    text = value
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise PkiError(f"{field}: {shown(value)} is not a date; use YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.timezone.utc)
    return parsed.astimezone(datetime.timezone.utc)


# --- keys --------------------------------------------------------------------------------------------


def generate_private_key(key_type: str):
    if key_type == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ec-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if key_type in ("rsa-2048", "rsa-3072", "rsa-4096"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[4:]))
    raise PkiError(f"key_type: {key_type!r} is not supported; use one of {', '.join(KEY_TYPES)}")


def key_type_of(public_key) -> str | None:
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return {"secp256r1": "ec-p256", "secp384r1": "ec-p384"}.get(public_key.curve.name)
    if isinstance(public_key, rsa.RSAPublicKey):
        name = f"rsa-{public_key.key_size}"
        return name if name in KEY_TYPES else None
    return None


def private_key_pem(key, passphrase: str | None = None) -> bytes:
    encryption = (
        serialization.BestAvailableEncryption(passphrase.encode("utf-8"))
        if passphrase
        else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def key_is_encrypted(pem: bytes) -> bool:
    # PKCS#8 says so in the BEGIN line, the traditional format in a Proc-Type header right after it.
    return b"ENCRYPTED" in pem[:200]


def _deserialize_private_key(pem: bytes, password: bytes | None):
    try:
        return serialization.load_pem_private_key(pem, password=password, unsafe_skip_rsa_key_validation=True)
    except TypeError:
        # cryptography < 39 has no unsafe_skip_rsa_key_validation.
        return serialization.load_pem_private_key(pem, password=password)


def load_private_key(pem: bytes, *, path: str, passphrase: str | None, passphrase_field: str = "passphrase"):
    """Load a PEM key; raise PkiPassphraseError naming the field when the passphrase is missing or wrong."""
    encrypted = key_is_encrypted(pem)
    if encrypted and not passphrase:
        raise PkiPassphraseError(
            f"{passphrase_field}: {path} is encrypted; give the passphrase it was created with (use ansible-vault)"
        )
    try:
        return _deserialize_private_key(pem, passphrase.encode("utf-8") if (encrypted and passphrase) else None)
    except ValueError as exc:
        if encrypted:
            raise PkiPassphraseError(
                f"{passphrase_field}: cannot decrypt {path} with the passphrase given; "
                "give the passphrase the key was created with"
            ) from None
        raise PkiError(
            f"{path} is not a readable private key ({exc}); restore it or remove it to issue a new one"
        ) from None


def public_key_der(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_matches_certificate(key, cert) -> bool:
    return public_key_der(key.public_key()) == public_key_der(cert.public_key())


# --- certificate signing requests (keys made on the device) ----------------------------------------


def csr_problem(pem, *, registration_id: str, key_type: str) -> tuple:
    """(public key, None) of a device's CSR that may be signed for ``registration_id``, or (None, why not).

    A device is not trusted to ask for someone else's name or a weaker key: the subject must be exactly
    CN=<registration id>, the key of ``key_type``, and the CSR signed by that key (proof that the device holds it).
    """
    if not isinstance(pem, str) or "-----BEGIN CERTIFICATE REQUEST-----" not in pem:
        return None, "is not a PEM certificate signing request (-----BEGIN CERTIFICATE REQUEST-----)"
    try:
        csr = x509.load_pem_x509_csr(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        return None, "cannot be parsed as a PEM certificate signing request"
    if not csr.is_signature_valid:
        return None, "is not signed by the key it carries, so the device may not hold that key"
    attributes = [(attribute.oid, attribute.value) for attribute in csr.subject]
    if attributes != [(NameOID.COMMON_NAME, registration_id)]:
        return None, f"asks for the subject {csr.subject.rfc4514_string()!r}; only CN={registration_id} is signed"
    public_key = csr.public_key()
    actual = key_type_of(public_key)
    if actual != key_type:
        return None, (
            f"carries a {actual or 'unsupported'} key, and key_type asks for {key_type}. A device keeps the key it "
            "made: set key_type back, or remove the key on the device to have one of the new type made"
        )
    return public_key, None


# --- certificates ------------------------------------------------------------------------------------


def load_certificates(pem: bytes, *, path: str) -> list:
    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise PkiError(f"{path} holds no readable PEM certificate; restore it or remove it") from None


def common_name_of(name) -> str | None:
    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else None


def fingerprints(cert) -> dict[str, str]:
    """SHA-1 and SHA-256 thumbprints as uppercase hex without separators, as DPS shows them."""
    return {
        "sha1": cert.fingerprint(hashes.SHA1()).hex().upper(),
        "sha256": cert.fingerprint(hashes.SHA256()).hex().upper(),
    }


def signed_by(cert, issuer_cert) -> bool:
    """True when `cert` names `issuer_cert`'s subject as issuer and carries a signature its key verifies."""
    if cert.issuer != issuer_cert.subject:
        return False
    public_key = issuer_cert.public_key()
    try:
        if isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(
                cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), cert.signature_hash_algorithm
            )
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
        else:
            return False
    except InvalidSignature:
        return False
    return True


def basic_constraints_ca(cert) -> bool:
    """True when the certificate says it is a CA (basicConstraints CA:TRUE); False without the extension."""
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def path_length_of(cert):
    """A CA certificate's path length constraint (None when it has none, or is no CA)."""
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return None
    return constraints.path_length if constraints.ca else None


def certificate_pem(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def certificate_summary(cert) -> dict:
    """What diffs and return values show of a certificate: never key material."""
    prints = fingerprints(cert)
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": format(cert.serial_number, "X"),
        "not_before": format_time(not_before_of(cert)),
        "not_after": format_time(not_after_of(cert)),
        "thumbprint_sha1": prints["sha1"],
        "thumbprint_sha256": prints["sha256"],
    }


def _name(common_name: str):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_usage(*, digital_signature=False, key_encipherment=False, key_cert_sign=False, crl_sign=False):
    """A KeyUsage with the named bits set and every other one clear."""
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _ca_usage():
    return _key_usage(key_cert_sign=True, crl_sign=True)


def _edge_ca_usage():
    """As the runtime's own Edge CA (edge_ca.rs extensions): digitalSignature and keyCertSign."""
    return _key_usage(digital_signature=True, key_cert_sign=True)


def _leaf_usage(is_rsa: bool):
    return _key_usage(digital_signature=True, key_encipherment=is_rsa)


def _profile_extensions(profile: str, *, rsa_key: bool) -> list:
    """(extension, critical) pairs that every certificate of a profile carries."""
    if profile == "root":
        return [(x509.BasicConstraints(ca=True, path_length=None), True), (_ca_usage(), True)]
    if profile == "intermediate":
        return [(x509.BasicConstraints(ca=True, path_length=0), True), (_ca_usage(), True)]
    if profile in ("edge-ca-0", "edge-ca-1"):
        return [(x509.BasicConstraints(ca=True, path_length=int(profile[-1])), True), (_edge_ca_usage(), True)]
    if profile == "client":
        return [
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (_leaf_usage(rsa_key), True),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False),
        ]
    raise PkiError(f"unknown certificate profile {profile!r}")


class CertificateIssuer:
    """Signs certificates of one profile with one issuer and validity window.

    What is the same for every certificate of a batch (issuer name, authority key id, profile extensions) is
    computed once, which matters when one call issues a whole fleet. `issuer_cert=None` means self-signed.
    Profiles: `root` (CA:true, critical, no path length), `intermediate` (CA:true, pathlen 0),
    `edge-ca-0` / `edge-ca-1` (a device's Edge CA, CA:true with that path length, digitalSignature and keyCertSign),
    `client` (CA:false, clientAuth; device identities and proof-of-possession certificates).
    """

    def __init__(self, *, issuer_cert, issuer_key, not_before, not_after, profile: str):
        self._issuer_cert = issuer_cert
        self._issuer_key = issuer_key
        self._not_before = not_before
        self._not_after = not_after
        self._authority_key_id = (
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_cert.public_key())
            if issuer_cert is not None
            else None
        )
        self._extensions = {rsa_key: _profile_extensions(profile, rsa_key=rsa_key) for rsa_key in (False, True)}

    def issue(self, *, common_name: str, public_key):
        subject = _name(common_name)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self._issuer_cert.subject if self._issuer_cert is not None else subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(self._not_before)
            .not_valid_after(self._not_after)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        )
        if self._authority_key_id is not None:
            builder = builder.add_extension(self._authority_key_id, critical=False)
        for extension, critical in self._extensions[isinstance(public_key, rsa.RSAPublicKey)]:
            builder = builder.add_extension(extension, critical=critical)
        return builder.sign(self._issuer_key, hashes.SHA256())


def build_certificate(
    *,
    common_name: str,
    public_key,
    issuer_cert,
    issuer_key,
    not_before: datetime.datetime,
    not_after: datetime.datetime,
    profile: str,
):
    """Sign one certificate (see CertificateIssuer for the profiles)."""
    issuer = CertificateIssuer(
        issuer_cert=issuer_cert, issuer_key=issuer_key, not_before=not_before, not_after=not_after, profile=profile
    )
    return issuer.issue(common_name=common_name, public_key=public_key)


def validity_window(
    *, now: datetime.datetime, valid_days: int, cap: datetime.datetime | None = None
) -> tuple[datetime.datetime, datetime.datetime]:
    """notBefore/notAfter for a new certificate: `valid_days` from now, never past `cap`; whole seconds."""
    not_before = (now - CLOCK_SKEW_ALLOWANCE).replace(microsecond=0)
    not_after = (now + datetime.timedelta(days=valid_days)).replace(microsecond=0)
    if cap is not None and not_after > cap:
        not_after = cap
    return not_before, not_after


def check_expiry_limits(not_after: datetime.datetime, *, generation: str, what: str, fix: str) -> None:
    """Raise when a certificate would end past what the runtime generation can read."""
    if not_after > UTCTIME_LIMIT:
        raise PkiError(
            f"{what} would expire on {format_time(not_after)}, after 2049-12-31, which IoT Edge rejects "
            f"('unsupported not after format'); {fix}"
        )
    if generation == "1.1" and not_after >= GENERATION_1_1_LIMIT:
        raise PkiError(
            f"{what} would expire on {format_time(not_after)}, on or after 2038-01-01, which IoT Edge 1.1 "
            f"(libiothsm, 32-bit time) cannot use; {fix}"
        )


def common_name_problem(value) -> str | None:
    """What is wrong with a CA common name (1 to 64 printable characters), or None."""
    if not isinstance(value, str) or not value or len(value) > 64:
        return f"give a common name of 1 to 64 characters, got {shown(value)}"
    if not value.isprintable():
        return f"{shown(value)} has control characters (a line break, a tab...); give printable characters only"
    return None


def validate_registration_id(value, *, field: str) -> str:
    """Return the registration id or raise naming the field and what DPS accepts."""
    problem = registration_id_problem(value)
    if problem:
        raise PkiError(f"{field}: {problem}")
    return value


def registration_id_problem(value) -> str | None:
    """What is wrong with a DPS registration id (the one rule every core and the preflight apply), or None."""
    if not isinstance(value, str) or not value:
        return f"a registration id must be a non-empty string, got {shown(value)}"
    if len(value) > REGISTRATION_ID_MAX_LENGTH:
        return (
            f"registration id {shown(value)} has {len(value)} characters; the certificate CN that carries it "
            f"allows at most {REGISTRATION_ID_MAX_LENGTH}"
        )
    if value != value.lower() and REGISTRATION_ID_PATTERN.fullmatch(value.lower()):
        return (
            f"registration id {shown(value)} has uppercase letters; use {value.lower()!r} "
            "(DPS compares ids case-insensitively and the device id keeps the CN's case)"
        )
    if not REGISTRATION_ID_PATTERN.fullmatch(value):
        return (
            f"registration id {shown(value)} is not valid for DPS; use lowercase letters, digits and "
            "'-', '.', '_', ':' only (no spaces, quotes or line breaks), ending with a letter, a digit or '-'"
        )
    return None


# --- files -------------------------------------------------------------------------------------------


def read_file(path: str) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def file_mode(path: str) -> int | None:
    try:
        return os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        return None


def stage_file(path: str, data: bytes, mode: int) -> str:
    """Write `data` to a temporary file beside `path` with `mode` set before any byte lands; return its name.

    Staging every file of a unit first and renaming them after (commit_staged) means a failure half-way
    leaves the previous files in place, never a half-written set.
    """
    directory = os.path.dirname(path) or "."
    fd, temp_path = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=directory)
    try:
        if mode != 0o600:  # mkstemp already created it 0600
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
    except BaseException:
        os.unlink(temp_path)
        raise
    return temp_path


def commit_staged(staged: list[tuple[str, str]]) -> None:
    """Rename staged temporary files onto their targets; on failure remove what was not renamed yet."""
    pending = list(staged)
    try:
        while pending:
            temp_path, target = pending[0]
            os.replace(temp_path, target)
            pending.pop(0)
    finally:
        for temp_path, _target in pending:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp_path)


def write_files_atomically(files: list[tuple[str, bytes, int]]) -> None:
    """Write several (path, data, mode) files so that either all are replaced or none is."""
    staged: list[tuple[str, str]] = []
    try:
        for path, data, mode in files:
            staged.append((stage_file(path, data, mode), path))
    except BaseException:
        for temp_path, _target in staged:
            os.unlink(temp_path)
        raise
    commit_staged(staged)


def current_umask() -> int:
    """The process umask (reading it means setting it; modules are single-threaded)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_directory_atomically(directory: str, files: list[tuple[str, bytes, int]], *, mode: int = 0o700) -> None:
    """Create `directory` holding (name, data, mode) files so that it appears complete or not at all.

    The files are written into a temporary sibling directory that is then renamed; `directory` must not exist.
    """
    parent = os.path.dirname(directory) or "."
    staging = tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=parent)
    umask = current_umask()
    try:
        if mode != 0o700:  # mkdtemp created it 0700
            os.chmod(staging, mode)
        for name, data, file_mode_bits in files:
            fd = os.open(os.path.join(staging, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, file_mode_bits)
            with os.fdopen(fd, "wb") as handle:
                if file_mode_bits & umask:  # the umask narrowed what open() asked for
                    os.fchmod(handle.fileno(), file_mode_bits)
                handle.write(data)
        os.rename(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


@contextlib.contextmanager
def directory_lock(path: str, *, shared: bool = False):
    """Hold an advisory lock on a PKI directory (which must exist) for the duration of the block.

    Writers take it exclusively, readers shared: a second run waits for the first instead of racing it.
    """
    fd = os.open(os.path.join(path, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


@contextlib.contextmanager
def locked_directory(path: str, *, mode: int = 0o700):
    """Create ``path`` if missing and hold its lock (directory_lock) for the block.

    When the block fails in a directory it created, the directory and its lock file are removed again: a refused
    first run leaves nothing behind.
    """
    created = ensure_directory(path, mode)
    try:
        with directory_lock(path):
            yield
    except BaseException:
        if created:
            remove_paths([os.path.join(path, LOCK_NAME)])
            with contextlib.suppress(OSError):
                os.rmdir(path)
        raise


def stale_temporaries(directory: str) -> list[str]:
    """Temporary files and directories an interrupted atomic write left in ``directory`` (call under its lock)."""
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(os.path.join(directory, name) for name in names if name.startswith(TEMP_PREFIX))


def remove_paths(paths: list[str]) -> None:
    for path in paths:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def ensure_directory(path: str, mode: int = 0o700) -> bool:
    """Create `path` (and parents) if missing; return True when it was created."""
    if os.path.isdir(path):
        return False
    os.makedirs(path, mode=mode, exist_ok=True)
    return True


__all__ = (
    "CRYPTOGRAPHY_IMPORT_ERROR",
    "GENERATION_1_1_LIMIT",
    "HAS_CRYPTOGRAPHY",
    "KEY_TYPES",
    "UTCTIME_LIMIT",
    "CertificateIssuer",
    "PkiError",
    "PkiPassphraseError",
    "basic_constraints_ca",
    "build_certificate",
    "certificate_pem",
    "certificate_summary",
    "check_expiry_limits",
    "commit_staged",
    "common_name_of",
    "common_name_problem",
    "directory_lock",
    "ensure_directory",
    "file_mode",
    "fingerprints",
    "format_time",
    "generate_private_key",
    "key_is_encrypted",
    "key_matches_certificate",
    "key_type_of",
    "load_certificates",
    "load_private_key",
    "locked_directory",
    "not_after_of",
    "not_before_of",
    "parse_time",
    "private_key_pem",
    "public_key_der",
    "read_file",
    "registration_id_problem",
    "remove_paths",
    "signed_by",
    "stage_file",
    "stale_temporaries",
    "utcnow",
    "validate_registration_id",
    "validity_window",
    "write_directory_atomically",
    "write_files_atomically",
)
