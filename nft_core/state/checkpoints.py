"""Checkpoint folders of a run: written complete or not at all, found, kept or pruned.

A checkpoint is `checkpoints/step_XXXXX/` holding the policy's EMA weights in its own format (what
`nft sample` and inference load), `resume.safetensors` (every tensor a resumed run needs: the trained
and old weights, the EMA, the optimizer's moments, the RNG states) and `state.json` (counters and the
small, non-tensor state). A run sharded with FSDP2 writes the sharded tensors into `resume-shards/`
instead, each rank its own shards (`nft_core.state.sharded`). Nothing is pickled.

Writing goes to `step_XXXXX.tmp/`; every file is fsynced, then the folder is renamed into place and the
parent folder fsynced, so a kill or a full disk at any point leaves the previous checkpoints as they
were and no folder named `step_XXXXX` that is incomplete.

`state.json` records the size and sha256 of every other file of the folder (`files`); `verify_checkpoint`
checks them, so a checkpoint damaged after it was written (flipped bits, a truncated copy) is refused
with the file named instead of loading garbage. Checkpoints written before digests were recorded load
unverified.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nft_core.errors import UserError

__all__ = [
    "FILES_KEY",
    "RESUME_FILE",
    "STATE_FILE",
    "CheckpointWriteError",
    "CorruptCheckpoint",
    "best_checkpoint",
    "checkpoint_folders",
    "file_digests",
    "latest_checkpoint",
    "prune_checkpoints",
    "read_resume_tensors",
    "read_state",
    "verify_checkpoint",
    "write_checkpoint",
]

RESUME_FILE = "resume.safetensors"
STATE_FILE = "state.json"
_NAME = re.compile(r"^step_(\d+)$")
_REPLACED = ".replaced"
FILES_KEY = "files"
"""The key of `state.json` that maps each other file of the folder to its `bytes` and `sha256`."""


class CheckpointWriteError(UserError):
    """A checkpoint could not be written (full disk, permissions); the earlier ones are intact."""


class CorruptCheckpoint(UserError):
    """A checkpoint file is missing, or its size or digest differs from what `state.json` records."""


def _fsync_path(path: Path) -> None:
    """fsync a file or a folder (a folder's fsync makes the names in it durable)."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() and hasattr(os, "O_DIRECTORY") else 0)
    try:
        fd = os.open(path, flags)
    except OSError:  # some file systems refuse to open folders; the data itself is synced
        return
    try:
        os.fsync(fd)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.EBADF):  # folders that cannot be synced
            raise
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    for path in sorted(folder.rglob("*")):
        _fsync_path(path)
    _fsync_path(folder)


def write_checkpoint(final: Path, fill: Callable[[Path], None]) -> Path:
    """Create the checkpoint folder `final` with `fill(staging)`; all or nothing.

    `fill` writes every file into the staging folder it is given. A failure (a full disk, a kill)
    leaves no `final` that is incomplete; when `final` exists already (the same step written again)
    it is replaced only once the new folder is complete.
    """
    staging = final.with_name(final.name + ".tmp")
    replaced = final.with_name(final.name + _REPLACED)
    try:
        for leftover in (staging, replaced if final.exists() else None):
            if leftover is not None and leftover.exists():  # a killed write's: not to be trusted
                shutil.rmtree(leftover)
        staging.mkdir(parents=True)
        fill(staging)
        _fsync_tree(staging)
        if final.exists():
            final.rename(replaced)
        staging.rename(final)
        _fsync_path(final.parent)
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        if replaced.exists() and not final.exists():
            replaced.rename(final)
        earlier = latest_checkpoint(final.parent.parent)
        kept = f"; the last complete checkpoint, {earlier}, is intact" if earlier else ""
        reason = "the disk is full" if error.errno == errno.ENOSPC else (error.strerror or str(error))
        raise CheckpointWriteError(f"writing checkpoint {final} failed: {reason}{kept}") from None
    shutil.rmtree(replaced, ignore_errors=True)
    return final


def read_state(folder: Path) -> dict[str, Any]:
    """The `state.json` of a checkpoint folder (a UserError naming the folder when it is not one)."""
    path = Path(folder) / STATE_FILE
    if not path.is_file():
        raise UserError(f"{folder}: not a checkpoint folder (no {STATE_FILE})")
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(state, dict):
        raise UserError(f"{path}: expected a JSON object")
    return state


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def file_digests(folder: Path) -> dict[str, dict[str, Any]]:
    """`{relative path: {"bytes": size, "sha256": hex}}` of every file under a checkpoint folder but
    `state.json` (which records them)."""
    folder = Path(folder)
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path != folder / STATE_FILE:
            name = path.relative_to(folder).as_posix()
            found[name] = {"bytes": path.stat().st_size, "sha256": _sha256(path)}
    return found


_verified: dict[str, tuple[Any, ...]] = {}
"""Folders verified in this process, with the stat of each file then: a second check of an unchanged
folder (the CLI's, then the trainer's) does not read it again."""


def _stamp(folder: Path, names: list[str]) -> tuple[Any, ...]:
    stats = [(folder / name).stat() for name in [STATE_FILE, *names]]
    return tuple((s.st_ino, s.st_size, s.st_mtime_ns) for s in stats)


def verify_checkpoint(folder: Path) -> bool:
    """Check every file `state.json` records (present, its size, its sha256); a `CorruptCheckpoint` naming
    the first that differs. False for a checkpoint written before digests were recorded (not verified),
    True for a verified one."""
    folder = Path(folder)
    recorded = read_state(folder).get(FILES_KEY)
    if recorded is None:
        return False
    if not isinstance(recorded, dict):
        raise CorruptCheckpoint(f"{folder / STATE_FILE}: `{FILES_KEY}` is not a table of the folder's files")
    key = os.path.realpath(folder)
    names = sorted(recorded)
    for name in names:
        path = folder / name
        if not path.is_file():
            raise CorruptCheckpoint(f"{path}: missing from the checkpoint (its state.json records it)")
    try:
        stamp = _stamp(folder, names)
        if _verified.get(key) != stamp:
            _check_files(folder, recorded)
    except OSError as error:  # e.g. pruned by the run that wrote it while being read
        raise CorruptCheckpoint(f"{error.filename}: cannot be read ({error.strerror or error})") from None
    _verified[key] = stamp
    return True


def _check_files(folder: Path, recorded: dict[str, Any]) -> None:
    for name in sorted(recorded):
        path, entry = folder / name, recorded[name]
        if not isinstance(entry, dict):
            raise CorruptCheckpoint(f"{folder / STATE_FILE}: `{FILES_KEY}.{name}` is not a table")
        size = path.stat().st_size
        if size != entry.get("bytes"):
            raise CorruptCheckpoint(
                f"{path}: {size} bytes, but its state.json records {entry.get('bytes')} (truncated or "
                "changed after the checkpoint was written)"
            )
        if _sha256(path) != entry.get("sha256"):
            raise CorruptCheckpoint(
                f"{path}: corrupt (its sha256 differs from the one its checkpoint's state.json records)"
            )


def read_resume_tensors(folder: Path) -> dict[str, Any]:
    """Every tensor of a checkpoint's resume state, whole: `resume.safetensors` and, for a run sharded
    with FSDP2, the shards of its `resume-shards/` folder put together (in this process alone)."""
    from safetensors.torch import load_file

    from nft_core.state.sharded import SHARDS_FOLDER, load_whole

    tensors: dict[str, Any] = load_file(str(Path(folder) / RESUME_FILE))
    shards = Path(folder) / SHARDS_FOLDER
    if shards.is_dir():
        tensors.update(load_whole(shards))
    return tensors


def checkpoint_folders(run_dir: Path) -> list[Path]:
    """The complete checkpoint folders of a run, oldest step first.

    Staging folders (`.tmp`) never count; a `step_X.replaced` folder counts only when a kill between
    the two renames of a rewrite left it without its `step_X`.
    """
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found: dict[int, Path] = {}
    for path in root.iterdir():
        name = path.name.removesuffix(_REPLACED)
        match = _NAME.match(name)
        if not match or not path.is_dir() or not (path / STATE_FILE).is_file():
            continue
        step = int(match.group(1))
        if path.name == name or step not in found:
            found[step] = path
    return [found[step] for step in sorted(found)]


def latest_checkpoint(run_dir: Path, resumable: bool = False) -> Path | None:
    """The newest complete checkpoint of a run (with `resumable`: one that holds the resume state)."""
    folders = checkpoint_folders(run_dir)
    if resumable:
        folders = [folder for folder in folders if (folder / RESUME_FILE).is_file()]
    return folders[-1] if folders else None


def best_checkpoint(run_dir: Path) -> Path | None:
    """The complete checkpoint whose `state.json` holds the highest `eval_score` (the `log.best_by`
    reward's evaluation at its epoch); the newest of equals. None when no checkpoint was scored."""
    scored = [(read_state(f).get("eval_score"), f) for f in checkpoint_folders(run_dir)]
    scored = [(score, f) for score, f in scored if isinstance(score, int | float) and score == score]
    return max(scored, key=lambda pair: pair[0])[1] if scored else None


def prune_checkpoints(run_dir: Path, keep_last: int, keep_best: bool) -> list[Path]:
    """Delete all but the newest `keep_last` checkpoints (0: keep all) and, with `keep_best`, the best one
    (`best_checkpoint`); a checkpoint written only to hold a best evaluation (`written_for = "best"`) goes
    once a better one exists. Returns the deleted folders."""
    folders = checkpoint_folders(run_dir)
    best = best_checkpoint(run_dir) if keep_best else None
    keep = set(folders if keep_last <= 0 else folders[-keep_last:])
    keep -= {f for f in folders if f != best and read_state(f).get("written_for") == "best"}
    if best is not None:
        keep.add(best)
    deleted = [folder for folder in folders if folder not in keep]
    for folder in deleted:
        shutil.rmtree(folder)
    return deleted
