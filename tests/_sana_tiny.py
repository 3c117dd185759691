"""A tiny random `SanaPipeline` built from configs, saved like a hub repo.

A character-level Gemma-style tokenizer built in memory (a `tokenizers` word-level model over single
characters, `<bos>` first, right padding), a one-layer Gemma-2 text encoder (hidden 8), a one-block
SANA transformer, a two-level DC-AE (4 latent channels, downscale 2) and a flow-matching Euler
scheduler; the configs follow diffusers' own fast tests of SANA.
"""

from __future__ import annotations

from pathlib import Path

import torch

from nft_policies import standins

RESOLUTION = 32
MAX_SEQUENCE_LENGTH = 16


def char_tokenizer():
    """A fast tokenizer with one token per character (unknown ones `<unk>`), `<bos>` prepended."""
    return standins.char_tokenizer(chat=False)


def build_tiny_sana(seed: int = 0):
    """The pipeline, randomly initialised with `seed`."""
    from diffusers import AutoencoderDC, FlowMatchEulerDiscreteScheduler, SanaPipeline, SanaTransformer2DModel

    torch.manual_seed(seed)
    tokenizer = char_tokenizer()
    transformer = SanaTransformer2DModel(
        patch_size=1,
        in_channels=4,
        out_channels=4,
        num_layers=1,
        num_attention_heads=2,
        attention_head_dim=4,
        num_cross_attention_heads=2,
        cross_attention_head_dim=4,
        cross_attention_dim=8,
        caption_channels=8,
        sample_size=RESOLUTION,
    )
    vae = AutoencoderDC(
        in_channels=3,
        latent_channels=4,
        attention_head_dim=2,
        encoder_block_types=("ResBlock", "EfficientViTBlock"),
        decoder_block_types=("ResBlock", "EfficientViTBlock"),
        encoder_block_out_channels=(8, 8),
        decoder_block_out_channels=(8, 8),
        encoder_qkv_multiscales=((), (5,)),
        decoder_qkv_multiscales=((), (5,)),
        encoder_layers_per_block=(1, 1),
        decoder_layers_per_block=[1, 1],
        downsample_block_type="conv",
        upsample_block_type="interpolate",
        decoder_norm_types="rms_norm",
        decoder_act_fns="silu",
        scaling_factor=0.41407,
    )
    text_encoder = standins.gemma2_encoder(len(tokenizer), 8)
    return SanaPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
    )


def save_tiny_sana(folder: Path, seed: int = 0) -> Path:
    """Build and `save_pretrained` the tiny pipeline into `folder` (the diffusers hub layout)."""
    build_tiny_sana(seed).save_pretrained(str(folder))
    return folder


def sana_options(folder: Path, **overrides) -> dict:
    """`[policy]` options of `sana` for the tiny pipeline: 32 px, rank-4 LoRA, 16 Gemma tokens."""
    options = {
        "model": str(folder),
        "resolution": RESOLUTION,
        "lora": {"rank": 4, "alpha": 8.0},
        "max_sequence_length": MAX_SEQUENCE_LENGTH,
    }
    options.update(overrides)
    return options
