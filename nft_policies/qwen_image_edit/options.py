"""The `[policy]` options of `qwen-image-edit`; validating them imports no diffusers (`nft validate` loads
none)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from nft_policies.base.loading import PipelineSpec
from nft_policies.qwen_image.options import QwenImageOptions

QWEN_IMAGE_EDIT = "Qwen/Qwen-Image-Edit"

QWEN_IMAGE_EDIT_PIPELINE = PipelineSpec(
    policy="qwen-image-edit",
    pipeline_class="QwenImageEditPipeline",
    required=("transformer", "vae", "scheduler", "text_encoder", "tokenizer", "processor"),
)


class QwenImageEditOptions(QwenImageOptions):
    """`[policy]` options of `qwen-image-edit` (Qwen-Image's, and the source image's size)."""

    spec: ClassVar[PipelineSpec] = QWEN_IMAGE_EDIT_PIPELINE

    model: str = Field(QWEN_IMAGE_EDIT, description="hub id (org/name) or a local diffusers folder")
    condition_resolution: int = Field(
        1024,
        ge=32,
        description="the source image is resized to about this side squared in pixels, its aspect ratio "
        "kept, sides multiples of 32 (the pipeline's 1024); the source images of one epoch must come out "
        "the same size",
    )
    max_sequence_length: int = Field(
        2048,
        ge=1,
        le=8192,
        description="tokens stored per prompt: the instruction in the edit template plus the source "
        "image's vision tokens (about 1,400 at condition_resolution 1024); a longer one is an error",
    )
    prompt_cache_size: int = Field(
        128, ge=0, description="prompt-and-image embeddings kept (on the CPU) for reuse"
    )


__all__ = ["QWEN_IMAGE_EDIT", "QWEN_IMAGE_EDIT_PIPELINE", "QwenImageEditOptions"]
