"""Random stand-ins for the parts of a diffusers pipeline around its transformer, at any width.

A family's text encoders, tokenizers and VAE matter to a rollout only through their output shapes, so
the tests (tiny widths) and `benchmarks/gpu_check.py` (the real transformers' widths) build pipelines
from these instead of downloading checkpoints: character-level tokenizers built in memory, one- or
two-layer text encoders of the width the transformer reads, and small VAEs with the family's latent
layout. Every builder constructs its modules from `torch`'s global generator, so a caller that seeds
it gets the same weights each time.
"""

from __future__ import annotations

from typing import Any

CHARS = list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'\"-")
"""The characters every stand-in tokenizer knows."""

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}{{ part['text'] }}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""A chat template that takes plain or list-of-parts message content (Qwen, Mistral stand-ins)."""


# ---- tokenizers ---------------------------------------------------------------------------------------
def clip_tokenizer():
    """A character-level CLIP BPE tokenizer (no merges), 77 tokens."""
    from transformers import CLIPTokenizer

    vocab: dict[str, int] = {}
    for suffix in ("", "</w>"):
        for char in CHARS:
            vocab[char + suffix] = len(vocab)
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def t5_tokenizer():
    """A character-level T5 unigram tokenizer."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [("\u2581" + c, -1.0) for c in CHARS] + [(c, -2.0) for c in CHARS] + [("\u2581", -3.0)]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=512)


def char_tokenizer(chat: bool):
    """A fast tokenizer with one token per character (unknown ones `<unk>`), right padding: Gemma-like
    (`<bos>` first) or, with `chat`, `<|im_start|>` / `<|im_end|>` and `CHAT_TEMPLATE` (Qwen, Mistral)."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    if chat:
        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>"]
    else:
        specials = ["<pad>", "<eos>", "<bos>", "<unk>"]
    vocab = {token: index for index, token in enumerate([*specials, *dict.fromkeys([*CHARS, *" \n:;()"])])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    if chat:
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=backend,
            pad_token="<|endoftext|>",
            eos_token="<|im_end|>",
            unk_token="<unk>",
            additional_special_tokens=["<|im_start|>"],
            padding_side="right",
            model_max_length=4096,
        )
        tokenizer.chat_template = CHAT_TEMPLATE
        return tokenizer
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


# ---- text encoders ------------------------------------------------------------------------------------
def clip_encoder(tokenizer, width: int, projection: bool, layers: int = 1, projection_dim: int | None = None):
    """A CLIP text encoder of hidden size `width` (4 heads, or 2 where 4 do not divide it), with a
    `projection_dim` (default `width`) projection for SD3 or without one for FLUX.1."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=width,
        intermediate_size=37,
        num_hidden_layers=layers,
        num_attention_heads=4 if width % 4 == 0 else 2,
        max_position_embeddings=77,
        projection_dim=projection_dim or width,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModelWithProjection(config) if projection else CLIPTextModel(config)


def t5_encoder(tokenizer, width: int, layers: int = 1, d_kv: int = 16):
    """A T5 encoder of width `width`, 4 heads of `d_kv`."""
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=width,
        d_kv=d_kv,
        d_ff=64,
        num_layers=layers,
        num_heads=4,
        relative_attention_num_buckets=8,
        decoder_start_token_id=0,
    )
    return T5EncoderModel(config)


def qwen3_config(vocab_size: int, width: int = 16, layers: int = 1, max_positions: int = 2048):
    """A Qwen-3 language model config of hidden size `width` (2 heads of 8)."""
    from transformers import Qwen3Config

    return Qwen3Config(
        vocab_size=vocab_size,
        hidden_size=width,
        intermediate_size=16,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=max_positions,
    )


def gemma2_encoder(vocab_size: int, width: int):
    """A one-layer Gemma-2 model of hidden size `width` (2 heads of 16), eager attention (SANA)."""
    from transformers import Gemma2Config, Gemma2Model

    return Gemma2Model(
        Gemma2Config(
            head_dim=16,
            hidden_size=width,
            intermediate_size=64,
            max_position_embeddings=8192,
            num_attention_heads=2,
            num_hidden_layers=1,
            num_key_value_heads=2,
            vocab_size=vocab_size,
            attn_implementation="eager",
        )
    )


def mistral3_encoder(vocab_size: int, width: int = 16, layers: int = 1, max_positions: int = 512):
    """A Mistral-3 model (FLUX.2 [dev]): `layers` text layers of hidden `width` (2 heads of 8) and a
    one-layer Pixtral tower it never runs."""
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration

    config = Mistral3Config(
        text_config={
            "model_type": "mistral",
            "vocab_size": vocab_size,
            "hidden_size": width,
            "intermediate_size": 16,
            "max_position_embeddings": max_positions,
            "num_attention_heads": 2,
            "num_hidden_layers": layers,
            "num_key_value_heads": 2,
            "head_dim": 8,
            "sliding_window": None,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "pad_token_id": 0,
        },
        vision_config={
            "model_type": "pixtral",
            "hidden_size": 16,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 16,
            "image_size": 12,
            "patch_size": 6,
            "num_channels": 3,
        },
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        image_token_index=vocab_size - 1,
        vision_feature_layer=-1,
    )
    return Mistral3ForConditionalGeneration(config).eval()


def qwen_vl_encoder(
    vocab_size: int,
    width: int = 16,
    heads: int = 2,
    mrope_section: list[int] | None = None,
    vision_ids: dict[str, int] | None = None,
    **vision: Any,
):
    """A Qwen2.5-VL model (Qwen-Image): one text layer of hidden `width` (`heads` heads, rotary sections
    `mrope_section`, default [1, 1, 2]) and a one-layer vision tower of hidden 16 (run only by the
    editing pipeline, with `vision_ids` naming its tokenizer's `start`, `end`, `image` and `video`
    tokens and `vision` options added to the tower's config). Without `vision_ids` the last three ids
    stand for them."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    ids = vision_ids or {
        "start": vocab_size - 3,
        "end": vocab_size - 2,
        "image": vocab_size - 1,
        "video": vocab_size - 1,
    }
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": vocab_size,
            "hidden_size": width,
            "intermediate_size": 16,
            "num_hidden_layers": 1,
            "num_attention_heads": heads,
            "num_key_value_heads": 2,
            "rope_scaling": {
                "mrope_section": mrope_section or [1, 1, 2],
                "rope_type": "default",
                "type": "default",
            },
            "rope_theta": 1000000.0,
            "bos_token_id": 0,
            "eos_token_id": 2,
            "pad_token_id": 0,
        },
        vision_config={
            "depth": 1,
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_heads": 2,
            "out_hidden_size": width,
            **vision,
        },
        hidden_size=width,
        vocab_size=vocab_size,
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=0,
        vision_start_token_id=ids["start"],
        vision_end_token_id=ids["end"],
        vision_token_id=ids["image"],
        image_token_id=ids["image"],
        video_token_id=ids["video"],
    )
    return Qwen2_5_VLForConditionalGeneration(config).eval()


# ---- VAEs ---------------------------------------------------------------------------------------------
VAE_CHANNELS = (8, 16, 16, 16)
"""The block widths of the KL and FLUX.2 stand-in VAEs, level by level."""


def kl_vae(
    latent_channels: int, scaling: float, shift: float, levels: int = 4, sample_size: int | None = None
):
    """A KL VAE of `levels` levels (downscale 2 ** (levels - 1): 4 levels are SD3's and FLUX.1's 8)."""
    from diffusers import AutoencoderKL

    sized = {} if sample_size is None else {"sample_size": sample_size}
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * levels,
        up_block_types=["UpDecoderBlock2D"] * levels,
        block_out_channels=list(VAE_CHANNELS[:levels]),
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=4,
        **sized,
        scaling_factor=scaling,
        shift_factor=shift,
    )


def flux2_vae(latent_channels: int, levels: int = 4, sample_size: int | None = None):
    """The FLUX.2 VAE of `levels` levels with random batch-norm statistics (the latent normalisation the
    pipelines undo before decoding)."""
    import torch
    from diffusers import AutoencoderKLFlux2

    sized = {} if sample_size is None else {"sample_size": sample_size}
    vae = AutoencoderKLFlux2(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=VAE_CHANNELS[:levels],
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=4,
        **sized,
    )
    with torch.no_grad():
        vae.bn.running_mean.normal_(0.0, 0.2)
        vae.bn.running_var.uniform_(0.5, 2.0)
    return vae


__all__ = [
    "CHARS",
    "CHAT_TEMPLATE",
    "VAE_CHANNELS",
    "char_tokenizer",
    "clip_encoder",
    "clip_tokenizer",
    "flux2_vae",
    "gemma2_encoder",
    "kl_vae",
    "mistral3_encoder",
    "qwen3_config",
    "qwen_vl_encoder",
    "t5_encoder",
    "t5_tokenizer",
]
