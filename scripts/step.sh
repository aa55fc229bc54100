#!/usr/bin/env bash
# Run one named step of a make target; on failure say which step failed and pass its exit status on.
# Usage: scripts/step.sh NAME COMMAND [ARG...]
set -uo pipefail
name=$1
shift
printf '\n==> [%s] %s\n' "$name" "$*"
start=$SECONDS
"$@"
rc=$?
if [ "$rc" -ne 0 ]; then
    printf '\n*** FAILED: step [%s] exited %d after %ds: %s\n' "$name" "$rc" $((SECONDS - start)) "$*" >&2
    exit "$rc"
fi
printf '==> [%s] ok (%ds)\n' "$name" $((SECONDS - start))
