"""Paired evaluation: fixed prompts, fixed noise per image; each reward aggregates its own results."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from nft_core.distributed import Distributed
from nft_core.loop.conditions import encode_items, with_sources
from nft_core.protocols import Policy, Reward, Solver
from nft_core.sampling import noise_for, sample_latents
from nft_core.types import EvalResult, PromptItem, RewardOutput


def _by_tag(tags: Sequence[str], values: torch.Tensor) -> dict[str, list[float]]:
    """The values of each tag, in first-seen tag order."""
    per_tag: dict[str, list[float]] = {}
    for tag, value in zip(tags, values.tolist(), strict=True):
        per_tag.setdefault(tag, []).append(float(value))
    return per_tag


def paired_difference(tags: Sequence[str], a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """Mean over tags of the per-tag mean of `a - b` on the same items, and its standard error.

    `a[i]` and `b[i]` score one item (same prompt, same noise) under two conditions, so the error comes
    from the per-item differences: the gap is the mean over tags of the tag's mean difference (GenEval's
    aggregation of a difference), and its variance is the sum over tags of var(differences in the tag)
    / n_tag, divided by the number of tags squared (sample variance with n - 1; a tag with one item
    adds nothing).
    """
    per_tag = _by_tag(tags, a.double() - b.double())
    gap, variance = 0.0, 0.0
    for values in per_tag.values():
        mean = sum(values) / len(values)
        gap += mean
        if len(values) > 1:
            variance += sum((v - mean) ** 2 for v in values) / (len(values) - 1) / len(values)
    return gap / len(per_tag), variance**0.5 / len(per_tag)


@torch.no_grad()
def evaluate(
    policy: Policy,
    solver: Solver,
    items: Sequence[PromptItem],
    rewards: dict[str, Reward],
    seed: int = 1234,
    guidance: float = 1.0,
    view: str = "current",
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    progress: str | None = None,
    dist: Distributed | None = None,
) -> EvalResult:
    """Sample every item once with noise fixed by (seed, index), score with each reward, aggregate.

    Each reward's entry holds `mean` (of its scores), `score` (its `aggregate`'s headline), the mean of
    every detail (`<key>_mean`) and the aggregate's tables. `progress` names a progress bar of the
    sampling (None: none). With `dist` (data-parallel ranks), each rank samples and scores its share of
    the items, the per-image results are gathered, and every rank aggregates all of them; `images` holds
    this rank's share (rank 0's is the first rows).
    """
    dist = dist or Distributed()
    items = with_sources(items)
    prompts = [item.prompt for item in items]
    metadata = [item.metadata for item in items]
    mine = dist.share(len(items))
    # every rank samples as many as the largest share (the last item again), so that each makes the
    # same network calls: sharded networks (FSDP2) gather their weights in every call
    padding = -(-len(items) // dist.world_size) - len(mine)
    rows = [*mine, *[mine[-1] if len(mine) else len(items) - 1] * padding]
    noise = noise_for(rows, tuple(policy.latent_shape), seed).to(device)
    cond = encode_items(policy, [items[i] for i in rows])
    latents = sample_latents(
        policy, solver, cond, noise, view=view, guidance=guidance, batch_size=batch_size, progress=progress
    )
    images = policy.decode(latents[: len(mine)]).cpu()
    finite = not dist.any(not bool(torch.isfinite(latents).all()))
    result = EvalResult(images=images, finite=finite)
    local_prompts, local_metadata = prompts[mine.start : mine.stop], metadata[mine.start : mine.stop]
    for name, reward in rewards.items():
        output, error = _score(reward, images, local_prompts, local_metadata)
        errors = [e for e in dist.gather_objects(error if output is None else "") if e]
        if errors:  # raised twice somewhere: no score at this evaluation, the run goes on
            result.scores[name] = {"mean": math.nan, "score": math.nan, "error": errors[0]}
            result.per_tag[name] = {}
            result.per_image[name] = torch.full((len(prompts),), math.nan)
            continue
        if dist.enabled:
            output = _gathered(output, dist)
        summary = reward.aggregate(output, prompts, metadata)
        scores = output.scores.float().cpu()
        entry: dict[str, Any] = {"mean": float(scores.mean()), "score": summary.score}
        for key, value in output.details.items():
            value = value.float().cpu()
            entry[f"{key}_mean"] = float(value.mean())
            result.per_image[f"{name}.{key}"] = value
        entry.update(summary.tables)
        result.per_image[name] = scores
        result.scores[name] = entry
        result.per_tag[name] = dict(summary.per_tag)
    return result


def _gathered(output: RewardOutput, dist: Distributed) -> RewardOutput:
    """One reward's per-image output over every rank's share, in item order."""
    details = {key: dist.gather(value.float().cpu()) for key, value in output.details.items()}
    notes = None
    if output.notes is not None:
        notes = [note for part in dist.gather_objects(list(output.notes)) for note in part]
    return RewardOutput(scores=dist.gather(output.scores.float().cpu()), details=details, notes=notes)


def _score(
    reward: Reward, images: torch.Tensor, prompts: list[str], metadata: list[dict[str, Any]]
) -> tuple[Any, str]:
    """The reward's output, retried once after an exception; `(None, the error)` after two."""
    error = ""
    for _ in range(2):
        try:
            return reward(images, prompts, metadata), ""
        except Exception as problem:  # a flaky reward server must not end a days-long run
            error = f"{type(problem).__name__}: {problem}"
    return None, error
