"""Collection: each epoch's samples from the old policy, their scores, and the loss of a micro-batch of them.

The objective declares what it trains on, and `collector_for` picks the collector once from that
declaration: clean samples from any solver (`CleanCollector`: NFT, RFT) or sampling paths with their
per-step log-probs (`TrajectoryCollector`: FlowGRPO). A collector owns its epoch's pending scores: each
finished sampling micro-batch is handed to `OverlappedScoring` while the next one is sampled, and
`scores` waits for them, gathers them over the ranks and normalizes them over the whole epoch.

Every random draw is keyed (`nft_core.sampling.keyed_noise`): the noise of sample `i` comes from the
stream `(seed, stream, epoch, i)`, so samples do not depend on how they are cut into batches or ranks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from nft_core.config import RunConfig
from nft_core.distributed import Distributed
from nft_core.flowgrpo import path_steps
from nft_core.loop.conditions import encode_items, with_sources
from nft_core.loop.levers import build_levers, check_rollout, rollout_context, rollout_precision
from nft_core.loop.overlap import OverlappedScoring, overlap_wanted
from nft_core.loop.precision import autocast, resolve_precision
from nft_core.plan import Geometry, MicroBatch, path_plan, training_plan
from nft_core.protocols import Lever, Objective, Policy, Solver, TrajectoryObjective
from nft_core.reward_set import RewardSet, RewardSetOutput
from nft_core.sampling import keyed_noise, keyed_seed, sample_latents
from nft_core.types import Cond, PromptItem, Samples, Trajectory, index_cond

__all__ = [
    "COLLECTION_STREAM",
    "PATH_STREAM",
    "PROBE_STREAM",
    "SOLVER_STREAM",
    "TRAINING_STREAM",
    "WINDOW_STREAM",
    "CleanCollector",
    "TrajectoryCollector",
    "collector_for",
]

COLLECTION_STREAM, TRAINING_STREAM, SOLVER_STREAM, PATH_STREAM, PROBE_STREAM, WINDOW_STREAM = 1, 2, 3, 4, 5, 6
"""Keys of the random streams: collection noise per sample, training noise per sample and visit, a
stochastic solver's draws per rank, a trajectory objective's step noises per sample, the noise of the
epoch's velocity-norm probe, and a trajectory objective's draws per sampling batch (FlowGRPO-Fast's
window)."""


class CleanCollector:
    """Clean samples of the old policy with the collection solver (CFG off); the objective's loss on them."""

    def __init__(
        self,
        config: RunConfig,
        policy: Policy,
        solver: Solver,
        objective: Objective,
        rewards: RewardSet,
        dist: Distributed,
        device: torch.device,
        autocast: Callable[[], contextlib.AbstractContextManager],
        train_times: torch.Tensor,
        levers: Sequence[Lever] = (),
    ) -> None:
        self.config, self.policy, self.solver, self.objective = config, policy, solver, objective
        self.rewards, self.dist, self.device, self.autocast = rewards, dist, device, autocast
        self.train_times, self.levers = train_times, list(levers)
        self.exact = False
        """True while regenerating scout rollouts: only lossless levers, training's precision."""
        self._scoring: OverlappedScoring | None = None
        self.scoring_seconds: dict[str, float] = {}
        """`seconds/scoring` (the rewards' time) and `seconds/scoring_unhidden` (what sampling did not
        hide) of the last epoch, this rank's."""

    @torch.no_grad()
    def collect(self, epoch: int, drawn: Sequence[PromptItem]) -> Samples:
        """K samples per drawn prompt. Each rank samples its share; the latents are gathered (every
        rank holds all of them, and its own images); each finished micro-batch starts being scored.

        With scout rollouts (`rollout.scout_candidates = c > 1`, Sol-RL) `c K` candidates per prompt are
        sampled with every lever and scored first; the K of each prompt whose advantages are largest in
        size are then sampled again exactly (same noise, lossless levers only, training's precision)."""
        per_prompt, scouts = self.config.data.images_per_prompt, self.config.rollout.scout_candidates
        if scouts <= 1:
            return self._collect(epoch, [item for item in drawn for _ in range(per_prompt)])
        candidates = [item for item in drawn for _ in range(per_prompt * scouts)]
        chosen = self._scout(epoch, candidates, per_prompt * scouts, per_prompt)
        self.exact = True
        try:
            return self._collect(epoch, [candidates[i] for i in chosen], chosen, per_prompt)
        finally:
            self.exact = False

    def _scout(self, epoch: int, candidates: list[PromptItem], group: int, keep: int) -> list[int]:
        """The candidates to regenerate: in each group of `group`, the `keep` whose total reward is farthest
        from the group's mean (the normalizers' running state is left as it was)."""
        scouted = self._collect(epoch, candidates, per_prompt=group)
        state = self.rewards.state_dict()
        total = self.scores(scouted).total
        self.rewards.load_state_dict(state)
        spread = (
            (total - total.view(-1, group).nanmean(dim=1).repeat_interleave(group)).abs().nan_to_num(-1.0)
        )
        order = torch.argsort(spread.view(-1, group), dim=1, descending=True, stable=True)[:, :keep]
        return (order.sort(dim=1).values + torch.arange(0, len(total), group).view(-1, 1)).flatten().tolist()

    def _collect(
        self,
        epoch: int,
        items: list[PromptItem],
        noise_ids: Sequence[int] | None = None,
        per_prompt: int | None = None,
    ) -> Samples:
        """Sample `items` (consecutive groups of `per_prompt`), the noise of item `i` keyed by
        `noise_ids[i]` (default `i`)."""
        per_prompt = per_prompt or self.config.data.images_per_prompt
        items = with_sources(items)  # an editing prompt's source image, for the policy and the rewards
        prompts = [item.prompt for item in items]
        group_ids = torch.arange(len(items)) // per_prompt
        cond = encode_items(self.policy, items)
        mine = self.dist.share(len(items))
        keys = mine if noise_ids is None else [noise_ids[i] for i in mine]
        noise = keyed_noise(
            keys, tuple(self.policy.latent_shape), self.config.train.seed, COLLECTION_STREAM, epoch
        )
        metadata = [item.metadata for item in items]
        overlap = overlap_wanted(self.config.train.overlap_scoring, self.rewards, self.device)
        scoring = OverlappedScoring(self.rewards, overlap, self.device)
        my_prompts, my_metadata = prompts[mine.start : mine.stop], metadata[mine.start : mine.stop]
        latents, images, trajectory = self._sample(
            epoch,
            mine,
            index_cond(cond, slice(mine.start, mine.stop)),
            noise.to(self.device),
            lambda rows, part: scoring.submit(part, my_prompts[rows], my_metadata[rows]),
        )
        self._scoring = scoring
        return Samples(
            self.dist.gather(latents),
            images,
            prompts,
            metadata,
            cond,
            group_ids,
            local=slice(mine.start, mine.stop),
            trajectory=trajectory,
        )

    def _sample(
        self,
        epoch: int,
        mine: range,
        cond: Cond,
        noise: torch.Tensor,
        submit: Callable[[slice, torch.Tensor], None],
    ) -> tuple[torch.Tensor, torch.Tensor, Trajectory | None]:
        """This rank's latents and images, each micro-batch scored while the next is sampled."""
        seed, size = self.config.train.seed, self.config.train.sample_batch_size
        # a stochastic solver's own draws: rank-dependent, and apart from the plan's shared generator
        sde = torch.Generator().manual_seed(keyed_seed(seed, SOLVER_STREAM, epoch, self.dist.rank))
        latent_parts, image_parts = [], []
        for start in range(0, len(mine), size):
            rows = slice(start, start + size)
            with self.rollout():
                part = sample_latents(
                    self.policy,
                    self.solver,
                    index_cond(cond, rows),
                    noise[rows],
                    view="old",
                    generator=sde,
                    batch_size=size,
                )
            latent_parts.append(part)
            image_parts.append(self.policy.decode(part).cpu())
            submit(rows, image_parts[-1])
        return torch.cat(latent_parts), torch.cat(image_parts), None

    @contextlib.contextmanager
    def rollout(self) -> Iterator[None]:
        """The rollout's precision and levers around one sampling micro-batch (regenerating scouts: only
        the lossless levers, in training's precision)."""
        with self.autocast(exact=self.exact), rollout_context(self.levers, self.policy, lossy=not self.exact):
            yield

    def plan(
        self,
        samples: Samples,
        optimality: torch.Tensor,
        times: torch.Tensor,
        geometry: Geometry,
        generator: torch.Generator,
    ) -> list[list[MicroBatch]]:
        """The update's micro-batches per optimizer step: every sample visits `trained_times` of the
        training times, each in a random order of its own (`training_plan`, the NFT reference's)."""
        return training_plan(
            len(samples),
            times,
            geometry.trained_times,
            geometry.global_micro_batch,
            # fewer samples than planned (some had no valid score) can leave fewer micro-batches
            min(geometry.optimizer_steps, geometry.micro_batches_for(len(samples))),
            geometry.inner_epochs,
            generator,
        )

    def scores(self, samples: Samples) -> RewardSetOutput:
        """Every reward's scores of this rank's images (waiting for the pending ones); the raw scores
        gathered, then normalized and combined over the whole epoch on every rank (so prompt groups and
        running statistics see every sample)."""
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

    def loss(
        self,
        samples: Samples,
        rows: torch.Tensor,
        times: torch.Tensor,
        optimality: torch.Tensor,
        noise: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The objective on the clean samples `rows` at `times`, noised with their keyed `noise`."""
        index = rows.to(self.device)
        cond = index_cond(samples.cond, rows)
        return self.objective.loss(
            self.policy, samples.latents[index], cond, times, optimality[index], noise.to(self.device)
        )


class TrajectoryCollector(CleanCollector):
    """Sampling paths of the old policy with each step's log-prob (the objective samples them itself);
    the objective's loss on the path steps that start at the training times."""

    objective: TrajectoryObjective  # type: ignore[assignment]

    def _sample(
        self,
        epoch: int,
        mine: range,
        cond: Cond,
        noise: torch.Tensor,
        submit: Callable[[slice, torch.Tensor], None],
    ) -> tuple[torch.Tensor, torch.Tensor, Trajectory | None]:
        """This rank's paths in sampling batches; each step's noise is keyed by (seed, epoch, sample), so
        the paths do not depend on the batches or the ranks. Every path's steps are gathered: every rank
        trains on all of them."""
        times = torch.cat([self.train_times, self.train_times.new_zeros(1)]).to(self.device)
        shape = (len(times) - 1, *self.policy.latent_shape)
        step_noise = keyed_noise(mine, shape, self.config.train.seed, PATH_STREAM, epoch)
        parts = []
        size, seed = self.config.train.sample_batch_size, self.config.train.seed
        for start in range(0, len(mine), size):
            rows = slice(start, start + size)
            draws = torch.Generator().manual_seed(keyed_seed(seed, WINDOW_STREAM, epoch, mine[start]))
            with self.rollout():
                parts.append(
                    self.objective.sample(
                        self.policy,
                        noise[rows],
                        index_cond(cond, rows),
                        times,
                        step_noise[rows].to(self.device),
                        draws,
                    )
                )
        states = torch.cat([p.states for p in parts])
        log_probs = torch.cat([p.log_probs for p in parts])
        first_step = torch.cat([p.first_step for p in parts])
        images = self.policy.decode(states[:, -1]).cpu()
        for start in range(0, len(mine), size):
            rows = slice(start, start + size)
            submit(rows, images[rows])
        gathered = Trajectory(
            self.dist.gather(states),
            self.dist.gather(log_probs),
            parts[0].times,
            self.dist.gather(first_step),
        )
        return states[:, -1], images, gathered

    def plan(
        self,
        samples: Samples,
        optimality: torch.Tensor,
        times: torch.Tensor,
        geometry: Geometry,
        generator: torch.Generator,
    ) -> list[list[MicroBatch]]:
        """The reference's plan for paths (`path_plan`): the samples the objective trains on (FlowGRPO
        leaves those of zero advantage out), each optimizer step every trained step of its share."""
        trained = self.objective.trained_samples(optimality.cpu()).nonzero(as_tuple=True)[0]
        if not len(trained):
            return []
        path = samples.trajectory
        assert path is not None and path.first_step is not None
        grid = path.times.to(times.device, times.dtype)
        return path_plan(
            trained,
            grid,
            path.first_step.cpu(),
            geometry.trained_times,
            geometry.global_micro_batch,
            min(geometry.optimizer_steps, len(trained)),
            generator,
        )

    def loss(
        self,
        samples: Samples,
        rows: torch.Tensor,
        times: torch.Tensor,
        optimality: torch.Tensor,
        noise: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The objective on the path steps of the samples `rows` that start at `times` (no noise: the
        paths carry their own)."""
        path = samples.trajectory
        assert path is not None
        states, next_states, old_log_probs, steps = path_steps(path, rows, times)
        return self.objective.trajectory_loss(
            self.policy,
            states,
            next_states,
            old_log_probs,
            steps,
            path.times.to(self.device),
            index_cond(samples.cond, rows),
            optimality[rows.to(self.device)],
        )


def collector_for(objective: Objective | TrajectoryObjective, **parts: Any) -> CleanCollector:
    """The collector the objective's declaration asks for: paths for a `TrajectoryObjective`, else clean
    samples (`parts`: the collector's other arguments but its autocast and levers, which come from
    `[rollout]`: its precision and levers, refused in one line when the objective needs exact rollouts)."""
    config, device = parts["config"], parts["device"]
    levers = build_levers(config)
    check_rollout(config, objective, levers, device)
    rollout, training = rollout_precision(config, device), resolve_precision(config.train.precision, device)

    def autocast_rollout(exact: bool = False) -> contextlib.AbstractContextManager:
        return autocast(training if exact else rollout, device)

    parts.update(autocast=autocast_rollout, levers=levers)
    if isinstance(objective, TrajectoryObjective):
        return TrajectoryCollector(objective=objective, **parts)
    return CleanCollector(objective=objective, **parts)
