"""Tiny random `Flux2Pipeline` (FLUX.2 [dev]) and `Flux2KleinPipeline` (FLUX.2 [klein]) built from configs,
saved like hub repos.

Both: a FLUX.2 transformer of one double and one single block (2 heads of 8, rotary axes 2 x 4), the
FLUX.2 VAE at 4 latent channels (downscale 2; patchified 2 x 2 that is 16 transformer channels) with
random batch-norm statistics (the latent normalisation the pipelines undo before decoding) and a
flow-matching Euler scheduler with FLUX.2's dynamic shifting. [dev]: a Mistral-3 text encoder (one
text layer of hidden 16, a one-layer Pixtral tower it never runs), guidance embedding on; [klein]: the
Qwen-3 encoder of tests/_z_image_tiny.py, no guidance embedding. The text features are the hidden
states of layers 0 and 1 concatenated (`text_layers`), so the joint attention dim is 32. The blocks'
modulation weights are scaled by `GATE_SCALE`: at this width the default init leaves their gates near
0.1, and a LoRA then barely moves the output (the toy NFT run learns nothing).
"""

from __future__ import annotations

from pathlib import Path

import torch

from nft_policies import standins
from tests._z_image_tiny import chat_tokenizer, qwen3_config

RESOLUTION = 32
MAX_SEQUENCE_LENGTH = 48
TEXT_LAYERS = (0, 1)
GATE_SCALE = 8.0


def mistral3_encoder(vocab_size: int):
    """A Mistral-3 model: one text layer of hidden 16 and a one-layer Pixtral tower (never run)."""
    return standins.mistral3_encoder(vocab_size)


def flux2_vae():
    """The FLUX.2 VAE, 4 latent channels, downscale 2, with random batch-norm statistics."""
    return standins.flux2_vae(4, levels=2, sample_size=RESOLUTION)


def build_tiny_flux2(seed: int = 0, klein: bool = False):
    """The [dev]-like pipeline (or with `klein` the [klein]-like one), randomly initialised with `seed`."""
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        Flux2KleinPipeline,
        Flux2Pipeline,
        Flux2Transformer2DModel,
    )
    from transformers import Qwen3ForCausalLM

    torch.manual_seed(seed)
    tokenizer = chat_tokenizer()
    transformer = Flux2Transformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=16 * len(TEXT_LAYERS),
        timestep_guidance_channels=16,
        axes_dims_rope=(2, 2, 2, 2),
        guidance_embeds=not klein,
    )
    with torch.no_grad():  # gates of order one: at this width the default init leaves the blocks near silent
        for stream in (
            "double_stream_modulation_img",
            "double_stream_modulation_txt",
            "single_stream_modulation",
        ):
            getattr(transformer, stream).linear.weight.mul_(GATE_SCALE)
    scheduler = FlowMatchEulerDiscreteScheduler(  # FLUX.2's: mu comes from the pipeline's empirical formula
        num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, time_shift_type="exponential"
    )
    parts = dict(scheduler=scheduler, vae=flux2_vae(), transformer=transformer, tokenizer=tokenizer)
    if klein:
        encoder = Qwen3ForCausalLM(qwen3_config(len(tokenizer))).eval()
        return Flux2KleinPipeline(text_encoder=encoder, is_distilled=False, **parts)
    return Flux2Pipeline(text_encoder=mistral3_encoder(len(tokenizer)), **parts)


def save_tiny_flux2(folder: Path, seed: int = 0, klein: bool = False) -> Path:
    """Build and `save_pretrained` the tiny pipeline into `folder` (the diffusers hub layout)."""
    build_tiny_flux2(seed, klein).save_pretrained(str(folder))
    return folder


def flux2_options(folder: Path, **overrides) -> dict:
    """`[policy]` options of `flux2` / `flux2-klein` for the tiny pipelines: 32 px, rank-4 LoRA, 48 text
    tokens, the text features of layers 0 and 1."""
    options = {
        "model": str(folder),
        "resolution": RESOLUTION,
        "lora": {"rank": 4, "alpha": 8.0},
        "max_sequence_length": MAX_SEQUENCE_LENGTH,
        "text_layers": list(TEXT_LAYERS),
    }
    options.update(overrides)
    return options
