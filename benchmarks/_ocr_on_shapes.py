"""A slow reward for `reward_serving.py`: the real rapidocr OCR reward on shapes images upscaled to
`side` pixels (nearest), read against a fixed quoted text. Its score means nothing for the shapes world
(the benchmark gives it weight 0); its cost is that of OCR on `side` x `side` images on a CPU."""

from __future__ import annotations

from typing import Any

import torch

import nft_rewards


class OcrOnShapes:
    """`ocr` on upscaled images; declares what `ocr` declares."""

    name, native_range, higher_is_better, deterministic = "ocr-on-shapes", (0.0, 1.0), True, True

    def __init__(self, side: int = 160, batch_size: int = 16) -> None:
        self.ocr = nft_rewards.load("ocr", det_limit_side_len=side, batch_size=batch_size)
        self.side, self.batch_size = side, batch_size

    def __call__(self, images: torch.Tensor, prompts: Any, metadata: Any = None):
        large = torch.nn.functional.interpolate(images.float(), size=(self.side, self.side), mode="nearest")
        return self.ocr(large, ['a sign that says "shapes"'] * len(images))

    def aggregate(self, output, prompts, metadata=None):
        return self.ocr.aggregate(output, prompts, metadata)

    def to(self, device: Any) -> OcrOnShapes:
        return self


def factory(**options: Any) -> OcrOnShapes:
    """`python -m nft_rewards.serving _ocr_on_shapes:factory --set side=160` (run from benchmarks/)."""
    return OcrOnShapes(**options)
