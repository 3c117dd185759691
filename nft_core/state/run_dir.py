"""Run directories: `--out/<name>`, or `<name>-2`, `<name>-3`, ... so that a run never overwrites another."""

from __future__ import annotations

from pathlib import Path

__all__ = ["existing_run_dirs", "unique_run_dir"]


def unique_run_dir(root: Path, name: str) -> Path:
    """`root/name`, or `root/name-2`, ... when it exists: a run never overwrites another."""
    candidate, index = root / name, 2
    while candidate.exists():
        candidate, index = root / f"{name}-{index}", index + 1
    return candidate


def existing_run_dirs(out: Path, name: str) -> list[Path]:
    """`out/name`, `out/name-2`, ... that exist, in the order `unique_run_dir` made them."""
    found = []
    if (out / name).is_dir():
        found.append((1, out / name))
    for path in out.glob(f"{name}-*") if out.is_dir() else []:
        suffix = path.name[len(name) + 1 :]
        if suffix.isdigit() and path.is_dir():
            found.append((int(suffix), path))
    return [path for _, path in sorted(found)]
