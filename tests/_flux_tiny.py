"""A tiny random `FluxPipeline` built from configs, saved like a hub repo.

A tiny CLIP text encoder (hidden 32: the pooled projection input), a tiny T5 (d_model 32 = the joint
attention dim), a FLUX transformer of one double and one single block (head dim 8, rotary axes 2 + 2 +
4), a 2-level VAE (4 latent channels, downscale 2; packed 2 x 2 that is 16 transformer channels) and
FLUX's scheduler with dynamic shifting. `guidance_embeds` makes it a [dev]-like (guidance-distilled)
or a [schnell]-like model.
"""

from __future__ import annotations

from pathlib import Path

import torch

from nft_policies.standins import clip_tokenizer
from tests._sd3_tiny import clip_text_encoder, t5_encoder, t5_tokenizer, tiny_vae

RESOLUTION = 32
MAX_SEQUENCE_LENGTH = 16


def build_tiny_flux(seed: int = 0, guidance_embeds: bool = True):
    """The pipeline, randomly initialised with `seed`."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(seed)
    tokenizer, tokenizer_2 = clip_tokenizer(), t5_tokenizer()
    clip, t5 = clip_text_encoder(tokenizer, projection=False), t5_encoder(tokenizer_2, 32)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        guidance_embeds=guidance_embeds,
        axes_dims_rope=(2, 2, 4),
    )
    vae = tiny_vae(0.36, 0.11)
    scheduler = FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True,
        base_image_seq_len=16,
        max_image_seq_len=256,
        base_shift=0.5,
        max_shift=1.15,
    )
    return FluxPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=clip,
        tokenizer=tokenizer,
        text_encoder_2=t5,
        tokenizer_2=tokenizer_2,
        transformer=transformer,
    )


def save_tiny_flux(folder: Path, seed: int = 0, guidance_embeds: bool = True) -> Path:
    """Build and `save_pretrained` the tiny pipeline into `folder` (the diffusers hub layout)."""
    build_tiny_flux(seed, guidance_embeds).save_pretrained(str(folder))
    return folder


def flux_options(folder: Path, **overrides) -> dict:
    """`[policy]` options of `flux` for the tiny pipeline: 32 px, rank-4 LoRA, 16 T5 tokens."""
    options = {
        "model": str(folder),
        "resolution": RESOLUTION,
        "lora": {"rank": 4, "alpha": 8.0},
        "max_sequence_length": MAX_SEQUENCE_LENGTH,
    }
    options.update(overrides)
    return options
