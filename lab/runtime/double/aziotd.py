"""``aziotd <service>``: the identity-service daemons of the double, each as its own user (systemd units).

- aziot-keyd (aziotks) hands out the preloaded private keys it can read (a key aziotks cannot read fails here, as
  on a real device), and creates the keys the edge daemon asks for (the Edge CA's) in its home.
- aziot-certd (aziotcs) hands out the preloaded certificates it can read (a list of ids is their concatenation, as
  the trust bundle), and issues what its [cert_issuance] says (self-signed, by the local CA, by EST), or a
  certificate signed by an issuer the caller names (module server certificates), keeping them in its home.
- aziot-identityd (aziotid) provisions at startup: it gets the identity certificate and key from certd and keyd,
  then uses its backup of the last provisioning when there is one, or else registers with DPS over mutual TLS
  (trusting only the system store), polling every 5 s until assigned; it keeps the backups and tells the edge daemon
  which device it is on which hub. Its reprovision operation (``iotedge system reprovision``) always registers.
- aziot-tpmd (aziottpm) has nothing to do for X.509 and only answers.
"""

from __future__ import annotations

import base64
import datetime
import functools
import json
import os
import ssl
import sys
import threading
import time
import tomllib
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from . import IDENTITY_SERVICE_VERSION, x509
from . import est as est_client
from .dps import ProvisioningError, common_name, file_key_sender, read_device_backup, register_with_dps
from .ipc import activated_sockets, call, serve_json
from .journal import log
from .pkcs11 import Pkcs11Error, Pkcs11Uri, TokenKey

ETC = Path("/etc/aziot")
KEYD_SOCKET = "/run/aziot/keyd.sock"
CERTD_SOCKET = "/run/aziot/certd.sock"
IDENTITYD_SOCKET = "/run/aziot/identityd.sock"
IDENTITYD_HOME = Path("/var/lib/aziot/identityd")
# Where keyd keeps the keys it creates and certd the certificates it issues (one PEM file per id, the id URL-quoted).
KEYD_HOME = Path("/var/lib/aziot/keyd")
KEYD_KEYS = KEYD_HOME / "keys"
CERTD_HOME = Path("/var/lib/aziot/certd")
CERTD_CERTS = CERTD_HOME / "certs"
# identityd's backups in its home (identity.rs): the device of the last provisioning, and the settings in force then.
DEVICE_BACKUP = "device_info"
SETTINGS_BACKUP = "prev_state"
# An EST identity's certificate and key change together: its renewal and its use take turns (the engine's lock).
EST_IDENTITY_LOCK = threading.RLock()
# How often identityd and certd look whether a certificate they issued is due for renewal.
RENEWAL_CHECK_SECONDS = 10
# A registration polls DPS every 5 s until assigned, each request allowed 70 s (dps.py): callers wait long.
REPROVISION_TIMEOUT_SECONDS = 600


class ServiceError(Exception):
    """What keeps a daemon from doing its job; logged, and fatal at identityd's start (systemd restarts it)."""


def config_text(service: str) -> str:
    path = ETC / service / "config.d" / "00-super.toml"
    try:
        return path.read_text()
    except OSError as error:
        raise ServiceError(f"could not read config from {path}: {error.strerror}") from None


def load_config(service: str) -> dict:
    return tomllib.loads(config_text(service))


def file_of(uri: str) -> Path:
    parts = urlsplit(uri)
    if parts.scheme != "file" or parts.netloc not in ("", "localhost"):
        raise ServiceError(f"{uri} does not have a valid URI: not a valid path")
    return Path(unquote(parts.path))


# ---- keyd and certd ---------------------------------------------------------------------------------------


def _preloaded(table: dict, item_id: str, what: str, seen: set) -> dict:
    """A preloaded item's PEM: a file URI, or (certd) a list of ids whose PEMs are concatenated."""
    location = table.get(item_id)
    if location is None:
        return {"error": f"{what} {item_id!r} not found"}
    if isinstance(location, list):
        if item_id in seen:
            return {"error": f"preloaded cert {item_id!r} refers to itself"}
        parts = []
        for member in location:
            found = _preloaded(table, member, what, {*seen, item_id})
            if "pem" not in found:
                found = _issued_certificate(member)
            if "pem" not in found:
                return found
            parts.append(found["pem"] if found["pem"].endswith("\n") else found["pem"] + "\n")
        return {"pem": "".join(parts)}
    if isinstance(location, str) and location.startswith("pkcs11:"):
        # The key stays in its token: keyd uses it (public_key, https), it never hands it out.
        return {"pkcs11": True, "error": f"{what} {item_id!r} is in a PKCS#11 token and cannot be read out"}
    path = file_of(location)
    try:
        return {"pem": path.read_text()}
    except OSError as error:
        message = f"could not load {what} {item_id!r} from {path}: {error.strerror} (os error {error.errno})"
        log("ERROR", message)
        return {"error": message}


def _stored(directory: Path, item_id: str) -> Path:
    return directory / f"{quote(item_id, safe='')}.pem"


def keyd(request: dict) -> dict:
    """Preloaded keys first; then the keys keyd created. Ops: create_key_pair_if_not_exists, move_key_pair,
    delete_key_pair (the edge daemon's Edge CA and its renewal)."""
    config = load_config("keyd")
    preloaded = config.get("preloaded_keys") or {}
    op, item_id = request.get("op", "get"), request.get("id", "")
    created = _stored(KEYD_KEYS, item_id)
    if op == "get":
        if item_id in preloaded:
            return _preloaded(preloaded, item_id, "key pair", set())
        return {"pem": created.read_text()} if created.is_file() else {"error": f"key pair {item_id!r} not found"}
    if op in ("public_key", "https", "sign_certificate"):
        return _token_operation(config, preloaded.get(item_id), item_id, request)
    if item_id in preloaded:
        return {"ok": True} if op == "create_key_pair_if_not_exists" else {"error": f"{item_id!r} is preloaded"}
    if op == "create_key_pair_if_not_exists":
        if not created.is_file():
            KEYD_KEYS.mkdir(mode=0o700, exist_ok=True)
            x509.new_key(created)
        return {"ok": True}
    if op == "move_key_pair":
        os.replace(_stored(KEYD_KEYS, request["from"]), created)
        return {"ok": True}
    if op == "delete_key_pair":
        created.unlink(missing_ok=True)
        return {"ok": True}
    return {"error": f"unknown operation {op!r}"}


def _token_key(config: dict, location: str) -> TokenKey:
    """A preloaded key in a PKCS#11 token ([aziot_keys] pkcs11_lib_path); without a PIN of its own, the base slot's
    PIN for the same token."""
    settings = config.get("aziot_keys") or {}
    lib_path = settings.get("pkcs11_lib_path")
    if not lib_path:
        raise Pkcs11Error("a PKCS#11 key needs [aziot_keys] pkcs11_lib_path")
    uri = Pkcs11Uri.parse(location)
    base = settings.get("pkcs11_base_slot")
    if uri.pin is None and base:
        base_uri = Pkcs11Uri.parse(base)
        if (base_uri.token, base_uri.slot_id) == (uri.token, uri.slot_id):
            uri = Pkcs11Uri(uri.slot_id, uri.token, uri.object_label, base_uri.pin)
    return TokenKey(lib_path, uri)


def _token_operation(config: dict, location, item_id: str, request: dict) -> dict:
    """What keyd does with a key it keeps in a token: its public key, a mutual-TLS request the token signs for, or a
    certificate it signs (certd's issuance by a local CA whose key is in the token)."""
    if not isinstance(location, str) or not location.startswith("pkcs11:"):
        return {"error": f"key pair {item_id!r} is not a PKCS#11 key"}
    try:
        key = _token_key(config, location)
        if request["op"] == "public_key":
            return {"public_key": key.public_key_pem()}
        if request["op"] == "sign_certificate":
            pem = key.sign_certificate(
                request["csr"], request.get("issuer_pem"), request["days"], request.get("subject"), KEYD_HOME / "sign"
            )
            return {"pem": pem}
        if "body_base64" in request or "headers" in request:
            # Any request (certd's EST enrollment with a token-held identity): bytes travel base64 in the JSON line.
            body = request.get("body_base64")
            status, content_type, raw = key.request(
                request["cert_pem"],
                request["url"],
                request["method"],
                base64.b64decode(body) if body is not None else None,
                request.get("headers") or {},
                request.get("trusted_pems") or [],
                70,
                KEYD_HOME / "tls",
            )
            return {"status": status, "content_type": content_type, "body_base64": base64.b64encode(raw).decode()}
        status, body = key.https(
            request["cert_pem"], request["url"], request["method"], request.get("body"), 70, KEYD_HOME / "tls"
        )
        return {"status": status, "body": body}
    except (Pkcs11Error, ValueError, OSError) as error:
        log("ERROR", f"key pair {item_id!r}: {error}")
        return {"error": f"key pair {item_id!r}: {error}"}


EST_AUTH_KEYS = (
    "username",
    "password",
    "identity_cert",
    "identity_pk",
    "bootstrap_identity_cert",
    "bootstrap_identity_pk",
)


def _est_options(config: dict, cert_id: str, options: dict) -> tuple[str, dict]:
    """get_est_opts: the URL and credentials of the certificate's options, else [cert_issuance.est]'s."""
    est = (config.get("cert_issuance") or {}).get("est") or {}
    urls = est.get("urls") or {}
    url = options.get("url") or urls.get(cert_id) or urls.get("default")
    if not url:
        raise ServiceError(f"cert {cert_id!r} is configured to be issued by EST, but no EST server URL is configured")
    auth = {key: options[key] for key in EST_AUTH_KEYS if key in options} or {
        key: est[key] for key in EST_AUTH_KEYS if key in est
    }
    return url, auth


def _est_trusted(config: dict) -> list:
    est = (config.get("cert_issuance") or {}).get("est") or {}
    return [certd({"id": ca_id}).get("pem", "") for ca_id in est.get("trusted_certs") or []]


def _basic(auth: dict):
    return (auth["username"], auth["password"]) if "username" in auth else None


def _issue_by_est(config: dict, cert_id: str, options: dict, csr_pem: str) -> str:
    """certd's EST issuance (est.rs): the URL and credentials of the certificate, else [cert_issuance.est]'s; an EST
    identity first obtained with the bootstrap identity when there is none (lib.rs)."""
    url, auth = _est_options(config, cert_id, options)
    trusted = _est_trusted(config)
    basic = _basic(auth)
    client: dict = {}
    with EST_IDENTITY_LOCK:
        if "identity_cert" in auth:
            try:
                client = _est_identity(auth, options, csr_pem, url, trusted, basic)
            except est_client.EstFailure as error:
                raise est_client.EstFailure(
                    f"cert {cert_id!r} is configured to be issued by EST, but neither EST identity nor EST bootstrap "
                    f"identity could be obtained: {error}"
                ) from None
        return est_client.enroll(url, csr_pem, trusted_pems=trusted, basic=basic, private_dir=CERTD_HOME, **client)


def _est_client(cert_pem: str, key_id: str, trusted: list) -> dict:
    """est.enroll's client: the certificate and the key keyd hands out, or, for a key in a token, requests that keyd
    makes with it (the token signs the TLS handshake)."""
    key = call(KEYD_SOCKET, {"id": key_id})
    if "pem" in key:
        return {"client": (cert_pem, key["pem"])}
    if not key.get("pkcs11"):
        raise ServiceError(f"could not get the key of {key_id!r}: {key.get('error', 'no answer')}")

    def send(method: str, url: str, body: bytes | None, headers: dict) -> tuple:
        answer = call(
            KEYD_SOCKET,
            {
                "op": "https", "id": key_id, "cert_pem": cert_pem, "url": url, "method": method, "headers": headers,
                "trusted_pems": trusted, "body_base64": base64.b64encode(body).decode() if body is not None else None,
            },
        )  # fmt: skip
        if "status" not in answer:
            raise est_client.EstFailure(answer.get("error", "keyd did not answer"))
        return answer["status"], {"content-type": answer["content_type"]}, base64.b64decode(answer["body_base64"])

    return {"client": None, "send": send}


def _est_identity(auth: dict, options: dict, csr_pem: str, url: str, trusted: list, basic) -> dict:
    """est.enroll's client for the EST identity: the one certd holds while it is valid, else a new one enrolled with
    the bootstrap identity (a new key; the CSR asks for clientAuth, its subject the certificate's or the CSR's)."""
    cert_id, key_id = auth["identity_cert"], auth["identity_pk"]
    held = certd({"id": cert_id})
    if "pem" in held and x509.days_left(held["pem"]) >= 0:
        return _est_client(held["pem"], key_id, trusted)
    if "bootstrap_identity_cert" not in auth:
        raise est_client.EstFailure(f"there is no EST identity certificate {cert_id!r} and no bootstrap identity")
    bootstrap_cert = certd({"id": auth["bootstrap_identity_cert"]}).get("pem", "")
    bootstrap = _est_client(bootstrap_cert, auth["bootstrap_identity_pk"], trusted)
    key = _new_key_pair(key_id, f"the key of {key_id!r}")
    subject = options.get("subject") or {"CN": options.get("common_name") or x509.csr_common_name(csr_pem)}
    csr = x509.new_csr(key, subject.get("CN", ""), ("extendedKeyUsage=clientAuth",), subject=subject)
    pem = est_client.enroll(url, csr, trusted_pems=trusted, basic=basic, private_dir=CERTD_HOME, **bootstrap)
    _store_issued(cert_id, pem)
    return {"client": (pem, key)}


def _new_key_pair(key_id: str, what: str) -> str:
    """A new key under ``key_id`` (any old one deleted first), as keyd hands it out."""
    call(KEYD_SOCKET, {"op": "delete_key_pair", "id": key_id})
    call(KEYD_SOCKET, {"op": "create_key_pair_if_not_exists", "id": key_id})
    return _fetch(KEYD_SOCKET, {"id": key_id}, what)


def _renewal_key(key_id: str, rotate_key, what: str) -> tuple[str, str]:
    """(key id, key) a renewal's CSR is made with (renewal.rs): a new key under ``<key>-temp`` with rotate_key, moved
    over the old one once the new certificate is in place; else the current key."""
    if rotate_key:
        return f"{key_id}-temp", _new_key_pair(f"{key_id}-temp", what)
    return key_id, _fetch(KEYD_SOCKET, {"id": key_id}, what)


def renew_when_due(cert_id: str, policy: dict, read_pem, renew, errors: tuple) -> None:
    """One check of cert_renewal's engine for one credential: renew when the policy says so, with the engine's log
    lines; a failure leaves the credential as it was, for the next check."""
    try:
        if not x509.renewal_due(policy, read_pem()):
            return
        log("INFO", f"Attempting to renew certificate {cert_id}.")
        renew()
        log("INFO", f"Certificate {cert_id} was renewed.")
    except errors as error:
        log("WARN", f"Tried to renew {cert_id}, but {error}. Retrying in {RENEWAL_CHECK_SECONDS} seconds.")


def _store_issued(cert_id: str, pem: str) -> None:
    """A certificate certd issued, replaced whole (the renewal thread writes while requests read)."""
    CERTD_CERTS.mkdir(mode=0o700, exist_ok=True)
    target = _stored(CERTD_CERTS, cert_id)
    staged = target.with_name(f".{target.name}.new")
    staged.write_text(pem)
    os.replace(staged, target)


# [cert_issuance.est.identity_auto_renew] when the config has none (cert_renewal's AutoRenewConfig default).
EST_IDENTITY_RENEWAL_DEFAULT = {"rotate_key": True, "threshold": "80%", "retry": "4%"}


def est_identity_credentials(config: dict) -> dict:
    """init_est_id_renewal: the EST identities certd has issued, as (identity cert id, key id) -> the id whose EST
    options (URL, credentials) renew it: [cert_issuance.est]'s own, then each certificate's (the last one wins)."""
    issuance = config.get("cert_issuance") or {}
    found: dict = {}
    est = issuance.get("est") or {}
    candidates = [(est.get("identity_cert"), est.get("identity_pk"), est.get("identity_cert"))]
    for cert_id in sorted(issuance):
        options = issuance[cert_id]
        if cert_id not in ("est", "local_ca") and isinstance(options, dict) and options.get("method") == "est":
            candidates.append((options.get("identity_cert"), options.get("identity_pk"), cert_id))
    for cert, key, owner in candidates:
        if cert and key and "pem" in _issued_certificate(cert):
            found[(cert, key)] = owner
    return found


def renew_est_identity(config: dict, credential: tuple, owner: str, policy: dict) -> None:
    """EstIdRenewal (renewal.rs): a new EST identity for the old one's subject, enrolled with the old one while it is
    valid (else with the bootstrap identity), its key new under ``<key>-temp`` with rotate_key, then put in place."""
    with EST_IDENTITY_LOCK:
        _renew_est_identity_locked(config, credential, owner, policy)


def _renew_est_identity_locked(config: dict, credential: tuple, owner: str, policy: dict) -> None:
    cert_id, key_id = credential
    url, auth = _est_options(config, owner, ((config.get("cert_issuance") or {}).get(owner) or {}))
    trusted = _est_trusted(config)
    old = _issued_pem(cert_id)
    if x509.validity(old)[1] <= datetime.datetime.now(datetime.UTC):
        if "bootstrap_identity_cert" not in auth:
            raise ServiceError("bootstrap credentials not available")
        bootstrap = certd({"id": auth["bootstrap_identity_cert"]}).get("pem", "")
        client = _est_client(bootstrap, auth["bootstrap_identity_pk"], trusted)
    else:
        client = _est_client(old, key_id, trusted)
    new_key_id, key = _renewal_key(key_id, policy.get("rotate_key", True), "the EST identity key")
    subject = x509.subject_table(old)
    csr = x509.new_csr(key, subject.get("CN", ""), ("extendedKeyUsage=clientAuth",), subject=subject)
    try:
        pem = est_client.enroll(url, csr, trusted_pems=trusted, basic=_basic(auth), private_dir=CERTD_HOME, **client)
    except est_client.EstFailure as error:
        raise ServiceError(f"failed to issue new EST identity cert: {error}") from None
    _store_issued(cert_id, pem)
    if new_key_id != key_id and "ok" not in call(
        KEYD_SOCKET, {"op": "move_key_pair", "from": new_key_id, "id": key_id}
    ):
        # The new certificate is useless without its key: the old one goes back.
        _store_issued(cert_id, old)


def renew_est_identities_when_due() -> None:
    """certd's renewal engine for EST identities ([cert_issuance.est.identity_auto_renew]), checked every 10 s."""
    while True:
        time.sleep(RENEWAL_CHECK_SECONDS)
        try:
            config = load_config("certd")
        except ServiceError as error:
            log("WARN", f"EST identity renewal: {error}")
            continue
        est = (config.get("cert_issuance") or {}).get("est") or {}
        policy = {**EST_IDENTITY_RENEWAL_DEFAULT, **(est.get("identity_auto_renew") or {})}
        for credential, owner in est_identity_credentials(config).items():
            renew_when_due(
                credential[0],
                policy,
                functools.partial(_issued_pem, credential[0]),
                functools.partial(renew_est_identity, config, credential, owner, policy),
                (ServiceError, x509.X509Error, est_client.EstFailure, OSError, KeyError),
            )


def _issued_pem(item_id: str) -> str:
    """A certificate certd issued; KeyError when it has not."""
    return _issued_certificate(item_id)["pem"]


def _issued_certificate(item_id: str) -> dict:
    path = _stored(CERTD_CERTS, item_id)
    return {"pem": path.read_text()} if path.is_file() else {"error": f"certificate {item_id!r} not found"}


def _create_cert(config: dict, cert_id: str, request: dict) -> str:
    """create_cert_inner: signed by the issuer the caller names (module server certificates), else as the
    certificate's [cert_issuance] options say: self-signed, by the local CA, or by EST."""
    options = (config.get("cert_issuance") or {}).get(cert_id) or {}
    csr = request["csr"]
    issuer = request.get("issuer")
    if issuer is not None:
        return _signed(csr, issuer["key_id"], issuer["cert_id"], options)
    method = options.get("method")
    if method == "self_signed":
        return _signed(csr, cert_id, None, options)
    if method == "local_ca":
        local_ca = (config.get("cert_issuance") or {}).get("local_ca")
        if not local_ca:
            raise ServiceError(
                f"cert {cert_id!r} is configured to be issued by local CA, but local CA is not configured"
            )
        return _signed(csr, local_ca["pk"], local_ca["cert"], options)
    if method == "est":
        return _issue_by_est(config, cert_id, options, csr)
    raise ServiceError("issuer is required for locally-issued certs")


def _subject_option(options: dict) -> dict | None:
    """The issuance options' subject (CertSubject): a common name, or a subject table."""
    if options.get("subject"):
        return dict(options["subject"])
    if options.get("common_name"):
        return {"CN": options["common_name"]}
    return None


def _signed(csr_pem: str, key_id: str, issuer_cert_id: str | None, options: dict) -> str:
    """The CSR signed with keyd's key ``key_id`` (read from its file, or signed inside its token by keyd) as the
    first certificate of ``issuer_cert_id`` (None: self-signed), for the options' expiry_days (30 when unset); the
    issuer's chain follows the new certificate."""
    issuer_pem = None
    if issuer_cert_id is not None:
        found = certd({"id": issuer_cert_id})
        if "pem" not in found:
            raise ServiceError(f"cert for issuer id {issuer_cert_id!r} not found: {found.get('error')}")
        issuer_pem = found["pem"]
    days = int(options.get("expiry_days") or x509.DEFAULT_EXPIRY_DAYS)
    subject = _subject_option(options)
    first_issuer = x509.first_certificate(issuer_pem) if issuer_pem else None
    key = call(KEYD_SOCKET, {"id": key_id})
    if key.get("pkcs11"):
        signed = call(
            KEYD_SOCKET,
            {"op": "sign_certificate", "id": key_id, "csr": csr_pem, "issuer_pem": first_issuer, "days": days,
             "subject": subject},
        )  # fmt: skip
        if "pem" not in signed:
            raise ServiceError(signed.get("error", "keyd did not answer"))
        leaf = signed["pem"]
    elif "pem" in key:
        leaf = x509.issue(csr_pem, signer_key_pem=key["pem"], issuer_cert_pem=first_issuer, days=days, subject=subject)
    else:
        raise ServiceError(f"could not get the key of {key_id!r}: {key.get('error', 'no answer')}")
    return leaf + (issuer_pem or "")


def certd(request: dict) -> dict:
    """Preloaded certificates first; then those certd issued. Ops: create_cert (by the ``issuer`` the caller names,
    else by the certificate's [cert_issuance] options: self-signed, local CA or EST), move_cert, delete_cert."""
    config = load_config("certd")
    preloaded = config.get("preloaded_certs") or {}
    op, item_id = request.get("op", "get"), request.get("id", "")
    if op == "get":
        if item_id in preloaded:
            return _preloaded(preloaded, item_id, "certificate", set())
        found = _issued_certificate(item_id)
        method = ((config.get("cert_issuance") or {}).get(item_id) or {}).get("method")
        if "pem" not in found and method in ("est", "local_ca"):
            # Not issued yet: its owner makes a key and a CSR, then asks for it (create_cert).
            return {**found, "issuable": True}
        return found
    if item_id in preloaded:
        return {"error": f"certificate {item_id!r} is preloaded"}
    target = _stored(CERTD_CERTS, item_id)
    if op == "create_cert":
        try:
            pem = _create_cert(config, item_id, request)
        except est_client.EstFailure as error:
            # certd answers "internal error" and logs the causes, as its to_http_error does.
            for line in ("internal error", "caused by: could not create cert", f"caused by: {error}"):
                log("ERROR", f"!!! {line}")
            return {"error": "internal error"}
        except (ServiceError, x509.X509Error, KeyError) as error:
            return {"error": f"could not create certificate {item_id!r}: {error}"}
        _store_issued(item_id, pem)
        return {"pem": pem}
    if op == "move_cert":
        os.replace(_stored(CERTD_CERTS, request["from"]), target)
        return {"ok": True}
    if op == "delete_cert":
        target.unlink(missing_ok=True)
        return {"ok": True}
    return {"error": f"unknown operation {op!r}"}


# ---- identityd --------------------------------------------------------------------------------------------


def _fetch(socket_path: str, request: dict, what: str) -> str:
    answer = call(socket_path, request)
    if "pem" not in answer:
        raise ServiceError(f"could not get {what}: {answer.get('error', 'no answer')}")
    return answer["pem"]


# What makes a provisioning fail; the daemon logs it (and, at startup, exits).
PROVISIONING_ERRORS = (ServiceError, ProvisioningError, OSError, KeyError, ssl.SSLError, tomllib.TOMLDecodeError)


def usable_device_backup() -> dict | None:
    """The device of the last provisioning, when the backup is there and usable.

    An unusable backup is removed, as identityd does, so that it is not tried again.
    """
    path = IDENTITYD_HOME / DEVICE_BACKUP
    try:
        device = read_device_backup(path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        log("WARN", f"Ignoring invalid device info backup: {error}")
        try:
            path.unlink(missing_ok=True)
        except OSError as failure:
            log("WARN", f"Failed to delete invalid device info backup: {failure}")
        return None
    return device


def write_backup(name: str, text: str) -> None:
    path = IDENTITYD_HOME / name
    path.write_text(text)
    path.chmod(0o600)


def provision(trigger: str) -> dict:
    """identityd's provisioning for DPS X.509; at ``Startup`` a usable backup wins over DPS.

    As in the real identityd (identity.rs ``dps_provision``): the certificate and key are fetched first, so a key
    keyd cannot read fails even with a backup; the backup is used whatever changed since it was made - replaced
    certificate files and changed provisioning settings alike (iotedge issue 7013: a new ID scope takes
    ``iotedge system reprovision``); both backups are rewritten after every provisioning.
    """
    settings = config_text("identityd")
    config = tomllib.loads(settings)
    provisioning = config.get("provisioning") or {}
    if provisioning.get("source") != "dps":
        raise ServiceError("only DPS provisioning is implemented by the edgefleet test double")
    attestation = provisioning.get("attestation") or {}
    if attestation.get("method") != "x509":
        raise ServiceError("only X.509 attestation is implemented by the edgefleet test double")
    cert_pem = _identity_certificate(attestation)
    send = _dps_sender(provisioning["global_endpoint"], cert_pem, attestation["identity_pk"])
    device = usable_device_backup() if trigger == "Startup" else None
    if device is not None:
        log("INFO", f"Provisioned with backup for {device['device_id']}.")
    else:
        # Prefer the registration ID specified in config, but use the certificate's subject otherwise (identity.rs).
        registration_id = attestation.get("registration_id")
        if isinstance(registration_id, dict):
            registration_id = registration_id.get("CN")
        registration_id = registration_id or common_name(cert_pem)
        state = register_with_dps(provisioning["scope_id"], registration_id, send)
        device = {"hub": state["assignedHub"], "device_id": state["deviceId"], "registration_id": registration_id}
    # The real identityd says this after a restored backup too.
    log("INFO", "Successfully provisioned with DPS.")
    write_backup(DEVICE_BACKUP, json.dumps(device) + "\n")
    # prev_state is identityd's settings as it read them (the real one serialises its parsed settings).
    write_backup(SETTINGS_BACKUP, settings)
    return device


def _identity_certificate(attestation: dict) -> str:
    """The identity certificate certd holds; one it issues (EST) is asked for with a new key and a CSR whose subject
    is the registration id (identityd's CsrSubject)."""
    cert_id, key_id = attestation["identity_cert"], attestation["identity_pk"]
    held = call(CERTD_SOCKET, {"id": cert_id})
    if "pem" in held:
        return held["pem"]
    if not held.get("issuable"):
        raise ServiceError(f"could not get the identity certificate: {held.get('error', 'no answer')}")
    subject = attestation.get("registration_id")
    if subject is None:
        raise ServiceError("identity cert does not exist; cannot create new cert as registration ID is unknown")
    table = subject if isinstance(subject, dict) else {"CN": subject}
    call(KEYD_SOCKET, {"op": "create_key_pair_if_not_exists", "id": key_id})
    key = _fetch(KEYD_SOCKET, {"id": key_id}, "the identity private key")
    csr = x509.new_csr(key, table.get("CN", ""), subject=table)
    issued = call(CERTD_SOCKET, {"op": "create_cert", "id": cert_id, "csr": csr})
    if "pem" not in issued:
        raise ServiceError(issued.get("error", "certd did not answer"))
    return issued["pem"]


def _dps_sender(endpoint: str, cert_pem: str, key_id: str):
    """How identityd's DPS requests prove the identity: with the key keyd read from its file, or, for a key in a
    PKCS#11 token, through keyd, which has the token sign the handshake (the real identityd does that through keyd's
    OpenSSL engine; here keyd makes the request, lab/README.md)."""
    key = call(KEYD_SOCKET, {"id": key_id})
    if "pem" in key:
        return file_key_sender(endpoint, cert_pem, key["pem"], IDENTITYD_HOME)
    if not key.get("pkcs11"):
        raise ServiceError(f"could not get the identity private key: {key.get('error', 'no answer')}")

    def send(method: str, path: str, body):
        answer = call(
            KEYD_SOCKET,
            {"op": "https", "id": key_id, "cert_pem": cert_pem, "url": endpoint.rstrip("/") + path, "method": method,
             "body": body},
        )  # fmt: skip
        if "status" not in answer:
            raise ProvisioningError(answer.get("error", "keyd did not answer"))
        return answer["status"], answer["body"]

    return send


class Identityd:
    """aziot-identityd's state: the device it is provisioned as, None after a failed reprovision."""

    def __init__(self) -> None:
        self.device: dict | None = None
        self.lock = threading.Lock()

    def start(self) -> None:
        """Provisioning with trigger Startup; raises what made it fail (the daemon then exits)."""
        log("INFO", "Provisioning starting. Reason: Startup")
        self.device = provision("Startup")
        self._reconciled("Startup")

    def reprovision(self) -> dict:
        """The reprovision API (trigger Api): forget the device and its backup, then register with DPS.

        As the real one, a failed registration leaves no device: identityd keeps running, ``get_device`` fails,
        and its next start registers again since there is no backup.
        """
        log("INFO", "Provisioning starting. Reason: Api")
        self.device = None
        try:
            (IDENTITYD_HOME / DEVICE_BACKUP).unlink(missing_ok=True)
        except OSError as error:
            log("WARN", f"Failed to clear device state before reprovisioning: {error}")
        try:
            self.device = provision("Api")
        except PROVISIONING_ERRORS as error:
            log("INFO", f"!!! {error}")
            return {"error": str(error)}
        self._reconciled("Api")
        return self.device

    @staticmethod
    def _reconciled(trigger: str) -> None:
        # No module identities in the double: reconciliation has nothing to do.
        log("INFO", "Provisioning complete.")
        log("INFO", f"Identity reconciliation started. Reason: {trigger}")
        log("INFO", "Identity reconciliation complete.")

    def handle(self, request: dict) -> dict:
        operation = request.get("op")
        with self.lock:
            if operation == "get_device":
                return self.device if self.device is not None else {"error": "device identity not found"}
            if operation == "reprovision":
                return self.reprovision()
        return {"error": f"unknown operation {operation!r}"}

    def renew_identity(self, attestation: dict, provisioning: dict, auto_renew: dict) -> None:
        """identityd's renewal of an issued identity certificate (renewal.rs): a certificate for the old one's
        subject under the temporary ids (a new key with rotate_key), a registration with it (trigger Api), then the
        new credentials replace the old ones. A failure leaves the old ones in use."""
        cert_id, key_id = attestation["identity_cert"], attestation["identity_pk"]
        old = _fetch(CERTD_SOCKET, {"id": cert_id}, "the identity certificate")
        new_key_id, key = _renewal_key(key_id, auto_renew.get("rotate_key"), "the renewal key")
        csr = x509.new_csr(key, x509.subject_common_name(old))
        issued = call(CERTD_SOCKET, {"op": "create_cert", "id": f"{cert_id}-temp", "csr": csr})
        if "pem" not in issued:
            raise ServiceError("failed to create new cert")
        with self.lock:
            log("INFO", "Provisioning starting. Reason: Api")
            registration_id = attestation.get("registration_id")
            if isinstance(registration_id, dict):
                registration_id = registration_id.get("CN")
            send = _dps_sender(provisioning["global_endpoint"], issued["pem"], new_key_id)
            state = register_with_dps(provisioning["scope_id"], registration_id or common_name(issued["pem"]), send)
            self.device = {
                "hub": state["assignedHub"],
                "device_id": state["deviceId"],
                "registration_id": registration_id,
            }
            write_backup(DEVICE_BACKUP, json.dumps(self.device) + "\n")
            if new_key_id != key_id:
                call(KEYD_SOCKET, {"op": "move_key_pair", "from": new_key_id, "id": key_id})
            call(CERTD_SOCKET, {"op": "move_cert", "from": f"{cert_id}-temp", "id": cert_id})
            self._reconciled("Api")


def renew_identity_when_due(daemon: Identityd) -> None:
    """The renewal engine for an identity certificate certd issues ([provisioning.attestation.identity_auto_renew])."""
    config = tomllib.loads(config_text("identityd"))
    provisioning = config.get("provisioning") or {}
    attestation = provisioning.get("attestation") or {}
    auto_renew = attestation.get("identity_auto_renew")
    if not auto_renew:
        return
    cert_id = attestation["identity_cert"]
    while True:
        time.sleep(RENEWAL_CHECK_SECONDS)
        renew_when_due(
            cert_id,
            auto_renew,
            lambda: _fetch(CERTD_SOCKET, {"id": cert_id}, "the identity certificate"),
            lambda: daemon.renew_identity(attestation, provisioning, auto_renew),
            PROVISIONING_ERRORS,
        )


def identityd(listener) -> int:
    log("INFO", f"Starting Azure IoT Identity Service {IDENTITY_SERVICE_VERSION} (edgefleet test double)")
    daemon = Identityd()
    try:
        daemon.start()
    except PROVISIONING_ERRORS as error:
        log("ERROR", f"Failed to provision with IoT Hub, and no valid device backup was found: {error}")
        return 1
    threading.Thread(target=renew_identity_when_due, args=(daemon,), daemon=True).start()
    serve_json(listener, daemon.handle)
    return 0


# ---- identityd's clients ----------------------------------------------------------------------------------


def request_reprovision() -> str | None:
    """Ask identityd to register with DPS again, as ``iotedge system reprovision`` does; None, or why it failed."""
    try:
        answer = call(IDENTITYD_SOCKET, {"op": "reprovision"}, timeout=REPROVISION_TIMEOUT_SECONDS)
    except (OSError, ValueError) as error:
        return f"could not reach aziot-identityd at {IDENTITYD_SOCKET}: {error}"
    if "device_id" not in answer:
        return answer.get("error", "no answer")
    return None


# ---- entry point ------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    service = args[0] if args else "aziotd"
    if "--version" in args:
        print(f"{service} {IDENTITY_SERVICE_VERSION}")
        return 0
    sockets = list(activated_sockets().values())
    if not sockets:
        log("ERROR", f"{service}: no socket from systemd; start it through {service}.socket")
        return 1
    listener = sockets[0]
    if service == "aziot-identityd":
        return identityd(listener)
    handlers = {
        "aziot-keyd": keyd,
        "aziot-certd": certd,
        "aziot-tpmd": lambda request: {"error": "no TPM in the edgefleet test double"},
    }
    if service not in handlers:
        log("ERROR", f"unknown service {service}")
        return 1
    log("INFO", f"Starting {service} {IDENTITY_SERVICE_VERSION} (edgefleet test double)")
    if service == "aziot-certd":
        threading.Thread(target=renew_est_identities_when_due, daemon=True).start()
    serve_json(listener, handlers[service])
    return 0
