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
from collections.abc import Callable, Sequence

import torch

from nft_core.config import RunConfig
from nft_core.distributed import Distributed
from nft_core.flowgrpo import path_steps
from nft_core.loop.overlap import OverlappedScoring
from nft_core.protocols import Objective, Policy, Solver, TrajectoryObjective
from nft_core.reward_set import RewardSet, RewardSetOutput
from nft_core.sampling import keyed_noise, keyed_seed, sample_latents
from nft_core.types import Cond, PromptItem, Samples, Trajectory, index_cond

__all__ = [
    "COLLECTION_STREAM",
    "PATH_STREAM",
    "PROBE_STREAM",
    "SOLVER_STREAM",
    "TRAINING_STREAM",
    "CleanCollector",
    "TrajectoryCollector",
    "collector_for",
]

COLLECTION_STREAM, TRAINING_STREAM, SOLVER_STREAM, PATH_STREAM, PROBE_STREAM = 1, 2, 3, 4, 5
"""Keys of the noise streams: collection noise per sample, training noise per sample and visit, a
stochastic solver's draws per rank, a trajectory objective's step noises per sample, and the noise of
the epoch's velocity-norm probe."""


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
    ) -> None:
        self.config, self.policy, self.solver, self.objective = config, policy, solver, objective
        self.rewards, self.dist, self.device, self.autocast = rewards, dist, device, autocast
        self.train_times = train_times
        self._scoring: OverlappedScoring | None = None
        self.scoring_seconds: dict[str, float] = {}
        """`seconds/scoring` (the rewards' time) and `seconds/scoring_unhidden` (what sampling did not
        hide) of the last epoch, this rank's."""

    @torch.no_grad()
    def collect(self, epoch: int, drawn: Sequence[PromptItem]) -> Samples:
        """K samples per drawn prompt. Each rank samples its share; the latents are gathered (every
        rank holds all of them, and its own images); each finished micro-batch starts being scored."""
        per_prompt = self.config.data.images_per_prompt
        items = [item for item in drawn for _ in range(per_prompt)]
        prompts = [item.prompt for item in items]
        group_ids = torch.arange(len(items)) // per_prompt
        cond = self.policy.encode_prompts(prompts)
        mine = self.dist.share(len(items))
        noise = keyed_noise(
            mine, tuple(self.policy.latent_shape), self.config.train.seed, COLLECTION_STREAM, epoch
        )
        metadata = [item.metadata for item in items]
        scoring = OverlappedScoring(self.rewards, self.config.train.overlap_scoring, self.device)
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
            with self.autocast():
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
        states = torch.cat([p.states for p in parts])
        log_probs = torch.cat([p.log_probs for p in parts])
        images = self.policy.decode(states[:, -1]).cpu()
        for start in range(0, len(mine), size):
            rows = slice(start, start + size)
            submit(rows, images[rows])
        gathered = Trajectory(self.dist.gather(states), self.dist.gather(log_probs), parts[0].times)
        return states[:, -1], images, gathered

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


def collector_for(objective: Objective | TrajectoryObjective, **parts) -> CleanCollector:
    """The collector the objective's declaration asks for: paths for a `TrajectoryObjective`, else clean
    samples (`parts`: the collector's other arguments)."""
    if isinstance(objective, TrajectoryObjective):
        return TrajectoryCollector(objective=objective, **parts)
    return CleanCollector(objective=objective, **parts)
