"""nft-plugin-template: the `plugin-template` reward, registered through the `nft` plugin hooks.

The reward is the colourfulness metric of Hasler & Süsstrunk 2003, "Measuring colourfulness in
natural images", on pixels in [0, 1]: with `rg = R - G` and `yb = (R + G) / 2 - B` over an image,

    colourfulness = sqrt(std(rg)^2 + std(yb)^2) + mean_weight * sqrt(mean(rg)^2 + mean(yb)^2)

Replace `score_batch` (and the options) with your own reward; keep the class attributes, they are
the contract the trainer reads (docs/plugins.md).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from pydantic import Field

from nft_core.hookspecs import hookimpl
from nft_rewards.base import BaseReward, RewardOptions, quantize_uint8

__all__ = ["PluginTemplateOptions", "PluginTemplateReward"]


class PluginTemplateOptions(RewardOptions):
    """`[reward.options]` of `plugin-template` (unknown keys are errors naming their TOML path)."""

    mean_weight: float = Field(0.3, ge=0, description="weight of the mean-chroma term (the paper's 0.3)")


class PluginTemplateReward(BaseReward):
    """Colourfulness of each image (Hasler & Süsstrunk 2003): higher is more colourful."""

    name: ClassVar[str] = "plugin-template"
    higher_is_better: ClassVar[bool] = True
    Options = PluginTemplateOptions

    def __init__(self, options: PluginTemplateOptions | None = None) -> None:
        super().__init__(options or PluginTemplateOptions())
        # std and |mean| of rg and yb are at most 1 for pixels in [0, 1]
        self.native_range = (0.0, (1.0 + self.options.mean_weight) * math.sqrt(2.0))

    def score_batch(
        self, images: torch.Tensor, prompts: list[str], metadata: Any
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Scores `[n]` and details for one batch; the base class validates and batches the inputs."""
        pixels = quantize_uint8(images).float() / 255  # the same pixels for float16 and float32 inputs
        red, green, blue = pixels.unbind(dim=1)
        rg = (red - green).flatten(1)
        yb = (0.5 * (red + green) - blue).flatten(1)
        spread = torch.sqrt(rg.var(dim=1, unbiased=False) + yb.var(dim=1, unbiased=False))
        mean_chroma = torch.sqrt(rg.mean(dim=1) ** 2 + yb.mean(dim=1) ** 2)
        scores = spread + self.options.mean_weight * mean_chroma
        return scores, {"spread": spread, "mean_chroma": mean_chroma}


@hookimpl
def register_rewards(register):
    """Register `plugin-template` with the model that validates its `[reward.options]` table."""
    register(
        "plugin-template",
        PluginTemplateReward.from_options,
        options=PluginTemplateOptions,
        description="colourfulness of each image (Hasler & Süsstrunk 2003)",
    )
