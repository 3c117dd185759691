"""One owner of everything a run saves and restores, in the spirit of torchtitan's `CheckpointManager`.

Every holder of state (`nft_core.protocols.Stateful`: the trained and old weights, the EMA, the
optimizer, the lr schedule, the loss scaler, the random generators, the prompt drawer, the reward
normalizers, the counters and the outputs' position) is registered once under a name. `RunState` decides
when a checkpoint is due (`log.checkpoint_every`), writes it atomically (`checkpoints.write_checkpoint`),
keeps the newest `log.keep_checkpoints` and the best evaluation's (`log.keep_best`), writes a sharded
holder's tensors with `torch.distributed.checkpoint` and reshards them on restore. The trainer calls
`due`, `save` and `restore`, nothing else.

A checkpoint folder holds the policy's EMA weights in its own format (what inference loads),
`resume.safetensors` (each holder's tensors as `<holder>.<key>`), `resume-shards/` under FSDP2 (each
rank's shards) and `state.json` (counters, each holder's JSON values under `resume.<holder>`, and the
size and sha256 of every other file, which `restore` verifies).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from nft_core.config import RunConfig
from nft_core.distributed import Distributed
from nft_core.ema import ParameterEMA
from nft_core.errors import UserError
from nft_core.io import atomic_write_bytes, atomic_write_json
from nft_core.protocols import Policy, Stateful
from nft_core.state.checkpoints import (
    FILES_KEY,
    RESUME_FILE,
    STATE_FILE,
    CheckpointWriteError,
    file_digests,
    prune_checkpoints,
    read_state,
    verify_checkpoint,
    write_checkpoint,
)
from nft_core.state.holders import Reshardable
from nft_core.state.sharded import SHARDS_FOLDER, is_sharded, load_sharded, save_sharded, sharded_layout

__all__ = ["Counters", "RunState"]


@dataclass
class Counters:
    """Where a run is: its epoch, optimizer steps, training wall seconds and seconds per phase."""

    epoch: int = 0
    global_step: int = 0
    train_seconds: float = 0.0
    seconds: dict[str, float] = field(default_factory=dict)
    """Wall seconds per phase over the run: sampling, reward, training, evaluation."""

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "global_step": self.global_step,
            "train_seconds": self.train_seconds,
            "seconds": dict(self.seconds),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.global_step = int(state["epoch"]), int(state["global_step"])
        self.train_seconds, self.seconds = float(state["train_seconds"]), dict(state["seconds"])


class RunState:
    """Saves and restores a run's holders as checkpoint folders under `run_dir/checkpoints/`, at the
    config's `[log]` cadence and keeping rules.

    `weights` is the policy and the EMA whose weights the folder exports for inference; `best_score()`
    is the score an evaluation of the current epoch gave (for `keep_best`), None when there was none."""

    def __init__(
        self,
        config: RunConfig,
        run_dir: Path,
        dist: Distributed,
        counters: Counters,
        holders: dict[str, Stateful],
        weights: tuple[Policy, ParameterEMA],
        sharded: bool = False,
        best_score: Callable[[], float | None] = lambda: None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.dist = dist
        self.counters = counters
        self.holders = {**holders, "counters": counters}
        self.policy, self.ema = weights
        self.policy_name = config.policy.name
        log = config.log
        self.every, self.keep, self.keep_best = log.checkpoint_every, log.keep_checkpoints, log.keep_best
        self.sharded = sharded
        self.best_score = best_score

    def due(self, epoch: int, last: bool) -> bool:
        """Whether a periodic checkpoint is due after `epoch` (the final one is written by `finish`)."""
        return bool(self.every) and (epoch + 1) % self.every == 0 and not last

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Every holder's state: the tensors by `<holder>.<key>`, and the JSON values by holder."""
        tensors: dict[str, torch.Tensor] = {}
        meta: dict[str, dict[str, Any]] = {name: {} for name in self.holders}
        for name, holder in self.holders.items():
            for key, value in holder.state_dict().items():
                if isinstance(value, torch.Tensor):
                    tensors[f"{name}.{key}"] = value
                else:
                    meta[name][key] = value
        return tensors, meta

    def save(self, final: bool = False, written_for: str = "periodic") -> Path:
        """`checkpoints/step_XXXXX/`, complete or absent; older ones beyond `keep` pruned after it.

        Under FSDP2 every rank writes its own shards into rank 0's staging folder; otherwise rank 0 writes
        alone (every rank holds the same state) and the others wait. `written_for` (periodic, best, final,
        interrupted, diverged) goes into state.json: a folder written only for a best evaluation is pruned
        once a better one exists."""
        counters = self.counters
        folder = self.run_dir / "checkpoints" / f"step_{counters.global_step:05d}"
        if not self.dist.is_main:
            if self.sharded:  # only a sharded rank has state of its own to write (its shards)
                tensors, _ = self.state()
                self._write_shards_with_rank_zero({n: v for n, v in tensors.items() if is_sharded(v)})
            self.dist.barrier()
            return folder
        tensors, meta = self.state()
        shards = {name: value for name, value in tensors.items() if is_sharded(value)}
        whole = {name: value for name, value in tensors.items() if name not in shards}
        state = {
            "epoch": counters.epoch,
            "global_step": counters.global_step,
            "weights": "ema",
            "policy": self.policy_name,
            "train_seconds": counters.train_seconds,
            "final": final,
            "written_for": "final" if final else written_for,
            "ranks": self.dist.world_size,
            "eval_score": self.best_score(),
            "resume": meta,
        }
        staged = False

        def fill(staging: Path) -> None:
            nonlocal staged
            staged = True
            if self.sharded:  # the other ranks write their shards into the same staging folder
                self.dist.gather_objects(str(staging))
                save_sharded(shards, staging / SHARDS_FOLDER)
            with self.ema.swapped_in(self.policy.trainable_parameters()):
                self.policy.save_trainable(str(staging))
            atomic_write_bytes(staging / RESUME_FILE, save(whole))
            state[FILES_KEY] = file_digests(staging)  # every rank's shards are written by now
            atomic_write_json(staging / STATE_FILE, state)  # last: a folder with it is whole

        try:
            path = write_checkpoint(folder, fill)
            prune_checkpoints(self.run_dir, self.keep, self.keep_best)
        except CheckpointWriteError:
            if self.sharded and not staged:  # tell the other ranks there is no folder to write into
                self.dist.gather_objects(None)
            raise
        finally:
            self.dist.barrier()
        return path

    def _write_shards_with_rank_zero(self, shards: dict[str, torch.Tensor]) -> None:
        """A rank other than 0 under FSDP2: its shards into rank 0's staging folder, then the gathers of
        the EMA export (in rank 0's order; rank 0 writes the whole weights)."""
        staging = self.dist.gather_objects(None)[0]
        if staging is None:
            return
        try:
            save_sharded(shards, Path(staging) / SHARDS_FOLDER)
        except OSError as error:
            rank = self.dist.rank
            raise CheckpointWriteError(f"writing the shards of rank {rank} failed: {error}") from None
        with tempfile.TemporaryDirectory() as scratch:
            with self.ema.swapped_in(self.policy.trainable_parameters()):
                self.policy.save_trainable(scratch)

    def restore(self, folder: Path, only: tuple[str, ...] | None = None) -> dict[str, Any]:
        """Load a checkpoint into every holder (the inverse of `save`; `only`: into those holders); the run
        goes on after its epoch. Returns its state.json. A checkpoint whose files differ from the digests
        its state.json records is refused (`CorruptCheckpoint`) before anything is loaded."""
        state = read_state(folder)
        if not (folder / RESUME_FILE).is_file() or "resume" not in state:
            raise UserError(f"{folder}: holds no resume state (written by a version without resume)")
        verified = verify_checkpoint(folder)
        meta = state["resume"]
        try:
            tensors = load_file(str(folder / RESUME_FILE))
        except (OSError, SafetensorError) as error:  # only an unverified (older) checkpoint gets here
            unverified = "" if verified else " (an older checkpoint without digests: it was not verified)"
            raise UserError(f"{folder / RESUME_FILE}: cannot be read: {error}{unverified}") from None
        if (folder / SHARDS_FOLDER).is_dir():
            tensors.update(self._load_shards(folder / SHARDS_FOLDER))
        for name, holder in self.holders.items():
            if only is not None and name not in only:
                continue
            if name not in meta:
                raise UserError(f"{folder}: holds no {name} state (written by an older version)")
            part = {
                key[len(name) + 1 :]: value for key, value in tensors.items() if key.startswith(f"{name}.")
            }
            part.update(meta.get(name, {}))
            try:
                holder.load_state_dict(part)
            except UserError as error:
                raise UserError(f"{folder}: {error}") from None
        return state

    def _load_shards(self, shards: Path) -> dict[str, torch.Tensor]:
        """The sharded tensors of an FSDP2 checkpoint, resharded to this run's layout: DTensors like this
        run's parameters under FSDP2, whole tensors otherwise (any number of ranks)."""
        templates = {}
        for name, (shape, dtype) in sharded_layout(shards).items():
            holder_name, _, key = name.partition(".")
            holder = self.holders.get(holder_name)
            reference = holder.template(key) if isinstance(holder, Reshardable) else None
            if reference is None or reference.shape != shape:
                found = "not in this policy" if reference is None else f"shape {tuple(shape)}"
                raise UserError(f"{shards}: does not fit this policy ({name}: {found})")
            templates[name] = torch.empty_like(reference, dtype=dtype)
        load_sharded(templates, shards)
        return templates
