"""A tiny random `QwenImageEditPipeline` built from configs, saved like a hub repo.

Qwen-Image's tiny parts (tests/_qwen_image_tiny.py: a one-block transformer, the 4-channel causal video
VAE, Qwen-Image's scheduler) with what editing adds: a Qwen2-VL processor whose image processor sends a
56 x 56 view of the condition image to the vision tower (16 patches of 14 px, 4 tokens after the 2 x 2
merge), the chat tokenizer with Qwen's vision tokens, and a Qwen2.5-VL encoder whose one-layer vision
tower now runs. Built once per session by the tests that use it (`save_tiny_qwen_image_edit`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from nft_policies.standins import qwen_vl_encoder
from tests._qwen_image_tiny import MAX_SEQUENCE_LENGTH, RESOLUTION, build_tiny_qwen_image
from tests._z_image_tiny import chat_tokenizer

VISION_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
VIEW_PIXELS = 56 * 56
"""The condition image's pixels the VL encoder sees (min = max: always 4 x 4 patches)."""
CONDITION_RESOLUTION = RESOLUTION
"""The condition image's side the tests use (the pipeline's is 1024, patched by `patch_condition_size`)."""
EDIT_SEQUENCE_LENGTH = 512
"""Text tokens stored per prompt: the edit template's tail after its 64 dropped tokens is ~330
characters with the char-level tokenizer, plus 4 image tokens."""


def vl_tokenizer():
    """The chat tokenizer with Qwen's vision tokens as special tokens."""
    tokenizer = chat_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", *VISION_TOKENS]})
    return tokenizer


def vl_processor(tokenizer):
    """A Qwen2-VL processor that always views the condition image at `VIEW_PIXELS`."""
    from transformers import Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

    sizes = dict(min_pixels=VIEW_PIXELS, max_pixels=VIEW_PIXELS, patch_size=14, merge_size=2)
    return Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(**sizes, temporal_patch_size=2),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(**sizes, temporal_patch_size=2),
    )


def vl_encoder(tokenizer):
    """Qwen-Image's tiny Qwen2.5-VL encoder that knows the tokenizer's vision token ids and runs its
    one-layer vision tower (full attention in its one block)."""
    token = tokenizer.convert_tokens_to_ids
    ids = {
        "start": token("<|vision_start|>"),
        "end": token("<|vision_end|>"),
        "image": token("<|image_pad|>"),
        "video": token("<|video_pad|>"),
    }
    return qwen_vl_encoder(len(tokenizer), vision_ids=ids, fullatt_block_indexes=[0], window_size=28)


def build_tiny_qwen_image_edit(seed: int = 0):
    """The pipeline, randomly initialised with `seed` (Qwen-Image's tiny transformer, VAE and scheduler)."""
    from diffusers import QwenImageEditPipeline

    base = build_tiny_qwen_image(seed)
    tokenizer = vl_tokenizer()
    torch.manual_seed(seed + 1)
    return QwenImageEditPipeline(
        scheduler=base.scheduler,
        vae=base.vae,
        text_encoder=vl_encoder(tokenizer),
        tokenizer=tokenizer,
        processor=vl_processor(tokenizer),
        transformer=base.transformer,
    )


def save_tiny_qwen_image_edit(folder: Path, seed: int = 0) -> Path:
    """Build and `save_pretrained` the tiny pipeline into `folder` (the diffusers hub layout)."""
    build_tiny_qwen_image_edit(seed).save_pretrained(str(folder))
    return folder


def patch_condition_size(monkeypatch) -> None:
    """Make the stock pipeline resize source images to `CONDITION_RESOLUTION`^2 pixels instead of its
    hard-coded 1024^2 (about 12 s a call on the tiny model): the tiny policy's `condition_resolution`."""
    from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit

    stock = pipeline_qwenimage_edit.calculate_dimensions
    monkeypatch.setattr(
        pipeline_qwenimage_edit,
        "calculate_dimensions",
        lambda area, ratio: stock(CONDITION_RESOLUTION * CONDITION_RESOLUTION, ratio),
    )


def qwen_image_edit_options(folder: Path, **overrides) -> dict:
    """`[policy]` options of `qwen-image-edit` for the tiny pipeline: 32 px results conditioned on 32 px
    source images, rank-4 LoRA."""
    options = {
        "model": str(folder),
        "resolution": RESOLUTION,
        "condition_resolution": CONDITION_RESOLUTION,
        "lora": {"rank": 4, "alpha": 8.0},
        "max_sequence_length": EDIT_SEQUENCE_LENGTH,
    }
    options.update(overrides)
    return options


__all__ = [
    "CONDITION_RESOLUTION",
    "EDIT_SEQUENCE_LENGTH",
    "MAX_SEQUENCE_LENGTH",
    "RESOLUTION",
    "build_tiny_qwen_image_edit",
    "patch_condition_size",
    "qwen_image_edit_options",
    "save_tiny_qwen_image_edit",
]
