"""Helpers shared by the benchmarks: timing, the checkout's paths, and updating docs/performance.md."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COLLECTIONS = REPO / ".collections"
PERFORMANCE_DOC = REPO / "docs" / "performance.md"
BIN = Path(sys.executable).parent


def timed(function, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - start, result


def run_module_process(module: Path, arguments: dict, env: dict[str, str] | None = None) -> dict:
    """One module execution the way Ansible runs it on the controller: a new interpreter and an args file."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump({"ANSIBLE_MODULE_ARGS": arguments}, handle)
    try:
        completed = subprocess.run(
            [sys.executable, str(module), handle.name],
            env=dict(os.environ, PYTHONPATH=str(COLLECTIONS), **(env or {})),
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        os.unlink(handle.name)
    result = json.loads(completed.stdout)
    if result.get("failed"):
        raise SystemExit(f"{module.stem} failed: {result.get('msg')}")
    return result


def replace_doc_section(name: str, body: str) -> None:
    """Replace the text between `<!-- NAME:begin -->` and `<!-- NAME:end -->` in docs/performance.md."""
    text = PERFORMANCE_DOC.read_text()
    pattern = re.compile(rf"(<!-- {name}:begin -->\n).*?(<!-- {name}:end -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"docs/performance.md has no <!-- {name}:begin --> ... <!-- {name}:end --> section")
    PERFORMANCE_DOC.write_text(pattern.sub(lambda m: m.group(1) + body.rstrip() + "\n" + m.group(2), text))
