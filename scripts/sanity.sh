#!/usr/bin/env bash
# ansible-test sanity on a copy of the checkout laid out as ansible_collections/edgefleet/iotedge.
# Extra ansible-test arguments via SANITY_ARGS (e.g. SANITY_ARGS="--test validate-modules -v").
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# SANITY_DEST lets two runs work side by side (default build/sanity).
dest=${SANITY_DEST:-build/sanity}/ansible_collections/edgefleet/iotedge

# ansible-test bootstraps pip into each sanity virtualenv with a get-pip script from ci-files.testing.ansible.com,
# which is not reachable here. It looks for ~/.ansible/test/cache/get_pip_<version>.py first: provide a stand-in.
pip_version=$(.venv/bin/python -c '
import types
from ansible_test._internal.python_requirements import get_venv_packages
print(get_venv_packages(types.SimpleNamespace(version="3.11"))["pip"])')
get_pip=~/.ansible/test/cache/get_pip_${pip_version//./_}.py
# A real get-pip script already there is kept; an older copy of the stand-in is refreshed.
if [ ! -s "$get_pip" ] || { grep -q '^"""Stand-in for the get-pip.py' "$get_pip" && ! cmp -s scripts/ansible_test_get_pip.py "$get_pip"; }; then
    mkdir -p "$(dirname "$get_pip")"
    cp scripts/ansible_test_get_pip.py "$get_pip"
    echo "sanity: installed pip bootstrap stand-in at $get_pip"
fi
.venv/bin/python scripts/sync_tree.py "$dest"
cd "$dest"
# ansible-test lists content with git when the collection root is in a git work tree, walking up to find one.
# Without a repository here it would find this checkout's, where build/ is ignored, and test zero files.
# An empty repository (no commit) is enough: `git ls-files --others` then lists every copied file.
[ -d .git ] || git init -q
export PATH="$root/.venv/bin:$PATH"
# shellcheck disable=SC2086  # SANITY_ARGS is a list of words on purpose
exec ansible-test sanity --venv --python 3.11 ${SANITY_ARGS:-}
