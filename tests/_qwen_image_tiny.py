"""A tiny random `QwenImagePipeline` built from configs, saved like a hub repo.

The chat tokenizer of tests/_z_image_tiny.py (the pipeline wraps every prompt in its system template
and drops the template's first 34 tokens), a Qwen2.5-VL text encoder of one text layer (hidden 16) and
a one-layer vision tower it never runs, a one-block Qwen-Image transformer (2 heads of 8), the
Qwen-Image causal video VAE at 4 latent channels (downscale 4, per-channel latent mean and std) and
Qwen-Image's own scheduler settings: dynamic (exponential) shifting and `shift_terminal` 0.02.
"""

from __future__ import annotations

from pathlib import Path

import torch

from nft_policies.standins import qwen_vl_encoder
from tests._z_image_tiny import chat_tokenizer

RESOLUTION = 32
MAX_SEQUENCE_LENGTH = 64


def build_tiny_qwen_image(seed: int = 0):
    """The pipeline, randomly initialised with `seed`."""
    from diffusers import (
        AutoencoderKLQwenImage,
        FlowMatchEulerDiscreteScheduler,
        QwenImagePipeline,
        QwenImageTransformer2DModel,
    )

    torch.manual_seed(seed)
    tokenizer = chat_tokenizer()
    transformer = QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=16,
        out_channels=4,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=16,
        axes_dims_rope=(4, 2, 2),
    )
    vae = AutoencoderKLQwenImage(
        base_dim=8,
        z_dim=4,
        dim_mult=[1, 2, 2],
        num_res_blocks=1,
        temperal_downsample=[False, True],
        latents_mean=[0.1, -0.2, 0.3, 0.0],
        latents_std=[1.5, 0.8, 2.0, 1.2],
    )
    scheduler = FlowMatchEulerDiscreteScheduler(  # Qwen/Qwen-Image's scheduler config, its token range scaled
        base_image_seq_len=4,
        base_shift=0.5,
        max_image_seq_len=64,
        max_shift=0.9,
        shift=1.0,
        shift_terminal=0.02,
        time_shift_type="exponential",
        use_dynamic_shifting=True,
    )
    return QwenImagePipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=qwen_vl_encoder(len(tokenizer)),
        tokenizer=tokenizer,
        transformer=transformer,
    )


def save_tiny_qwen_image(folder: Path, seed: int = 0) -> Path:
    """Build and `save_pretrained` the tiny pipeline into `folder` (the diffusers hub layout)."""
    build_tiny_qwen_image(seed).save_pretrained(str(folder))
    return folder


def qwen_image_options(folder: Path, **overrides) -> dict:
    """`[policy]` options of `qwen-image` for the tiny pipeline: 32 px, rank-4 LoRA, 64 text tokens."""
    options = {
        "model": str(folder),
        "resolution": RESOLUTION,
        "lora": {"rank": 4, "alpha": 8.0},
        "max_sequence_length": MAX_SEQUENCE_LENGTH,
    }
    options.update(overrides)
    return options
