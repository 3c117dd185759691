"""`shapes-geneval`: GenEval's scorer, unchanged, on the rule-based detector of the shapes world."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from nft_core.shapes.detector import detect_batch, to_geneval
from nft_core.types import RewardOutput
from nft_rewards.geneval.metadata import validate_metadata
from nft_rewards.geneval.scoring import PARTIAL_SCORE_RANGE, evaluate_image

__all__ = ["ShapesGenEvalOptions", "ShapesGenEvalReward"]

Outcome = Literal["partial", "strict", "official"]


class ShapesGenEvalOptions(BaseModel):
    """`[reward.options]` of `shapes-geneval`."""

    model_config = ConfigDict(extra="forbid")

    outcome: Outcome = Field(
        "partial",
        description="which GenEval outcome is the score: partial credit (the reference's training reward), "
        "strict or official correctness (0/1)",
    )
    batch_size: int = Field(64, ge=1, description="images per detector batch")


class ShapesGenEvalReward:
    """GenEval on shapes-world images: rule-based detections scored by `nft_rewards.geneval.scoring`.

    `scores` is the chosen outcome; `details` always hold all three as float tensors `[N]`: `partial`
    (partial credit, in `[-14, 1]`), `strict` and `correct` (official), 1.0 or 0.0. Metadata is required
    (GenEval metadata, one per image). Runs on the CPU; `.to(device)` is a no-op.
    """

    name = "shapes-geneval"
    higher_is_better = True
    options_model = ShapesGenEvalOptions

    def __init__(self, outcome: Outcome = "partial", batch_size: int = 64) -> None:
        self.options = ShapesGenEvalOptions(outcome=outcome, batch_size=batch_size)
        self.outcome = self.options.outcome
        self.batch_size = self.options.batch_size
        # partial credit: every term is >= 1 - (16 - 1) (16 = detections kept per class), so the mean is too
        self.native_range = PARTIAL_SCORE_RANGE if self.outcome == "partial" else (0.0, 1.0)

    def __repr__(self) -> str:
        return f"ShapesGenEvalReward(outcome={self.outcome!r}, batch_size={self.batch_size})"

    def to(self, device: torch.device | str) -> ShapesGenEvalReward:
        return self

    @torch.no_grad()
    def __call__(
        self,
        images: torch.Tensor,
        prompts: Sequence[str],
        metadata: Sequence[dict[str, Any]] | None = None,
    ) -> RewardOutput:
        n = len(prompts)
        if metadata is None:
            raise ValueError(
                "shapes-geneval needs GenEval metadata for every image (tag, include, [exclude]); got none"
            )
        if len(metadata) != n:
            raise ValueError(f"{len(metadata)} metadata entries but {n} prompts (they are paired one-to-one)")
        if images.ndim != 4 or images.shape[0] != n:
            raise ValueError(f"expected images [{n},3,H,W] for {n} prompts, got shape {tuple(images.shape)}")
        for i, meta in enumerate(metadata):
            validate_metadata(meta, f"{self.name}: metadata[{i}]")
        partial, strict, correct = [], [], []
        for start in range(0, n, self.batch_size):
            batch = images[start : start + self.batch_size]
            for offset, detections in enumerate(detect_batch(batch)):
                outcome = evaluate_image(metadata[start + offset], *to_geneval(detections))
                partial.append(outcome.score)
                strict.append(float(outcome.strict_correct))
                correct.append(float(outcome.correct))
        details = {
            "partial": torch.tensor(partial, dtype=torch.float32),
            "strict": torch.tensor(strict, dtype=torch.float32),
            "correct": torch.tensor(correct, dtype=torch.float32),
        }
        key = {"partial": "partial", "strict": "strict", "official": "correct"}[self.outcome]
        return RewardOutput(scores=details[key].clone(), details=details)
