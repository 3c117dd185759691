"""The `geneval` reward: a detector backend + a colour classifier + GenEval's shared scorer.

Per image (docs/rewards.md §9): detect instances with the backend (`mask2former` by default, `mmdet`
for the official detector, or an installed one such as the shapes world's `shapes`;
`nft_rewards.geneval.detectors`), then `nft_rewards.geneval.scoring.evaluate_image` with the colour
classifier bound to that image (GenEval's CLIP classifier, unless the backend names colours itself).
The score is the chosen outcome: `partial` (the partial credit the references train on, in [-14, 1]),
`strict` or `official` (1.0 / 0.0). `details` always hold all three: `partial`, `strict`, `correct`
(official); `notes` the first failed check of each image. Over an evaluation set the reward aggregates
as GenEval does: the mean of the per-tag accuracies (`aggregate`). Metadata (one GenEval object per
image: tag, include, optional exclude) is required.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, field_validator

from nft_core.errors import UserError
from nft_core.types import Aggregate, RewardOutput
from nft_rewards.base import BaseReward, ModelOptions, quantize_uint8, to_numpy_hwc, torch_dtype
from nft_rewards.geneval.detectors import backend, detector_names
from nft_rewards.geneval.metadata import validate_metadata
from nft_rewards.geneval.scoring import PARTIAL_SCORE_RANGE, THRESHOLD, evaluate_image, official_score
from nft_rewards.geneval.summary import summary_report

__all__ = ["GenEvalOptions", "GenEvalReward"]


class GenEvalOptions(ModelOptions):
    """`[reward.options]` of `geneval`."""

    batch_size: int = Field(
        16, ge=1, description="images per detector call (the reference uses chunks of 64)"
    )
    outcome: Literal["partial", "strict", "official"] = Field(
        "partial",
        description="the score: partial credit (the reference's training reward), strict or official",
    )
    detector: str = Field(
        "mask2former", description="detector backend: mask2former, mmdet or an installed one (e.g. shapes)"
    )
    detector_model: str = Field(
        "facebook/mask2former-swin-small-coco-instance", description="mask2former: model folder or hub id"
    )
    mmdet_config: str | None = Field(None, description="mmdet: the Mask2Former config file")
    mmdet_checkpoint: str | None = Field(None, description="mmdet: the checkpoint file")
    bgr_quirk: bool = Field(
        False,
        description="feed the detector channel-swapped images as NFT / Flow-GRPO did (not the official)",
    )
    short_side: int = Field(
        800, ge=32, description="mask2former: resize so the short side is this (mmdet: 800)"
    )
    long_side: int = Field(1333, ge=32, description="mask2former: ... and the long side at most this")
    color_model: str = Field(
        "ViT-L-14-quickgelu", description="open_clip architecture of the colour classifier"
    )
    color_weights: str = Field("openai", description="colour CLIP weights: open_clip tag, file or hub id")
    color_model_config_file: str | None = Field(
        None, description="JSON config of a custom open_clip architecture"
    )

    @field_validator("detector")
    @classmethod
    def _known_detector(cls, value: str) -> str:
        if value not in detector_names():
            raise ValueError(f"unknown detector {value!r}; available: {', '.join(detector_names())}")
        return value


class GenEvalReward(BaseReward):
    """GenEval on real images: detector backend + CLIP colours + the reference's three outcomes."""

    name: ClassVar[str] = "geneval"
    needs_metadata: ClassVar[bool] = True
    Options = GenEvalOptions

    def __init__(self, options: GenEvalOptions | None = None, name: str | None = None) -> None:
        options = options or GenEvalOptions()
        super().__init__(options, name)
        found = backend(options.detector)
        self.own_colors = found.own_colors
        self.detector: Any = found.build(options)
        self.colors: Any = None
        if not self.own_colors:
            from nft_rewards.geneval.colors import ClipColorClassifier

            self.colors = ClipColorClassifier(
                options.color_model,
                options.color_weights,
                model_config_file=options.color_model_config_file,
                weights_dir=options.weights_dir,
                dtype=torch_dtype(options.dtype),
            )
        self.native_range = PARTIAL_SCORE_RANGE if options.outcome == "partial" else (0.0, 1.0)

    def _detect(self, images: torch.Tensor) -> list[tuple[dict, Any]]:
        """Per image: raw detections and the colour classifier to use with them."""
        if self.own_colors:
            return self.detector.detect(images)
        quantized = quantize_uint8(images)
        arrays = to_numpy_hwc(quantized)
        detections = self.detector.detect(quantized, min_score=THRESHOLD)
        pairs = zip(detections, arrays, strict=True)
        return [(found, self.colors.for_image(array)) for found, array in pairs]

    def score_batch(self, images: torch.Tensor, prompts: list[str], metadata: Any) -> RewardOutput:
        for i, item in enumerate(metadata):
            try:
                validate_metadata(item, f"{self.name}: metadata for prompt {prompts[i]!r}")
            except ValueError as error:
                raise UserError(str(error)) from None
        partial, strict, correct, notes = [], [], [], []
        for item, (detections, classify) in zip(metadata, self._detect(images), strict=True):
            outcome = evaluate_image(item, detections, classify)
            partial.append(outcome.score)
            strict.append(float(outcome.strict_correct))
            correct.append(float(outcome.correct))
            notes.append(outcome.reason)
        details = {
            "partial": torch.tensor(partial, dtype=torch.float32),
            "strict": torch.tensor(strict, dtype=torch.float32),
            "correct": torch.tensor(correct, dtype=torch.float32),
        }
        key = {"partial": "partial", "strict": "strict", "official": "correct"}[self.options.outcome]
        return RewardOutput(details[key].clone(), details, notes)

    def aggregate(
        self,
        output: RewardOutput,
        prompts: Sequence[str],
        metadata: Sequence[dict[str, Any]] | None = None,
    ) -> Aggregate:
        """GenEval's official aggregation: the mean over tags of the per-tag accuracy (`correct`),
        plus the same table for `strict` and the official summary as the report."""
        if metadata is None:
            raise UserError(f"{self.name}: aggregating needs the GenEval metadata of every image")
        tags = [item["tag"] for item in metadata]
        correct = output.details["correct"].tolist()
        official = official_score(tags, correct)
        strict = official_score(tags, output.details["strict"].tolist())
        report = summary_report(official, tags, correct, prompts)
        return Aggregate(
            official["overall"], official["per_tag"], {"official": official, "strict": strict}, report
        )
