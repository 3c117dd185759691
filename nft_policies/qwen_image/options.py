"""The `[policy]` options of `qwen-image`; validating them imports no diffusers (`nft validate` loads
none)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from nft_policies.base.loading import PipelineSpec
from nft_policies.base.options import ATTENTION_MODULES, FlowPolicyOptions

QWEN_IMAGE = "Qwen/Qwen-Image"

QWEN_IMAGE_PIPELINE = PipelineSpec(
    policy="qwen-image",
    pipeline_class="QwenImagePipeline",
    required=("transformer", "vae", "scheduler", "text_encoder", "tokenizer"),
)

QWEN_IMAGE_TARGET_MODULES = (
    *ATTENTION_MODULES,
    "img_mlp.net.0.proj",
    "img_mlp.net.2",
    "txt_mlp.net.0.proj",
    "txt_mlp.net.2",
)
"""The joint attention of every block (named as SD3's) and its image and text MLPs: the modules of
verl-omni's Qwen-Image DiffusionNFT recipe."""


class QwenImageOptions(FlowPolicyOptions):
    """`[policy]` options of `qwen-image`."""

    lora_targets: ClassVar[tuple[str, ...]] = QWEN_IMAGE_TARGET_MODULES
    spec: ClassVar[PipelineSpec] = QWEN_IMAGE_PIPELINE

    model: str = Field(QWEN_IMAGE, description="hub id (org/name) or a local diffusers folder")
    max_sequence_length: int = Field(
        512,
        ge=1,
        le=1024,
        description="text tokens kept per prompt after the system template (the pipeline's 512); a batch "
        "is cut to its longest prompt before the transformer",
    )


__all__ = ["QWEN_IMAGE", "QWEN_IMAGE_PIPELINE", "QWEN_IMAGE_TARGET_MODULES", "QwenImageOptions"]
