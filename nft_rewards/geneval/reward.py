"""The `geneval` reward: a detector backend + the CLIP colour classifier + GenEval's shared scorer.

Per image (docs/rewards.md §9): quantize to uint8, detect instances (backend `mask2former` by default,
`mmdet` for the official detector, `shapes` for the shapes world's rule-based one), then
`nft_rewards.geneval.scoring.evaluate_image` with the colour classifier bound to that image. The score
is the chosen outcome: `partial` (the partial credit the references train on, in [-14, 1]), `strict` or
`official` (1.0 / 0.0). `details` always hold all three: `partial`, `strict`, `correct` (official).
Metadata (one GenEval object per image: tag, include, optional exclude) is required.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field

from nft_core.errors import UserError
from nft_rewards.base import BaseReward, ModelOptions, quantize_uint8, to_numpy_hwc, torch_dtype
from nft_rewards.geneval.metadata import validate_metadata
from nft_rewards.geneval.scoring import PARTIAL_SCORE_RANGE, THRESHOLD, evaluate_image

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
    detector: Literal["mask2former", "mmdet", "shapes"] = Field("mask2former", description="detector backend")
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


class GenEvalReward(BaseReward):
    """GenEval on real images: detector backend + CLIP colours + the reference's three outcomes."""

    name: ClassVar[str] = "geneval"
    needs_metadata: ClassVar[bool] = True
    Options = GenEvalOptions

    def __init__(self, options: GenEvalOptions | None = None) -> None:
        options = options or GenEvalOptions()
        super().__init__(options)
        dtype = torch_dtype(options.dtype)
        self.detector: Any = None
        self.colors: Any = None
        if options.detector == "mask2former":
            from nft_rewards.geneval.mask2former import Mask2FormerDetector

            self.detector = Mask2FormerDetector(
                options.detector_model,
                weights_dir=options.weights_dir,
                dtype=dtype,
                short_side=options.short_side,
                long_side=options.long_side,
                bgr_quirk=options.bgr_quirk,
            )
        elif options.detector == "mmdet":
            from nft_rewards.geneval.mmdet_backend import MmdetDetector

            if not (options.mmdet_config and options.mmdet_checkpoint):
                raise UserError("geneval: detector='mmdet' needs mmdet_config and mmdet_checkpoint (files)")
            self.detector = MmdetDetector(
                options.mmdet_config, options.mmdet_checkpoint, bgr_quirk=options.bgr_quirk
            )
        if options.detector != "shapes":
            from nft_rewards.geneval.colors import ClipColorClassifier

            self.colors = ClipColorClassifier(
                options.color_model,
                options.color_weights,
                model_config_file=options.color_model_config_file,
                weights_dir=options.weights_dir,
                dtype=dtype,
            )
        self.native_range = PARTIAL_SCORE_RANGE if options.outcome == "partial" else (0.0, 1.0)

    def _detect(self, images: torch.Tensor) -> list[tuple[dict, Any]]:
        """Per image: raw detections and the colour classifier to use with them."""
        if self.options.detector == "shapes":
            from nft_core.shapes.detector import detect_batch, to_geneval

            return [to_geneval(found) for found in detect_batch(images.float().cpu())]
        quantized = quantize_uint8(images)
        arrays = to_numpy_hwc(quantized)
        detections = self.detector.detect(quantized, min_score=THRESHOLD)
        pairs = zip(detections, arrays, strict=True)
        return [(found, self.colors.for_image(array)) for found, array in pairs]

    def score_batch(
        self, images: torch.Tensor, prompts: list[str], metadata: Any
    ) -> tuple[torch.Tensor, dict]:
        for i, item in enumerate(metadata):
            try:
                validate_metadata(item, f"{self.name}: metadata for prompt {prompts[i]!r}")
            except ValueError as error:
                raise UserError(str(error)) from None
        partial, strict, correct = [], [], []
        for item, (detections, classify) in zip(metadata, self._detect(images), strict=True):
            outcome = evaluate_image(item, detections, classify)
            partial.append(outcome.score)
            strict.append(float(outcome.strict_correct))
            correct.append(float(outcome.correct))
        details = {
            "partial": torch.tensor(partial, dtype=torch.float32),
            "strict": torch.tensor(strict, dtype=torch.float32),
            "correct": torch.tensor(correct, dtype=torch.float32),
        }
        key = {"partial": "partial", "strict": "strict", "official": "correct"}[self.options.outcome]
        return details[key].clone(), details

    def evaluate(self, images: torch.Tensor, metadata: list[dict[str, Any]]) -> list[Any]:
        """The full `GenEvalOutcome` (with its failure reason) of each image, for evaluation scripts."""
        from nft_rewards.base import check_inputs

        prompts = [str(item.get("prompt", "")) for item in metadata]
        images, prompts, metadata = check_inputs(self.name, images, prompts, metadata, need_metadata=True)
        outcomes = []
        with torch.no_grad():
            for start in range(0, len(prompts), self.batch_size):
                batch = images[start : start + self.batch_size].to(self.device)
                for item, (detections, classify) in zip(
                    metadata[start : start + self.batch_size], self._detect(batch), strict=False
                ):
                    outcomes.append(evaluate_image(validate_metadata(item, self.name), detections, classify))
        return outcomes
