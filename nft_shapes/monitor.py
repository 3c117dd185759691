"""`shapes-diversity`: the colour and layout entropy of each prompt's samples in the shapes world.

Prompts that leave the colour free ("a circle", "two squares") can be drawn in any palette colour;
a model that draws them all in one colour has collapsed, whatever its reward. For each group whose
prompt fixes no colour, the entropy (bits) of the detected objects' colours; for each group whose
prompt fixes no position, the entropy of the objects' centres on a 3 x 3 grid of the image. The
maxima are log2 of the palette size and log2 9.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict

from nft_shapes.detector import detect_batch
from nft_shapes.world import COLORS

__all__ = ["ShapesDiversity", "ShapesDiversityOptions", "entropy_bits"]


def entropy_bits(values: Sequence[Any]) -> float:
    """The Shannon entropy in bits of the values' empirical distribution (0 for one value or none)."""
    counts = Counter(values)
    total = sum(counts.values())
    return -sum(c / total * math.log2(c / total) for c in counts.values()) if total else 0.0


def _fixes_colour(prompt: str, metadata: dict[str, Any] | None) -> bool:
    include = (metadata or {}).get("include")
    if include is not None:
        return any("color" in entry for entry in include)
    return any(word in COLORS for word in prompt.lower().split())


def _fixes_position(metadata: dict[str, Any] | None) -> bool:
    include = (metadata or {}).get("include") or []
    return (metadata or {}).get("tag") == "position" or any("position" in entry for entry in include)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


class ShapesDiversityOptions(BaseModel):
    """`shapes-diversity` has no options."""

    model_config = ConfigDict(extra="forbid")


class ShapesDiversity:
    """Colour and layout entropy inside the prompt groups that leave colour or position free."""

    name = "shapes-diversity"

    def __call__(
        self,
        images: torch.Tensor,
        prompts: Sequence[str],
        group_ids: torch.Tensor,
        metadata: Sequence[dict[str, Any]] | None = None,
    ) -> dict[str, float]:
        metadata = list(metadata) if metadata is not None else [{}] * len(prompts)
        detections = detect_batch(images.detach().float().cpu())
        height, width = images.shape[-2:]
        colour, layout = [], []
        groups = group_ids.cpu()
        for group in torch.unique(groups):
            rows = (groups == group).nonzero(as_tuple=True)[0].tolist()
            if len(rows) < 2:
                continue
            first = rows[0]
            found = [d for row in rows for d in detections[row]]
            if not found:
                continue
            if not _fixes_colour(prompts[first], metadata[first]):
                colour.append(entropy_bits([d.color for d in found]))
            if not _fixes_position(metadata[first]):
                cells = [
                    (
                        min(2, 3 * (d.box[1] + d.box[3]) // (2 * height)),
                        min(2, 3 * (d.box[0] + d.box[2]) // (2 * width)),
                    )
                    for d in found
                ]
                layout.append(entropy_bits(cells))
        return {
            "colour_entropy": _mean(colour),
            "layout_entropy": _mean(layout),
            "colour_free_groups": float(len(colour)),
        }
