"""A tiny random `SanaPipeline` built from configs, saved like a hub repo.

A character-level Gemma-style tokenizer built in memory (a `tokenizers` word-level model over single
characters, `<bos>` first, right padding), a one-layer Gemma-2 text encoder (hidden 8), a one-block
SANA transformer, a two-level DC-AE (4 latent channels, downscale 2) and a flow-matching Euler
scheduler; the configs follow diffusers' own fast tests of SANA.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tests._rewards_tiny import CHARS

RESOLUTION = 32
MAX_SEQUENCE_LENGTH = 16


def char_tokenizer():
    """A fast tokenizer with one token per character (unknown ones `<unk>`), `<bos>` prepended."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<eos>", "<bos>", "<unk>"]
    characters = dict.fromkeys([*CHARS, *" \n:;()"])
    vocab = {token: index for index, token in enumerate([*specials, *characters])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    backend.post_processor = processors.TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", vocab["<bos>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
        unk_token="<unk>",
        padding_side="right",
        model_max_length=4096,
    )


def build_tiny_sana(seed: int = 0):
    """The pipeline, randomly initialised with `seed`."""
    from diffusers import AutoencoderDC, FlowMatchEulerDiscreteScheduler, SanaPipeline, SanaTransformer2DModel
    from transformers import Gemma2Config, Gemma2Model

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
    text_encoder = Gemma2Model(
        Gemma2Config(
            head_dim=16,
            hidden_size=8,
            intermediate_size=64,
            max_position_embeddings=8192,
            num_attention_heads=2,
            num_hidden_layers=1,
            num_key_value_heads=2,
            vocab_size=len(tokenizer),
            attn_implementation="eager",
        )
    )
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
