"""A tiny random `ZImagePipeline` built from configs, saved like a hub repo; and the chat tokenizer and
Qwen-3 encoder the FLUX.2 klein and Qwen-Image builders share.

A character-level fast tokenizer with a chat template (the pipelines format every prompt as a chat
turn), a one-layer Qwen-3 text encoder (hidden 16), a Z-Image transformer of one main and one refiner
layer per stream (dim 16), a 2-level VAE (4 latent channels, downscale 2) and a flow-matching Euler
scheduler with Z-Image-Turbo's static shift 3.
"""

from __future__ import annotations

from pathlib import Path

import torch

from nft_policies import standins
from tests._sd3_tiny import tiny_vae

RESOLUTION = 32
MAX_SEQUENCE_LENGTH = 64


def chat_tokenizer():
    """A fast tokenizer with one token per character, `<|im_start|>` / `<|im_end|>` as special tokens and a
    chat template that accepts plain or list-of-parts message content; right padding."""
    return standins.char_tokenizer(chat=True)


def qwen3_config(vocab_size: int, layers: int = 1):
    """A Qwen-3 language model config of hidden size 16."""
    return standins.qwen3_config(vocab_size, 16, layers, max_positions=512)


def build_tiny_z_image(seed: int = 0):
    """The pipeline, randomly initialised with `seed`."""
    from diffusers import FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel
    from transformers import Qwen3Model

    torch.manual_seed(seed)
    tokenizer = chat_tokenizer()
    transformer = ZImageTransformer2DModel(
        all_patch_size=(2,),
        all_f_patch_size=(1,),
        in_channels=4,
        dim=16,
        n_layers=1,
        n_refiner_layers=1,
        n_heads=2,
        n_kv_heads=2,
        cap_feat_dim=16,
        axes_dims=[4, 2, 2],
        axes_lens=[128, 16, 16],
    )
    with torch.no_grad():  # zeros at init: give the padding tokens a value the tests can see
        transformer.x_pad_token.normal_()
        transformer.cap_pad_token.normal_()
    return ZImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0),
        vae=tiny_vae(0.3611, 0.1159),
        text_encoder=Qwen3Model(qwen3_config(len(tokenizer))),
        tokenizer=tokenizer,
        transformer=transformer,
    )


def save_tiny_z_image(folder: Path, seed: int = 0) -> Path:
    """Build and `save_pretrained` the tiny pipeline into `folder` (the diffusers hub layout)."""
    build_tiny_z_image(seed).save_pretrained(str(folder))
    return folder


def z_image_options(folder: Path, **overrides) -> dict:
    """`[policy]` options of `z-image` for the tiny pipeline: 32 px, rank-4 LoRA, 64 text tokens."""
    options = {
        "model": str(folder),
        "resolution": RESOLUTION,
        "lora": {"rank": 4, "alpha": 8.0},
        "max_sequence_length": MAX_SEQUENCE_LENGTH,
    }
    options.update(overrides)
    return options
