"""Run directories: `--out/<name>`, or `<name>-2`, `<name>-3`, ... so that a run never overwrites another,
and the lock that keeps one run per run directory.

A new run's directory is created atomically (`mkdir` fails when another run made that name first: the
later run takes the next suffix). A run holds an exclusive `fcntl.flock` on `run.lock` in its directory
for as long as it runs; the OS drops it when the process dies (even by `kill -9`), so a stale lock
never blocks a resume. The lock file holds the holder's pid, for the message that refuses a second run.
"""

from __future__ import annotations

import errno
import fcntl
import glob
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from nft_core.errors import UserError

__all__ = [
    "LOCK_FILE",
    "RunDirBusy",
    "create_run_dir",
    "discard_unused_run_dir",
    "existing_run_dirs",
    "lock_run_dir",
    "unique_run_dir",
]

LOCK_FILE = "run.lock"
"""The file in a run directory that its running process holds locked (`fcntl.flock`)."""

_held: dict[str, list[int]] = {}
"""The run directories this process holds locked: real path -> [file descriptor, holders]."""


class RunDirBusy(UserError):
    """Another process runs in this run directory."""


def unique_run_dir(root: Path, name: str) -> Path:
    """`root/name`, or `root/name-2`, ... when it exists (not created: see `create_run_dir`)."""
    candidate, index = root / name, 2
    while candidate.exists():
        candidate, index = root / f"{name}-{index}", index + 1
    return candidate


def create_run_dir(root: Path, name: str) -> Path:
    """Create and return `root/name`, or `root/name-2`, ... : the first that this call creates itself, so
    two runs started together never share one."""
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"--out {root}: cannot create it ({error.strerror or error})") from None
    candidate, index = root / name, 2
    while True:
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            candidate, index = root / f"{name}-{index}", index + 1
        except OSError as error:
            raise UserError(f"--out {root}: cannot create {candidate} ({error.strerror or error})") from None


def discard_unused_run_dir(run_dir: Path) -> None:
    """Remove a run directory `create_run_dir` made when nothing but its lock file was written in it (the
    run failed before it started): a failed start leaves no empty run behind."""
    try:
        if [path.name for path in run_dir.iterdir()] in ([], [LOCK_FILE]):
            (run_dir / LOCK_FILE).unlink(missing_ok=True)
            run_dir.rmdir()
    except OSError:  # another process wrote into it meanwhile, or it is gone: nothing to tidy
        pass


def existing_run_dirs(out: Path, name: str) -> list[Path]:
    """`out/name`, `out/name-2`, ... that exist, in the order `unique_run_dir` made them."""
    found = []
    if (out / name).is_dir():
        found.append((1, out / name))
    for path in out.glob(f"{glob.escape(name)}-*") if out.is_dir() else []:
        suffix = path.name[len(name) + 1 :]
        if suffix.isdigit() and path.is_dir():
            found.append((int(suffix), path))
    return [path for _, path in sorted(found)]


def _holder(lock: Path) -> str:
    try:
        pid = lock.read_text(encoding="utf-8").strip()
    except OSError:
        pid = ""
    return f"pid {pid}" if pid.isdigit() else "a process that has not written its pid yet"


@contextmanager
def lock_run_dir(run_dir: Path, enabled: bool = True) -> Iterator[None]:
    """Hold the run directory's exclusive lock (creating the folder) while the block runs; a `RunDirBusy`
    naming the other process when another holds it. Re-entrant within one process (the CLI takes it when
    it creates or resumes the folder, `Trainer.run` again); `enabled=False` (ranks other than 0) holds
    nothing."""
    if not enabled:
        yield
        return
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"{run_dir}: cannot create the run directory ({error.strerror or error})") from None
    key = os.path.realpath(run_dir)
    if key in _held:
        _held[key][1] += 1
    else:
        lock = run_dir / LOCK_FILE
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            reason = error.strerror or error
            raise UserError(f"{lock}: cannot create the run's lock file ({reason})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise UserError(f"{lock}: cannot lock it ({error.strerror or error})") from None
            raise RunDirBusy(
                f"{run_dir}: another run is using this run directory ({_holder(lock)}, see {lock}); wait for "
                "it to end or stop it, or start a new run"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        _held[key] = [fd, 1]
    try:
        yield
    finally:
        _held[key][1] -= 1
        if _held[key][1] == 0:
            fd = _held.pop(key)[0]
            with suppress(OSError):  # only tidiness: the pid of a run that ended
                os.ftruncate(fd, 0)
            os.close(fd)  # closing the last descriptor releases the lock
