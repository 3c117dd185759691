"""What a resumed run needs besides the weights: optimizer and RNG state as tensors plus JSON, the
checkpoint to resume from, and the config keys that may differ from the interrupted run's.

Everything here turns live objects into `(tensors, json)` pairs and back, so a checkpoint holds only
safetensors and JSON (no pickle).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nft_core.checkpoints import RESUME_FILE, latest_checkpoint, read_state
from nft_core.config import RunConfig, resolved_config
from nft_core.distributed import shard_like
from nft_core.errors import ConfigError, UserError
from nft_core.sharded_state import is_sharded

__all__ = [
    "SAFE_TO_CHANGE",
    "check_same_run",
    "config_differences",
    "flatten_config",
    "load_optimizer_state",
    "optimizer_state",
    "resolve_resume",
    "global_rng_state",
    "restore_global_rng",
    "seed_everything",
]

SAFE_TO_CHANGE = (
    "name",
    "train.epochs",
    "train.max_minutes",
    "train.threads",
    "train.sample_batch_size",
    "train.collective_timeout",
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


def optimizer_state(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """`optimizer.state_dict()` split into tensors (`optimizer.<param>.<key>`) and JSON."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                value = value.detach()  # a DTensor (FSDP2) stays sharded: the checkpoint writes its shards
                tensors[f"optimizer.{index}.{key}"] = value if is_sharded(value) else value.cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    groups = [
        {k: list(v) if isinstance(v, tuple) else v for k, v in g.items()} for g in state["param_groups"]
    ]
    return tensors, {"param_groups": groups, "scalars": scalars}


def load_optimizer_state(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> None:
    """Inverse of `optimizer_state` (the tensors are cast to the parameters' devices by torch)."""
    entries: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            entries.setdefault(int(index), {})[key] = value
    for index, values in meta.get("scalars", {}).items():
        entries.setdefault(int(index), {}).update(values)
    groups = [
        {k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in g.items()}
        for g in meta["param_groups"]
    ]
    optimizer.load_state_dict({"state": entries, "param_groups": groups})
    for group in optimizer.param_groups:  # sharded parameters (FSDP2): their moments sharded alike
        for parameter in group["params"]:
            state = optimizer.state.get(parameter, {})
            for key, value in state.items():
                if isinstance(value, torch.Tensor) and value.shape == parameter.shape and value.ndim:
                    state[key] = shard_like(value, parameter)


def seed_everything(seed: int) -> None:
    """Seed torch's, numpy's and Python's global generators (a plugin may draw from any of them)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def global_rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """torch's (CPU and CUDA), numpy's and Python's global random states."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{index}"] = state
    name, keys, position, has_gauss, cached = np.random.get_state()
    tensors["rng.numpy"] = torch.from_numpy(keys.astype(np.int64))
    meta = {
        "numpy": [name, int(position), int(has_gauss), float(cached)],
        "python": _python_state(random.getstate()),
    }
    return tensors, meta


def _python_state(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def python_rng_from_json(state: list) -> tuple:
    """A `random.Random.getstate()` tuple back from its JSON list."""
    version, internal, gauss = state
    return version, tuple(internal), gauss


def restore_global_rng(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Inverse of `global_rng_state`."""
    torch.set_rng_state(tensors["rng.torch"])
    cuda = sorted((k for k in tensors if k.startswith("rng.cuda.")), key=lambda k: int(k.rsplit(".", 1)[1]))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda])
    name, position, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, tensors["rng.numpy"].numpy().astype(np.uint32), position, has_gauss, cached))
    random.setstate(python_rng_from_json(meta["python"]))


def _run_dirs(out: Path, name: str) -> list[Path]:
    """`out/name`, `out/name-2`, ... that exist, in the order `unique_run_dir` made them."""
    found = []
    if (out / name).is_dir():
        found.append((1, out / name))
    for path in out.glob(f"{name}-*") if out.is_dir() else []:
        suffix = path.name[len(name) + 1 :]
        if suffix.isdigit() and path.is_dir():
            found.append((int(suffix), path))
    return [path for _, path in sorted(found)]


def resolve_resume(spec: str, out: Path, name: str) -> tuple[Path, Path] | None:
    """`(run_dir, checkpoint)` for `--resume spec`, or None for `auto` when nothing can be resumed.

    `spec` is a run directory (its newest resumable checkpoint), one checkpoint folder of it, or
    `auto`: the newest run directory of this config's `name` under `out`, when it holds a resumable
    checkpoint (whether that run already finished is the trainer's to say).
    """
    if spec == "auto":
        runs = _run_dirs(out, name)
        if not runs:
            return None
        checkpoint = latest_checkpoint(runs[-1], resumable=True)
        return None if checkpoint is None else (runs[-1], checkpoint)
    path = Path(spec)
    if not path.is_dir():
        raise UserError(f"--resume {spec}: no such run directory (or give `auto`)")
    if (path / "state.json").is_file() and path.parent.name == "checkpoints":
        if not (path / RESUME_FILE).is_file():
            raise UserError(f"--resume {spec}: this checkpoint holds no resume state ({RESUME_FILE})")
        read_state(path)
        return path.parent.parent, path
    checkpoint = latest_checkpoint(path, resumable=True)
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
