# SPDX-License-Identifier: Apache-2.0
"""Every tracked Python module and shell script names its license (SPDX)."""

from __future__ import annotations

import pathlib
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[3]
TAG = "# SPDX-License-Identifier: Apache-2.0"
SKIP = {".git", ".venv", ".tox", "build", "dist", "__pycache__", ".mypy_cache", ".ruff_cache"}


def _sources() -> list[pathlib.Path]:
    try:
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                                check=True).stdout.decode().split("\0")
        paths = [ROOT / name for name in listed if name]
    except (OSError, subprocess.CalledProcessError):  # an unpacked sdist: walk it
        paths = [p for p in ROOT.rglob("*") if not SKIP & set(p.relative_to(ROOT).parts)]
    return [p for p in paths if p.is_file() and (
        p.suffix in (".py", ".sh") or p.read_bytes()[:2] == b"#!")]


def test_every_source_file_carries_the_spdx_header() -> None:
    sources = _sources()
    assert len(sources) > 100  # the listing worked
    missing = [str(p.relative_to(ROOT)) for p in sources
               if TAG not in p.read_text().splitlines()[:2]]
    assert missing == [], f"no '{TAG}' in the first two lines: {missing}"
