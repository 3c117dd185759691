"""Every document the code, the examples and the docs cite exists in the repository."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CITED = re.compile(r"docs/([A-Za-z0-9_-]+\.md)|\]\(([A-Za-z0-9_-]+\.md)\)")
SKIPPED = {".git", ".venv", "build", "dist"}


def sources():
    for path in ROOT.rglob("*"):
        if path.suffix in (".py", ".md", ".toml") and not SKIPPED & set(path.relative_to(ROOT).parts):
            if "egg-info" not in str(path):
                yield path


def test_cited_docs_exist():
    missing = set()
    for path in sources():
        for match in CITED.finditer(path.read_text(encoding="utf-8", errors="replace")):
            name = match.group(1) or match.group(2)  # a docs path, or a relative markdown link
            if not (ROOT / "docs" / name).is_file() and not (path.parent / name).is_file():
                missing.add(f"{path.relative_to(ROOT)} cites {name}")
    assert sorted(missing) == []
