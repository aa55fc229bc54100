"""Check that every relative link in the Markdown files of a collection tarball points at a file in that tarball.

Usage: .venv/bin/python scripts/check_artifact_links.py build/galaxy/edgefleet-iotedge-<version>.tar.gz

The tarball holds what Galaxy and an installed copy have: a relative link to a file that build_ignore leaves out
(lab/README.md, say) is broken there. Links with a scheme (https:, mailto:) and links to an anchor of the same
file are not checked; the anchor of a relative link is ignored. Fenced code blocks and code spans are skipped.
Exit status 1 when a link is broken, each one printed as FILE:LINE: TARGET.
"""

from __future__ import annotations

import posixpath
import re
import sys
import tarfile

# [text](target) and ![alt](target), with an optional "title"; [label]: target reference definitions.
INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
CODE_SPAN = re.compile(r"(`+).*?\1")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def links(text: str):
    """Yield (line number, target) for each link outside code."""
    fence = None
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.lstrip()
        if fence:
            if stripped.startswith(fence):
                fence = None
            continue
        if stripped.startswith(("```", "~~~")):
            fence = stripped[:3]
            continue
        line = CODE_SPAN.sub("", line)
        for match in INLINE_LINK.finditer(line):
            yield number, match.group(1)
        match = REFERENCE.match(line)
        if match:
            yield number, match.group(1)


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    broken = []
    checked = 0
    with tarfile.open(sys.argv[1]) as tar:
        members = {posixpath.normpath(m.name): m for m in tar.getmembers()}
        for name, member in sorted(members.items()):
            if not (member.isfile() and name.endswith(".md")):
                continue
            text = tar.extractfile(member).read().decode("utf-8")
            for number, target in links(text):
                if SCHEME.match(target) or target.startswith("#"):
                    continue
                path = target.split("#", 1)[0].split("?", 1)[0]
                resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), path))
                checked += 1
                if resolved.startswith("../") or resolved not in members:
                    broken.append(f"{name}:{number}: {target}")
    for line in broken:
        print(f"broken link (not in the tarball): {line}", file=sys.stderr)
    print(f"check_artifact_links: {checked} relative links checked, {len(broken)} broken")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
