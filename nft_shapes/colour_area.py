"""`shapes-colour-area`: a reward of the shapes world that a model can satisfy without following the prompt.

The score of an image is the share of its pixels painted in one of the world's colours (`colour`: only
that one). Drawing more and larger objects raises it whatever the prompt asks, so a run trained on it
(alone, or with too much weight beside GenEval) hacks it: the objects swell and merge, and a held-out
GenEval falls while this reward rises. It exists to show and test the alarms and guards (docs/guards.md,
`benchmarks/reward_hacking.py`); nothing in the default trains on it.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field

from nft_rewards.base import BaseReward, RewardOptions
from nft_shapes.world import COLORS, PALETTE

__all__ = ["ColourArea", "ColourAreaOptions"]


class ColourAreaOptions(RewardOptions):
    """`[reward.options]` of `shapes-colour-area`."""

    colour: Literal["any", "red", "green", "blue", "yellow"] = Field(
        "any", description="the colour whose area is paid for (any: every colour of the world)"
    )
    tolerance: float = Field(
        0.35, gt=0, le=1, description="a pixel is painted in a colour when within this RGB distance of it"
    )


class ColourArea(BaseReward):
    """The share of pixels within `tolerance` of a world colour, in [0, 1]; ignores the prompt."""

    name: ClassVar[str] = "shapes-colour-area"
    Options = ColourAreaOptions

    def __init__(self, options: ColourAreaOptions | None = None) -> None:
        super().__init__(options or ColourAreaOptions())
        self.native_range = (0.0, 1.0)
        rows = list(COLORS) if self.options.colour == "any" else [self.options.colour]
        self.register_buffer(
            "_palette", torch.from_numpy(PALETTE[[list(COLORS).index(c) for c in rows]]), persistent=False
        )

    def score_batch(
        self, images: torch.Tensor, prompts: list[str], metadata: Any
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        pixels = images.float().permute(0, 2, 3, 1)  # [n, H, W, 3]
        distance = torch.cdist(pixels.reshape(len(images), -1, 3), self._palette.expand(len(images), -1, -1))
        painted = (distance.min(dim=-1).values <= self.options.tolerance).float()
        return painted.mean(dim=1), {}
