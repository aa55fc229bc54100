#!/usr/bin/env bash
# Run every molecule scenario under extensions/molecule/ (molecule test --all, from extensions/).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
mapfile -t scenarios < <(find extensions/molecule -mindepth 2 -maxdepth 2 -name molecule.yml -printf '%h\n' 2>/dev/null | sort)
if [ ${#scenarios[@]} -eq 0 ]; then
    echo "no molecule scenarios yet (extensions/molecule/*/molecule.yml)"
    exit 0
fi
echo "molecule scenarios: ${scenarios[*]##*/}"
# Run from extensions/ (the ansible-creator layout); keep this checkout's ansible.cfg and collection path.
# molecule points ansible-playbook at a generated ansible.cfg of its own: each molecule.yml sets ANSIBLE_CONFIG back
# to this checkout's (ansible.env), so `cd extensions && molecule test -s <scenario>` behaves the same without this script.
export ANSIBLE_CONFIG="$root/ansible.cfg"
export ANSIBLE_COLLECTIONS_PATH="$root/.collections"
export PATH="$root/.venv/bin:$PATH"
cd extensions
exec "$root/.venv/bin/molecule" test --all
