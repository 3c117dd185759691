"""A tiny random `StableDiffusion3Pipeline` built from configs (environment.md sizes), saved like a hub repo.

Two tiny CLIP text encoders (projection 32 each: their concatenation is the pooled dim 64), a tiny T5
(d_model 64 = joint_attention_dim), a 2-layer SD3 transformer, a 2-level VAE (latent 4 channels,
downscale 2) and `FlowMatchEulerDiscreteScheduler(shift=3)`. Tokenizers are built in memory with a
`model_max_length` (77 for CLIP), without which the pipeline's tokenizers overflow.
"""

from __future__ import annotations

from pathlib import Path

import torch

from nft_policies import standins
from nft_policies.standins import clip_tokenizer, t5_tokenizer

RESOLUTION = 32
MAX_SEQUENCE_LENGTH = 16


def clip_text_encoder(tokenizer, projection: bool = True):
    """A 2-layer CLIP text encoder (hidden 32), with a 32-d projection (SD3) or without (FLUX)."""
    return standins.clip_encoder(tokenizer, 32, projection, layers=2)


def t5_encoder(tokenizer, d_model: int):
    """A 2-layer T5 encoder of width `d_model`."""
    return standins.t5_encoder(tokenizer, d_model, layers=2, d_kv=d_model // 4)


def tiny_vae(scaling_factor: float, shift_factor: float):
    """A 2-level KL VAE: 4 latent channels, downscale 2."""
    return standins.kl_vae(4, scaling_factor, shift_factor, levels=2, sample_size=RESOLUTION)


def build_tiny_sd3(seed: int = 0):
    """The pipeline, randomly initialised with `seed`."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    torch.manual_seed(seed)
    tokenizer, tokenizer_2, tokenizer_3 = clip_tokenizer(), clip_tokenizer(), t5_tokenizer()
    t5 = t5_encoder(tokenizer_3, 64)
    transformer = SD3Transformer2DModel(
        sample_size=16,
        patch_size=2,
        in_channels=4,
        out_channels=4,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=64,
        caption_projection_dim=32,
        pooled_projection_dim=64,
    )
    vae = tiny_vae(1.5, 0.06)
    return StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=vae,
        text_encoder=clip_text_encoder(tokenizer),
        tokenizer=tokenizer,
        text_encoder_2=clip_text_encoder(tokenizer_2),
        tokenizer_2=tokenizer_2,
        text_encoder_3=t5,
        tokenizer_3=tokenizer_3,
    )


def save_tiny_sd3(folder: Path, seed: int = 0) -> Path:
    """Build and `save_pretrained` the tiny pipeline into `folder` (the diffusers hub layout)."""
    build_tiny_sd3(seed).save_pretrained(str(folder))
    return folder


def policy_options(folder: Path, **overrides) -> dict:
    """`[policy]` options of `sd3` for the tiny pipeline: 32 px, rank-4 LoRA, 16 T5 tokens."""
    options = {
        "model": str(folder),
        "resolution": RESOLUTION,
        "lora": {"rank": 4, "alpha": 8.0},
        "max_sequence_length": MAX_SEQUENCE_LENGTH,
    }
    options.update(overrides)
    return options
