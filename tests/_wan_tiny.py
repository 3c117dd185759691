"""A tiny random `WanPipeline` (Wan 2.1 text-to-video) built from configs, saved like a hub repo.

The character-level T5 tokenizer of tests/_sd3_tiny.py with a one-layer UMT5 encoder (d_model 16), a
one-block Wan transformer (2 heads of 8, patch 1 x 2 x 2), a Wan video VAE at 4 latent channels
(downscale 4 in space and 2 in time: 5 frames are 3 latent frames) and a flow-matching Euler scheduler
with a static shift of 3 (Wan 2.1's `flow_shift` at 480p; its hub repos ship UniPC, whose multistep
updates our Euler does not reproduce, so the sampling check runs Euler on both sides).
"""

from __future__ import annotations

from pathlib import Path

import torch

from tests._sd3_tiny import t5_tokenizer

RESOLUTION = 32
FRAMES = 5
FPS = 8
MAX_SEQUENCE_LENGTH = 16


def build_tiny_wan(seed: int = 0):
    """The pipeline, randomly initialised with `seed`."""
    from diffusers import (
        AutoencoderKLWan,
        FlowMatchEulerDiscreteScheduler,
        WanPipeline,
        WanTransformer3DModel,
    )
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(seed)
    tokenizer = t5_tokenizer()
    text_encoder = UMT5EncoderModel(
        UMT5Config(
            vocab_size=len(tokenizer),
            d_model=16,
            d_kv=4,
            d_ff=32,
            num_layers=1,
            num_heads=4,
            relative_attention_num_buckets=8,
            decoder_start_token_id=0,
        )
    ).eval()
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=4,
        out_channels=4,
        text_dim=16,
        freq_dim=16,
        ffn_dim=32,
        num_layers=1,
        rope_max_seq_len=32,
    )
    vae = AutoencoderKLWan(
        base_dim=8,
        z_dim=4,
        dim_mult=[1, 2, 2],
        num_res_blocks=1,
        temperal_downsample=[False, True],
        latents_mean=[0.1, -0.2, 0.3, 0.0],
        latents_std=[1.5, 0.8, 2.0, 1.2],
        scale_factor_temporal=2,
        scale_factor_spatial=4,
    )
    return WanPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        transformer=transformer,
    )


def save_tiny_wan(folder: Path, seed: int = 0) -> Path:
    """Build and `save_pretrained` the tiny pipeline into `folder` (the diffusers hub layout)."""
    build_tiny_wan(seed).save_pretrained(str(folder))
    return folder


def wan_options(folder: Path, **overrides) -> dict:
    """`[policy]` options of `wan` for the tiny pipeline: 5 frames of 32 px at 8 fps, rank-4 LoRA, 16 text
    tokens."""
    options = {
        "model": str(folder),
        "resolution": RESOLUTION,
        "frames": FRAMES,
        "fps": FPS,
        "lora": {"rank": 4, "alpha": 8.0},
        "max_sequence_length": MAX_SEQUENCE_LENGTH,
    }
    options.update(overrides)
    return options


__all__ = [
    "FPS",
    "FRAMES",
    "MAX_SEQUENCE_LENGTH",
    "RESOLUTION",
    "build_tiny_wan",
    "save_tiny_wan",
    "wan_options",
]
