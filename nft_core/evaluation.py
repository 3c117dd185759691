"""Paired evaluation: fixed prompts, fixed noise per image, rewards and the per-tag GenEval table."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from nft_core.protocols import Policy, Reward, Sampler
from nft_core.sampling import noise_for, sample_latents
from nft_core.types import PromptItem


@dataclass
class EvalResult:
    """Per reward: main score (mean) and details; GenEval-style per-tag table when metadata has tags."""

    scores: dict[str, dict[str, Any]] = field(default_factory=dict)
    images: torch.Tensor | None = None
    per_image: dict[str, torch.Tensor] = field(default_factory=dict)


def _by_tag(tags: Sequence[str], values: torch.Tensor) -> dict[str, list[float]]:
    """The values of each tag, in first-seen tag order."""
    per_tag: dict[str, list[float]] = {}
    for tag, value in zip(tags, values.tolist(), strict=True):
        per_tag.setdefault(tag, []).append(float(value))
    return per_tag


def tag_table(tags: Sequence[str], values: torch.Tensor) -> dict[str, Any]:
    """Official GenEval aggregation: mean of the per-tag means (plus the per-tag means and counts)."""
    per_tag = _by_tag(tags, values)
    means = {tag: sum(v) / len(v) for tag, v in per_tag.items()}
    return {
        "overall": sum(means.values()) / len(means),
        "per_tag": means,
        "counts": {tag: len(v) for tag, v in per_tag.items()},
    }


def paired_difference(tags: Sequence[str], a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """Official-aggregation score of `a` minus that of `b` on the same items, and its standard error.

    `a[i]` and `b[i]` score one item (same prompt, same noise) under two conditions, so the error comes
    from the per-item differences: the gap is the mean over tags of the tag's mean difference, and its
    variance is the sum over tags of var(differences in the tag) / n_tag, divided by the number of tags
    squared (sample variance with n - 1; a tag with one item adds nothing).
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
    sampler: Sampler,
    items: Sequence[PromptItem],
    rewards: dict[str, Reward],
    seed: int = 1234,
    guidance: float = 1.0,
    view: str = "current",
    batch_size: int = 64,
    device: torch.device | str = "cpu",
) -> EvalResult:
    """Sample every item once with noise fixed by (seed, index), score with each reward, aggregate.

    For a GenEval-style reward (details with `correct`), the main score is the official aggregation of
    `correct` over tags: the mean of the per-tag accuracies.
    """
    prompts = [item.prompt for item in items]
    metadata = [item.metadata for item in items]
    noise = noise_for(range(len(items)), tuple(policy.latent_shape), seed).to(device)
    cond = policy.encode_prompts(prompts)
    latents = sample_latents(
        policy, sampler, cond, noise, view=view, guidance=guidance, batch_size=batch_size
    )
    images = policy.decode(latents).cpu()
    result = EvalResult(images=images)
    tags = [m.get("tag") for m in metadata]
    for name, reward in rewards.items():
        output = reward(images, prompts, metadata)
        scores = output.scores.float().cpu()
        entry: dict[str, Any] = {"mean": float(scores.mean()), "score": float(scores.mean())}
        for key, value in output.details.items():
            value = value.float().cpu()
            entry[f"{key}_mean"] = float(value.mean())
            result.per_image[f"{name}.{key}"] = value
        if "correct" in output.details and all(tags):
            table = tag_table(tags, output.details["correct"].float().cpu())
            entry.update(score=table["overall"], official=table)
            if "strict" in output.details:
                entry["strict"] = tag_table(tags, output.details["strict"].float().cpu())
        result.per_image[name] = scores
        result.scores[name] = entry
    return result
