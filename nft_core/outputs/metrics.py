"""The records of `metrics.jsonl`: one per epoch of training, one per evaluation, built only here."""

from __future__ import annotations

import math
from typing import Any

import torch

from nft_core.reward_set import RewardSetOutput
from nft_core.types import EvalResult

__all__ = ["eval_record", "train_record"]


def _position(epoch: int, step: int, train_seconds: float) -> dict[str, Any]:
    return {"epoch": epoch, "step": step, "train_minutes": train_seconds / 60}


def train_record(
    epoch: int,
    step: int,
    train_seconds: float,
    old_decay: float,
    phases: dict[str, float],
    scored: RewardSetOutput,
    advantages: dict[str, float],
    losses: dict[str, float],
) -> dict[str, Any]:
    """One epoch: position, old-policy decay, phase seconds and throughput, every reward raw and
    normalized (and its details' means) over the valid samples, how many samples each reward left
    without a finite score (`reward/<name>/invalid`, `samples/excluded` in all), advantage statistics
    (`advantage/*`) and the update's losses."""
    images = len(scored.total)
    record: dict[str, Any] = {
        "kind": "train",
        **_position(epoch, step, train_seconds),
        "old_decay": old_decay,
    }
    record.update({f"seconds/{phase}": seconds for phase, seconds in phases.items()})
    record["images_per_second"] = images / sum(phases.values())
    valid = scored.valid
    assert valid is not None
    every = bool(valid.all())

    def kept(values: torch.Tensor) -> torch.Tensor:
        """The values of the valid samples (all of them, untouched, in the usual case); NaN if none."""
        return values if every else values[valid] if valid.any() else torch.tensor([math.nan])

    record["samples/excluded"] = int((~valid).sum())
    record["reward/total_mean"] = float(kept(scored.total).mean())
    for name in scored.raw:
        record[f"reward/{name}/raw_mean"] = float(kept(scored.raw[name]).mean())
        record[f"reward/{name}/raw_std"] = float(kept(scored.raw[name]).std(unbiased=False))
        record[f"reward/{name}/normalized_mean"] = float(kept(scored.normalized[name]).mean())
        record[f"reward/{name}/invalid"] = scored.invalid.get(name, 0)
        if name in scored.failed_calls:
            record[f"reward/{name}/failed_calls"] = scored.failed_calls[name]
        for key, value in scored.details.get(name, {}).items():
            record[f"reward/{name}/{key}_mean"] = float(kept(value.float()).mean())
    record.update({f"advantage/{key}": value for key, value in advantages.items()})
    record.update(losses)
    return record


def eval_record(
    result: EvalResult, label: str, epoch: int, step: int, train_seconds: float
) -> dict[str, Any]:
    """One evaluation: per reward its score (`eval/<reward>/score`) and per-tag breakdown
    (`eval/<reward>/tag/<tag>`)."""
    record: dict[str, Any] = {"kind": "eval", "label": label, **_position(epoch, step, train_seconds)}
    for name, entry in result.scores.items():
        record[f"eval/{name}/score"] = entry["score"]
        for tag, value in result.per_tag.get(name, {}).items():
            record[f"eval/{name}/tag/{tag}"] = value
    return record
