"""The `[policy]` options of `sana`; validating them imports no diffusers (`nft validate` loads none)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from nft_policies.base.loading import PipelineSpec
from nft_policies.base.options import FlowPolicyOptions

SANA_1600M_512 = "Efficient-Large-Model/Sana_1600M_512px_diffusers"

SANA_PIPELINE = PipelineSpec(
    policy="sana",
    pipeline_class="SanaPipeline",
    required=("transformer", "vae", "scheduler", "text_encoder", "tokenizer"),
)

SANA_TARGET_MODULES = (
    "attn1.to_q",
    "attn1.to_k",
    "attn1.to_v",
    "attn1.to_out.0",
    "attn2.to_q",
    "attn2.to_k",
    "attn2.to_v",
    "attn2.to_out.0",
    "ff.conv_inverted",
    "ff.conv_point",
)
"""The linear self-attention and the cross-attention projections of every block, and the 1 x 1
convolutions of its Mix-FFN (the depth-wise one is left out)."""


class SanaOptions(FlowPolicyOptions):
    """`[policy]` options of `sana`."""

    lora_targets: ClassVar[tuple[str, ...]] = SANA_TARGET_MODULES
    spec: ClassVar[PipelineSpec] = SANA_PIPELINE

    model: str = Field(SANA_1600M_512, description="hub id (org/name) or a local diffusers folder")
    max_sequence_length: int = Field(300, ge=2, le=512, description="Gemma tokens per prompt (SANA's 300)")
    complex_human_instruction: bool = Field(
        True,
        description="prefix each prompt with SANA's prompt-enhancing instruction, as its pipeline does "
        "by default (the empty prompt of CFG never gets it)",
    )


__all__ = ["SANA_1600M_512", "SANA_PIPELINE", "SANA_TARGET_MODULES", "SanaOptions"]
