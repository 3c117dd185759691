"""Alarms: the ways an NFT run is known to go wrong quietly, watched on the records it already writes.

Each alarm is a pure function of the metrics records so far (`metrics.jsonl`, oldest first) and the
`[alarms]` thresholds; it returns a message while its condition holds, else None. The observer
(`nft_core.outputs.observer`) fires an alarm when its condition starts to hold (not again while it
keeps holding): a warning line, an `alarm` record with `alarm/<name>` in metrics.jsonl, a mark on the
curves, a section of the report and a tracker scalar. The conditions:

- `stalled_gap`: mean |v - v_old| below `gap_floor` for `gap_epochs` epochs in a row. At zero the
  positive and negative branches of NFT coincide and the update degenerates into advantage-weighted
  regression (seen with `old_decay = "none"` and one optimizer step an epoch).
- `velocity_inflation`: the trained policy's velocity norm above `norm_ratio` times the reference's on
  the same inputs (`velocity_norm_ratio`, measured every `probe_every` epochs): RL post-training
  inflates it as the images drift (NormGuard, arXiv 2606.27771, measured 5-15 %).
- `reward_hacking`: at an evaluation, a monitor reward (`[[eval.reward]]`, never trained on) is
  `hacking_drop` below its best (the base's evaluation included) while the trained rewards' weighted sum
  is not below its value at that best.
- `diversity_collapse`: a monitor of the samples (`monitor/*`, e.g. pixel or colour diversity) whose
  mean over the last `collapse_window` epochs is below `collapse_fraction` of its mean over the first.
- `excluded_samples`: more than `excluded_fraction` of an epoch's samples without a valid score, or more
  than `skipped_fraction` of its optimizer steps skipped or undone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from nft_core.config import RunConfig

__all__ = ["ALARMS", "AlarmSettings", "check_alarms"]

Record = dict[str, Any]


@dataclass(frozen=True)
class AlarmSettings:
    """The `[alarms]` thresholds and the facts of the run the conditions need."""

    gap_floor: float = 1e-7
    gap_epochs: int = 3
    norm_ratio: float = 1.2
    hacking_drop: float = 0.05
    collapse_fraction: float = 0.5
    collapse_window: int = 3
    excluded_fraction: float = 0.25
    skipped_fraction: float = 0.25
    images: int = 0
    """Samples an epoch collects."""
    optimizer_steps: int = 0
    """Optimizer steps an epoch makes."""
    trained_rewards: tuple[str, ...] = ()
    trained_weights: tuple[float, ...] = ()
    """The weight of each trained reward (1 each when not given): `reward_hacking` compares their sum."""
    monitor_rewards: tuple[str, ...] = ()
    """The `[[eval.reward]]` labels: scored at evaluations, never trained on."""

    @classmethod
    def of(cls, config: RunConfig) -> AlarmSettings:
        """The settings of a run config."""
        alarms = config.alarms.model_dump(exclude={"enabled", "probe_every"})  # the probe is the updater's
        return cls(
            **alarms,
            images=config.data.prompts_per_epoch * config.data.images_per_prompt,
            optimizer_steps=config.train.optimizer_steps_per_epoch,
            trained_rewards=tuple(reward.label for reward in config.reward),
            trained_weights=tuple(reward.weight for reward in config.reward),
            monitor_rewards=tuple(reward.label for reward in config.eval.reward),
        )


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def stalled_gap(train: Sequence[Record], evals: Sequence[Record], settings: Any) -> str | None:
    recent = [_number(r.get("v_old_gap")) for r in train[-settings.gap_epochs :]]
    if len(recent) < settings.gap_epochs or any(gap is None for gap in recent):
        return None
    if all(gap is not None and gap < settings.gap_floor for gap in recent):
        return (
            f"mean |v - v_old| below {settings.gap_floor:g} for {settings.gap_epochs} epochs: the old policy "
            "is the current one, so NFT's negative branch has nothing to push against (check old_decay)"
        )
    return None


def velocity_inflation(train: Sequence[Record], evals: Sequence[Record], settings: Any) -> str | None:
    # the newest probe: it runs every `probe_every` epochs
    probed = next((record for record in reversed(train) if "velocity_norm_ratio" in record), None)
    ratio = _number(probed["velocity_norm_ratio"]) if probed else None
    if ratio is not None and ratio > settings.norm_ratio:
        return (
            f"the trained velocity's norm is {ratio:.3f}x the reference's (threshold "
            f"{settings.norm_ratio:g}): the samples drift from the base model (objective.norm_guard "
            "restrains it)"
        )
    return None


def _trained_total(record: Record, settings: Any) -> float | None:
    """The weighted sum of the trained rewards' scores in an evaluation record (None if one is missing)."""
    weights = settings.trained_weights or (1.0,) * len(settings.trained_rewards)
    scores = [_number(record.get(f"eval/{name}/score")) for name in settings.trained_rewards]
    if any(score is None for score in scores):
        return None
    return sum(w * s for w, s in zip(weights, scores, strict=True))  # type: ignore[misc]


def reward_hacking(train: Sequence[Record], evals: Sequence[Record], settings: Any) -> str | None:
    if len(evals) < 2 or not settings.monitor_rewards or not settings.trained_rewards:
        return None
    trained = "+".join(settings.trained_rewards)
    for monitor in settings.monitor_rewards:
        scores = [_number(r.get(f"eval/{monitor}/score")) for r in evals]
        paired = [(i, s) for i, s in enumerate(scores) if s is not None]
        if len(paired) < 2 or scores[-1] is None:
            continue
        best_index, best = max(paired[:-1], key=lambda pair: pair[1])
        now_trained = _trained_total(evals[-1], settings)
        then_trained = _trained_total(evals[best_index], settings)
        if now_trained is None or then_trained is None:
            continue
        if best - scores[-1] >= settings.hacking_drop and now_trained >= then_trained:
            return (
                f"monitor reward {monitor!r} fell from its best {best:.3f} to {scores[-1]:.3f} while the "
                f"trained {trained!r} rose from {then_trained:.3f} to {now_trained:.3f}"
            )
    return None


def diversity_collapse(train: Sequence[Record], evals: Sequence[Record], settings: Any) -> str | None:
    window = settings.collapse_window
    if len(train) < 2 * window:
        return None
    for key in (k for k in train[-1] if k.startswith("monitor/")):
        first = [_number(r.get(key)) for r in train[:window]]
        last = [_number(r.get(key)) for r in train[-window:]]
        if any(v is None for v in first + last):
            continue
        start, now = sum(first) / window, sum(last) / window  # type: ignore[arg-type]
        if start > 0 and now < settings.collapse_fraction * start:
            return (
                f"{key[len('monitor/') :]} fell to {now:.3g}, below {settings.collapse_fraction:g} of its "
                f"start {start:.3g}: the samples of a prompt are collapsing onto one"
            )
    return None


def excluded_samples(train: Sequence[Record], evals: Sequence[Record], settings: Any) -> str | None:
    if not train:
        return None
    last = train[-1]
    images, excluded = _number(settings.images), _number(last.get("samples/excluded"))
    if images and excluded is not None and excluded / images > settings.excluded_fraction:
        limit = settings.excluded_fraction
        return f"{excluded:.0f} of {images:.0f} samples had no valid score (threshold {limit:g})"
    bad = sum(_number(last.get(key)) or 0.0 for key in ("skipped_steps", "undone_steps"))
    steps = settings.optimizer_steps
    if steps and bad / steps > settings.skipped_fraction:
        limit = settings.skipped_fraction
        return f"{bad:.0f} of {steps} optimizer steps skipped or undone (threshold {limit:g})"
    return None


ALARMS: dict[str, Callable[[Sequence[Record], Sequence[Record], Any], str | None]] = {
    "stalled_gap": stalled_gap,
    "velocity_inflation": velocity_inflation,
    "reward_hacking": reward_hacking,
    "diversity_collapse": diversity_collapse,
    "excluded_samples": excluded_samples,
}
"""Every alarm by name: `condition(train records, eval records, settings) -> message or None`."""


def check_alarms(records: Sequence[Record], settings: AlarmSettings) -> dict[str, str]:
    """The alarms whose condition holds after the last record, with their messages. `settings` carries the
    `[alarms]` thresholds and the run's facts (`images`, `optimizer_steps`, `trained_rewards`,
    `monitor_rewards`); the evaluation before training counts (a monitor may fall from the base on), its
    CFG baselines (`before, CFG s`) do not."""
    train = [r for r in records if r.get("kind") == "train"]
    evals = [
        r for r in records if r.get("kind") == "eval" and not str(r.get("label", "")).startswith("before, ")
    ]
    found = {}
    for name, condition in ALARMS.items():
        message = condition(train, evals, settings)
        if message is not None:
            found[name] = message
    return found
