"""`shapes-geneval`: the `geneval` reward with the shapes world's detector, as a registered preset."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ShapesGenEvalOptions", "shapes_geneval"]


class ShapesGenEvalOptions(BaseModel):
    """`[reward.options]` of `shapes-geneval` (the `geneval` options that matter without a model)."""

    model_config = ConfigDict(extra="forbid")

    outcome: Literal["partial", "strict", "official"] = Field(
        "partial",
        description="which GenEval outcome is the score: partial credit (the reference's training reward), "
        "strict or official correctness (0/1)",
    )
    batch_size: int = Field(64, ge=1, description="images per detector batch")


def shapes_geneval(**options):
    """GenEval on shapes-world images: the rule-based detector's detections and colours, GenEval's scorer
    unchanged. A `GenEvalReward` named `shapes-geneval`; runs on the CPU."""
    from nft_rewards.geneval.reward import GenEvalOptions, GenEvalReward

    chosen = ShapesGenEvalOptions(**options)
    return GenEvalReward(GenEvalOptions(detector="shapes", **chosen.model_dump()), name="shapes-geneval")
