"""The online loop: collect with the old policy -> score -> advantages -> update -> refresh -> eval.

Glue only. The math lives in objective.py, advantages.py, normalization.py, schedules.py, ema.py and
plan.py; prompt drawing in prompts.py; metric records in metrics.py. `Trainer.run` reads like one
epoch's data flow (docs/core.md).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w
import torch
from safetensors.torch import load_file, save
from tqdm import tqdm

from nft_core import registry
from nft_core.advantages import advantage_step
from nft_core.checkpoints import (
    RESUME_FILE,
    STATE_FILE,
    CheckpointWriteError,
    latest_checkpoint,
    prune_checkpoints,
    read_state,
    write_checkpoint,
)
from nft_core.config import RunConfig, resolved_config
from nft_core.distributed import Distributed, full_tensor, shard_like
from nft_core.ema import ParameterEMA
from nft_core.errors import ConfigError, UserError
from nft_core.evaluation import EvalResult, evaluate
from nft_core.io import append_jsonl, atomic_write_bytes, atomic_write_json, atomic_write_text
from nft_core.machine import machine_facts
from nft_core.metrics import eval_record, train_record
from nft_core.normalization import make_normalizer
from nft_core.overlap import OverlappedScoring
from nft_core.plan import Geometry, MicroBatch, training_plan
from nft_core.precision import autocast, resolve_precision
from nft_core.preflight import check_objective, train_geometry
from nft_core.prompts import PromptDrawer, load_prompts
from nft_core.protocols import Objective, Policy, Solver
from nft_core.resume import (
    global_rng_state,
    load_optimizer_state,
    optimizer_state,
    python_rng_from_json,
    restore_global_rng,
    seed_everything,
)
from nft_core.reward_set import RewardSet, RewardSetOutput, RewardTerm
from nft_core.sampling import keyed_noise, keyed_seed, sample_latents
from nft_core.schedules import lr_factor, parse_decay_schedule
from nft_core.sharded_state import SHARDS_FOLDER, is_sharded, load_sharded, save_sharded, sharded_layout
from nft_core.tracking import Trackers
from nft_core.types import Cond, Samples, Trajectory, index_cond
from nft_core.visuals import plot_curves, sample_grid, spread_over_tags, total_reward_legend

__all__ = ["Geometry", "TrainState", "Trainer", "unique_run_dir"]

COLLECTION_STREAM, TRAINING_STREAM, SOLVER_STREAM, PATH_STREAM = 1, 2, 3, 4
"""Keys of the noise streams: collection noise per sample, training noise per sample and visit, and a
stochastic solver's draws per rank."""

PHASES = ("sampling", "reward", "training")
"""The timed phases of an epoch (`seconds/<phase>` in metrics.jsonl); training includes the refresh."""


@dataclass
class TrainState:
    """Counters that survive an epoch."""

    epoch: int = 0
    global_step: int = 0
    train_seconds: float = 0.0
    seconds: dict[str, float] = field(default_factory=dict)
    """Wall seconds per phase over the run: sampling, reward, training, evaluation."""
    records: list[dict[str, Any]] = field(default_factory=list)


def _silent(*_: Any) -> None:
    """The echo of ranks other than 0: one rank prints."""


def _from_a_collective(error: BaseException) -> bool:
    """Whether `error` is a communication failure (a peer died or timed out), not a bug of the run."""
    if isinstance(error, getattr(torch.distributed, "DistError", ())):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and any(
        mark in text for mark in ("gloo", "Timed out", "Connection closed by peer", "NCCL")
    )


def unique_run_dir(root: Path, name: str) -> Path:
    """`root/name`, or `root/name-2`, ... when it exists: a run never overwrites another."""
    candidate, index = root / name, 2
    while candidate.exists():
        candidate, index = root / f"{name}-{index}", index + 1
    return candidate


class Trainer:
    """Builds the plugins named in a RunConfig and runs the loop, writing the run directory."""

    def __init__(self, config: RunConfig, run_dir: Path, echo=print) -> None:
        self.config = config
        self.dist = Distributed.from_environment(config.train.device, config.train.collective_timeout)
        self.run_dir = Path(self.dist.gather_objects(str(run_dir))[0])  # rank 0's: ranks may race
        run_dir = self.run_dir
        self.echo = echo if self.dist.is_main else _silent
        self.device = self.dist.device(torch.device(config.train.device))
        if config.train.threads:
            torch.set_num_threads(config.train.threads)
        seed_everything(config.train.seed)
        self.generator = torch.Generator().manual_seed(config.train.seed)
        """Draws the update's plan: the same stream on every rank, used for nothing else."""
        self.solver: Solver = registry.create(
            "solvers", config.solver.name, config.solver.options(), "solver"
        )
        self.eval_solver: Solver = registry.create(
            "solvers", config.eval.solver.name, config.eval.solver.options(), "eval.solver"
        )
        self.objective: Objective = registry.create(
            "objectives", config.objective.name, config.objective.options(), "objective"
        )
        self.decay = parse_decay_schedule(config.objective.old_decay)
        check_objective(config, self.objective)
        self.trajectories = getattr(self.objective, "collects", "clean") == "trajectory"
        """Whether the objective trains on sampling paths (FlowGRPO) rather than clean samples."""
        terms = [self._reward_term(index) for index in range(len(config.reward))]
        if not any(terms):
            raise ConfigError("reward: none of the [[reward]] entries could be built; nothing to train on")
        self.rewards = RewardSet([term for term in terms if term is not None])
        self._scoring: OverlappedScoring | None = None
        self.scoring_seconds: dict[str, float] = {}
        self.eval_rewards = {
            watched.label: registry.create(
                "rewards", watched.name, watched.options, f"eval.reward[{index}].options"
            ).to(self.device)
            for index, watched in enumerate(config.eval.reward)
        }
        """Monitor rewards: scored at every evaluation, never trained on."""
        self.monitors = [
            registry.create("monitors", name, {}, f"log.monitors[{index}]")
            for index, name in enumerate(config.log.monitors)
        ]
        self.trackers = Trackers.build(
            config.log.trackers, config.log.tracker_options, self.echo, enabled=self.dist.is_main
        )
        """`[log] trackers`: each metrics record and sample grid also goes to them (rank 0)."""
        data = config.data
        self.prompts = PromptDrawer(
            load_prompts(data.prompts, "data.prompts"),
            data.prompts_per_epoch,
            config.train.seed,
            data.balance_tags,
            data.tag_weights,
            data.prompts,
        )
        eval_items = load_prompts(config.eval.prompts, "eval.prompts")
        self.eval_items = [item for item in eval_items for _ in range(config.eval.images_per_prompt)]
        # the policy last: a mistake anywhere else is found before the biggest model loads
        self.policy: Policy = registry.create(
            "policies", config.policy.name, config.policy.options(), "policy"
        )
        self.policy.to(self.device)
        if config.policy.init_from:
            self.warm_start(Path(config.policy.init_from))
        self.sharded = self._shard_policy()
        self.optimizer = torch.optim.AdamW(
            [p for _, p in self.policy.trainable_parameters()],
            lr=config.train.lr,
            betas=config.train.betas,
            eps=config.train.adam_eps,
            weight_decay=config.train.weight_decay,
        )
        self.ema = ParameterEMA(self.policy.trainable_parameters(), decay=config.objective.ema_decay)
        self.precision = resolve_precision(config.train.precision, self.device)
        # fp16 gradients underflow without a loss scale; disabled, the scaler passes everything through
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.train_times, self.geometry = train_geometry(config, self.solver, self.dist.world_size)
        total_steps = config.train.epochs * self.geometry.optimizer_steps
        train = config.train
        self.lr_schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(train.lr_schedule, step, total_steps, train.lr_final)
        )
        self.state = TrainState()
        self.summary: dict[str, Any] = {"run_dir": str(run_dir)}
        self.stop_signal: str | None = None
        """The name of the signal (SIGINT, SIGTERM) that asked the run to stop at the next epoch's end."""

    def _shard_policy(self) -> bool:
        """`train.parallel = "fsdp2"`: the policy's networks sharded over the ranks (FSDP2 `fully_shard`);
        whether they are."""
        if self.config.train.parallel != "fsdp2":
            return False
        shard = getattr(self.policy, "fully_shard", None)
        if shard is None:
            raise ConfigError(
                f"train.parallel: fsdp2, but the {self.config.policy.name} policy cannot shard its "
                "parameters (it has no fully_shard); use replicate"
            )
        if not self.dist.enabled:
            return False  # one process: nothing to shard over
        from torch.distributed.device_mesh import init_device_mesh

        ranks = self.dist.world_size
        group = self.config.train.shard_ranks or int(os.environ.get("LOCAL_WORLD_SIZE", ranks))
        if ranks % group:
            raise ConfigError(f"train.shard_ranks: {group} does not divide the {ranks} ranks")
        if group == ranks:
            mesh = init_device_mesh(self.device.type, (ranks,))
            self.echo(f"parallel: fsdp2, the policy's parameters sharded over {ranks} ranks")
        else:  # HSDP: shard inside each group, replicate across the groups
            mesh = init_device_mesh(
                self.device.type, (ranks // group, group), mesh_dim_names=("replicate", "shard")
            )
            self.echo(
                f"parallel: fsdp2, the policy's parameters sharded over {group} ranks and replicated "
                f"{ranks // group} times (hybrid)"
            )
        shard(mesh)
        return True

    def warm_start(self, source: Path) -> Path:
        """Load the weights of a run directory's newest checkpoint, or of one checkpoint folder, into the
        policy's current and old views (`policy.init_from`); the optimizer and counters start fresh."""
        if not source.is_dir():
            raise ConfigError(f"policy.init_from: {source} is not a folder (a run directory or a checkpoint)")
        folder = latest_checkpoint(source) if (source / "checkpoints").is_dir() else source
        if folder is None:
            raise ConfigError(f"policy.init_from: {source} holds no complete checkpoint")
        self.policy.load_trainable(str(folder))
        self.echo(f"warm start: weights from {folder}")
        return folder

    def _precision_reason(self) -> str:
        where = (
            f"{self.device.type} ({torch.backends.cpu.get_cpu_capability()})"
            if self.device.type == "cpu"
            else str(self.device)
        )
        native = "computes bf16 natively" if self.precision == "bf16" else "has no native bf16"
        return f" (train.precision = auto: {where} {native})"

    def _reward_term(self, index: int) -> RewardTerm | None:
        """The `[[reward]]` entry `index` built; None (and a warning) for an optional one that fails to."""
        reward_config = self.config.reward[index]
        try:
            reward = registry.create(
                "rewards", reward_config.name, reward_config.options, f"reward[{index}].options"
            )
        except Exception as error:
            if reward_config.required:
                raise
            self.echo(f"warning: reward[{index}] {reward_config.label!r} (required = false) skipped: {error}")
            return None
        normalizer = make_normalizer(
            reward_config.normalize,
            scale=reward_config.scale,
            shift=reward_config.shift,
            momentum=reward_config.momentum,
        )
        label, weight, required = reward_config.label, reward_config.weight, reward_config.required
        return RewardTerm(label, reward.to(self.device), weight, normalizer, required)

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast of the policy's forward passes in collection and update to `self.precision`."""
        return autocast(self.precision, self.device)

    # ---- the stages of one epoch -------------------------------------------------------------------
    @torch.no_grad()
    def collect(self) -> Samples:
        """K samples per prompt from the old policy with the collection solver (CFG off).

        Each rank samples its share of the epoch; the noise of sample `i` comes from a stream keyed by
        (seed, epoch, i), so the samples do not depend on the number of ranks (with a deterministic
        solver). The latents are gathered: every rank holds all of them, and its own images.
        """
        per_prompt, epoch, seed = self.config.data.images_per_prompt, self.state.epoch, self.config.train.seed
        items = [item for item in self.prompts.draw(epoch) for _ in range(per_prompt)]
        prompts = [item.prompt for item in items]
        group_ids = torch.arange(len(items)) // per_prompt
        cond = self.policy.encode_prompts(prompts)
        mine = self.dist.share(len(items))
        noise = keyed_noise(mine, tuple(self.policy.latent_shape), seed, COLLECTION_STREAM, epoch)
        my_cond = index_cond(cond, slice(mine.start, mine.stop))
        trajectory = None
        if self.trajectories:
            trajectory = self._collect_paths(mine, my_cond, noise.to(self.device))
            latents = trajectory.states[:, -1]
        metadata = [item.metadata for item in items]
        scoring = OverlappedScoring(self.rewards, self.config.train.overlap_scoring, self.device)
        my_prompts, my_metadata = prompts[mine.start : mine.stop], metadata[mine.start : mine.stop]
        size = self.config.train.sample_batch_size
        if trajectory is not None:
            images = self.policy.decode(latents).cpu()
            for start in range(0, len(mine), size):
                rows = slice(start, start + size)
                scoring.submit(images[rows], my_prompts[rows], my_metadata[rows])
        else:
            # a stochastic solver's own draws: rank-dependent, and apart from the plan's shared generator
            sde = torch.Generator().manual_seed(keyed_seed(seed, SOLVER_STREAM, epoch, self.dist.rank))
            noise = noise.to(self.device)
            latent_parts, image_parts = [], []
            for start in range(0, len(mine), size):  # each micro-batch is scored while the next is sampled
                rows = slice(start, start + size)
                with self.autocast():
                    part = sample_latents(
                        self.policy,
                        self.solver,
                        index_cond(my_cond, rows),
                        noise[rows],
                        view="old",
                        generator=sde,
                        batch_size=size,
                    )
                latent_parts.append(part)
                image_parts.append(self.policy.decode(part).cpu())
                scoring.submit(image_parts[-1], my_prompts[rows], my_metadata[rows])
            latents, images = torch.cat(latent_parts), torch.cat(image_parts)
        self._scoring = scoring
        latents = self.dist.gather(latents)
        if trajectory is not None:  # every rank trains on every path's steps
            trajectory = Trajectory(
                self.dist.gather(trajectory.states), self.dist.gather(trajectory.log_probs), trajectory.times
            )
        return Samples(
            latents,
            images,
            prompts,
            metadata,
            cond,
            group_ids,
            local=slice(mine.start, mine.stop),
            trajectory=trajectory,
        )

    def _collect_paths(self, mine: range, cond: Cond, noise: torch.Tensor) -> Trajectory:
        """A trajectory objective's paths for this rank's samples, in sampling batches; each step's noise
        is keyed by (seed, epoch, sample), so the paths do not depend on the batches or the ranks."""
        times = torch.cat([self.train_times, self.train_times.new_zeros(1)]).to(self.device)
        shape = (len(times) - 1, *self.policy.latent_shape)
        step_noise = keyed_noise(mine, shape, self.config.train.seed, PATH_STREAM, self.state.epoch)
        parts = []
        size = self.config.train.sample_batch_size
        for start in range(0, len(mine), size):
            rows = slice(start, start + size)
            with self.autocast():
                parts.append(
                    self.objective.sample(
                        self.policy,
                        noise[rows],
                        index_cond(cond, rows),
                        times,
                        step_noise[rows].to(self.device),
                    )
                )
        return Trajectory(
            torch.cat([p.states for p in parts]), torch.cat([p.log_probs for p in parts]), parts[0].times
        )

    def score(self, samples: Samples) -> RewardSetOutput:
        """Every reward on this rank's images; the raw scores gathered, then normalized and combined over
        the whole epoch on every rank (so prompt groups and running statistics see every sample)."""
        local = samples.local
        assert local is not None
        scoring, self._scoring = self._scoring, None
        if scoring is None:  # samples that `collect` did not just score
            scoring = OverlappedScoring(self.rewards, overlap=False)
            scoring.submit(samples.images, samples.prompts[local], samples.metadata[local])
        raw = scoring.result()
        self.scoring_seconds = {
            "seconds/scoring": scoring.seconds_scoring,
            "seconds/scoring_unhidden": scoring.seconds_unhidden,
        }
        if self.dist.enabled:
            raw.raw = {name: self.dist.gather(scores) for name, scores in raw.raw.items()}
            raw.details = {
                name: {key: self.dist.gather(value) for key, value in details.items()}
                for name, details in raw.details.items()
            }
            failures = self.dist.gather_objects((raw.failed_calls, raw.errors))
            raw.failed_calls = {k: v for calls, _ in failures for k, v in calls.items()}
            raw.errors = {k: v for _, errors in failures for k, v in errors.items()}
        return self.rewards.normalize(raw, samples.group_ids)

    def advantages(self, samples: Samples, rewards: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """`(optimality, advantage statistics)` of the samples' total rewards `[N]` (`advantage_step` with
        `[objective]`'s mode)."""
        objective = self.config.objective
        return advantage_step(
            rewards, samples.group_ids, self.objective.adv_clip, objective.adv_mode, objective.global_std
        )

    def plan(self, samples: Samples) -> list[list[MicroBatch]]:
        """This epoch's micro-batches per optimizer step (`training_plan`, drawn from the generator); a
        micro-batch holds `batch_size` samples per rank."""
        geometry = self.geometry
        return training_plan(
            len(samples),
            self.train_times.to(self.device, samples.latents.dtype),
            geometry.trained_times,
            geometry.global_micro_batch,
            # fewer samples than planned (some had no valid score) can leave fewer micro-batches
            min(geometry.optimizer_steps, geometry.micro_batches_for(len(samples))),
            geometry.inner_epochs,
            self.generator,
        )

    def update(self, samples: Samples, optimality: torch.Tensor) -> dict[str, float]:
        """The objective over `plan`'s micro-batches, one optimizer step per chunk of them."""
        steps = self.plan(samples)
        micro_batches = sum(len(step) for step in steps)
        optimality = optimality.to(self.device)
        totals: dict[str, float] = {"skipped_steps": 0}
        self.policy.train(True)
        bar = tqdm(total=micro_batches, desc="train", leave=False, disable=not self._progress)
        shape, seed, epoch = tuple(self.policy.latent_shape), self.config.train.seed, self.state.epoch
        stats_sum: dict[str, float] = {}
        assert samples.ids is not None
        for step in steps:
            self.optimizer.zero_grad(set_to_none=True)
            for batch in step:
                # this rank's part of the micro-batch; each sample's noise is keyed by (epoch, visit, id)
                part = torch.tensor_split(torch.arange(len(batch.index)), self.dist.world_size)[
                    self.dist.rank
                ]
                weight = 1.0
                if not len(part):
                    if not self.sharded:
                        bar.update(1)
                        continue
                    part, weight = torch.tensor([0]), 0.0  # FSDP2: every rank joins every forward
                rows = batch.index[part]
                noise = keyed_noise(
                    samples.ids[rows].tolist(), shape, seed, TRAINING_STREAM, epoch, batch.visit
                )
                with self.autocast():
                    loss, stats = self._micro_batch_loss(
                        samples, rows, batch.times[part.to(batch.times.device)], optimality, noise
                    )
                # the accumulated gradient, summed over ranks, is that of the step's mean loss
                # FSDP2 averages the ranks' gradients: scaled by the ranks, the sum again
                scale = weight * (self.dist.world_size if self.sharded else 1)
                self.scaler.scale(batch.weighted(loss, len(rows)) * scale).backward()
                share = weight * len(rows) / len(batch.index) / micro_batches
                for key, value in stats.items():
                    stats_sum[key] = stats_sum.get(key, 0.0) + value * share
                bar.update(1)
            parameters = [p for _, p in self.policy.trainable_parameters()]
            if not self.sharded:  # FSDP2 reduce-scatters the gradients in backward itself
                self._sum_gradients(parameters)
            self.scaler.unscale_(self.optimizer)
            norm = torch.nn.utils.clip_grad_norm_(parameters, self.config.train.grad_clip)
            grad_norm = float(full_tensor(norm))
            if math.isfinite(grad_norm):
                totals["grad_norm"] = totals.get("grad_norm", 0.0) + grad_norm / len(steps)
                self.scaler.step(self.optimizer)
            else:  # a NaN / inf loss or gradient: the step would write it into the weights
                totals["skipped_steps"] += 1
            self.scaler.update()  # fp16: a skipped step lowers the loss scale
            self.lr_schedule.step()
            self.state.global_step += 1
            self.ema.update(self.policy.trainable_parameters())
        bar.close()
        self.policy.train(False)
        for part in self.dist.gather_objects(stats_sum) if self.dist.enabled else [stats_sum]:
            for key, value in part.items():
                totals[key] = totals.get(key, 0.0) + value
        return totals

    def _micro_batch_loss(
        self,
        samples: Samples,
        rows: torch.Tensor,
        times: torch.Tensor,
        optimality: torch.Tensor,
        noise: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The objective on the samples `rows` at the training `times`: clean samples with their keyed
        noise, or (trajectory objectives) the path steps that start at those times."""
        index = rows.to(self.device)
        cond = index_cond(samples.cond, rows)
        if not self.trajectories:
            return self.objective.loss(
                self.policy, samples.latents[index], cond, times, optimality[index], noise.to(self.device)
            )
        path = samples.trajectory
        assert path is not None
        grid = path.times.to(times.device, times.dtype)
        steps = torch.searchsorted(-grid, -times.contiguous()).to(self.device)  # t_k is grid[k]
        states = path.states[index]
        arange = torch.arange(len(index), device=self.device)
        return self.objective.trajectory_loss(
            self.policy,
            states[arange, steps],
            states[arange, steps + 1],
            path.log_probs[index][arange, steps],
            steps,
            path.times.to(self.device),
            cond,
            optimality[index],
        )

    def _sum_gradients(self, parameters: list[torch.nn.Parameter]) -> None:
        """Sum the step's gradients over the ranks (each rank's loss was weighted by its share)."""
        if not self.dist.enabled:
            return
        for parameter in parameters:
            if parameter.grad is None:  # a rank whose part reached no sample still takes part
                parameter.grad = torch.zeros_like(parameter)
        self.dist.sum_([parameter.grad for parameter in parameters])

    def refresh_old(self) -> float:
        """`old <- d old + (1 - d) theta` with `d` the decay schedule at the current step; returns `d`."""
        decay = self.decay(self.state.global_step)
        self.policy.refresh_old(decay)
        return decay

    def run_eval(
        self, view: str = "current", guidance: float = 1.0, use_ema: bool = True, label: str = "eval"
    ) -> EvalResult:
        """The fixed paired evaluation (EMA weights swapped in by default)."""
        rewards = {term.name: term.reward for term in self.rewards.terms} | self.eval_rewards
        kwargs = dict(
            seed=self.config.eval.seed,
            guidance=guidance,
            view=view,
            device=self.device,
            batch_size=self.config.train.sample_batch_size,
            progress=f"eval {label}" if self._progress else None,
        )
        swap = (
            self.ema.swapped_in(self.policy.trainable_parameters()) if use_ema else contextlib.nullcontext()
        )
        with swap:
            return evaluate(self.policy, self.eval_solver, self.eval_items, rewards, dist=self.dist, **kwargs)

    # ---- run directory -------------------------------------------------------------------------------
    @property
    def _progress(self) -> bool:
        """Progress bars: where `log.progress` asks for them, on rank 0 only."""
        return self.config.log.progress and self.dist.is_main

    def write_grid(
        self,
        name: str,
        images: torch.Tensor,
        prompts: list[str],
        scores: torch.Tensor,
        tags: list[str | None] | None = None,
        label: str | None = None,
    ) -> None:
        """A grid of up to `log.grid_images` of this rank's images (rank 0 writes), each captioned with its
        prompt and score. Without `tags` (training): the first images, the score their total reward, which
        the grid's title spells out. With `tags` (evaluation): the tags take turns (`spread_over_tags`) and
        the score is the reward named `label`."""
        if not self.dist.is_main:
            return
        shown = min(len(prompts), images.shape[0])
        count = min(self.config.log.grid_images, shown)
        if tags is None:
            chosen = list(range(count))
            normalizers = {reward.label: reward.normalize for reward in self.config.reward}
            terms = [(term.name, term.weight, normalizers[term.name]) for term in self.rewards.terms]
            title = total_reward_legend(terms)
            captions = [f"{prompts[i]}\ntotal {scores[i]:.2f}" for i in chosen]
        else:
            chosen = spread_over_tags(tags[:shown], prompts[:shown], count)
            title = f"{name}: {count} of {len(prompts)} images, tags taking turns; score = {label} per image"
            texts = [f"[{tags[i]}] {prompts[i]}" if tags[i] else prompts[i] for i in chosen]
            captions = [f"{text}\n{label} {scores[i]:.2f}" for text, i in zip(texts, chosen, strict=True)]
        sample_grid(images[chosen], captions, self.run_dir / "samples" / f"{name}.png", title=title)
        self.trackers.image(self.state.epoch, self.run_dir / "samples" / f"{name}.png")

    def checkpoint(self, final: bool = False) -> Path:
        """`checkpoints/step_XXXXX/`: the EMA weights in the policy's format (what inference loads), the
        resume state (`resume.safetensors`; under FSDP2 its sharded tensors in `resume-shards/`, each rank
        writing its own shards) and `state.json`; complete or absent (`write_checkpoint`). Older
        checkpoints beyond `log.keep_checkpoints` are deleted after it."""
        folder = self.run_dir / "checkpoints" / f"step_{self.state.global_step:05d}"
        if not self.dist.is_main:
            if self.sharded:  # only a sharded rank has state of its own to write (its shards)
                tensors, _ = self.resume_state()
                self._write_shards_with_rank_zero({n: v for n, v in tensors.items() if is_sharded(v)})
            self.dist.barrier()  # every rank holds the same state: rank 0 writes it, the others wait
            return folder
        tensors, resume = self.resume_state()
        shards = {name: value for name, value in tensors.items() if is_sharded(value)}
        whole = {name: value for name, value in tensors.items() if name not in shards}
        state = {
            "epoch": self.state.epoch,
            "global_step": self.state.global_step,
            "weights": "ema",
            "policy": self.config.policy.name,
            "train_seconds": self.state.train_seconds,
            "final": final,
            "ranks": self.dist.world_size,
            "eval_score": self._eval_score_now(),
            "resume": resume,
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
            atomic_write_json(staging / STATE_FILE, state)  # last: a folder with it is whole

        try:
            path = write_checkpoint(folder, fill)
            prune_checkpoints(self.run_dir, self.config.log.keep_checkpoints, self.config.log.keep_best)
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

    def _eval_score_now(self) -> float | None:
        """The first reward's score of an evaluation made at this epoch, if one was (for `keep_best`)."""
        name = self.rewards.terms[0].name
        for record in reversed(self.state.records):
            if (
                record["kind"] == "eval"
                and record["epoch"] == self.state.epoch
                and record["label"] != "before"
            ):
                return record.get(f"eval/{name}/score")
        return None

    def resume_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Everything `restore` needs, as tensors (safetensors) and JSON: the trained and old weights, the
        EMA, the optimizer, lr schedule and loss scaler, every RNG, the prompt drawer, the normalizers,
        the counters, the metrics lines written so far and the summary of the run's start. Under FSDP2 the
        sharded tensors are this rank's DTensors (no collective)."""

        def cpu(value: torch.Tensor) -> torch.Tensor:  # a DTensor stays sharded (`checkpoint` writes it)
            return value.detach() if is_sharded(value) else value.detach().to("cpu").clone().contiguous()

        tensors = {f"current.{name}": cpu(p) for name, p in self.policy.trainable_parameters()}
        tensors.update({f"old.{name}": cpu(p) for name, p in self.policy.old_parameters()})
        ema = self.ema.state_dict()
        tensors.update({f"ema.{name}": cpu(value) for name, value in ema.pop("shadow").items()})
        optimizer_tensors, optimizer_meta = optimizer_state(self.optimizer)
        rng_tensors, rng_meta = global_rng_state()
        tensors.update(optimizer_tensors)
        tensors.update(rng_tensors)
        tensors["rng.trainer"] = self.generator.get_state()
        meta = {
            "epoch": self.state.epoch,
            "global_step": self.state.global_step,
            "train_seconds": self.state.train_seconds,
            "seconds": dict(self.state.seconds),
            "metrics_lines": len(self.state.records),
            "summary": self.summary,
            "ema": ema,
            "optimizer": optimizer_meta,
            "lr_schedule": self.lr_schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
            "normalizers": self.rewards.normalizer_state(),
            "prompts": list(self.prompts.rng.getstate()),
            "rng": rng_meta,
        }
        return tensors, meta

    def restore(self, folder: Path) -> dict[str, Any]:
        """Load a checkpoint's resume state (the inverse of `resume_state`); the run goes on after its
        epoch. `metrics.jsonl` is cut back to the lines written up to it. Returns its state.json."""
        state = read_state(folder)
        if not (folder / RESUME_FILE).is_file() or "resume" not in state:
            raise UserError(f"{folder}: holds no resume state (written by a version without resume)")
        meta = state["resume"]
        tensors = load_file(str(folder / RESUME_FILE))
        if (folder / SHARDS_FOLDER).is_dir():
            tensors.update(self._load_shards(folder / SHARDS_FOLDER))
        self._load_weights(tensors, "current", self.policy.trainable_parameters(), folder)
        self._load_weights(tensors, "old", self.policy.old_parameters(), folder)
        shadow = {name[len("ema.") :]: value for name, value in tensors.items() if name.startswith("ema.")}
        self.ema.load_state_dict({**meta["ema"], "shadow": shadow})
        load_optimizer_state(self.optimizer, tensors, meta["optimizer"])
        self.lr_schedule.load_state_dict(meta["lr_schedule"])
        if meta["scaler"]:
            self.scaler.load_state_dict(meta["scaler"])
        self.rewards.load_normalizer_state(meta["normalizers"])
        self.prompts.rng.setstate(python_rng_from_json(meta["prompts"]))
        restore_global_rng(tensors, meta["rng"])
        self.generator.set_state(tensors["rng.trainer"])
        records = self._metrics_until(meta["metrics_lines"])
        self.state = TrainState(
            meta["epoch"], meta["global_step"], meta["train_seconds"], dict(meta["seconds"]), records
        )
        self.summary = dict(meta["summary"], run_dir=str(self.run_dir))
        return state

    def _load_shards(self, shards: Path) -> dict[str, torch.Tensor]:
        """The sharded tensors of an FSDP2 checkpoint, resharded to this run's layout: DTensors like this
        run's parameters under FSDP2, whole tensors otherwise (any number of ranks)."""
        references = {f"current.{name}": p for name, p in self.policy.trainable_parameters()}
        references.update({f"old.{name}": p for name, p in self.policy.old_parameters()})
        references.update({f"ema.{name}": value for name, value in self.ema.shadow.items()})
        parameters = [p for group in self.optimizer.param_groups for p in group["params"]]
        templates = {}
        for name, (shape, dtype) in sharded_layout(shards).items():
            if name.startswith("optimizer."):
                index = int(name.split(".")[1])
                reference = parameters[index] if index < len(parameters) else None
            else:
                reference = references.get(name)
            if reference is None or reference.shape != shape:
                found = "not in this policy" if reference is None else f"shape {tuple(shape)}"
                raise UserError(f"{shards}: does not fit this policy ({name}: {found})")
            templates[name] = torch.empty_like(reference, dtype=dtype)
        load_sharded(templates, shards)
        return templates

    @torch.no_grad()
    def _load_weights(self, tensors: dict[str, torch.Tensor], prefix: str, named: Any, folder: Path) -> None:
        for name, parameter in named:
            saved = tensors.get(f"{prefix}.{name}")
            if saved is None or saved.shape != parameter.shape:
                found = "missing" if saved is None else f"shape {tuple(saved.shape)}"
                raise UserError(
                    f"{folder}: does not fit this policy ({prefix} weight {name}: {found}, want "
                    f"{tuple(parameter.shape)})"
                )
            parameter.copy_(shard_like(saved, parameter))

    def _metrics_until(self, lines: int) -> list[dict[str, Any]]:
        """The first `lines` records of metrics.jsonl, which is rewritten to hold only them."""
        path = self.run_dir / "metrics.jsonl"
        kept = path.read_text(encoding="utf-8").splitlines()[:lines] if path.is_file() else []
        if len(kept) < lines:
            self.echo(f"warning: {path} holds {len(kept)} of the {lines} lines the checkpoint saw")
        if self.dist.is_main:
            atomic_write_text(path, "".join(line + "\n" for line in kept))
        self.dist.barrier()
        return [json.loads(line) for line in kept]

    def log(self, record: dict[str, Any]) -> None:
        self.state.records.append(record)
        if self.dist.is_main:
            append_jsonl(self.run_dir / "metrics.jsonl", record)
            self.trackers.log(record)

    def evaluation(self, label: str, **kwargs: Any) -> EvalResult:
        """Run and print one evaluation; its wall time counts as the `evaluation` phase."""
        started = time.time()
        result = self.run_eval(label=label, **kwargs)
        self.state.seconds["evaluation"] = self.state.seconds.get("evaluation", 0.0) + time.time() - started
        for name, entry in result.scores.items():
            table = "  ".join(f"{tag} {value:.2f}" for tag, value in result.per_tag[name].items())
            failed = f"  (failed twice: {entry['error']})" if "error" in entry else ""
            self.echo(f"[eval {label}] {name}: {entry['score']:.3f}  {table}{failed}")
        return result

    def _log_eval(self, result: EvalResult, label: str) -> None:
        state = self.state
        self.log(eval_record(result, label, state.epoch, state.global_step, state.train_seconds))

    def _grid_from_eval(self, name: str, result: EvalResult) -> None:
        first = self.rewards.terms[0].name
        prompts, tags = [i.prompt for i in self.eval_items], [i.metadata.get("tag") for i in self.eval_items]
        self.write_grid(name, result.images, prompts, result.per_image[first], tags=tags, label=first)

    # ---- the loop ------------------------------------------------------------------------------------
    def start(self) -> None:
        """Write the resolved config, print the geometry, evaluate the base model (and with CFG)."""
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(
                self.run_dir / "config.resolved.toml", tomli_w.dumps(resolved_config(self.config))
            )
        self._announce()
        before = self.evaluation("before", use_ema=False)
        self.summary["eval_before"] = before.scores
        self.summary["eval_before_cfg"] = {
            f"{scale:g}": self.evaluation(f"before, CFG {scale:g}", use_ema=False, guidance=scale).scores
            for scale in self.config.eval.baseline_guidance
        }
        self._log_eval(before, "before")
        self._grid_from_eval("eval_before", before)

    def _announce(self) -> None:
        self.echo(f"run dir: {self.run_dir}")
        self.echo(f"geometry: {self.geometry.describe()}")
        chosen = "" if self.config.train.precision != "auto" else self._precision_reason()
        self.echo(f"precision: {self.precision}{chosen}")

    def after_epoch(self, samples: Samples, scored: RewardSetOutput, last: bool) -> Path | None:
        """The epoch's sample grid, periodic evaluation and checkpoint (the final ones come at the end);
        returns the checkpoint when one was written."""
        epoch, log = self.state.epoch, self.config.log
        if log.grid_every and epoch % log.grid_every == 0:
            self.write_grid(f"epoch_{epoch:04d}", samples.images, samples.prompts, scored.total)
        if self.config.eval.every and (epoch + 1) % self.config.eval.every == 0 and not last:
            self._log_eval(self.evaluation(f"epoch {epoch}"), f"epoch {epoch}")
            self._plot_curves()
        if log.checkpoint_every and (epoch + 1) % log.checkpoint_every == 0 and not last:
            return self.checkpoint()
        return None

    def write_summary(self, status: str, **fields: Any) -> dict[str, Any]:
        """`summary.json` with `status` (running, finished, interrupted, failed) and `fields` added."""
        self.summary.update(status=status, **fields)
        if self.dist.is_main:
            atomic_write_json(self.run_dir / "summary.json", self.summary)
        return self.summary

    def _plot_curves(self) -> None:
        if self.dist.is_main:
            plot_curves(self.state.records, self.run_dir / "curves.png")

    def finish(self, started: float) -> dict[str, Any]:
        """Evaluate the EMA weights, write the last checkpoint, the curves, `summary.json` and the report."""
        after = self.evaluation("after")
        self._log_eval(after, "after")
        self._grid_from_eval("eval_after", after)
        checkpoint = self.checkpoint(final=True)
        self._plot_curves()
        epochs = self.state.epoch + 1
        summary = self.write_summary(
            "finished",
            eval_after=after.scores,
            epochs=epochs,
            optimizer_steps=self.state.global_step,
            train_seconds=self.state.train_seconds,
            wall_seconds=time.time() - started,  # of this process (a resumed run: since resuming)
            seconds_per_phase=dict(self.state.seconds),
            seconds_per_epoch={phase: self.state.seconds.get(phase, 0.0) / epochs for phase in PHASES},
            precision=self.precision,
            machine=machine_facts(self.device),
            checkpoint=str(checkpoint),
        )
        if self.dist.is_main:  # a failure to write it is a warning line, never a failed run
            from nft_core.report import write_report_after_run

            write_report_after_run(self.run_dir, self.echo)
        return summary

    def train_epoch(self) -> tuple[Samples, RewardSetOutput, dict[str, float]]:
        """One epoch of `state.epoch`: collect, score, advantages, update, refresh; logs its record.

        Samples without a finite score from every reward leave the advantages and the update; an epoch
        with none left makes no update. Returns the samples, their scores and the wall seconds of each
        phase (`PHASES`).
        """
        state = self.state
        ticks = [time.time()]
        waited = self.dist.seconds["collectives"]
        samples = self.collect()
        ticks.append(time.time())
        scored = self.score(samples)
        ticks.append(time.time())
        valid = scored.valid
        assert valid is not None
        for name, error in scored.errors.items():
            consequence = ""
            if scored.failed_calls[name] > 1:
                optional = name in scored.left_out
                consequence = "; left out of this epoch's total" if optional else "; its samples are excluded"
            self.echo(
                f"warning: epoch {state.epoch}: reward {name!r} raised {scored.failed_calls[name]} time(s), "
                f"last: {error}{consequence}"
            )
        if valid.any():
            kept = samples if valid.all() else samples.subset(valid)
            optimality, advantages = self.advantages(kept, scored.total[valid])
            losses = self.update(kept, optimality)
            decay = self.refresh_old()
        else:
            self.echo(f"epoch {state.epoch}: no sample has a valid score from every reward; no update")
            advantages, losses, decay = {}, {"skipped_steps": 0, "skipped_epoch": 1}, math.nan
        ticks.append(time.time())
        state.train_seconds += ticks[-1] - ticks[0]
        phases = dict(zip(PHASES, (end - begin for begin, end in itertools.pairwise(ticks)), strict=True))
        for phase, seconds in phases.items():
            state.seconds[phase] = state.seconds.get(phase, 0.0) + seconds
        record = train_record(
            state.epoch, state.global_step, state.train_seconds, decay, phases, scored, advantages, losses
        )
        record["lr"] = self.optimizer.param_groups[0]["lr"]  # what the next step will use
        record.update(self.scoring_seconds)  # this rank's: the rewards' time, and what sampling did not hide
        record["samples/stored_bytes_per_sample"] = samples.stored_bytes_per_sample
        record.update(self.watch(samples))
        if self.dist.enabled:  # part of the phases above: gathers, the gradient sum, waiting for ranks
            record["seconds_collectives"] = self.dist.seconds["collectives"] - waited
            record["ranks"] = self.dist.world_size
        self.log(record)
        return samples, scored, phases

    def watch(self, samples: Samples) -> dict[str, float]:
        """`monitor/<name>/<key>` of every `[log] monitors` entry on this epoch's samples. Each rank
        measures its own images (a prompt group split over two ranks counts as two groups); the ranks'
        values are averaged, NaN ones (nothing to measure) left out."""
        if not self.monitors:
            return {}
        local = samples.local
        assert local is not None
        mine = {
            f"monitor/{monitor.name}/{key}": value
            for monitor in self.monitors
            for key, value in monitor(
                samples.images, samples.prompts[local], samples.group_ids[local], samples.metadata[local]
            ).items()
        }
        parts = self.dist.gather_objects(mine) if self.dist.enabled else [mine]
        watched = {}
        for key in mine:
            values = [part[key] for part in parts if not math.isnan(part[key])]
            watched[key] = sum(values) / len(values) if values else math.nan
        return watched

    @contextlib.contextmanager
    def _stop_at_epoch_end_on_signals(self) -> Iterator[None]:
        """SIGINT / SIGTERM (pre-emption) set `stop_signal`; the loop checkpoints and returns at the end
        of the epoch. A second SIGINT stops at once (KeyboardInterrupt)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(number: int, frame: Any) -> None:
            name = signal.Signals(number).name
            if self.stop_signal is not None and number == signal.SIGINT:
                raise KeyboardInterrupt
            self.stop_signal = name
            self.echo(f"{name}: stopping at the end of this epoch, with a checkpoint (Ctrl-C again: now)")

        previous = {number: signal.signal(number, handler) for number in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for number, old in previous.items():
                signal.signal(number, old)

    def run(self, resume: Path | None = None) -> dict[str, Any]:
        """Run `train.epochs` epochs (or fewer: `train.max_minutes` of training); returns the summary.

        With `resume` (a checkpoint folder of this run directory) the run goes on from that checkpoint
        as if it had never stopped. A run that fails writes `summary.json` with the error first.
        """
        started = time.time()
        saved = None
        if resume is not None:
            saved = self.restore(resume)  # outside the guard: a refused resume leaves the run as it was
            if self.dist.is_main:  # the changed budget or logging, if any
                config_file = self.run_dir / "config.resolved.toml"
                atomic_write_text(config_file, tomli_w.dumps(resolved_config(self.config)))
            self._announce()
            self.echo(f"resumed from {resume} (epoch {self.state.epoch}, step {self.state.global_step})")
        first_step = 0 if resume is None else self.state.epoch + 1
        self.trackers.start(self.run_dir, resolved_config(self.config), self.run_dir.name, first_step)
        with self._stop_at_epoch_end_on_signals():
            try:
                return self._loop(started, saved)
            except BaseException as error:
                self._record_failure(error)
                if self.dist.enabled and _from_a_collective(error):  # FSDP2's or the checkpoint's
                    raise self.dist.lost("outside the trainer's", error) from error
                raise
            finally:  # the status `finish`, `interrupted` or `_record_failure` wrote
                self.trackers.finish(str(self.summary.get("status", "finished")))

    def _loop(self, started: float, saved: dict[str, Any] | None) -> dict[str, Any]:
        config, state = self.config, self.state
        budget = config.train.max_minutes * 60 if config.train.max_minutes else math.inf
        if saved is None:
            self.start()
            first = 0
        else:
            first = state.epoch + 1
            if saved.get("final") and (first >= config.train.epochs or state.train_seconds >= budget):
                self.echo(f"{self.run_dir}: already finished (raise train.epochs to train on)")
                written = self.run_dir / "summary.json"
                return json.loads(written.read_text(encoding="utf-8")) if written.is_file() else self.summary
        self.write_summary("running")
        if first >= config.train.epochs or state.train_seconds >= budget:
            return self.finish(started)
        total = config.train.epochs
        epochs = tqdm(
            range(first, total), desc="epochs", initial=first, total=total, disable=not self._progress
        )
        for epoch in epochs:
            state.epoch = epoch
            samples, scored, _ = self.train_epoch()
            mean = float(scored.total.nanmean())
            epochs.set_postfix(reward=f"{mean:.3f}", minutes=f"{state.train_seconds / 60:.1f}")
            last = epoch == config.train.epochs - 1 or state.train_seconds >= budget
            written = self.after_epoch(samples, scored, last)
            if last:
                break
            if self.dist.any(self.stop_signal is not None):  # every rank stops at the same epoch
                stopped_by = self.stop_signal or "a signal to another rank"
                checkpoint = written or self.checkpoint()
                self.echo(f"{stopped_by}: stopped after epoch {epoch}; checkpoint {checkpoint}")
                return self.write_summary("interrupted", stopped_by=stopped_by, checkpoint=str(checkpoint))
        return self.finish(started)

    def _record_failure(self, error: BaseException) -> None:
        """`summary.json` with status `failed` (or `interrupted` for Ctrl-C), the error and the last
        complete checkpoint; never raises itself (the original error is what the user must see)."""
        try:
            if not self.run_dir.is_dir():
                return
            stopped = isinstance(error, KeyboardInterrupt)
            last = latest_checkpoint(self.run_dir, resumable=True)
            self.write_summary(
                "interrupted" if stopped else "failed",
                error=f"{type(error).__name__}: {error}"[:2000],
                epoch=self.state.epoch,
                last_checkpoint=None if last is None else str(last),
            )
        except Exception as problem:  # e.g. the disk is full: say so, keep the original error
            self.echo(f"warning: could not write {self.run_dir / 'summary.json'}: {problem}")
