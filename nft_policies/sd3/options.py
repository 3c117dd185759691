"""The `[policy]` options of `sd3`; validating them imports no diffusers (`nft validate` loads no weights)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from nft_policies.base.loading import PipelineSpec
from nft_policies.base.options import FlowPolicyOptions, LoraOptions

SD35_MEDIUM = "stabilityai/stable-diffusion-3.5-medium"

SD3_PIPELINE = PipelineSpec(
    policy="sd3",
    pipeline_class="StableDiffusion3Pipeline",
    required=(
        "transformer",
        "vae",
        "scheduler",
        "text_encoder",
        "text_encoder_2",
        "tokenizer",
        "tokenizer_2",
    ),
    optional=("text_encoder_3", "tokenizer_3"),
    optional_hint="set t5 = false to run without the T5 encoder",
)


class SD3Options(FlowPolicyOptions):
    """`[policy]` options of `sd3`."""

    spec: ClassVar[PipelineSpec] = SD3_PIPELINE

    model: str = Field(SD35_MEDIUM, description="hub id (org/name) or a local diffusers folder")
    max_sequence_length: int = Field(128, ge=1, le=512, description="T5 tokens per prompt (reference 128)")
    t5: bool = Field(True, description="load the T5 text encoder (false: zeros in its place, less memory)")

    @property
    def with_optional(self) -> bool:
        return self.t5


__all__ = ["SD3_PIPELINE", "SD35_MEDIUM", "LoraOptions", "SD3Options"]
