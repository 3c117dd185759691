"""CLIP score (docs/rewards.md §4; NFT `flow_grpo/clip_scorer.py`, after `RE-N-Y/imscore`).

Model: transformers `CLIPModel` `openai/clip-vit-large-patch14`. The float image tensor is used directly
(no uint8 quantization), as NFT does: torchvision tensor `Resize(shortest side)` with its default
**bilinear** interpolation (antialiased), `CenterCrop`, `Normalize(mean, std)`, sizes and statistics
from the checkpoint's image-processor config. Prompts: its tokenizer, padded to 77, truncated.

Score: the cosine similarity of the L2-normalized projected image and text embeddings of each pair.
NFT computes `logits_per_image.diagonal() / 100`, which is the same number because the OpenAI
checkpoint's `exp(logit_scale)` is 100.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field

from nft_rewards.base import BaseReward, ModelOptions, features, torch_dtype
from nft_rewards.weights import MODEL_FILES, PROCESSOR_FILES, resolve_repo

__all__ = ["ClipScoreOptions", "ClipScoreReward", "clip_tensor_preprocess"]


def _size(value: Any) -> Any:
    if isinstance(value, int):
        return value
    if "shortest_edge" in value:
        return value["shortest_edge"]
    return [value["height"], value["width"]]


def clip_tensor_preprocess(images: torch.Tensor, config: dict[str, Any]) -> torch.Tensor:
    """NFT's tensor pipeline built from an image-processor config: resize, centre crop, normalize.

    `images` float `[N,3,H,W]` in [0,1]; torchvision's tensor ops with their defaults (bilinear, antialias).
    """
    from torchvision.transforms import functional as tvf

    if config.get("do_resize", True):
        images = tvf.resize(images, _size(config["size"]))
    if config.get("do_center_crop", True):
        crop = _size(config["crop_size"])
        images = tvf.center_crop(images, [crop, crop] if isinstance(crop, int) else crop)
    if config.get("do_normalize", True):
        images = tvf.normalize(images, config["image_mean"], config["image_std"])
    return images


class ClipScoreOptions(ModelOptions):
    """`[reward.options]` of `clipscore`."""

    model: str = Field("openai/clip-vit-large-patch14", description="CLIP model + processor folder or hub id")


class ClipScoreReward(BaseReward):
    """CLIP score: cosine of CLIP ViT-L/14 image and text embeddings, bilinear tensor preprocessing."""

    name: ClassVar[str] = "clipscore"
    Options = ClipScoreOptions

    def __init__(self, options: ClipScoreOptions | None = None) -> None:
        options = options or ClipScoreOptions()
        super().__init__(options)
        import json

        from transformers import AutoTokenizer, CLIPModel

        folder = resolve_repo(
            options.model,
            reward=self.name,
            option="model",
            required=(*MODEL_FILES, *PROCESSOR_FILES),
            weights_dir_option=options.weights_dir,
        )
        self.model = CLIPModel.from_pretrained(str(folder)).to(torch_dtype(options.dtype)).eval()
        self.model.requires_grad_(False)
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self.image_config = json.loads((folder / "preprocessor_config.json").read_text())
        self.max_length = min(77, self.model.config.text_config.max_position_embeddings)
        self.native_range = (-1.0, 1.0)

    def score_batch(
        self, images: torch.Tensor, prompts: list[str], metadata: Any
    ) -> tuple[torch.Tensor, dict]:
        dtype = self.model.logit_scale.dtype
        pixels = clip_tensor_preprocess(images.float(), self.image_config).to(dtype)
        tokens = self.tokenizer(
            prompts, padding="max_length", truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        image_embeds = features(self.model.get_image_features(pixel_values=pixels)).float()
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
        return cosine, {}
