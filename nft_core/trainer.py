"""The online loop: collect with the old policy -> score -> advantages -> update -> refresh -> eval.

Glue only. The math lives in objective.py, advantages.py, normalization.py, schedules.py, ema.py and
plan.py; prompt drawing in prompts.py; metric records in metrics.py. `Trainer.run` reads like one
epoch's data flow (docs/core.md).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w
import torch
from tqdm import tqdm

from nft_core import registry
from nft_core.advantages import advantage_step
from nft_core.config import RunConfig, resolved_config
from nft_core.ema import ParameterEMA
from nft_core.errors import ConfigError
from nft_core.evaluation import EvalResult, evaluate
from nft_core.io import append_jsonl, atomic_write_json, atomic_write_text
from nft_core.machine import machine_facts
from nft_core.metrics import eval_record, train_record
from nft_core.normalization import make_normalizer
from nft_core.plan import Geometry, MicroBatch, training_plan
from nft_core.precision import autocast, resolve_precision
from nft_core.prompts import PromptDrawer, load_prompts
from nft_core.protocols import Objective, Policy, Solver
from nft_core.reward_set import RewardSet, RewardSetOutput, RewardTerm
from nft_core.sampling import sample_latents
from nft_core.schedules import lr_factor, parse_decay_schedule
from nft_core.types import Samples, index_cond
from nft_core.visuals import plot_curves, sample_grid

__all__ = ["Geometry", "TrainState", "Trainer", "unique_run_dir"]

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
        self.run_dir = run_dir
        self.echo = echo
        self.device = torch.device(config.train.device)
        if config.train.threads:
            torch.set_num_threads(config.train.threads)
        torch.manual_seed(config.train.seed)
        self.generator = torch.Generator().manual_seed(config.train.seed)
        self.policy: Policy = registry.create(
            "policies", config.policy.name, config.policy.options(), "policy"
        )
        self.policy.to(self.device)
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
        self.rewards = RewardSet([self._reward_term(index) for index in range(len(config.reward))])
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
        self.train_times = self._train_times()
        self.geometry = Geometry(
            data.prompts_per_epoch,
            data.images_per_prompt,
            len(self.train_times),
            self._trained_times(),
            config.train.batch_size,
            config.train.inner_epochs,
            config.train.optimizer_steps_per_epoch,
        )
        if self.geometry.optimizer_steps > self.geometry.micro_batches:
            raise ConfigError(
                f"train.optimizer_steps_per_epoch: {self.geometry.optimizer_steps} exceeds the "
                f"{self.geometry.micro_batches} micro-batches of an epoch ({self.geometry.describe()})"
            )
        total_steps = config.train.epochs * self.geometry.optimizer_steps
        train = config.train
        self.lr_schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(train.lr_schedule, step, total_steps, train.lr_final)
        )
        self.state = TrainState()

    def _precision_reason(self) -> str:
        where = (
            f"{self.device.type} ({torch.backends.cpu.get_cpu_capability()})"
            if self.device.type == "cpu"
            else str(self.device)
        )
        native = "computes bf16 natively" if self.precision == "bf16" else "has no native bf16"
        return f" (train.precision = auto: {where} {native})"

    def _reward_term(self, index: int) -> RewardTerm:
        reward_config = self.config.reward[index]
        reward = registry.create(
            "rewards", reward_config.name, reward_config.options, f"reward[{index}].options"
        )
        normalizer = make_normalizer(
            reward_config.normalize,
            scale=reward_config.scale,
            shift=reward_config.shift,
            momentum=reward_config.momentum,
        )
        return RewardTerm(reward_config.label, reward.to(self.device), reward_config.weight, normalizer)

    def _train_times(self) -> torch.Tensor:
        """`[objective] times`: the collection solver's grid without its final 0, or the listed times."""
        times = self.config.objective.times
        if times == "collection":
            return self.solver.default_grid()[:-1]
        return torch.tensor(sorted(times, reverse=True), dtype=torch.float64)

    def _trained_times(self) -> int:
        """`[objective] trained_times`, else `floor(timestep_fraction * T)` (at least 1) of the T times."""
        count, available = self.config.objective.trained_times, len(self.train_times)
        if count is None:
            return max(1, math.floor(available * self.config.objective.timestep_fraction))
        if count > available:
            raise ConfigError(
                f"objective.trained_times: {count} exceeds the {available} training times (allowed: 1 to "
                f"{available})"
            )
        return count

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast of the policy's forward passes in collection and update to `self.precision`."""
        return autocast(self.precision, self.device)

    # ---- the stages of one epoch -------------------------------------------------------------------
    @torch.no_grad()
    def collect(self) -> Samples:
        """K samples per prompt from the old policy with the collection solver (CFG off)."""
        per_prompt = self.config.data.images_per_prompt
        items = [item for item in self.prompts.draw(self.state.epoch) for _ in range(per_prompt)]
        prompts = [item.prompt for item in items]
        group_ids = torch.arange(len(items)) // per_prompt
        cond = self.policy.encode_prompts(prompts)
        noise = torch.randn((len(items), *self.policy.latent_shape), generator=self.generator).to(self.device)
        with self.autocast():
            latents = sample_latents(
                self.policy,
                self.solver,
                cond,
                noise,
                view="old",
                generator=self.generator,
                batch_size=self.config.train.sample_batch_size,
            )
        images = self.policy.decode(latents).cpu()
        return Samples(latents, images, prompts, [item.metadata for item in items], cond, group_ids)

    def advantages(self, samples: Samples, scored: RewardSetOutput) -> tuple[torch.Tensor, torch.Tensor]:
        """`(optimality, advantages)` of the scored samples (`advantage_step` with `[objective]`'s mode)."""
        objective = self.config.objective
        return advantage_step(
            scored.total, samples.group_ids, self.objective.adv_clip, objective.adv_mode, objective.global_std
        )

    def plan(self, samples: Samples) -> list[list[MicroBatch]]:
        """This epoch's micro-batches per optimizer step (`training_plan`, drawn from the generator)."""
        return training_plan(
            len(samples),
            self.train_times.to(self.device, samples.latents.dtype),
            self.geometry.trained_times,
            self.geometry.micro_batch,
            self.geometry.optimizer_steps,
            self.geometry.inner_epochs,
            self.generator,
        )

    def update(self, samples: Samples, optimality: torch.Tensor) -> dict[str, float]:
        """The objective over `plan`'s micro-batches, one optimizer step per chunk of them."""
        steps = self.plan(samples)
        micro_batches = sum(len(step) for step in steps)
        optimality = optimality.to(self.device)
        totals: dict[str, float] = {}
        self.policy.train(True)
        bar = tqdm(total=micro_batches, desc="train", leave=False, disable=not self.config.log.progress)
        for step in steps:
            self.optimizer.zero_grad(set_to_none=True)
            for batch in step:
                index = batch.index.to(self.device)
                with self.autocast():
                    loss, stats = self.objective.loss(
                        self.policy,
                        samples.latents[index],
                        index_cond(samples.cond, batch.index),
                        batch.times,
                        optimality[batch.index],
                        self.generator,
                    )
                self.scaler.scale(batch.weighted(loss)).backward()
                for key, value in stats.items():
                    totals[key] = totals.get(key, 0.0) + value / micro_batches
                bar.update(1)
            parameters = [p for _, p in self.policy.trainable_parameters()]
            self.scaler.unscale_(self.optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(parameters, self.config.train.grad_clip)
            totals["grad_norm"] = totals.get("grad_norm", 0.0) + float(grad_norm) / len(steps)
            self.scaler.step(self.optimizer)  # skipped (fp16 only) when the gradients overflowed
            self.scaler.update()
            self.lr_schedule.step()
            self.state.global_step += 1
            self.ema.update(self.policy.trainable_parameters())
        bar.close()
        self.policy.train(False)
        return totals

    def refresh_old(self) -> float:
        """`old <- d old + (1 - d) theta` with `d` the decay schedule at the current step; returns `d`."""
        decay = self.decay(self.state.global_step)
        self.policy.refresh_old(decay)
        return decay

    def run_eval(
        self, view: str = "current", guidance: float = 1.0, use_ema: bool = True, label: str = "eval"
    ) -> EvalResult:
        """The fixed paired evaluation (EMA weights swapped in by default)."""
        rewards = {term.name: term.reward for term in self.rewards.terms}
        kwargs = dict(
            seed=self.config.eval.seed,
            guidance=guidance,
            view=view,
            device=self.device,
            batch_size=self.config.train.sample_batch_size,
            progress=f"eval {label}" if self.config.log.progress else None,
        )
        swap = (
            self.ema.swapped_in(self.policy.trainable_parameters()) if use_ema else contextlib.nullcontext()
        )
        with swap:
            return evaluate(self.policy, self.eval_solver, self.eval_items, rewards, **kwargs)

    # ---- run directory -------------------------------------------------------------------------------
    def write_grid(self, name: str, images: torch.Tensor, prompts: list[str], scores: torch.Tensor) -> None:
        count = min(self.config.log.grid_images, len(prompts))
        captions = [f"{prompts[i]} | {scores[i]:.2f}" for i in range(count)]
        sample_grid(images[:count], captions, self.run_dir / "samples" / f"{name}.png")

    def checkpoint(self) -> Path:
        """EMA weights (what inference uses) + a small JSON state, written to a temp dir then renamed."""
        final = self.run_dir / "checkpoints" / f"step_{self.state.global_step:05d}"
        staging = final.with_name(final.name + ".tmp")
        if staging.exists():  # left by a write that was killed: its files are not to be trusted
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
        with self.ema.swapped_in(self.policy.trainable_parameters()):
            self.policy.save_trainable(str(staging))
        state = {
            "epoch": self.state.epoch,
            "global_step": self.state.global_step,
            "weights": "ema",
            "policy": self.config.policy.name,
            "train_seconds": self.state.train_seconds,
        }
        atomic_write_json(staging / "state.json", state)
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
        return final

    def log(self, record: dict[str, Any]) -> None:
        self.state.records.append(record)
        append_jsonl(self.run_dir / "metrics.jsonl", record)

    def evaluation(self, label: str, **kwargs: Any) -> EvalResult:
        """Run and print one evaluation; its wall time counts as the `evaluation` phase."""
        started = time.time()
        result = self.run_eval(label=label, **kwargs)
        self.state.seconds["evaluation"] = self.state.seconds.get("evaluation", 0.0) + time.time() - started
        for name, entry in result.scores.items():
            table = "  ".join(f"{tag} {value:.2f}" for tag, value in result.per_tag[name].items())
            self.echo(f"[eval {label}] {name}: {entry['score']:.3f}  {table}")
        return result

    def _log_eval(self, result: EvalResult, label: str) -> None:
        state = self.state
        self.log(eval_record(result, label, state.epoch, state.global_step, state.train_seconds))

    def _grid_from_eval(self, name: str, result: EvalResult) -> None:
        first = self.rewards.terms[0].name
        self.write_grid(name, result.images, [i.prompt for i in self.eval_items], result.per_image[first])

    # ---- the loop ------------------------------------------------------------------------------------
    def start(self) -> dict[str, Any]:
        """Write the resolved config, print the geometry, evaluate the base model (and with CFG)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.run_dir / "config.resolved.toml", tomli_w.dumps(resolved_config(self.config)))
        self.echo(f"run dir: {self.run_dir}")
        self.echo(f"geometry: {self.geometry.describe()}")
        chosen = "" if self.config.train.precision != "auto" else self._precision_reason()
        self.echo(f"precision: {self.precision}{chosen}")
        before = self.evaluation("before", use_ema=False)
        summary: dict[str, Any] = {"run_dir": str(self.run_dir), "eval_before": before.scores}
        summary["eval_before_cfg"] = {
            f"{scale:g}": self.evaluation(f"before, CFG {scale:g}", use_ema=False, guidance=scale).scores
            for scale in self.config.eval.baseline_guidance
        }
        self._log_eval(before, "before")
        self._grid_from_eval("eval_before", before)
        return summary

    def after_epoch(self, samples: Samples, scored: RewardSetOutput, last: bool) -> None:
        """The epoch's sample grid, periodic evaluation and checkpoint (the final ones come at the end)."""
        epoch, log = self.state.epoch, self.config.log
        if log.grid_every and epoch % log.grid_every == 0:
            self.write_grid(f"epoch_{epoch:04d}", samples.images, samples.prompts, scored.total)
        if self.config.eval.every and (epoch + 1) % self.config.eval.every == 0 and not last:
            self._log_eval(self.evaluation(f"epoch {epoch}"), f"epoch {epoch}")
            plot_curves(self.state.records, self.run_dir / "curves.png")
        if log.checkpoint_every and (epoch + 1) % log.checkpoint_every == 0 and not last:
            self.checkpoint()

    def finish(self, summary: dict[str, Any], started: float) -> dict[str, Any]:
        """Evaluate the EMA weights, write the last checkpoint, the curves and `summary.json`."""
        after = self.evaluation("after")
        self._log_eval(after, "after")
        self._grid_from_eval("eval_after", after)
        checkpoint = self.checkpoint()
        plot_curves(self.state.records, self.run_dir / "curves.png")
        summary.update(
            eval_after=after.scores,
            epochs=self.state.epoch + 1,
            optimizer_steps=self.state.global_step,
            train_seconds=self.state.train_seconds,
            wall_seconds=time.time() - started,
            seconds_per_phase=dict(self.state.seconds),
            seconds_per_epoch={phase: self.state.seconds[phase] / (self.state.epoch + 1) for phase in PHASES},
            precision=self.precision,
            machine=machine_facts(self.device),
            checkpoint=str(checkpoint),
        )
        atomic_write_json(self.run_dir / "summary.json", summary)
        return summary

    def train_epoch(self) -> tuple[Samples, RewardSetOutput, dict[str, float]]:
        """One epoch of `state.epoch`: collect, score, advantages, update, refresh; logs its record.

        Returns the samples, their scores and the wall seconds of each phase (`PHASES`).
        """
        state = self.state
        ticks = [time.time()]
        samples = self.collect()
        ticks.append(time.time())
        scored = self.rewards.score(samples.images, samples.prompts, samples.metadata, samples.group_ids)
        ticks.append(time.time())
        optimality, advantages = self.advantages(samples, scored)
        losses = self.update(samples, optimality)
        decay = self.refresh_old()
        ticks.append(time.time())
        state.train_seconds += ticks[-1] - ticks[0]
        phases = dict(zip(PHASES, (end - begin for begin, end in itertools.pairwise(ticks)), strict=True))
        for phase, seconds in phases.items():
            state.seconds[phase] = state.seconds.get(phase, 0.0) + seconds
        record = train_record(
            state.epoch, state.global_step, state.train_seconds, decay, phases, scored, advantages, losses
        )
        record["lr"] = self.optimizer.param_groups[0]["lr"]  # what the next step will use
        self.log(record)
        return samples, scored, phases

    def run(self) -> dict[str, Any]:
        """Run `train.epochs` epochs (or fewer: `train.max_minutes` of training); returns the summary."""
        config, state, started = self.config, self.state, time.time()
        summary = self.start()
        budget = config.train.max_minutes * 60 if config.train.max_minutes else math.inf
        epochs = tqdm(range(config.train.epochs), desc="epochs", disable=not config.log.progress)
        for epoch in epochs:
            state.epoch = epoch
            samples, scored, _ = self.train_epoch()
            epochs.set_postfix(reward=f"{scored.total.mean():.3f}", minutes=f"{state.train_seconds / 60:.1f}")
            last = epoch == config.train.epochs - 1 or state.train_seconds >= budget
            self.after_epoch(samples, scored, last)
            if last:
                break
        return self.finish(summary, started)
