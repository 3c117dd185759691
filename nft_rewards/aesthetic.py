"""LAION aesthetic predictor (docs/rewards.md §5; `christophschuhmann/improved-aesthetic-predictor`,
NFT `flow_grpo/aesthetic_scorer.py`).

Image tower: the vision half of transformers CLIP `openai/clip-vit-large-patch14` (its projected 768-d
image embedding, what `CLIPModel.get_image_features` returns), on uint8-quantized images through the PIL
CLIP image processor (shortest side 224 bicubic, centre crop 224, OpenAI mean/std). Head: the LAION MLP
768 -> 1024 -> 128 -> 64 -> 16 -> 1 of Linear layers only (dropouts 0.2, 0.2, 0.1 after the first three,
inactive in eval; the original's ReLUs are commented out), state dict `sac+logos+ava1-l14-linearMSE.pth`
with keys `layers.{0,2,4,6,7}.{weight,bias}`.

Score: `MLP(e / ||e||)`, no further scaling: the AVA-like 1-10 scale (SD images typically 5-7).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field

from nft_core.errors import UserError
from nft_rewards.base import (
    BaseReward,
    ModelOptions,
    clip_image_processor,
    quantize_uint8,
    to_numpy_hwc,
    torch_dtype,
)
from nft_rewards.weights import IMAGE_PROCESSOR_FILES, MODEL_FILES, resolve_file, resolve_repo

__all__ = ["AestheticMLP", "AestheticOptions", "AestheticReward", "load_aesthetic_head"]

HEAD_FILE = "sac+logos+ava1-l14-linearMSE.pth"


class AestheticMLP(torch.nn.Module):
    """The LAION head: Linear layers only, as in the original (keys `layers.{0,2,4,6,7}`)."""

    def __init__(self, input_size: int = 768) -> None:
        super().__init__()
        self.input_size = input_size
        self.layers = torch.nn.Sequential(
            torch.nn.Linear(input_size, 1024),
            torch.nn.Dropout(0.2),
            torch.nn.Linear(1024, 128),
            torch.nn.Dropout(0.2),
            torch.nn.Linear(128, 64),
            torch.nn.Dropout(0.1),
            torch.nn.Linear(64, 16),
            torch.nn.Linear(16, 1),
        )

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.layers(embeddings)


def load_aesthetic_head(path: Any) -> AestheticMLP:
    """Load the MLP state dict; the input size is read from `layers.0.weight`."""
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if "layers.0.weight" not in state:
        raise UserError(f"aesthetic: {path} is not a LAION aesthetic MLP state dict (no layers.0.weight)")
    head = AestheticMLP(state["layers.0.weight"].shape[1])
    try:
        head.load_state_dict(state)
    except RuntimeError as error:
        raise UserError(
            f"aesthetic: {path} does not match the LAION MLP: {str(error).splitlines()[0]}"
        ) from None
    return head.eval()


class AestheticOptions(ModelOptions):
    """`[reward.options]` of `aesthetic`."""

    model: str = Field("openai/clip-vit-large-patch14", description="CLIP model + processor folder or hub id")
    head: str = Field(
        "camenduru/improved-aesthetic-predictor",
        description=f"MLP state dict: a file, a folder holding {HEAD_FILE}, or a hub id (a mirror of the "
        "original GitHub release)",
    )


class AestheticReward(BaseReward):
    """LAION aesthetic score (AVA scale, about 1-10) of the CLIP ViT-L/14 image embedding."""

    name: ClassVar[str] = "aesthetic"
    Options = AestheticOptions

    def __init__(self, options: AestheticOptions | None = None) -> None:
        options = options or AestheticOptions()
        super().__init__(options)
        from transformers import CLIPModel

        folder = resolve_repo(
            options.model,
            reward=self.name,
            option="model",
            required=(*MODEL_FILES, *IMAGE_PROCESSOR_FILES),
            weights_dir_option=options.weights_dir,
        )
        head_file = resolve_file(
            options.head,
            reward=self.name,
            option="head",
            filenames=(HEAD_FILE,),
            weights_dir_option=options.weights_dir,
        )
        dtype = torch_dtype(options.dtype)
        clip = CLIPModel.from_pretrained(str(folder))
        # keep the image half only: visual_projection(vision_model(x).pooler_output) = get_image_features
        self.vision = clip.vision_model.to(dtype).eval()
        self.projection = clip.visual_projection.to(dtype).eval()
        del clip
        self.vision.requires_grad_(False)
        self.projection.requires_grad_(False)
        self.image_processor = clip_image_processor(folder)
        self.head = load_aesthetic_head(head_file).to(dtype)
        self.head.requires_grad_(False)
        projection = self.projection.out_features
        if self.head.input_size != projection:
            raise UserError(
                f"aesthetic: the head takes {self.head.input_size}-d embeddings but the CLIP model projects "
                f"to {projection}-d ({options.model})"
            )
        self.native_range = (-float("inf"), float("inf"))

    def score_batch(
        self, images: torch.Tensor, prompts: list[str], metadata: Any
    ) -> tuple[torch.Tensor, dict]:
        pixels = self.image_processor(images=list(to_numpy_hwc(quantize_uint8(images))), return_tensors="pt")
        dtype = self.head.layers[0].weight.dtype
        embeds = self.projection(
            self.vision(pixel_values=pixels["pixel_values"].to(self.device, dtype)).pooler_output
        )
        embeds = embeds / embeds.norm(p=2, dim=-1, keepdim=True)
        return self.head(embeds).squeeze(-1).float(), {}
