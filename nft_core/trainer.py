"""The online NFT loop: collect with the old policy -> score -> advantages -> NFT update -> refresh -> eval.

Glue only: the math lives in objective.py, advantages.py, normalization.py, schedules.py and ema.py.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tomli_w
import torch
from tqdm import tqdm

from nft_core import registry
from nft_core.advantages import advantage_stats, clip_advantages, compute_advantages, optimality_probability
from nft_core.config import RunConfig, objective_options, resolved_config
from nft_core.ema import ParameterEMA
from nft_core.errors import ConfigError
from nft_core.evaluation import EvalResult, evaluate
from nft_core.io import append_jsonl, atomic_write_json, atomic_write_text
from nft_core.normalization import make_normalizer
from nft_core.prompts import load_prompts, weighted_tag_cycle
from nft_core.reward_set import RewardSet, RewardTerm
from nft_core.sampling import sample_latents
from nft_core.schedules import parse_decay_schedule
from nft_core.types import PromptItem, Samples
from nft_core.visuals import plot_curves, sample_grid


@dataclass
class Geometry:
    """The batch geometry derived from the config, printed at start-up."""

    prompts_per_epoch: int
    images_per_prompt: int
    grid_times: int
    trained_times: int
    micro_batch: int
    inner_epochs: int
    optimizer_steps: int

    @property
    def images(self) -> int:
        return self.prompts_per_epoch * self.images_per_prompt

    @property
    def micro_batches(self) -> int:
        return self.inner_epochs * self.trained_times * math.ceil(self.images / self.micro_batch)

    def describe(self) -> str:
        per_step = math.ceil(self.micro_batches / self.optimizer_steps)
        return (
            f"{self.prompts_per_epoch} prompts x {self.images_per_prompt} images = {self.images} samples; "
            f"{self.trained_times} of {self.grid_times} grid times x {self.inner_epochs} pass(es); "
            f"micro-batch {self.micro_batch} -> {self.micro_batches} micro-batches, "
            f"{self.optimizer_steps} optimizer step(s)/epoch (~{per_step} micro-batches accumulated each)"
        )


@dataclass
class TrainState:
    """Counters that survive an epoch."""

    epoch: int = 0
    global_step: int = 0
    train_seconds: float = 0.0
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
        self.rng = random.Random(config.train.seed)
        self.generator = torch.Generator().manual_seed(config.train.seed)
        self.policy = registry.create("policies", config.policy.name, config.policy.options(), "policy")
        self.policy.to(self.device)
        self.sampler = registry.create("solvers", config.sampler.name, config.sampler.options(), "sampler")
        self.eval_sampler = registry.create(
            "solvers", config.eval.sampler.name, config.eval.sampler.options(), "eval.sampler"
        )
        self.objective = registry.create(
            "objectives", config.objective.name, objective_options(config), "objective"
        )
        self.decay = parse_decay_schedule(config.objective.old_decay)
        terms = []
        for index, reward_config in enumerate(config.reward):
            reward = registry.create(
                "rewards", reward_config.name, reward_config.options, f"reward[{index}].options"
            )
            normalizer = make_normalizer(
                reward_config.normalize,
                scale=reward_config.scale,
                shift=reward_config.shift,
                momentum=reward_config.momentum,
            )
            terms.append(
                RewardTerm(reward_config.label, reward.to(self.device), reward_config.weight, normalizer)
            )
        self.rewards = RewardSet(terms)
        self.train_items = load_prompts(config.data.prompts, "data.prompts")
        self.items_by_tag: dict[str, list[PromptItem]] = {}
        for item in self.train_items:
            if item.metadata.get("tag"):
                self.items_by_tag.setdefault(item.metadata["tag"], []).append(item)
        self.tag_cycle = self._tag_cycle()
        eval_items = load_prompts(config.eval.prompts, "eval.prompts")
        self.eval_items = [item for item in eval_items for _ in range(config.eval.images_per_prompt)]
        parameters = [p for _, p in self.policy.trainable_parameters()]
        self.optimizer = torch.optim.AdamW(
            parameters,
            lr=config.train.lr,
            betas=config.train.betas,
            eps=config.train.adam_eps,
            weight_decay=config.train.weight_decay,
        )
        self.ema = ParameterEMA(self.policy.trainable_parameters(), decay=config.objective.ema_decay)
        grid = self.sampler.default_grid()
        trained = max(1, math.floor((len(grid) - 1) * config.objective.timestep_fraction))
        self.geometry = Geometry(
            config.data.prompts_per_epoch,
            config.data.images_per_prompt,
            len(grid) - 1,
            trained,
            config.train.batch_size,
            config.train.inner_epochs,
            config.train.optimizer_steps_per_epoch,
        )
        if self.geometry.optimizer_steps > self.geometry.micro_batches:
            raise ConfigError(
                f"train.optimizer_steps_per_epoch: {self.geometry.optimizer_steps} exceeds the "
                f"{self.geometry.micro_batches} micro-batches of an epoch ({self.geometry.describe()})"
            )
        self.state = TrainState()

    def autocast(self) -> contextlib.AbstractContextManager:
        """bfloat16 autocast of the policy's forward passes when `train.precision = "bf16"` (else a no-op)."""
        if self.config.train.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _tag_cycle(self) -> list[str]:
        """The order in which tags take turns in the epoch's prompts (empty: prompts carry no tags)."""
        data = self.config.data
        tags = sorted(self.items_by_tag)
        unknown = sorted(set(data.tag_weights) - set(tags))
        if unknown:
            raise ConfigError(
                f"data.tag_weights: unknown tag {unknown[0]!r};"
                f" tags of {data.prompts}: {', '.join(tags) or 'none'}"
            )
        if data.tag_weights and not data.balance_tags:
            raise ConfigError("data.tag_weights: needs data.balance_tags = true")
        return weighted_tag_cycle(tags, data.tag_weights)

    # ---- the stages of one epoch -------------------------------------------------------------------
    def draw_prompts(self) -> list[PromptItem]:
        """P prompts for this epoch: tags take turns (by `data.tag_weights`) when the items have tags."""
        count = self.config.data.prompts_per_epoch
        cycle = self.tag_cycle
        if self.config.data.balance_tags and cycle:
            order = [cycle[(self.state.epoch * count + k) % len(cycle)] for k in range(count)]
            return [self.rng.choice(self.items_by_tag[tag]) for tag in order]
        return [self.rng.choice(self.train_items) for _ in range(count)]

    @torch.no_grad()
    def collect(self) -> Samples:
        """K samples per prompt from the old policy with the training sampler (CFG off)."""
        items = [item for item in self.draw_prompts() for _ in range(self.config.data.images_per_prompt)]
        prompts = [item.prompt for item in items]
        group_ids = torch.arange(len(items)) // self.config.data.images_per_prompt
        cond = self.policy.encode_prompts(prompts)
        noise = torch.randn((len(items), *self.policy.latent_shape), generator=self.generator).to(self.device)
        with self.autocast():
            latents = sample_latents(
                self.policy,
                self.sampler,
                cond,
                noise,
                view="old",
                generator=self.generator,
                batch_size=self.config.train.sample_batch_size,
            )
        images = self.policy.decode(latents).cpu()
        return Samples(latents, images, prompts, [item.metadata for item in items], cond, group_ids)

    def update(self, samples: Samples, optimality: torch.Tensor) -> dict[str, float]:
        """NFT over the sampler's grid: each sample visits `trained_times` grid times in a random order."""
        geometry = self.geometry
        grid = self.sampler.default_grid().to(self.device, samples.latents.dtype)[:-1]
        n = len(samples)
        optimality = optimality.to(self.device)
        plan = []
        for _ in range(geometry.inner_epochs):
            order = torch.stack([torch.randperm(len(grid), generator=self.generator) for _ in range(n)])
            for column in range(geometry.trained_times):
                permutation = torch.randperm(n, generator=self.generator)
                for start in range(0, n, geometry.micro_batch):
                    index = permutation[start : start + geometry.micro_batch]
                    plan.append((index, grid[order[index, column].to(self.device)]))
        chunks = np.array_split(np.arange(len(plan)), geometry.optimizer_steps)
        totals: dict[str, float] = {}
        self.policy.train(True)
        bar = tqdm(total=len(plan), desc="train", leave=False, disable=not self.config.log.progress)
        for chunk in chunks:
            self.optimizer.zero_grad(set_to_none=True)
            for plan_index in chunk:
                index, t = plan[plan_index]
                cond = {k: v[index.to(v.device)] for k, v in samples.cond.items()}
                with self.autocast():
                    loss, stats = self.objective.loss(
                        self.policy,
                        samples.latents[index.to(self.device)],
                        cond,
                        t,
                        optimality[index],
                        self.generator,
                    )
                (
                    loss * len(index) / (n * geometry.inner_epochs * geometry.trained_times / len(chunks))
                ).backward()
                for key, value in stats.items():
                    totals[key] = totals.get(key, 0.0) + value / len(plan)
                bar.update(1)
            parameters = [p for _, p in self.policy.trainable_parameters()]
            totals["grad_norm"] = totals.get("grad_norm", 0.0) + float(
                torch.nn.utils.clip_grad_norm_(parameters, self.config.train.grad_clip)
            ) / len(chunks)
            self.optimizer.step()
            self.state.global_step += 1
            self.ema.update(self.policy.trainable_parameters())
        bar.close()
        self.policy.train(False)
        return totals

    def run_eval(self, view: str = "current", guidance: float = 1.0, use_ema: bool = True) -> EvalResult:
        """The fixed paired evaluation (EMA weights swapped in by default)."""
        rewards = {term.name: term.reward for term in self.rewards.terms}
        kwargs = dict(
            seed=self.config.eval.seed,
            guidance=guidance,
            view=view,
            device=self.device,
            batch_size=self.config.train.sample_batch_size,
        )
        if use_ema:
            with self.ema.swapped_in(self.policy.trainable_parameters()):
                return evaluate(self.policy, self.eval_sampler, self.eval_items, rewards, **kwargs)
        return evaluate(self.policy, self.eval_sampler, self.eval_items, rewards, **kwargs)

    # ---- run directory -------------------------------------------------------------------------------
    def write_grid(self, name: str, images: torch.Tensor, prompts: list[str], scores: torch.Tensor) -> None:
        count = min(self.config.log.grid_images, len(prompts))
        captions = [f"{prompts[i]} | {scores[i]:.2f}" for i in range(count)]
        sample_grid(images[:count], captions, self.run_dir / "samples" / f"{name}.png")

    def checkpoint(self) -> Path:
        """EMA weights (what inference uses) + a small JSON state, written to a temp dir then renamed."""
        final = self.run_dir / "checkpoints" / f"step_{self.state.global_step:05d}"
        staging = final.with_name(final.name + ".tmp")
        staging.mkdir(parents=True, exist_ok=True)
        with self.ema.swapped_in(self.policy.trainable_parameters()):
            self.policy.save_trainable(str(staging))
        atomic_write_json(
            staging / "state.json",
            {
                "epoch": self.state.epoch,
                "global_step": self.state.global_step,
                "weights": "ema",
                "policy": self.config.policy.name,
                "train_seconds": self.state.train_seconds,
            },
        )
        if final.exists():
            import shutil

            shutil.rmtree(final)
        staging.rename(final)
        return final

    def log(self, record: dict[str, Any]) -> None:
        self.state.records.append(record)
        append_jsonl(self.run_dir / "metrics.jsonl", record)

    @staticmethod
    def eval_summary(result: EvalResult) -> dict[str, Any]:
        return {name: entry for name, entry in result.scores.items()}

    def eval_record(self, result: EvalResult, label: str) -> dict[str, Any]:
        record: dict[str, Any] = {
            "kind": "eval",
            "label": label,
            "epoch": self.state.epoch,
            "step": self.state.global_step,
            "train_minutes": self.state.train_seconds / 60,
        }
        for name, entry in result.scores.items():
            record[f"eval/{name}/score"] = entry["score"]
            for tag, value in entry.get("official", {}).get("per_tag", {}).items():
                record[f"eval/{name}/tag/{tag}"] = value
        return record

    def print_eval(self, label: str, result: EvalResult) -> None:
        for name, entry in result.scores.items():
            tags = entry.get("official", {}).get("per_tag", {})
            table = "  ".join(f"{tag} {value:.2f}" for tag, value in tags.items())
            self.echo(f"[eval {label}] {name}: {entry['score']:.3f}  {table}")

    # ---- the loop ------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Run to `train.epochs` or `train.max_minutes`; returns (and writes) the summary."""
        config = self.config
        started = time.time()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(
            self.run_dir / "config.resolved.toml",
            tomli_w.dumps(resolved_config(config)),
        )
        self.echo(f"run dir: {self.run_dir}")
        self.echo(f"geometry: {self.geometry.describe()}")
        summary: dict[str, Any] = {"run_dir": str(self.run_dir)}

        before = self.run_eval(use_ema=False)
        self.print_eval("before", before)
        summary["eval_before"] = self.eval_summary(before)
        summary["eval_before_cfg"] = {}
        for scale in config.eval.baseline_guidance:
            guided = self.run_eval(use_ema=False, guidance=scale)
            self.print_eval(f"before, CFG {scale:g}", guided)
            summary["eval_before_cfg"][f"{scale:g}"] = self.eval_summary(guided)
        self.log(self.eval_record(before, "before"))
        self._grid_from_eval("eval_before", before)

        budget = config.train.max_minutes * 60 if config.train.max_minutes else math.inf
        epochs = tqdm(range(config.train.epochs), desc="epochs", disable=not config.log.progress)
        for epoch in epochs:
            self.state.epoch = epoch
            epoch_start = time.time()
            samples = self.collect()
            sampled = time.time()
            scored = self.rewards.score(samples.images, samples.prompts, samples.metadata, samples.group_ids)
            rewarded = time.time()
            advantages = compute_advantages(scored.total, samples.group_ids, config.objective.global_std)
            clipped = clip_advantages(advantages, config.objective.adv_clip, "all")
            stats = advantage_stats(
                clipped, samples.group_ids, scored.total, adv_clip=config.objective.adv_clip
            )
            used = clip_advantages(advantages, config.objective.adv_clip, config.objective.adv_mode)
            optimality = optimality_probability(used, config.objective.adv_clip)
            losses = self.update(samples, optimality)
            decay = self.decay(self.state.global_step)
            self.policy.refresh_old(decay)
            finished = time.time()
            self.state.train_seconds += finished - epoch_start
            record: dict[str, Any] = {
                "kind": "train",
                "epoch": epoch,
                "step": self.state.global_step,
                "train_minutes": self.state.train_seconds / 60,
                "old_decay": decay,
                "seconds/sampling": sampled - epoch_start,
                "seconds/reward": rewarded - sampled,
                "seconds/training": finished - rewarded,
                "images_per_second": len(samples) / (finished - epoch_start),
                "reward/total_mean": float(scored.total.mean()),
            }
            for name in scored.raw:
                record[f"reward/{name}/raw_mean"] = float(scored.raw[name].mean())
                record[f"reward/{name}/raw_std"] = float(scored.raw[name].std(unbiased=False))
                record[f"reward/{name}/normalized_mean"] = float(scored.normalized[name].mean())
                for key, value in scored.details.get(name, {}).items():
                    record[f"reward/{name}/{key}_mean"] = float(value.float().mean())
            record.update({f"advantage/{k}": v for k, v in stats.items()})
            record.update(losses)
            self.log(record)
            epochs.set_postfix(
                reward=f"{record['reward/total_mean']:.3f}", minutes=f"{record['train_minutes']:.1f}"
            )
            if config.log.grid_every and epoch % config.log.grid_every == 0:
                self.write_grid(f"epoch_{epoch:04d}", samples.images, samples.prompts, scored.total)
            last = epoch == config.train.epochs - 1 or self.state.train_seconds >= budget
            if config.eval.every and (epoch + 1) % config.eval.every == 0 and not last:
                result = self.run_eval()
                self.print_eval(f"epoch {epoch}", result)
                self.log(self.eval_record(result, f"epoch {epoch}"))
                plot_curves(self.state.records, self.run_dir / "curves.png")
            if config.log.checkpoint_every and (epoch + 1) % config.log.checkpoint_every == 0 and not last:
                self.checkpoint()
            if last:
                break

        after = self.run_eval()
        self.print_eval("after", after)
        self.log(self.eval_record(after, "after"))
        self._grid_from_eval("eval_after", after)
        checkpoint = self.checkpoint()
        plot_curves(self.state.records, self.run_dir / "curves.png")
        summary.update(
            eval_after=self.eval_summary(after),
            epochs=self.state.epoch + 1,
            optimizer_steps=self.state.global_step,
            train_seconds=self.state.train_seconds,
            wall_seconds=time.time() - started,
            checkpoint=str(checkpoint),
        )
        atomic_write_json(self.run_dir / "summary.json", summary)
        return summary

    def _grid_from_eval(self, name: str, result: EvalResult) -> None:
        first = self.rewards.terms[0].name
        self.write_grid(name, result.images, [i.prompt for i in self.eval_items], result.per_image[first])
