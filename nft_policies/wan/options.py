"""The `[policy]` options of `wan`; validating them imports no diffusers (`nft validate` loads none)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from nft_policies.base.loading import PipelineSpec
from nft_policies.base.options import FlowPolicyOptions

WAN = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"

WAN_PIPELINE = PipelineSpec(
    policy="wan",
    pipeline_class="WanPipeline",
    required=("transformer", "vae", "scheduler", "text_encoder", "tokenizer"),
)

WAN_TARGET_MODULES = (
    *(
        f"{attention}.{projection}"
        for attention in ("attn1", "attn2")
        for projection in ("to_q", "to_k", "to_v")
    ),
    "attn1.to_out.0",
    "attn2.to_out.0",
    "ffn.net.0.proj",
    "ffn.net.2",
)
"""Every block's self-attention (`attn1`), cross-attention to the text (`attn2`) and feed-forward
projections: the modules of diffusers' Wan LoRA training scripts."""


class WanOptions(FlowPolicyOptions):
    """`[policy]` options of `wan`: the video's frames, frame rate and size."""

    lora_targets: ClassVar[tuple[str, ...]] = WAN_TARGET_MODULES
    spec: ClassVar[PipelineSpec] = WAN_PIPELINE

    model: str = Field(WAN, description="hub id (org/name) or a local diffusers folder")
    resolution: int = Field(
        480, ge=8, description="video height in pixels (the width too, unless `width` is set); Wan 2.1: 480"
    )
    width: int | None = Field(
        None, ge=8, description="video width in pixels (default: resolution); 832 at 480p"
    )
    frames: int = Field(
        81,
        ge=1,
        description="frames per video; the VAE's temporal downscale (Wan 2.1: 4) must divide frames - 1 "
        "(81 frames = 21 latent frames, 5 s at 16 fps)",
    )
    fps: float = Field(
        16.0,
        gt=0,
        description="frames per second the videos play at: the run's animated grids and tracker videos",
    )
    max_sequence_length: int = Field(
        512, ge=1, le=512, description="UMT5 tokens per prompt, zero-padded (the pipeline's 512)"
    )


__all__ = ["WAN", "WAN_PIPELINE", "WAN_TARGET_MODULES", "WanOptions"]
