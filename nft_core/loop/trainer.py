"""The online loop: collect with the old policy -> score -> advantages -> update -> refresh -> evaluate.

`Trainer` is the epoch and the lifecycle, nothing else. Its parts are rooms of their own: the collector
(clean samples or paths, chosen from the objective, `nft_core.loop.collect`), the update
(`nft_core.loop.update`), the run state that checkpoints and restores every holder
(`nft_core.state.run_state`) and the outputs observer that writes what a person reads
(`nft_core.outputs.observer`). The math lives in pure functions (objective, advantages, normalization,
schedules, plan).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from nft_core import registry
from nft_core.advantages import advantage_step
from nft_core.config import RunConfig, resolved_config
from nft_core.distributed import Distributed, from_a_collective
from nft_core.loop.collect import collector_for
from nft_core.loop.evaluation import evaluate
from nft_core.loop.guard import Diverged
from nft_core.loop.precision import autocast, resolve_precision
from nft_core.loop.preflight import check_objective, train_geometry
from nft_core.loop.revert import Reverter
from nft_core.loop.setup import (
    build_eval_rewards,
    build_monitors,
    build_policy,
    build_prompts,
    build_rewards,
    precision_reason,
)
from nft_core.loop.signals import stop_at_epoch_end_on_signals
from nft_core.loop.update import Updater
from nft_core.outputs.machine import machine_facts
from nft_core.outputs.metrics import train_record
from nft_core.outputs.observer import PHASES, Outputs
from nft_core.outputs.tracking import Trackers
from nft_core.protocols import Objective, Solver
from nft_core.reward_set import RewardSetOutput
from nft_core.schedules import parse_decay_schedule
from nft_core.state.checkpoints import latest_checkpoint
from nft_core.state.holders import RandomState, WeightsState, seed_everything
from nft_core.state.run_dir import lock_run_dir
from nft_core.state.run_state import Counters, RunState
from nft_core.types import EvalResult, Samples

__all__ = ["Trainer"]


def _silent(*_: Any) -> None:
    """The echo of ranks other than 0: one rank prints."""


class Trainer:
    """Builds the plugins named in a RunConfig and runs the loop, writing the run directory."""

    def __init__(self, config: RunConfig, run_dir: Path, echo=print) -> None:
        self.config = config
        train = config.train
        self.dist = Distributed.from_environment(train.device, train.collective_timeout)
        self.run_dir = Path(self.dist.gather_objects(str(run_dir))[0])  # rank 0's: ranks may race
        self.echo = echo if self.dist.is_main else _silent
        self.device = self.dist.device(torch.device(train.device))
        if train.threads:
            torch.set_num_threads(train.threads)
        seed_everything(train.seed)
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
        self.rewards = build_rewards(config, self.device, self.echo)
        self.eval_rewards = build_eval_rewards(config, self.device)
        monitors = build_monitors(config)
        trackers = Trackers.build(
            config.log.trackers, config.log.tracker_options, self.echo, enabled=self.dist.is_main
        )
        self.prompts, self.eval_items = build_prompts(config)
        self.policy, sharded = build_policy(config, self.dist, self.device, self.echo)
        self.precision = resolve_precision(train.precision, self.device)
        self.train_times, self.geometry = train_geometry(
            config, self.solver, self.dist.world_size, self.objective
        )
        self.state = Counters()
        self.collector = collector_for(
            self.objective,
            config=config,
            policy=self.policy,
            solver=self.solver,
            rewards=self.rewards,
            dist=self.dist,
            device=self.device,
            train_times=self.train_times,
        )
        self.updater = Updater(
            config,
            self.policy,
            self.collector,
            self.dist,
            self.device,
            self.autocast,
            self.precision,
            self.geometry,
            self.train_times,
            self.state,
            sharded,
            self._progress,
        )
        self.ema = self.updater.ema
        self.outputs = Outputs(
            config,
            self.run_dir,
            self.dist,
            self.state,
            self.rewards,
            self.eval_items,
            monitors,
            trackers,
            self.echo,
        )
        holders = {
            "current": WeightsState("current", self.policy.trainable_parameters),
            "old": WeightsState("old", self.policy.old_parameters),
            **self.updater.holders(),
            "normalizers": self.rewards,
            "prompts": self.prompts,
            "rng": RandomState(self.updater.generator),
            "outputs": self.outputs,
        }
        self.reverter = Reverter(config, self.objective, lambda *at: self.run_state.restore(*at), self.echo)
        if config.train.revert_on_drop:  # not otherwise: a run without the guard checkpoints as before
            holders["reverter"] = self.reverter
        weights = (self.policy, self.ema)
        self.run_state = RunState(
            config,
            self.run_dir,
            self.dist,
            self.state,
            holders,
            weights,
            sharded,
            self.outputs.eval_score_now,
        )
        self.stop_signal: str | None = None
        """The name of the signal (SIGINT, SIGTERM) that asked the run to stop at the next epoch's end."""

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast of the policy's forward passes in collection and update to `self.precision`."""
        return autocast(self.precision, self.device)

    @property
    def _progress(self) -> bool:
        """Progress bars: where `log.progress` asks for them, on rank 0 only."""
        return self.config.log.progress and self.dist.is_main

    # ---- one epoch -------------------------------------------------------------------------------
    def train_epoch(self) -> tuple[dict[str, Any], Samples, RewardSetOutput]:
        """One epoch of `state.epoch`: collect, score, advantages, update, refresh. Returns its metrics
        record (not yet written), the samples and their scores.

        Samples without a finite score from every reward leave the advantages and the update; an epoch
        with none left makes no update."""
        state = self.state
        ticks = [time.time()]
        waited = self.dist.seconds["collectives"]
        samples = self.collect()
        if not bool(torch.isfinite(samples.latents).all()):
            self.updater.bad_event("collection")
        ticks.append(time.time())
        scored = self.collector.scores(samples)
        ticks.append(time.time())
        valid = scored.valid
        assert valid is not None
        self.outputs.warn_failed_rewards(scored)
        if valid.any():
            kept = samples if valid.all() else samples.subset(valid)
            optimality, advantages = self.optimality(kept, scored.total[valid])
            losses = self.updater.step(kept, optimality)
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
        record["lr"] = self.updater.learning_rate()  # what the next step will use
        record.update(
            self.collector.scoring_seconds
        )  # this rank's: the rewards' time and what was not hidden
        record["samples/stored_bytes_per_sample"] = samples.stored_bytes_per_sample
        if self.dist.enabled:  # part of the phases above: gathers, the gradient sum, waiting for ranks
            record["seconds_collectives"] = self.dist.seconds["collectives"] - waited
            record["ranks"] = self.dist.world_size
        return record, samples, scored

    def collect(self) -> Samples:
        """This epoch's samples: `data.images_per_prompt` per prompt drawn for it, being scored."""
        return self.collector.collect(self.state.epoch, self.prompts.draw(self.state.epoch))

    def optimality(self, samples: Samples, rewards: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """The optimality probabilities `r` of the samples' total rewards `[N]` and the advantage
        statistics (`advantage_step` with `[objective]`'s mode)."""
        objective = self.config.objective
        return advantage_step(
            rewards, samples.group_ids, self.objective.adv_clip, objective.adv_mode, objective.global_std
        )

    def refresh_old(self) -> float:
        """`old <- d old + (1 - d) theta` with `d` the decay schedule at the current step; returns `d`."""
        decay = self.decay(self.state.global_step)
        self.policy.refresh_old(decay)
        return decay

    def evaluate(
        self, label: str, view: str = "current", guidance: float | None = None, use_ema: bool = True
    ) -> EvalResult:
        """The fixed paired evaluation (EMA weights swapped in by default; CFG `eval.guidance` unless
        `guidance` is given), printed; its wall time counts as the `evaluation` phase."""
        started = time.time()
        rewards = {term.name: term.reward for term in self.rewards.terms} | self.eval_rewards
        swap = (
            self.ema.swapped_in(self.policy.trainable_parameters()) if use_ema else contextlib.nullcontext()
        )
        with swap:
            result = evaluate(
                self.policy,
                self.eval_solver,
                self.eval_items,
                rewards,
                seed=self.config.eval.seed,
                guidance=self.config.eval.guidance if guidance is None else guidance,
                view=view,
                device=self.device,
                batch_size=self.config.train.sample_batch_size,
                progress=f"eval {label}" if self._progress else None,
                dist=self.dist,
            )
        seconds = self.state.seconds
        seconds["evaluation"] = seconds.get("evaluation", 0.0) + time.time() - started
        self.outputs.show_eval(label, result)
        if not result.finite:
            raise Diverged(f"the evaluation {label!r} sampled non-finite latents")
        return result

    # ---- the lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Write the resolved config, print the geometry, evaluate the base model (and with CFG)."""
        self.outputs.write_config(resolved_config(self.config))
        self._announce()
        before = self.evaluate("before", use_ema=False)
        self.outputs.summary["eval_before"] = before.scores
        self.outputs.summary["eval_before_cfg"] = {
            f"{scale:g}": self.evaluate(f"before, CFG {scale:g}", use_ema=False, guidance=scale).scores
            for scale in self.config.eval.baseline_guidance
        }
        self.outputs.on_eval("before", before, grid="eval_before")

    def _announce(self) -> None:
        self.echo(f"run dir: {self.run_dir}")
        self.echo(f"geometry: {self.geometry.describe()}")
        chosen = (
            "" if self.config.train.precision != "auto" else precision_reason(self.precision, self.device)
        )
        self.echo(f"precision: {self.precision}{chosen}")

    def finish(self, started: float) -> dict[str, Any]:
        """Evaluate the EMA weights, write the last checkpoint, the curves, `summary.json` and the report."""
        after = self.evaluate("after")
        best = self.outputs.on_eval("after", after, grid="eval_after")
        checkpoint = self.run_state.save(final=True)
        if best:
            self.outputs.best["checkpoint"] = str(checkpoint)
        return self.outputs.on_finish(
            eval_after=after.scores,
            epochs=self.state.epoch + 1,
            optimizer_steps=self.state.global_step,
            train_seconds=self.state.train_seconds,
            wall_seconds=time.time() - started,  # of this process (a resumed run: since resuming)
            precision=self.precision,
            machine=machine_facts(self.device),
            checkpoint=str(checkpoint),
        )

    def run(self, resume: Path | None = None) -> dict[str, Any]:
        """Run `train.epochs` epochs (or fewer: `train.max_minutes` of training); returns the summary.

        With `resume` (a checkpoint folder of this run directory) the run goes on from that checkpoint
        as if it had never stopped. A run that fails writes `summary.json` with the error first.
        Rank 0 holds the run directory's lock throughout: a second run in it is refused (`RunDirBusy`).
        """
        with lock_run_dir(self.run_dir, enabled=self.dist.is_main):
            return self._run(resume)

    def _run(self, resume: Path | None) -> dict[str, Any]:
        started = time.time()
        saved = None
        if resume is not None:
            # outside the guard: a refused resume leaves the run as it was
            saved = self.run_state.restore(resume)
            self.outputs.write_config(resolved_config(self.config))  # the changed budget or logging, if any
            self._announce()
            self.echo(f"resumed from {resume} (epoch {self.state.epoch}, step {self.state.global_step})")
        first_step = 0 if resume is None else self.state.epoch + 1
        self.outputs.trackers.start(self.run_dir, resolved_config(self.config), self.run_dir.name, first_step)
        with stop_at_epoch_end_on_signals(self):
            try:
                return self._loop(started, saved)
            except Diverged as diverged:
                good = self.run_state.save() if self.updater.last_good_state(diverged) else None
                return self.outputs.on_diverged(str(diverged), good)
            except BaseException as error:
                self.outputs.on_failure(error, latest_checkpoint(self.run_dir, resumable=True))
                if self.dist.enabled and from_a_collective(error):  # FSDP2's or the checkpoint's
                    raise self.dist.lost("outside the trainer's", error) from error
                raise
            finally:  # the status `finish`, `interrupted` or `on_failure` wrote
                self.outputs.trackers.finish(str(self.outputs.summary.get("status", "finished")))

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
                return (
                    json.loads(written.read_text(encoding="utf-8"))
                    if written.is_file()
                    else self.outputs.summary
                )
        self.outputs.write_summary("running")
        if first >= config.train.epochs or state.train_seconds >= budget:
            return self.finish(started)
        total = config.train.epochs
        epochs = tqdm(
            range(first, total), desc="epochs", initial=first, total=total, disable=not self._progress
        )
        for epoch in epochs:
            state.epoch = epoch
            record, samples, scored = self.train_epoch()
            epochs.set_postfix(
                reward=f"{float(scored.total.nanmean()):.3f}", minutes=f"{state.train_seconds / 60:.1f}"
            )
            last = epoch == config.train.epochs - 1 or state.train_seconds >= budget
            written = self.after_epoch(record, samples, scored, last)
            if last:
                break
            if self.dist.any(self.stop_signal is not None):  # every rank stops at the same epoch
                stopped_by = self.stop_signal or "a signal to another rank"
                checkpoint = written or self.run_state.save()
                self.echo(f"{stopped_by}: stopped after epoch {epoch}; checkpoint {checkpoint}")
                return self.outputs.write_summary(
                    "interrupted", stopped_by=stopped_by, checkpoint=str(checkpoint)
                )
        return self.finish(started)

    def after_epoch(
        self, record: dict[str, Any], samples: Samples, scored: RewardSetOutput, last: bool
    ) -> Path | None:
        """The epoch's record and grid, the periodic evaluation and checkpoint (the final ones come at
        the end); returns the checkpoint when one was written."""
        epoch, outputs = self.state.epoch, self.outputs
        outputs.on_epoch(record, samples, scored)
        best = outputs.eval_due(epoch, last) and outputs.on_eval(
            f"epoch {epoch}", self.evaluate(f"epoch {epoch}")
        )
        written = None
        if self.run_state.due(epoch, last) or (best and self.config.log.keep_best):
            written = self.run_state.save(
                written_for="periodic" if self.run_state.due(epoch, last) else "best"
            )
        if best and written is not None:
            outputs.best["checkpoint"] = str(written)  # type: ignore[index]
        self.reverter.after_epoch(outputs, outputs.eval_due(epoch, last))
        return written
