"""The `[policy]` options of `z-image`; validating them imports no diffusers (`nft validate` loads none)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from nft_policies.base.loading import PipelineSpec
from nft_policies.base.options import FlowPolicyOptions

Z_IMAGE = "Tongyi-MAI/Z-Image"
Z_IMAGE_TURBO = "Tongyi-MAI/Z-Image-Turbo"

Z_IMAGE_PIPELINE = PipelineSpec(
    policy="z-image",
    pipeline_class="ZImagePipeline",
    required=("transformer", "vae", "scheduler", "text_encoder", "tokenizer"),
)

Z_IMAGE_TARGET_MODULES = (
    "attention.to_q",
    "attention.to_k",
    "attention.to_v",
    "attention.to_out.0",
    "feed_forward.w1",
    "feed_forward.w2",
    "feed_forward.w3",
)
"""The attention and SwiGLU feed-forward projections of every block: the single-stream layers and the
noise and context refiners."""


class ZImageOptions(FlowPolicyOptions):
    """`[policy]` options of `z-image`."""

    lora_targets: ClassVar[tuple[str, ...]] = Z_IMAGE_TARGET_MODULES
    spec: ClassVar[PipelineSpec] = Z_IMAGE_PIPELINE

    model: str = Field(Z_IMAGE, description="hub id (org/name) or a local diffusers folder")
    max_sequence_length: int = Field(
        512, ge=1, le=1024, description="Qwen-3 tokens per prompt, chat template included (pipeline: 512)"
    )


__all__ = ["Z_IMAGE", "Z_IMAGE_PIPELINE", "Z_IMAGE_TARGET_MODULES", "Z_IMAGE_TURBO", "ZImageOptions"]
