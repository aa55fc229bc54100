#!/usr/bin/env bash
# Build the collection tarball into build/galaxy/ with `ansible-galaxy collection build` and run galaxy-importer on
# it, the checker Galaxy and Automation Hub run on upload, with scripts/galaxy-importer.cfg (no ansible-test, so no
# container; ansible-lint offline). Fails when the import fails or galaxy-importer logs any ERROR (warnings are shown
# and counted), and when a relative link in the tarball's Markdown files points at a file the tarball does not have
# (scripts/check_artifact_links.py). galaxy-importer's output is kept in build/galaxy/importer.log, its result in
# build/galaxy/importer_result.json.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# galaxy-importer starts ansible-galaxy, ansible-doc and ansible-lint: the ones of .venv.
export PATH="$root/.venv/bin:$PATH"
out=build/galaxy
rm -rf "$out"
mkdir -p "$out"

ansible-galaxy collection build --output-path "$out"
tarballs=("$out"/*.tar.gz)
if [ ${#tarballs[@]} -ne 1 ] || [ ! -f "${tarballs[0]}" ]; then
    echo "galaxy_importer.sh: expected one tarball in $out, found: ${tarballs[*]}" >&2
    exit 1
fi
tarball=$(basename "${tarballs[0]}")
echo "galaxy_importer.sh: $(tar -tzf "$out/$tarball" | grep -vc '/$') files in $out/$tarball ($(du -k "$out/$tarball" | cut -f1) KiB)"

links_rc=0
python scripts/check_artifact_links.py "$out/$tarball" || links_rc=$?

export GALAXY_IMPORTER_CONFIG="$root/scripts/galaxy-importer.cfg"
# galaxy-importer extracts the collection and runs ansible-lint there. Outside this checkout on purpose: inside it,
# ansible-lint would take the checkout's git repository and .ansible-lint for its project, where build/ is ignored.
tmp=$(mktemp -d "${TMPDIR:-/tmp}/galaxy-importer.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
export GALAXY_IMPORTER_TMP_ROOT_DIR="$tmp"
cd "$out"  # galaxy-importer writes importer_result.json into the working directory
set +e
python -m galaxy_importer.main "$tarball" 2>&1 | tee importer.log
rc=${PIPESTATUS[0]}
set -e

errors=$(grep -cE '^(ERROR|CRITICAL):' importer.log || true)
warnings=$(grep -cE '^WARNING:' importer.log || true)
echo "galaxy_importer.sh: $tarball: exit status $rc, $errors error(s), $warnings warning(s) (log: $out/importer.log)"
if [ "$rc" -ne 0 ] || [ "$errors" -ne 0 ] || ! grep -q '^Importer processing completed successfully' importer.log; then
    echo "galaxy_importer.sh: galaxy-importer did not accept $tarball" >&2
    exit 1
fi
if [ "$links_rc" -ne 0 ]; then
    echo "galaxy_importer.sh: $tarball has broken relative links (above): link to files it ships, or use absolute" \
        "https://github.com/edgefleet/iotedge/blob/main/... links" >&2
    exit 1
fi
