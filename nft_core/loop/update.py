"""The update of one epoch: the plan's micro-batches, their accumulated gradients, the optimizer steps.

`Updater` owns what the update changes besides the weights: AdamW, its lr schedule, the fp16 loss scaler,
the EMA of the trained weights, and the generator that draws each epoch's plan (the same stream on every
rank). The loss of a micro-batch is the collector's (clean samples or path steps); each sample's training
noise is keyed by (seed, epoch, visit, sample), so the update does not depend on how the samples are cut
into micro-batches or ranks.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any

import torch
from tqdm import tqdm

from nft_core.config import RunConfig
from nft_core.distributed import Distributed, full_tensor
from nft_core.ema import ParameterEMA
from nft_core.flow import forward_noising
from nft_core.loop.collect import PROBE_STREAM, TRAINING_STREAM, CleanCollector
from nft_core.loop.guard import Diverged, StepGuard
from nft_core.plan import Geometry, MicroBatch
from nft_core.protocols import Policy, Stateful
from nft_core.sampling import keyed_noise
from nft_core.schedules import lr_factor
from nft_core.state.holders import EMAState, GradScalerState, OptimizerState
from nft_core.state.run_state import Counters
from nft_core.types import Samples, index_cond

__all__ = ["Updater"]


class Updater:
    """AdamW steps over an epoch's plan of (sample, time) visits, with the EMA updated after each step."""

    def __init__(
        self,
        config: RunConfig,
        policy: Policy,
        collector: CleanCollector,
        dist: Distributed,
        device: torch.device,
        autocast: Callable[[], contextlib.AbstractContextManager],
        precision: str,
        geometry: Geometry,
        train_times: torch.Tensor,
        counters: Counters,
        sharded: bool = False,
        progress: bool = False,
    ) -> None:
        train = config.train
        self.config, self.policy, self.collector, self.dist = config, policy, collector, dist
        self.device, self.autocast, self.geometry, self.train_times = device, autocast, geometry, train_times
        self.counters, self.sharded, self.progress = counters, sharded, progress
        self.generator = torch.Generator().manual_seed(train.seed)
        """Draws the update's plan: the same stream on every rank, used for nothing else."""
        self.optimizer = torch.optim.AdamW(
            [p for _, p in policy.trainable_parameters()],
            lr=train.lr,
            betas=train.betas,
            eps=train.adam_eps,
            weight_decay=train.weight_decay,
        )
        self.ema = ParameterEMA(policy.trainable_parameters(), decay=config.objective.ema_decay)
        # fp16 gradients underflow without a loss scale; disabled, the scaler passes everything through
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
        total_steps = train.epochs * geometry.optimizer_steps
        self.lr_schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(train.lr_schedule, step, total_steps, train.lr_final)
        )
        self.guard = StepGuard(
            [p for _, p in policy.trainable_parameters()],
            self.optimizer,
            [p for _, p in policy.old_parameters()],
            list(self.ema.shadow.values()),
        )
        self.streak: list[str] = []
        """The bad events in a row (`skipped`, `undone`, `collection`); at `train.divergence_patience` of
        them the run stops as diverged. A good optimizer step ends the streak."""

    def holders(self) -> dict[str, Stateful]:
        """What the update adds to a checkpoint, by holder name."""
        return {
            "ema": EMAState(self.ema),
            "optimizer": OptimizerState(self.optimizer),
            "lr_schedule": self.lr_schedule,
            "scaler": GradScalerState(self.scaler),
        }

    def plan(self, samples: Samples, optimality: torch.Tensor) -> list[list[MicroBatch]]:
        """This epoch's micro-batches per optimizer step, the collector's plan drawn from the generator; a
        micro-batch holds `batch_size` samples per rank."""
        times = self.train_times.to(self.device, samples.latents.dtype)
        return self.collector.plan(samples, optimality, times, self.geometry, self.generator)

    def step(self, samples: Samples, optimality: torch.Tensor) -> dict[str, float]:
        """The objective over `plan`'s micro-batches, one optimizer step per chunk of them; returns the
        loss statistics (means over the epoch), the mean gradient norm and the skipped steps."""
        steps = self.plan(samples, optimality)
        micro_batches = sum(len(step) for step in steps)
        optimality = optimality.to(self.device)
        totals: dict[str, float] = {"skipped_steps": 0, "undone_steps": 0}
        self.policy.train(True)
        bar = tqdm(total=micro_batches, desc="train", leave=False, disable=not self.progress)
        shape, seed, epoch = tuple(self.policy.latent_shape), self.config.train.seed, self.counters.epoch
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
                    loss, stats = self.collector.loss(
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
            self._optimizer_step(totals, len(steps))
        bar.close()
        self.policy.train(False)
        for part in self.dist.gather_objects(stats_sum) if self.dist.enabled else [stats_sum]:
            for key, value in part.items():
                totals[key] = totals.get(key, 0.0) + value
        alarms = self.config.alarms
        probe = alarms.enabled and self.counters.epoch % alarms.probe_every == 0
        ratio = self.velocity_norm_ratio(samples) if probe else math.nan
        if math.isfinite(ratio):  # NaN: a reference that outputs 0 (a zero-initialised output layer)
            totals["velocity_norm_ratio"] = ratio
        return totals

    @torch.no_grad()
    def velocity_norm_ratio(self, samples: Samples, count: int = 8, t: float = 0.5) -> float:
        """|v_current| / |v_reference| over (up to) `count` of the epoch's samples noised to time `t` with
        keyed noise: the velocity-norm inflation NormGuard (arXiv 2606.27771) watches. NaN when the
        reference's velocity is all but zero (a network initialised with a zero output layer)."""
        count = min(count, len(samples))
        assert samples.ids is not None
        x0 = samples.latents[:count]
        shape, seed, epoch = tuple(self.policy.latent_shape), self.config.train.seed, self.counters.epoch
        noise = keyed_noise(samples.ids[:count].tolist(), shape, seed, PROBE_STREAM, epoch)
        times = torch.full((count,), t, device=x0.device, dtype=x0.dtype)
        x_t = forward_noising(x0, times, noise.to(x0.device, x0.dtype))
        cond = index_cond(samples.cond, slice(0, count))
        with self.autocast():
            v = self.policy.velocity("current", x_t, times, cond).float()
            v_ref = self.policy.velocity("reference", x_t, times, cond).float()
        reference = float(v_ref.norm())
        return float(v.norm()) / reference if reference > 1e-6 * v_ref.numel() ** 0.5 else math.nan

    def _optimizer_step(self, totals: dict[str, Any], steps: int) -> None:
        """Sum the gradients over the ranks, clip them, step (unless the norm is not finite; undone when it
        leaves a weight non-finite), then move the lr schedule, the step counter and the EMA. Raises
        `Diverged` at `train.divergence_patience` bad steps in a row."""
        parameters = [p for _, p in self.policy.trainable_parameters()]
        if not self.sharded:  # FSDP2 reduce-scatters the gradients in backward itself
            self._sum_gradients(parameters)
        self.scaler.unscale_(self.optimizer)
        norm = torch.nn.utils.clip_grad_norm_(parameters, self.config.train.grad_clip)
        grad_norm = float(full_tensor(norm))
        good = math.isfinite(grad_norm)
        if good:
            totals["grad_norm"] = totals.get("grad_norm", 0.0) + grad_norm / steps
            self.guard.save()
            self.scaler.step(self.optimizer)
            good = not self.dist.any(not self.guard.finite())
            if not good:  # finite gradients, yet a weight overflowed
                self.guard.undo_step()
                totals["undone_steps"] += 1
        else:  # a NaN / inf loss or gradient: the step would write it into the weights
            totals["skipped_steps"] += 1
        self.scaler.update()  # fp16: a skipped step lowers the loss scale
        self.lr_schedule.step()
        self.counters.global_step += 1
        self.ema.update(self.policy.trainable_parameters())
        if good:
            self.streak = []
        else:
            self.bad_event("skipped" if not math.isfinite(grad_norm) else "undone")

    def bad_event(self, kind: str) -> None:
        """Count one bad event (`skipped`, `undone`, `collection`); raise `Diverged` at the patience."""
        self.streak.append(kind)
        patience = self.config.train.divergence_patience
        if patience and len(self.streak) >= patience:
            counts = ", ".join(f"{self.streak.count(k)} {k}" for k in dict.fromkeys(self.streak))
            raise Diverged(
                f"{len(self.streak)} bad steps in a row ({counts}; skipped: a non-finite gradient, undone: "
                "a weight left non-finite, collection: non-finite samples)",
                weights_good=set(self.streak) == {"undone"},
            )

    def last_good_state(self, diverged: Diverged) -> bool:
        """Make the live state the last good one: as it is when every bad event was an undone step, else
        as it was before the last step that was taken. False when there is none (no step was taken)."""
        if diverged.weights_good:
            return True
        if not self.guard.saved:
            return False
        self.guard.go_back()
        return True

    def _sum_gradients(self, parameters: list[torch.nn.Parameter]) -> None:
        """Sum the step's gradients over the ranks (each rank's loss was weighted by its share)."""
        if not self.dist.enabled:
            return
        for parameter in parameters:
            if parameter.grad is None:  # a rank whose part reached no sample still takes part
                parameter.grad = torch.zeros_like(parameter)
        self.dist.sum_([parameter.grad for parameter in parameters])

    def learning_rate(self) -> float:
        """The rate the next optimizer step will use."""
        return self.optimizer.param_groups[0]["lr"]
