#!/usr/bin/env bash
# Run pytest on the given test directories that exist (git does not keep empty directories, so a fresh
# clone may lack some). pytest's own exit status is passed on unchanged: 5 (no tests collected) fails.
# Usage: scripts/pytest.sh DIR [DIR...]   (extra pytest arguments via PYTEST_ARGS, e.g. PYTEST_ARGS="-n auto")
set -euo pipefail
cd "$(dirname "$0")/.."
dirs=()
for d in "$@"; do
    if [ -d "$d" ]; then dirs+=("$d"); else echo "pytest.sh: $d does not exist, skipped"; fi
done
if [ ${#dirs[@]} -eq 0 ]; then
    echo "pytest.sh: none of $* exists: no tests to run" >&2
    exit 5
fi
# shellcheck disable=SC2086  # PYTEST_ARGS is a list of words on purpose
exec .venv/bin/pytest ${PYTEST_ARGS:-} "${dirs[@]}"
