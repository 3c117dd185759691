"""OCR reward for visual text rendering (docs/rewards.md §8; NFT / Flow-GRPO `flow_grpo/ocr.py`).

* Target: the text between the first pair of straight double quotes of the prompt. A prompt without such a
  pair, or whose target is empty once spaces are removed, gets score 0 and `details["error"] = 1` (the
  reference crashes or divides by zero there).
* Recognized: the engine's texts (confidence above its drop threshold, 0.5) concatenated in reading order
  without separator.
* Both strings: ASCII spaces removed, lower-cased. Target a substring of the recognized text -> distance
  0, else the Levenshtein distance (unit costs), clamped to the target length;
  `reward = 1 - distance / len(target)` in [0, 1]. An engine failure scores 0 with the error flag set.

The engine runs on the CPU, one image at a time (`rapidocr` by default; `paddleocr` optional).
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field

from nft_rewards.base import BaseReward, RewardOptions, quantize_uint8, to_numpy_hwc

__all__ = ["OcrOptions", "OcrReward", "extract_target", "levenshtein", "normalize_text", "ocr_reward"]

logger = logging.getLogger(__name__)


def levenshtein(a: str, b: str) -> int:
    """Edit distance with unit-cost insertion, deletion and substitution (as `python-Levenshtein`)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, start=1):
        current = [i]
        for j, char_b in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


def normalize_text(text: str) -> str:
    """The reference's normalization: remove ASCII spaces only (not tabs or newlines), lower-case."""
    return text.replace(" ", "").lower()


def extract_target(prompt: str) -> str | None:
    """The text between the first pair of straight double quotes, or None when there is no such pair."""
    parts = prompt.split('"')
    if len(parts) < 3:
        return None
    return parts[1]


def ocr_reward(recognized: str, target: str) -> tuple[float, int]:
    """`(1 - min(distance, len) / len, distance)` on normalized strings; substring -> distance 0.

    `target` must be non-empty after normalization.
    """
    recognized, target = normalize_text(recognized), normalize_text(target)
    if not target:
        raise ValueError("the OCR target is empty after removing spaces")
    distance = 0 if target in recognized else min(levenshtein(recognized, target), len(target))
    return 1.0 - distance / len(target), distance


class OcrOptions(RewardOptions):
    """`[reward.options]` of `ocr`."""

    backend: Literal["rapidocr", "paddleocr"] = Field("rapidocr", description="OCR engine")
    det_limit_side_len: int = Field(960, ge=32, description="detector side limit (PaddleOCR default 960)")
    det_limit_type: Literal["max", "min"] = Field(
        "max", description="whether the limit caps the longest side"
    )
    use_angle_cls: bool = Field(False, description="text-angle classifier (off in the reference)")
    text_score: float = Field(0.5, ge=0, le=1, description="recognitions below this confidence are dropped")
    lang: str = Field("en", description="PaddleOCR language (paddleocr backend only)")
    bgr_quirk: bool = Field(
        False,
        description="hand the engine RGB arrays as the reference did (PaddleOCR reads arrays as BGR); "
        "off: the engine gets correct BGR",
    )


class OcrReward(BaseReward):
    """Text-rendering accuracy of the quoted prompt text, in [0, 1]."""

    name: ClassVar[str] = "ocr"
    Options = OcrOptions

    def __init__(self, options: OcrOptions | None = None) -> None:
        options = options or OcrOptions()
        super().__init__(options)
        from nft_rewards.ocr_backends import make_engine

        self.native_range = (0.0, 1.0)
        self.engine = make_engine(
            options.backend,
            det_limit_side_len=options.det_limit_side_len,
            det_limit_type=options.det_limit_type,
            use_angle_cls=options.use_angle_cls,
            text_score=options.text_score,
            lang=options.lang,
        )

    def recognize(self, image_rgb_hwc) -> str:
        """The concatenated text the engine reads in one `[H, W, 3]` uint8 RGB image."""
        array = image_rgb_hwc if self.options.bgr_quirk else image_rgb_hwc[:, :, ::-1]
        return "".join(text for text, confidence in self.engine.read(array.copy()) if confidence > 0)

    def score_batch(
        self, images: torch.Tensor, prompts: list[str], metadata: Any
    ) -> tuple[torch.Tensor, dict]:
        arrays = to_numpy_hwc(quantize_uint8(images))
        scores, errors, distances = [], [], []
        for index, (array, prompt) in enumerate(zip(arrays, prompts, strict=True)):
            target = extract_target(prompt)
            if target is None or not normalize_text(target):
                logger.warning(
                    "ocr: prompt %r has no non-empty text in straight double quotes; score 0", prompt
                )
                scores.append(0.0)
                errors.append(1.0)
                distances.append(float(len(normalize_text(target or ""))))
                continue
            try:
                score, distance = ocr_reward(self.recognize(array), target)
                error = 0.0
            except Exception as failure:  # the reference scores an engine failure 0 and goes on
                logger.warning(
                    "ocr: engine failed on image %d (%s: %s); score 0", index, type(failure).__name__, failure
                )
                score, distance, error = 0.0, len(normalize_text(target)), 1.0
            scores.append(score)
            errors.append(error)
            distances.append(float(distance))
        return torch.tensor(scores), {"error": torch.tensor(errors), "distance": torch.tensor(distances)}
