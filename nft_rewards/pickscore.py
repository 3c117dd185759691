"""PickScore (docs/rewards.md §2; Kirstain et al. 2023, `yuvalkirstain/PickScore`; NFT `pickscore_scorer.py`).

Model: transformers `CLIPModel` `yuvalkirstain/PickScore_v1` (ViT-H/14) with the processor of
`laion/CLIP-ViT-H-14-laion2B-s32B-b79K`. Images are quantized to uint8 and go through the PIL CLIP image
processor (shortest side 224 bicubic, centre crop 224, OpenAI mean/std); prompts through its tokenizer
(pad to the longest in the batch, truncate at 77).

`raw = exp(logit_scale) * cos(e_text, e_image)`, one prompt per image (the diagonal), with
`logit_scale` read from the checkpoint. The score is the affine normalization `raw * scale + shift`,
by default `scale = 1/26, shift = 0`: the reference's division by 26, which only brings the training
reward roughly into [0, 1] (Flow-GRPO issue #100). Set `scale = 1` for raw PickScore.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field

from nft_rewards.base import (
    BaseReward,
    ModelOptions,
    clip_image_processor,
    features,
    quantize_uint8,
    to_numpy_hwc,
    torch_dtype,
)
from nft_rewards.weights import MODEL_FILES, PROCESSOR_FILES, resolve_repo

__all__ = ["PickScoreOptions", "PickScoreReward"]


class PickScoreOptions(ModelOptions):
    """`[reward.options]` of `pickscore`."""

    model: str = Field("yuvalkirstain/PickScore_v1", description="CLIP model folder or hub id")
    processor: str = Field(
        "laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
        description="processor (tokenizer + image config) folder or hub id",
    )
    scale: float = Field(1 / 26, description="score = raw PickScore * scale + shift (reference: 1/26)")
    shift: float = Field(0.0, description="score = raw PickScore * scale + shift")


class PickScoreReward(BaseReward):
    """PickScore: `(exp(logit_scale) * cos(text, image)) * scale + shift`, default scale 1/26."""

    name: ClassVar[str] = "pickscore"
    Options = PickScoreOptions

    def __init__(self, options: PickScoreOptions | None = None) -> None:
        options = options or PickScoreOptions()
        super().__init__(options)
        from transformers import AutoTokenizer, CLIPModel

        model_dir = resolve_repo(
            options.model,
            reward=self.name,
            option="model",
            required=MODEL_FILES,
            weights_dir_option=options.weights_dir,
        )
        processor_dir = resolve_repo(
            options.processor,
            reward=self.name,
            option="processor",
            required=PROCESSOR_FILES,
            weights_dir_option=options.weights_dir,
            patterns=("*.json", "*.txt"),
        )
        self.model = CLIPModel.from_pretrained(str(model_dir)).to(torch_dtype(options.dtype)).eval()
        self.model.requires_grad_(False)
        self.tokenizer = AutoTokenizer.from_pretrained(str(processor_dir))
        self.image_processor = clip_image_processor(processor_dir)
        self.max_length = min(77, self.model.config.text_config.max_position_embeddings)
        self.logit_scale_exp = float(self.model.logit_scale.exp())
        ends = sorted(
            (options.scale * bound + options.shift) for bound in (-self.logit_scale_exp, self.logit_scale_exp)
        )
        self.native_range = (ends[0], ends[1])

    def score_batch(
        self, images: torch.Tensor, prompts: list[str], metadata: Any
    ) -> tuple[torch.Tensor, dict]:
        pixels = self.image_processor(images=list(to_numpy_hwc(quantize_uint8(images))), return_tensors="pt")
        tokens = self.tokenizer(
            prompts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        dtype = self.model.logit_scale.dtype
        image_embeds = features(
            self.model.get_image_features(pixel_values=pixels["pixel_values"].to(self.device, dtype))
        ).float()
        text_embeds = features(
            self.model.get_text_features(
                input_ids=tokens["input_ids"].to(self.device),
                attention_mask=tokens["attention_mask"].to(self.device),
            )
        ).float()
        cosine = (
            torch.nn.functional.normalize(image_embeds, dim=-1)
            * torch.nn.functional.normalize(text_embeds, dim=-1)
        ).sum(-1)
        raw = self.model.logit_scale.float().exp() * cosine
        return raw * self.options.scale + self.options.shift, {"raw": raw, "cosine": cosine}
