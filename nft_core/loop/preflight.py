"""The checks that are cheap, run by `nft validate` and by `nft run` before any model loads.

A config that validates (keys, types, plugin names and options) can still name a prompt file that is
not there, a device this machine lacks, a warm-start folder without a checkpoint, or a geometry that
does not fit the solver's grid; an SD3 user should learn that in a second, not after the model loaded.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from nft_core import registry
from nft_core.config import RunConfig
from nft_core.errors import ConfigError
from nft_core.loop.levers import build_levers, check_rollout
from nft_core.loop.prompts import PromptDrawer, load_prompts
from nft_core.plan import Geometry
from nft_core.protocols import Solver, TrajectoryObjective
from nft_core.schedules import parse_decay_schedule

__all__ = ["check_device", "preflight", "train_geometry", "training_times"]


def check_device(spec: str, field: str = "train.device") -> torch.device:
    """The torch device `spec` names, if this machine has it; else a ConfigError saying what it has."""
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        raise ConfigError(f"{field}: {spec!r} is not a torch device (e.g. cpu, cuda, cuda:1, mps)") from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise ConfigError(
                f"{field}: {spec!r}, but torch sees no CUDA GPU here (torch {torch.__version__}, {build}); "
                'use "cpu" or run on a GPU machine'
            )
        if (device.index or 0) >= count:
            raise ConfigError(
                f"{field}: {spec!r}, but this machine has {count} CUDA GPU(s): cuda:0 to cuda:{count - 1}"
            )
        return device
    if device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"{field}: {spec!r}, but MPS (Apple GPU) is not available here")
        return device
    raise ConfigError(f"{field}: {spec!r}: device type {device.type!r} is not supported (cpu, cuda, mps)")


def training_times(config: RunConfig, solver: Solver) -> torch.Tensor:
    """`[objective] times`: the collection solver's grid without its final 0, or the listed times."""
    times = config.objective.times
    if times == "collection":
        return solver.default_grid()[:-1]
    return torch.tensor(sorted(times, reverse=True), dtype=torch.float64)


def check_objective(config: RunConfig, objective: object) -> None:
    """What a trajectory objective (FlowGRPO) needs of the config: its steps are the collection grid's,
    and an on-policy one needs the old policy to be the current one when samples are collected."""
    if not isinstance(objective, TrajectoryObjective):
        return
    name, settings = config.objective.name, config.objective
    if settings.times != "collection":
        raise ConfigError(
            f'objective.times: `{name}` trains on the steps of its collection paths: must be "collection" '
            f"(got {settings.times!r})"
        )
    if objective.on_policy and parse_decay_schedule(settings.old_decay).constant != 0:
        raise ConfigError(
            f"objective.old_decay: `{name}` is on-policy (its ratio is against the policy that sampled): "
            f'set "none" (old = current at every collection; got {settings.old_decay!r})'
        )


def train_geometry(
    config: RunConfig, solver: Solver, ranks: int = 1, trained_by: object = None
) -> tuple[torch.Tensor, Geometry]:
    """The training times and the epoch's batch geometry on `ranks` data-parallel ranks; a ConfigError
    naming the keys when the numbers do not fit (more trained times than there are, more optimizer
    steps than micro-batches, samples that do not split evenly over the ranks). A trajectory objective
    (`trained_by`) says how many steps of each path it trains (FlowGRPO-Fast: its window)."""
    times = training_times(config, solver)
    objective, data, train = config.objective, config.data, config.train
    count, available = objective.trained_times, len(times)
    if count is None:
        count = max(1, math.floor(available * objective.timestep_fraction))
    elif count > available:
        raise ConfigError(
            f"objective.trained_times: {count} exceeds the {available} training times (allowed: 1 to "
            f"{available})"
        )
    if isinstance(trained_by, TrajectoryObjective):
        count = trained_by.trained_steps(available, count)
    geometry = Geometry(
        data.prompts_per_epoch,
        data.images_per_prompt,
        available,
        count,
        train.batch_size,
        train.inner_epochs,
        train.optimizer_steps_per_epoch,
        ranks,
    )
    if geometry.images % ranks:
        raise ConfigError(
            f"data.prompts_per_epoch x data.images_per_prompt: {geometry.images} samples do not split evenly "
            f"over {ranks} ranks (make it a multiple of {ranks})"
        )
    if geometry.optimizer_steps > geometry.micro_batches:
        raise ConfigError(
            f"train.optimizer_steps_per_epoch: {geometry.optimizer_steps} exceeds the "
            f"{geometry.micro_batches} micro-batches of an epoch ({geometry.describe()})"
        )
    return times, geometry


def _check_init_from(source: str) -> None:
    from nft_core.loop.setup import verify_init_from
    from nft_core.state.checkpoints import latest_checkpoint

    path = Path(source)
    if not path.is_dir():
        raise ConfigError(f"policy.init_from: {source} is not a folder (a run directory or a checkpoint)")
    folder = latest_checkpoint(path) if (path / "checkpoints").is_dir() else path
    if folder is None:
        raise ConfigError(f"policy.init_from: {source} holds no complete checkpoint")
    verify_init_from(folder)


def preflight(config: RunConfig, portable: bool = False, ranks: int = 1) -> Geometry:
    """Every check that needs no model: the solvers' grids against the trained times and the batch
    geometry and, unless `portable` (a config meant for another machine, whose data lives there), the
    device, the warm-start folder and the prompt sources (and tag weights). `ranks`: the data-parallel
    ranks the geometry must split over. Returns the geometry."""
    if not portable:
        check_device(config.train.device)
        if config.policy.init_from:
            _check_init_from(config.policy.init_from)
        data = config.data
        items = load_prompts(data.prompts, "data.prompts")
        PromptDrawer(items, data.prompts_per_epoch, 0, data.balance_tags, data.tag_weights, data.prompts)
        load_prompts(config.eval.prompts, "eval.prompts")
    solver = registry.create("solvers", config.solver.name, config.solver.options(), "solver")
    registry.create("solvers", config.eval.solver.name, config.eval.solver.options(), "eval.solver")
    objective = registry.create("objectives", config.objective.name, config.objective.options(), "objective")
    check_objective(config, objective)
    check_rollout(config, objective, build_levers(config), config.train.device)
    return train_geometry(config, solver, ranks, objective)[1]
