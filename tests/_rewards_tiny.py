"""Tiny random-initialised models of each reward architecture family, saved like real checkpoints.

transformers CLIP (PickScore, CLIP score, aesthetic), open_clip custom configs (HPS, GenEval colours),
Mask2Former (GenEval detector). Everything is built offline in a few seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nft_policies.standins import clip_tokenizer

PROJECTION = 16


def save_tiny_clip(folder: Path, seed: int = 0, image_size: int = 32) -> Path:
    """A transformers CLIPModel + tokenizer + image-processor config in `folder` (like a hub repo)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    tokenizer = clip_tokenizer()
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=dict(
            image_size=image_size,
            patch_size=8,
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=2,
            num_attention_heads=4,
        ),
        projection_dim=PROJECTION,
        logit_scale_init_value=3.0,
    )
    model = CLIPModel(config).eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    ).save_pretrained(folder)
    return folder


def write_open_clip_config(folder: Path, name: str, image_size: int = 32) -> Path:
    """An open_clip model config JSON (the real 49,408-token BPE vocabulary, tiny towers)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    config = {
        "embed_dim": PROJECTION,
        "vision_cfg": {"image_size": image_size, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 2},
    }
    path.write_text(json.dumps(config))
    return path


def save_tiny_open_clip(folder: Path, name: str, seed: int = 0, wrap: str | None = None) -> tuple[Path, Path]:
    """(config JSON, state-dict file) of a random open_clip model; `wrap="state_dict"` nests it like HPS."""
    import open_clip

    config = write_open_clip_config(folder, name)
    open_clip.add_model_config(config)
    torch.manual_seed(seed)
    model = open_clip.create_model(name, pretrained=None)
    state = model.state_dict()
    if wrap:
        state = {wrap: {f"module.{k}": v for k, v in state.items()}}
    weights = folder / f"{name}.pt"
    torch.save(state, weights)
    return config, weights


def save_tiny_mask2former(folder: Path, seed: int = 0, num_queries: int = 8) -> Path:
    """A random Mask2Former (tiny Swin backbone) with 80 labels, saved with save_pretrained."""
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, SwinConfig

    torch.manual_seed(seed)
    backbone = SwinConfig(
        image_size=64,
        patch_size=4,
        embed_dim=16,
        depths=[1, 1, 1, 1],
        num_heads=[1, 1, 1, 1],
        window_size=4,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    config = Mask2FormerConfig(
        backbone_config=backbone,
        num_labels=80,
        num_queries=num_queries,
        hidden_dim=32,
        mask_feature_size=32,
        feature_size=32,
        encoder_layers=1,
        decoder_layers=2,
        num_attention_heads=2,
        dim_feedforward=32,
        encoder_feedforward_dim=32,
        common_stride=4,
    )
    model = Mask2FormerForUniversalSegmentation(config).eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny matmuls are ~1000x slower with 2 OpenMP threads on this sandbox's CPUs; use one, then restore."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
