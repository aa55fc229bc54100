"""Mirror the checkout's files (tracked plus untracked-not-ignored) into DEST with rsync --delete.

Usage: .venv/bin/python scripts/sync_tree.py DEST

The file list is `git ls-files -co --exclude-standard`, so ignored files (.venv, build/, .collections, ...) never
reach DEST, and anything in DEST that is no longer in the list is deleted. DEST/.git is left alone.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile


def escape(path: str) -> str:
    """Escape rsync wildcard characters so the path matches literally."""
    return "".join("\\" + ch if ch in "*?[\\" else ch for ch in path)


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    dest = sys.argv[1]
    out = subprocess.run(
        ["git", "ls-files", "-z", "-co", "--exclude-standard"], check=True, capture_output=True
    ).stdout.decode()
    files = sorted({f for f in out.split("\0") if f and os.path.lexists(f)})  # drop tracked-but-deleted files
    dirs = {os.path.dirname(f) for f in files}
    for d in list(dirs):
        while d:
            d = os.path.dirname(d)
            dirs.add(d)
    dirs.discard("")
    # Never copy the checkout's .git; keep DEST's own .git and ansible-test's tests/output (caches) across runs.
    rules = ["P /.git", "- /.git", "P /tests/output", "- /tests/output"]
    rules += [f"+ /{escape(d)}/" for d in sorted(dirs)]
    rules += [f"+ /{escape(f)}" for f in files]
    rules += ["- *"]
    with tempfile.NamedTemporaryFile("w", suffix=".rsync-filter", delete=False) as fh:
        fh.write("\n".join(rules) + "\n")
        filter_file = fh.name
    try:
        os.makedirs(dest, exist_ok=True)
        subprocess.run(
            [
                "rsync",
                "-a",
                "--delete",
                "--delete-excluded",
                f"--filter=merge {filter_file}",
                "./",
                dest.rstrip("/") + "/",
            ],
            check=True,
        )
    finally:
        os.unlink(filter_file)
    print(f"synced {len(files)} files to {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
