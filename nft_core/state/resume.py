"""Which checkpoint `nft run --resume` goes on from, and whether the config still describes that run:
the keys a resumed run may change and the one line naming every other key that differs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from nft_core.config import RunConfig, resolved_config
from nft_core.errors import ConfigError, UserError
from nft_core.state.checkpoints import (
    RESUME_FILE,
    CorruptCheckpoint,
    checkpoint_folders,
    read_state,
    verify_checkpoint,
)
from nft_core.state.run_dir import existing_run_dirs

__all__ = [
    "SAFE_TO_CHANGE",
    "check_same_run",
    "config_differences",
    "flatten_config",
    "newest_verified_checkpoint",
    "resolve_resume",
]

SAFE_TO_CHANGE = (
    "name",
    "train.epochs",
    "train.max_minutes",
    "train.threads",
    "train.sample_batch_size",
    "train.collective_timeout",
    "train.divergence_patience",
    "alarms.",
    "eval.every",
    "eval.baseline_guidance",
    "log.",
)
"""Config keys (a trailing dot: a whole table) a resumed run may change: the budget, the thread count,
the sampling batch, the collective timeout and what is logged. Changing `train.epochs` under a cosine
or linear lr schedule is refused: it would reshape the schedule half-way."""


def flatten_config(data: Any, prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": 1}}` -> `{"a.b": 1}`; arrays of tables are indexed (`reward[0].weight`), other
    arrays are values."""
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(flatten_config(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(data, list) and data and all(isinstance(item, dict) for item in data):
        out = {}
        for index, value in enumerate(data):
            out.update(flatten_config(value, f"{prefix}[{index}]"))
        return out
    return {prefix: data}


def config_differences(saved: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The dotted keys whose values differ between two resolved configs, minus `SAFE_TO_CHANGE`."""
    before, after = flatten_config(saved), flatten_config(new)
    scheduled = after.get("train.lr_schedule", "constant") != "constant"
    differing = []
    for key in sorted(before.keys() | after.keys()):
        if before.get(key) == after.get(key):
            continue
        safe = any(key == s or (s.endswith(".") and key.startswith(s)) for s in SAFE_TO_CHANGE)
        if safe and not (key == "train.epochs" and scheduled):
            continue
        differing.append(f"{key} ({_show(before.get(key))} -> {_show(after.get(key))})")
    return differing


def _show(value: Any) -> str:
    return "unset" if value is None else repr(value)


def newest_verified_checkpoint(run_dir: Path, echo: Callable[[str], Any] = print) -> Path | None:
    """The newest resumable checkpoint of a run whose files match the digests its state.json records
    (an older one without digests counts, unverified); one line through `echo` for each newer one that
    does not. None when the run has no resumable checkpoint; a `CorruptCheckpoint` when none verifies."""
    folders = [f for f in checkpoint_folders(run_dir) if (f / RESUME_FILE).is_file()]
    skipped: list[str] = []
    for folder in reversed(folders):
        try:
            verify_checkpoint(folder)
        except CorruptCheckpoint as error:
            skipped.append(str(error))
            continue
        if skipped:
            more = f" (and {len(skipped) - 1} more newer ones do not verify)" if len(skipped) > 1 else ""
            echo(f"warning: {skipped[0]}{more}; going on from {folder}, the newest checkpoint that verifies")
        return folder
    if skipped:
        raise CorruptCheckpoint(f"{run_dir}: no checkpoint verifies (the newest: {skipped[0]})")
    return None


def resolve_resume(
    spec: str, out: Path, name: str, echo: Callable[[str], Any] = print
) -> tuple[Path, Path] | None:
    """`(run_dir, checkpoint)` for `--resume spec`, or None for `auto` when nothing can be resumed.

    `spec` is a run directory (its newest resumable checkpoint that verifies), one checkpoint folder of
    it (refused when it does not verify), or `auto`: the newest run directory of this config's `name`
    under `out`, when it holds a resumable checkpoint (whether that run already finished is the
    trainer's to say). Falling back past a checkpoint that does not verify is said through `echo`.
    """
    if spec == "auto":
        runs = existing_run_dirs(out, name)
        if not runs:
            return None
        checkpoint = newest_verified_checkpoint(runs[-1], echo)
        return None if checkpoint is None else (runs[-1], checkpoint)
    path = Path(spec)
    if not path.is_dir():
        raise UserError(f"--resume {spec}: no such run directory (or give `auto`)")
    if (path / "state.json").is_file() and path.parent.name == "checkpoints":
        if not (path / RESUME_FILE).is_file():
            raise UserError(f"--resume {spec}: this checkpoint holds no resume state ({RESUME_FILE})")
        verify_checkpoint(path)
        return path.parent.parent, path
    checkpoint = newest_verified_checkpoint(path, echo)
    if checkpoint is None:
        if not (path / "config.resolved.toml").is_file():
            raise UserError(f"--resume {spec}: not a run directory (no config.resolved.toml)")
        raise UserError(f"--resume {spec}: the run has no complete checkpoint to resume from")
    return path, checkpoint


def check_same_run(run_dir: Path, config: RunConfig, checkpoint: Path | None = None, ranks: int = 1) -> None:
    """A ConfigError naming every key (outside `SAFE_TO_CHANGE`) in which `config` differs from the run
    directory's `config.resolved.toml`: a resumed run must be the run that stopped.

    On another number of `ranks` than the checkpoint's, `train.batch_size` (per rank) may change so
    that the global micro-batch, batch_size x ranks, stays what it was."""
    import tomllib

    path = run_dir / "config.resolved.toml"
    if not path.is_file():
        raise UserError(f"--resume {run_dir}: not a run directory (no config.resolved.toml)")
    saved = tomllib.loads(path.read_text(encoding="utf-8"))
    new = resolved_config(config)
    saved_ranks = int(read_state(checkpoint).get("ranks", 1)) if checkpoint is not None else 1
    saved_batch = saved.get("train", {}).get("batch_size")
    if isinstance(saved_batch, int) and saved_batch * saved_ranks == config.train.batch_size * ranks:
        new["train"]["batch_size"] = saved_batch  # the same global micro-batch on other ranks
    differing = config_differences(saved, new)
    if differing:
        shown = "; ".join(differing[:8]) + (f"; and {len(differing) - 8} more" if len(differing) > 8 else "")
        allowed = ", ".join(key + "*" if key.endswith(".") else key for key in SAFE_TO_CHANGE)
        raise ConfigError(
            f"--resume {run_dir}: the config differs from the run's in {shown}. Only these may change: "
            f"{allowed} (else start a new run, or warm-start one from this run with policy.init_from)"
        )
