"""JPEG compressibility and incompressibility (docs/rewards.md §7; DDPO, NFT `flow_grpo/rewards.py`).

Each image is quantized to uint8 (`round(255 x)`), saved by Pillow as JPEG at quality 95 (Pillow's other
defaults) into memory; `size_kB = bytes / 1000`. Incompressibility = `size_kB`; compressibility =
`-size_kB / 500`. No model.
"""

from __future__ import annotations

import io
from typing import Any, ClassVar

import torch
from PIL import Image
from pydantic import Field

from nft_rewards.base import BaseReward, RewardOptions, quantize_uint8, to_numpy_hwc

__all__ = ["JpegCompressibility", "JpegIncompressibility", "JpegOptions", "jpeg_size_kb"]


class JpegOptions(RewardOptions):
    """`[reward.options]` of the JPEG rewards."""

    quality: int = Field(95, ge=1, le=100, description="Pillow JPEG quality (the reference uses 95)")


def jpeg_size_kb(images_uint8_hwc, quality: int = 95) -> list[float]:
    """Size in kB (1000 bytes) of each `[H,W,3]` uint8 image saved as JPEG at `quality`."""
    sizes = []
    for array in images_uint8_hwc:
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="JPEG", quality=quality)
        sizes.append(buffer.tell() / 1000)
    return sizes


class JpegIncompressibility(BaseReward):
    """`size_kB` of the image saved as JPEG (quality 95): larger files score higher."""

    name: ClassVar[str] = "jpeg-incompressibility"
    Options = JpegOptions
    sign = 1.0
    divisor = 1.0

    def __init__(self, options: JpegOptions | None = None) -> None:
        super().__init__(options or JpegOptions())
        self.native_range = (0.0, float("inf"))

    def score_batch(
        self, images: torch.Tensor, prompts: list[str], metadata: Any
    ) -> tuple[torch.Tensor, dict]:
        sizes = torch.tensor(jpeg_size_kb(to_numpy_hwc(quantize_uint8(images)), self.options.quality))
        return self.sign * sizes / self.divisor, {"size_kb": sizes}


class JpegCompressibility(JpegIncompressibility):
    """`-size_kB / 500` of the image saved as JPEG (quality 95): smaller files score higher."""

    name: ClassVar[str] = "jpeg-compressibility"
    sign = -1.0
    divisor = 500.0

    def __init__(self, options: JpegOptions | None = None) -> None:
        super().__init__(options)
        self.native_range = (-float("inf"), 0.0)
