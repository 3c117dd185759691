"""The built-in monitor: pixel diversity inside each prompt's group of samples.

A reward that is being hacked often narrows what the model draws for one prompt (one colour, one
layout, one texture); the mean pairwise distance of a group's images falls with it, while the reward
still rises. Measured on images average-pooled to at most 64 px a side, so it costs little.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["PixelDiversity", "PixelDiversityOptions", "group_pairwise_distance"]


def group_pairwise_distance(features: torch.Tensor, group_ids: torch.Tensor) -> float:
    """The mean over groups (of two or more rows) of the mean pairwise RMS distance between the rows
    of `features` `[N, ...]` in that group; NaN when no group has two rows."""
    flat = features.reshape(features.shape[0], -1).double()
    per_group = []
    for group in torch.unique(group_ids):
        rows = flat[group_ids == group]
        if rows.shape[0] < 2:
            continue
        distances = torch.cdist(rows, rows) / math.sqrt(rows.shape[1])
        count = rows.shape[0]
        per_group.append(float(distances.sum() / (count * (count - 1))))
    return sum(per_group) / len(per_group) if per_group else math.nan


class PixelDiversityOptions(BaseModel):
    """Options of `pixel-diversity`."""

    model_config = ConfigDict(extra="forbid")

    size: int = Field(64, ge=4, description="images are average-pooled to at most this many pixels a side")


class PixelDiversity:
    """Within-prompt diversity: the mean pairwise RMS pixel distance of each group's images (0: all equal,
    in [0, 1] for images in [0, 1]); a video's distance is over all its frames."""

    name = "pixel-diversity"

    def __init__(self, size: int = 64) -> None:
        self.size = PixelDiversityOptions(size=size).size

    def __call__(
        self,
        images: torch.Tensor,
        prompts: Sequence[str],
        group_ids: torch.Tensor,
        metadata: Sequence[dict[str, Any]] | None = None,
    ) -> dict[str, float]:
        pooled = images.float().reshape(-1, *images.shape[-3:])  # a video's frames as images
        side = max(images.shape[-2:])
        if side > self.size:
            pooled = F.adaptive_avg_pool2d(
                pooled, (self.size * images.shape[-2] // side, self.size * images.shape[-1] // side)
            )
        features = pooled.reshape(images.shape[0], -1)  # a video: all its frames, one row
        return {"distance": group_pairwise_distance(features, group_ids.cpu())}
