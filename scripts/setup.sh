#!/usr/bin/env bash
# Developer/CI environment for edgefleet.iotedge. Idempotent; a no-op (well under a second) when nothing changed.
#   1. Debian packages the lab and the tooling need (apt-get only for the ones that are missing).
#   2. .venv (python3) with requirements-dev.txt, skipped while the stamp matches the requirements' content.
#   3. .collections/ansible_collections/edgefleet/iotedge -> ../../.. so ansible* resolve edgefleet.iotedge.* offline.
set -euo pipefail

cd "$(dirname "$0")/.."

# Debian packages: the lab (podman + runc + debootstrap, see shared/design/lab-hosts-on-these-machines.md),
# ssh to lab hosts, dpkg-dev for the lab's local apt repository, shellcheck so ansible-test runs its shellcheck test;
# softhsm2, gnutls-bin, curl and libengine-pkcs11-openssl for the unit tests of keys inside a PKCS#11 token (the lab
# hosts get the same ones in their image).
APT_PACKAGES=(
    ca-certificates git rsync make openssl openssh-client python3-venv
    podman runc debootstrap dpkg-dev shellcheck
    softhsm2 gnutls-bin curl libengine-pkcs11-openssl
)
PYTHON=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.setup-stamp

log() { printf '==> setup: %s\n' "$*"; }

# ---- 1. Debian packages --------------------------------------------------------------------------
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
    [ "$status" = installed ] || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    if ! command -v apt-get >/dev/null; then
        echo "setup: missing Debian packages (${missing[*]}) and no apt-get on this machine" >&2
        exit 1
    fi
    SUDO=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || { echo "setup: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
        SUDO=(sudo)
    fi
    log "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    "${SUDO[@]}" apt-get update -qq
    "${SUDO[@]}" apt-get install -y -qq "${missing[@]}" </dev/null
else
    log "Debian packages present"
fi

# ---- 2. Python virtualenv ----------------------------------------------------------------------------
# The stamp is keyed on everything that decides the venv's content.
key=$({
    cat requirements.txt requirements-dev.txt scripts/setup.sh
    "$PYTHON" -c 'import sys; print(sys.version)'
} | sha256sum | cut -d' ' -f1)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$key" ] && "$VENV/bin/python" -c '' 2>/dev/null; then
    log "$VENV up to date"
else
    if ! "$VENV/bin/python" -c '' 2>/dev/null; then
        log "creating $VENV with $("$PYTHON" --version)"
        rm -rf "$VENV"
        "$PYTHON" -m venv "$VENV"
    fi
    log "pip install -r requirements-dev.txt"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r requirements-dev.txt
    "$VENV/bin/python" -m pip check
    echo "$key" >"$STAMP"
fi

# ---- 3. Collection path for running from the checkout -------------------------------------------
link=.collections/ansible_collections/edgefleet/iotedge
if [ "$(readlink "$link" 2>/dev/null)" != "../../.." ]; then
    log "linking $link -> ../../.."
    mkdir -p "$(dirname "$link")"
    rm -rf "$link"
    ln -s ../../.. "$link"
fi
log "done"
