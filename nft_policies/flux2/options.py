"""The `[policy]` options of `flux2` and `flux2-klein`; validating them imports no diffusers."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from nft_policies.base.loading import PipelineSpec
from nft_policies.base.options import ATTENTION_MODULES, FlowPolicyOptions

FLUX2_DEV = "black-forest-labs/FLUX.2-dev"
FLUX2_KLEIN_BASE = "black-forest-labs/FLUX.2-klein-base-4B"

_PARTS = ("transformer", "vae", "scheduler", "text_encoder", "tokenizer")
FLUX2_PIPELINE = PipelineSpec("flux2", "Flux2Pipeline", _PARTS)
FLUX2_KLEIN_PIPELINE = PipelineSpec("flux2-klein", "Flux2KleinPipeline", _PARTS)

FLUX2_TARGET_MODULES = (
    *ATTENTION_MODULES,
    "ff.linear_in",
    "ff.linear_out",
    "ff_context.linear_in",
    "ff_context.linear_out",
    "attn.to_qkv_mlp_proj",
    "single_transformer_blocks.*.attn.to_out",
)
"""The double blocks' joint attention (named as SD3's) and feed-forward projections, and the single
blocks' fused attention-and-MLP input and output: the modules of diffusers' FLUX.2 LoRA scripts, plus
the double blocks' feed-forward."""


class Flux2Options(FlowPolicyOptions):
    """`[policy]` options of `flux2` (FLUX.2 [dev])."""

    lora_targets: ClassVar[tuple[str, ...]] = FLUX2_TARGET_MODULES
    spec: ClassVar[PipelineSpec] = FLUX2_PIPELINE

    model: str = Field(FLUX2_DEV, description="hub id (org/name) or a local diffusers folder")
    max_sequence_length: int = Field(
        512, ge=1, le=512, description="text tokens per prompt, padded to it (the pipeline's 512)"
    )
    guidance: float = Field(
        4.0,
        ge=0,
        description="FLUX.2 [dev]'s distilled guidance: an input of the transformer (its guidance "
        "embedding), not CFG; held fixed in sampling and training. Ignored by models without it",
    )
    text_layers: list[int] | None = Field(
        None,
        min_length=1,
        description="text-encoder hidden layers whose states are concatenated as the text features "
        "(default: the pipeline's, [10, 20, 30] for [dev] and [9, 18, 27] for [klein])",
    )


class Flux2KleinOptions(Flux2Options):
    """`[policy]` options of `flux2-klein` (FLUX.2 [klein]: a Qwen-3 text encoder, no guidance input)."""

    spec: ClassVar[PipelineSpec] = FLUX2_KLEIN_PIPELINE

    model: str = Field(FLUX2_KLEIN_BASE, description="hub id (org/name) or a local diffusers folder")


__all__ = [
    "FLUX2_DEV",
    "FLUX2_KLEIN_BASE",
    "FLUX2_KLEIN_PIPELINE",
    "FLUX2_PIPELINE",
    "FLUX2_TARGET_MODULES",
    "Flux2KleinOptions",
    "Flux2Options",
]
