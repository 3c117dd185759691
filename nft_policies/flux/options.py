"""The `[policy]` options of `flux`; validating them imports no diffusers (`nft validate` loads none)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from nft_policies.base.loading import PipelineSpec
from nft_policies.base.options import DEFAULT_TARGET_MODULES, FlowPolicyOptions

FLUX1_DEV = "black-forest-labs/FLUX.1-dev"
FLUX1_SCHNELL = "black-forest-labs/FLUX.1-schnell"

FLUX_PIPELINE = PipelineSpec(
    policy="flux",
    pipeline_class="FluxPipeline",
    required=(
        "transformer",
        "vae",
        "scheduler",
        "text_encoder",
        "text_encoder_2",
        "tokenizer",
        "tokenizer_2",
    ),
)

FLUX_TARGET_MODULES = (*DEFAULT_TARGET_MODULES, "proj_mlp")
"""The double blocks' joint attention and feed-forward projections (named as SD3's) and the single
blocks' attention and MLP input; the single blocks' `proj_out` is left out with the model's own."""


class FluxOptions(FlowPolicyOptions):
    """`[policy]` options of `flux`."""

    lora_targets: ClassVar[tuple[str, ...]] = FLUX_TARGET_MODULES
    spec: ClassVar[PipelineSpec] = FLUX_PIPELINE

    model: str = Field(FLUX1_DEV, description="hub id (org/name) or a local diffusers folder")
    max_sequence_length: int = Field(
        512, ge=1, le=512, description="T5 tokens per prompt (FLUX.1-dev 512, schnell 256)"
    )
    guidance: float = Field(
        3.5,
        ge=0,
        description="FLUX.1-dev's distilled guidance: an input of the transformer (its guidance embedding), "
        "not CFG; held fixed in sampling and training. Ignored by models without it (schnell)",
    )


__all__ = ["FLUX1_DEV", "FLUX1_SCHNELL", "FLUX_PIPELINE", "FLUX_TARGET_MODULES", "FluxOptions"]
