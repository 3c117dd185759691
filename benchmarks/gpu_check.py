"""The GPU check: every diffusers family at its real transformer size on one GPU, in one command.

    python benchmarks/gpu_check.py [--out benchmarks/results/gpu-check.json] [--budget 420]
    python benchmarks/gpu_check.py --tiny            # the same code on tiny configs on the CPU (no timings)

For each family (`sd3` SD3.5-Medium, `flux` FLUX.1-dev, `qwen-image`, `flux2` FLUX.2 [dev], `flux2-klein`
FLUX.2 [klein] 4B, `z-image`, `sana` SANA-1600M) a pipeline is built from configs: the transformer at the
real model's widths, heads, patch size and block counts (fewer blocks where the GPU's memory, the host's
memory or the time budget requires: stated per family in the JSON) with random weights, text encoders of
one or two layers at the real embedding widths and a small VAE at the real downscale (stand-ins: their
cost is negligible and not measured). It is saved to a temporary folder and loaded through our policy
(`registry.create("policies", ...)`) and through the stock diffusers pipeline class. Then, in bf16:

- rollout: our Euler rollout (the collector's: `sample_latents` of the old view, the LoRA's old adapter
  active, then `decode`) against the stock pipeline's call at the same steps and resolution (images/s,
  their ratio, MFU);
- one NFT micro-step with the reference LoRA (rank 32) and, where the real model fits 80 GB, with full
  fine-tuning: the old, current and reference forwards, backward, gradient clipping, the AdamW step and
  the EMA update (seconds, peak CUDA memory, MFU);
- the rollout levers, each alone, applied as the collector applies them (`with lever.rollout(policy)`
  around sampling): `sdpa` backends, the diffusers `cache` kinds, `[rollout] precision` bf16 against fp32
  (on float32 weights, i.e. `policy.precision = "fp32"`), and at the end (time permitting) `compile` in
  its default and reduce-overhead (CUDA graphs) modes;
- an end-to-end 2-epoch `nft run` of the SD3.5-M-sized pipeline (LoRA, jpeg-compressibility, train.device
  cuda, overlapped scoring), checked for finite losses and its summary status.

MFU = model FLOPs per second / 989e12 (an H100's dense bf16 peak; `--peak-tflops`), with 2 N T FLOPs
per forward and 6 N T per forward-and-backward (N: the built transformer's parameters, T: the tokens of
its sequence per image: image patches plus text tokens in joint attention, image patches alone for SANA,
whose text enters through cross-attention). The JSON's schema is documented in docs/rollout.md, "The GPU
check". Each stage's failure stays local (recorded with its error); a time guard skips the stages that
would not fit `--budget` seconds and a watchdog writes what finished and stops the process at
`--hard-limit` seconds. Without a CUDA GPU (and without --tiny or --device cpu) it prints one line and
exits 2. Exit codes: 0 done (stage errors are in the JSON), 2 no GPU, 3 stopped by the watchdog.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

STARTED = time.monotonic()
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PEAK_BF16_TFLOPS = 989.0
FULL_FT_MEMORY_GIB = 80.0
FULL_FT_BYTES = 26
"""Bytes a parameter of full fine-tuning holds in a run: float32 weights, gradient, two AdamW moments and
EMA (4 + 4 + 8 + 4), the float32 old copy (4) and the bf16 reference (2)."""
PROMPTS = ["a red circle on a white table", "two blue squares and a green cat", "a photo of a dog", "a tree"]
LEVERS = (
    "cache-first-block",
    "cache-taylorseer",
    "sdpa-cudnn",
    "sdpa-flash",
    "sdpa-efficient",
    "sdpa-math",
    "precision",
)
"""The rollout levers timed per family, each alone, in this order (the time guard drops what does not fit
a family's allowance); the compile levers come at the end, with the time left."""
COMPILE_LEVERS = ("compile-default", "compile-reduce-overhead")

# ---- the parts around each transformer: stand-ins at the real widths (nft_policies/standins.py) ------
from nft_policies.standins import (  # noqa: E402 (after the checkout is on the path)
    char_tokenizer,
    clip_encoder,
    clip_tokenizer,
    flux2_vae,
    gemma2_encoder,
    kl_vae,
    mistral3_encoder,
    qwen3_config,
    qwen_vl_encoder,
    t5_encoder,
    t5_tokenizer,
)


def sd3_parts(config: dict[str, Any]) -> dict[str, Any]:
    """SD3: CLIP-L and CLIP-G stand-ins whose projections add up to the pooled width (768 + 1280 = 2048
    for SD3.5), a T5 stand-in of the joint attention width, the KL VAE."""
    pooled = config["pooled_projection_dim"]
    clip_l = pooled * 768 // 2048
    tokenizers = clip_tokenizer(), clip_tokenizer(), t5_tokenizer()
    return dict(
        text_encoder=clip_encoder(tokenizers[0], clip_l, projection=True),
        text_encoder_2=clip_encoder(tokenizers[1], pooled - clip_l, projection=True),
        text_encoder_3=t5_encoder(tokenizers[2], config["joint_attention_dim"]),
        tokenizer=tokenizers[0],
        tokenizer_2=tokenizers[1],
        tokenizer_3=tokenizers[2],
        vae=kl_vae(config["in_channels"], 1.5305, 0.0609),
    )


def flux_parts(config: dict[str, Any]) -> dict[str, Any]:
    """FLUX.1: a CLIP stand-in of the pooled width, a T5 stand-in of the joint width, the KL VAE."""
    tokenizer, tokenizer_2 = clip_tokenizer(), t5_tokenizer()
    return dict(
        text_encoder=clip_encoder(tokenizer, config["pooled_projection_dim"], projection=False),
        text_encoder_2=t5_encoder(tokenizer_2, config["joint_attention_dim"]),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        vae=kl_vae(config["in_channels"] // 4, 0.3611, 0.1159),
    )


def sana_parts(config: dict[str, Any]) -> dict[str, Any]:
    """SANA: a one-layer Gemma-2 stand-in of the caption width, a 6-level DC-AE (downscale 32)."""
    from diffusers import AutoencoderDC

    tokenizer = char_tokenizer(chat=False)
    text_encoder = gemma2_encoder(len(tokenizer), config["caption_channels"])
    levels = 6
    vae = AutoencoderDC(
        in_channels=3,
        latent_channels=config["in_channels"],
        attention_head_dim=8,
        encoder_block_types="ResBlock",
        decoder_block_types="ResBlock",
        encoder_block_out_channels=(8, 8, 16, 16, 32, 32),
        decoder_block_out_channels=(8, 8, 16, 16, 32, 32),
        encoder_layers_per_block=(1,) * levels,
        decoder_layers_per_block=(1,) * levels,
        encoder_qkv_multiscales=((),) * levels,
        decoder_qkv_multiscales=((),) * levels,
        downsample_block_type="conv",
        upsample_block_type="interpolate",
        decoder_norm_types="rms_norm",
        decoder_act_fns="silu",
        scaling_factor=0.41407,
    )
    return dict(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae)


def qwen_image_parts(config: dict[str, Any]) -> dict[str, Any]:
    """Qwen-Image: a Qwen2.5-VL stand-in (one text layer at the joint width, a one-layer vision tower it
    never runs), the Qwen-Image video VAE at base width 8 (downscale 8)."""
    from diffusers import AutoencoderKLQwenImage

    tokenizer = char_tokenizer(chat=True)
    vocab, width = len(tokenizer), config["joint_attention_dim"]
    heads = max(2, width // 128)
    half = width // heads // 2
    sections = [half // 4, (half - half // 4) // 2]
    sections.append(half - sum(sections))
    text_encoder = qwen_vl_encoder(vocab, width, heads, sections)
    channels = config["out_channels"]
    vae = AutoencoderKLQwenImage(
        base_dim=8,
        z_dim=channels,
        dim_mult=[1, 2, 2, 2],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        latents_mean=[0.1 * (i % 5) - 0.2 for i in range(channels)],
        latents_std=[1.0 + 0.25 * (i % 4) for i in range(channels)],
    )
    return dict(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae)


TEXT_LAYERS = (0, 1, 2)
"""FLUX.2's text features: the hidden states of these layers of the two-layer stand-in, concatenated
(the real models take layers 10, 20, 30 of Mistral-Small-3.1 or 9, 18, 27 of Qwen-3: 3 x 5120 / 3 x 2560)."""


def flux2_parts(config: dict[str, Any], klein: bool) -> dict[str, Any]:
    """FLUX.2: a two-layer Mistral-3 ([dev]) or Qwen-3 ([klein]) stand-in whose three hidden states make the
    joint width, the FLUX.2 VAE (downscale 8, then 2 x 2 patches) with random batch-norm statistics."""
    from transformers import Qwen3ForCausalLM

    tokenizer = char_tokenizer(chat=True)
    vocab, width = len(tokenizer), config["joint_attention_dim"] // len(TEXT_LAYERS)
    if klein:
        text_encoder = Qwen3ForCausalLM(qwen3_config(vocab, width, 2)).eval()
    else:
        text_encoder = mistral3_encoder(vocab, width, layers=2, max_positions=2048)
    vae = flux2_vae(config["in_channels"] // 4)
    parts = dict(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae)
    return {**parts, "is_distilled": False} if klein else parts


def z_image_parts(config: dict[str, Any]) -> dict[str, Any]:
    """Z-Image: a two-layer Qwen-3 stand-in of the caption width, the KL VAE."""
    from transformers import Qwen3Model

    tokenizer = char_tokenizer(chat=True)
    return dict(
        tokenizer=tokenizer,
        text_encoder=Qwen3Model(qwen3_config(len(tokenizer), config["cap_feat_dim"], 2)),
        vae=kl_vae(config["in_channels"], 0.3611, 0.1159),
    )


# ---- the families ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Family:
    """One diffusers family: the real transformer config, its tiny twin and how to drive its pipeline."""

    name: str
    stands_for: str
    pipeline: str
    transformer: str
    real: dict[str, Any]
    tiny: dict[str, Any]
    blocks: dict[str, str]
    """The transformer's block lists -> the config key that counts each."""
    parts: Callable[[dict[str, Any]], dict[str, Any]]
    scheduler: dict[str, Any]
    options: dict[str, Any]
    """`[policy]` options besides model, resolution, precision and LoRA."""
    call: dict[str, Any]
    """The stock pipeline's arguments besides prompts, steps, size and output type (CFG off)."""
    patch: int
    """The latent pixels per token side (2 x 2 patches, or 1 where the latent is already patchified)."""
    reduced: dict[str, int] = field(default_factory=dict)
    """Blocks kept on a GPU run where the real count does not fit (memory or time)."""
    reduced_why: str = ""
    text_in_sequence: bool = True
    """Whether the text tokens are part of the transformer's sequence (joint attention)."""


SD35_MEDIUM = {
    "sample_size": 128,
    "patch_size": 2,
    "in_channels": 16,
    "out_channels": 16,
    "num_layers": 24,
    "attention_head_dim": 64,
    "num_attention_heads": 24,
    "joint_attention_dim": 4096,
    "caption_projection_dim": 1536,
    "pooled_projection_dim": 2048,
    "pos_embed_max_size": 384,
    "dual_attention_layers": tuple(range(13)),
    "qk_norm": "rms_norm",
}
"""The `transformer/config.json` of stabilityai/stable-diffusion-3.5-medium."""
FLUX1_DEV = {
    "patch_size": 1,
    "in_channels": 64,
    "num_layers": 19,
    "num_single_layers": 38,
    "attention_head_dim": 128,
    "num_attention_heads": 24,
    "joint_attention_dim": 4096,
    "pooled_projection_dim": 768,
    "guidance_embeds": True,
    "axes_dims_rope": (16, 56, 56),
}
QWEN_IMAGE = {
    "patch_size": 2,
    "in_channels": 64,
    "out_channels": 16,
    "num_layers": 60,
    "attention_head_dim": 128,
    "num_attention_heads": 24,
    "joint_attention_dim": 3584,
    "axes_dims_rope": (16, 56, 56),
}
FLUX2_DEV = {
    "patch_size": 1,
    "in_channels": 128,
    "num_layers": 8,
    "num_single_layers": 48,
    "attention_head_dim": 128,
    "num_attention_heads": 48,
    "joint_attention_dim": 15360,
    "timestep_guidance_channels": 256,
    "mlp_ratio": 3.0,
    "axes_dims_rope": (32, 32, 32, 32),
    "guidance_embeds": True,
}
FLUX2_KLEIN_4B = {
    **FLUX2_DEV,
    "num_layers": 5,
    "num_single_layers": 20,
    "num_attention_heads": 24,
    "joint_attention_dim": 7680,
    "guidance_embeds": False,
}
Z_IMAGE = {
    "all_patch_size": (2,),
    "all_f_patch_size": (1,),
    "in_channels": 16,
    "dim": 3840,
    "n_layers": 30,
    "n_refiner_layers": 2,
    "n_heads": 30,
    "n_kv_heads": 30,
    "cap_feat_dim": 2560,
    "axes_dims": [32, 48, 48],
    "axes_lens": [1024, 512, 512],
}
SANA_1600M_512 = {
    "in_channels": 32,
    "out_channels": 32,
    "num_attention_heads": 70,
    "attention_head_dim": 32,
    "num_layers": 20,
    "num_cross_attention_heads": 20,
    "cross_attention_head_dim": 112,
    "cross_attention_dim": 2240,
    "caption_channels": 2304,
    "mlp_ratio": 2.5,
    "sample_size": 16,
    "patch_size": 1,
}
FLUX_SCHEDULER = dict(
    use_dynamic_shifting=True,
    base_image_seq_len=256,
    max_image_seq_len=4096,
    base_shift=0.5,
    max_shift=1.15,
    shift=3.0,
)
FLUX2_SCHEDULER = dict(shift=3.0, use_dynamic_shifting=True, time_shift_type="exponential")
FLUX2_TEXT = {"max_sequence_length": 512, "text_layers": list(TEXT_LAYERS)}
FLUX2_TINY = {
    "patch_size": 1,
    "in_channels": 16,
    "num_layers": 2,
    "num_single_layers": 2,
    "attention_head_dim": 8,
    "num_attention_heads": 2,
    "joint_attention_dim": 48,
    "timestep_guidance_channels": 16,
    "axes_dims_rope": (2, 2, 2, 2),
    "guidance_embeds": True,
}
PER_BLOCK = "; per-parameter figures (MFU, speed-ups, ours / stock) carry over, whole-model seconds do not"

FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        Family(
            "sd3",
            "SD3.5-Medium (stabilityai/stable-diffusion-3.5-medium)",
            "StableDiffusion3Pipeline",
            "SD3Transformer2DModel",
            SD35_MEDIUM,
            {
                **SD35_MEDIUM,
                "num_layers": 2,
                "in_channels": 4,
                "out_channels": 4,
                "attention_head_dim": 8,
                "num_attention_heads": 2,
                "joint_attention_dim": 32,
                "caption_projection_dim": 16,
                "pooled_projection_dim": 32,
                "pos_embed_max_size": 16,
                "dual_attention_layers": (0,),
            },
            {"transformer_blocks": "num_layers"},
            sd3_parts,
            dict(shift=3.0),
            {"max_sequence_length": 128},
            {"guidance_scale": 1.0, "max_sequence_length": 128},
            patch=2,
        ),
        Family(
            "flux",
            "FLUX.1 [dev] (black-forest-labs/FLUX.1-dev)",
            "FluxPipeline",
            "FluxTransformer2DModel",
            FLUX1_DEV,
            {
                **FLUX1_DEV,
                "in_channels": 16,
                "num_layers": 2,
                "num_single_layers": 2,
                "attention_head_dim": 8,
                "num_attention_heads": 2,
                "joint_attention_dim": 32,
                "pooled_projection_dim": 32,
                "axes_dims_rope": (2, 2, 4),
            },
            {"transformer_blocks": "num_layers", "single_transformer_blocks": "num_single_layers"},
            flux_parts,
            FLUX_SCHEDULER,
            {"max_sequence_length": 512},
            {"guidance_scale": 3.5, "max_sequence_length": 512},
            patch=2,
        ),
        Family(
            "qwen-image",
            "Qwen-Image (Qwen/Qwen-Image, 20B)",
            "QwenImagePipeline",
            "QwenImageTransformer2DModel",
            QWEN_IMAGE,
            {
                **QWEN_IMAGE,
                "in_channels": 16,
                "out_channels": 4,
                "num_layers": 2,
                "attention_head_dim": 8,
                "num_attention_heads": 2,
                "joint_attention_dim": 16,
                "axes_dims_rope": (4, 2, 2),
            },
            {"transformer_blocks": "num_layers"},
            qwen_image_parts,
            dict(
                base_image_seq_len=256,
                base_shift=0.5,
                max_image_seq_len=8192,
                max_shift=0.9,
                shift=1.0,
                shift_terminal=0.02,
                time_shift_type="exponential",
                use_dynamic_shifting=True,
            ),
            {"max_sequence_length": 512},
            {"true_cfg_scale": 1.0, "max_sequence_length": 512},
            patch=2,
            reduced={"transformer_blocks": 20},
            reduced_why="20 of 60 blocks: the policy reads the transformer in float32 on the host (82 GB "
            "at 60 blocks, beside the 41 GB bf16 folder: more than a 128 GB machine holds), and moving 20B "
            "parameters three times would take most of the 8 minutes" + PER_BLOCK,
        ),
        Family(
            "flux2",
            "FLUX.2 [dev] (black-forest-labs/FLUX.2-dev, 32B)",
            "Flux2Pipeline",
            "Flux2Transformer2DModel",
            FLUX2_DEV,
            FLUX2_TINY,
            {"transformer_blocks": "num_layers", "single_transformer_blocks": "num_single_layers"},
            lambda config: flux2_parts(config, klein=False),
            FLUX2_SCHEDULER,
            FLUX2_TEXT,
            {"guidance_scale": 4.0, "max_sequence_length": 512, "text_encoder_out_layers": TEXT_LAYERS},
            patch=1,
            reduced={"transformer_blocks": 2, "single_transformer_blocks": 12},
            reduced_why="2 of 8 double and 12 of 48 single blocks: 32B parameters are 64 GB in bf16 (no room "
            "left for a LoRA step on an 80 GB GPU) and 129 GB in float32 on the host, where the policy reads "
            "them" + PER_BLOCK,
        ),
        Family(
            "flux2-klein",
            "FLUX.2 [klein] 4B (black-forest-labs/FLUX.2-klein-base-4B)",
            "Flux2KleinPipeline",
            "Flux2Transformer2DModel",
            FLUX2_KLEIN_4B,
            {**FLUX2_TINY, "guidance_embeds": False},
            {"transformer_blocks": "num_layers", "single_transformer_blocks": "num_single_layers"},
            lambda config: flux2_parts(config, klein=True),
            FLUX2_SCHEDULER,
            FLUX2_TEXT,
            {"guidance_scale": 1.0, "max_sequence_length": 512, "text_encoder_out_layers": TEXT_LAYERS},
            patch=1,
        ),
        Family(
            "z-image",
            "Z-Image (Tongyi-MAI/Z-Image, 6B)",
            "ZImagePipeline",
            "ZImageTransformer2DModel",
            Z_IMAGE,
            {
                **Z_IMAGE,
                "in_channels": 4,
                "dim": 16,
                "n_layers": 2,
                "n_refiner_layers": 1,
                "n_heads": 2,
                "n_kv_heads": 2,
                "cap_feat_dim": 16,
                "axes_dims": [4, 2, 2],
                "axes_lens": [1024, 16, 16],
            },
            {
                "layers": "n_layers",
                "noise_refiner": "n_refiner_layers",
                "context_refiner": "n_refiner_layers",
            },
            z_image_parts,
            dict(shift=3.0),
            {"max_sequence_length": 512},
            {"guidance_scale": 0.0, "max_sequence_length": 512},
            patch=2,
        ),
        Family(
            "sana",
            "SANA 1600M 512 px (Efficient-Large-Model/Sana_1600M_512px_diffusers)",
            "SanaPipeline",
            "SanaTransformer2DModel",
            SANA_1600M_512,
            {
                **SANA_1600M_512,
                "in_channels": 4,
                "out_channels": 4,
                "num_attention_heads": 2,
                "attention_head_dim": 4,
                "num_layers": 2,
                "num_cross_attention_heads": 2,
                "cross_attention_head_dim": 4,
                "cross_attention_dim": 8,
                "caption_channels": 8,
            },
            {"transformer_blocks": "num_layers"},
            sana_parts,
            dict(shift=3.0),
            {"max_sequence_length": 300, "complex_human_instruction": False},
            {
                "guidance_scale": 1.0,
                "max_sequence_length": 300,
                "clean_caption": False,
                "complex_human_instruction": None,
                "use_resolution_binning": False,
            },
            patch=1,
            text_in_sequence=False,
        ),
    )
}


def built_config(family: Family, tiny: bool, max_blocks: int | None) -> dict[str, Any]:
    """The transformer config this run builds: tiny, real, or real with the family's (or `max_blocks`)
    fewer blocks."""
    config = dict(family.tiny if tiny else family.real)
    if tiny:
        return config
    keep = dict(family.reduced)
    if max_blocks:
        for name, key in family.blocks.items():
            keep[name] = min(keep.get(name, config[key]), max_blocks)
    for name, count in keep.items():
        config[family.blocks[name]] = count
    if "dual_attention_layers" in config:
        config["dual_attention_layers"] = tuple(
            i for i in config["dual_attention_layers"] if i < config["num_layers"]
        )
    return config


def reduced_why(family: Family, max_blocks: int | None) -> str:
    if max_blocks:
        return f"--max-blocks {max_blocks}" + (f"; {family.reduced_why}" if family.reduced_why else "")
    return family.reduced_why


def block_counts(family: Family, config: dict[str, Any]) -> dict[str, int]:
    return {name: int(config[key]) for name, key in family.blocks.items()}


def count_parameters(family: Family, config: dict[str, Any]) -> int:
    """The transformer's parameters at `config`, counted on the meta device (nothing allocated)."""
    import diffusers
    import torch

    with torch.device("meta"):
        model = getattr(diffusers, family.transformer)(**config)
    return sum(p.numel() for p in model.parameters())


# ---- the run: results, time guard, watchdog ----------------------------------------------------------
def one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:300] if text else ''}".rstrip(": ")


class Check:
    """The results being written, the clock and its guard, the device."""

    def __init__(self, args: argparse.Namespace) -> None:
        import torch

        self.args, self.torch = args, torch
        self.device = torch.device(args.device)
        self.cuda = self.device.type == "cuda"
        self.tiny = args.tiny
        self.results: dict[str, Any] = {}
        self.skipped: list[str] = []
        self.current: str | None = None
        self.child: subprocess.Popen | None = None
        self.lock = threading.Lock()
        self.folders: set[Path] = set()
        """Temporary folders alive (pipeline folders, the end-to-end run's): removed on every way out."""

    def scratch(self, prefix: str, root: Path | None = None) -> Path:
        folder = Path(tempfile.mkdtemp(prefix=prefix, dir=root))
        self.folders.add(folder)
        return folder

    def remove(self, folder: Path | None) -> None:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
            self.folders.discard(folder)

    # the clock
    def elapsed(self) -> float:
        return time.monotonic() - STARTED

    def fits(self, estimate: float, deadline: float | None = None) -> bool:
        limit = self.args.budget if deadline is None else min(deadline, self.args.budget)
        return self.elapsed() + estimate <= limit

    # memory
    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize(self.device)

    def free(self) -> None:
        if self.cuda:  # what a stage left on the GPU goes back (a CPU run has nothing to hand back)
            gc.collect()
            self.torch.cuda.empty_cache()

    def reset_peak(self) -> None:
        if self.cuda:
            self.torch.cuda.reset_peak_memory_stats(self.device)

    def peak_gib(self) -> float | None:
        return self.torch.cuda.max_memory_allocated(self.device) / 2**30 if self.cuda else None

    def device_gib(self) -> float:
        if self.cuda:
            return self.torch.cuda.get_device_properties(self.device).total_memory / 2**30
        return math.inf

    def mfu(self, flops: float, seconds: float) -> float | None:
        """Model FLOPs per second over the peak (None off a GPU: no claim)."""
        return flops / seconds / (self.args.peak_tflops * 1e12) if self.cuda and seconds > 0 else None

    # results
    def write(self) -> None:
        with self.lock:
            self.results["time_guard"] = {
                "budget_seconds": self.args.budget,
                "hard_limit_seconds": self.args.hard_limit,
                "elapsed_seconds": round(self.elapsed(), 1),
                "skipped": list(self.skipped),
                "hard_stop": False,
                "in_flight": None,
            }
            text = json.dumps(self.results, indent=2, default=str) + "\n"
            temporary = self.args.out.with_name(self.args.out.name + ".tmp")
            temporary.write_text(text)
            os.replace(temporary, self.args.out)

    def stage(
        self,
        where: dict[str, Any],
        key: str,
        label: str,
        estimate: float,
        run: Callable[[], dict[str, Any]],
        deadline: float | None = None,
    ) -> bool:
        """Run one stage unless the guard says it would not fit; its record (or error) goes into
        `where[key]`. True when it ran and succeeded."""
        if not self.fits(estimate, deadline):
            limit = self.args.budget if deadline is None else min(deadline, self.args.budget)
            where[key] = {
                "status": "skipped",
                "reason": f"time guard: {self.elapsed():.0f} s used, this stage needs about {estimate:.0f} s "
                f"and the limit {'for this family ' if deadline is not None else ''}is {limit:.0f} s",
            }
            self.skipped.append(label)
            print(f"{label}: skipped (time guard)", flush=True)
            self.write()
            return False
        self.current = label
        began = time.perf_counter()
        try:
            record = {"status": "ok", **run()}
        except Exception as error:  # a stage's failure is its own: recorded, and the check goes on
            record = {"status": "error", "error": one_line(error)}
        record["seconds"] = round(time.perf_counter() - began, 3)
        self.current = None
        self.free()
        where[key] = record
        self.write()
        shown = record.get("error") or ", ".join(
            f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
            for k, v in record.items()
            if k in ("images_per_second", "ratio", "speedup", "seconds_per_step", "mfu", "peak_memory_gib")
            and v is not None
        )
        print(f"{label}: {record['status']} ({record['seconds']:.1f} s) {shown}", flush=True)
        return record["status"] == "ok"

    def skip(self, where: dict[str, Any], key: str, reason: str) -> None:
        where[key] = {"status": "skipped", "reason": reason}

    def watchdog(self) -> None:
        """At the hard limit: the last written JSON gets the in-flight stage and the process stops."""
        delay = self.args.hard_limit - self.elapsed()

        def stop() -> None:
            if self.child is not None and self.child.poll() is None:
                with contextlib.suppress(OSError):
                    os.killpg(self.child.pid, 9)
            self.lock.acquire(timeout=10)  # not while the main thread replaces the file
            for folder in list(self.folders):
                shutil.rmtree(folder, ignore_errors=True)
            try:
                data = json.loads(self.args.out.read_text())
            except (OSError, json.JSONDecodeError):
                data = {}
            guard = data.setdefault("time_guard", {})
            guard.update(hard_stop=True, in_flight=self.current, elapsed_seconds=round(self.elapsed(), 1))
            data["status"] = "stopped by the watchdog at the hard limit"
            with contextlib.suppress(OSError):
                self.args.out.write_text(json.dumps(data, indent=2, default=str) + "\n")
            print(
                f"watchdog: {self.args.hard_limit:.0f} s reached during {self.current}; stopped", flush=True
            )
            os._exit(3)

        timer = threading.Timer(max(delay, 0.0), stop)
        timer.daemon = True
        timer.start()


# ---- building, loading, rolling out, stepping ---------------------------------------------------------
@dataclass
class Loaded:
    """A family's state through its stages."""

    family: Family
    config: dict[str, Any]
    parameters: int
    parameters_real: int
    folder: Path | None = None
    policy: Any = None
    solver: Any = None
    warm_solver: Any = None
    cond: Any = None
    noise: Any = None
    tokens: int = 0
    plain_seconds: float | None = None
    load_seconds: float = 0.0


def scratch_root(check: Check, need_bytes: float) -> Path:
    """Where a pipeline folder goes: `--tmp-dir`, else /dev/shm (RAM: fast to write and read) when it has
    room, else the system's temporary folder."""
    if check.args.tmp_dir:
        return Path(check.args.tmp_dir)
    shm = Path("/dev/shm")
    if shm.is_dir() and shutil.disk_usage(shm).free > 1.3 * need_bytes + 2**30:
        return shm
    return Path(tempfile.gettempdir())


def build(check: Check, state: Loaded) -> dict[str, Any]:
    """Random transformer (built on the device, stored in bf16), stand-in text encoders and VAE, saved."""
    import diffusers
    import torch

    family = state.family
    torch.manual_seed(0)
    began = time.perf_counter()
    with torch.device(check.device):
        transformer = getattr(diffusers, family.transformer)(**state.config)
    transformer.to(torch.bfloat16)
    parts = family.parts(state.config)
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(**family.scheduler)
    pipeline = getattr(diffusers, family.pipeline)(transformer=transformer, scheduler=scheduler, **parts)
    built = time.perf_counter() - began
    folder = check.scratch(f"gpu-check-{family.name}-", scratch_root(check, 2 * state.parameters))
    pipeline.save_pretrained(str(folder))
    del pipeline, transformer, parts
    state.folder = folder
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    return {"build_seconds": round(built, 3), "folder": str(folder), "folder_gib": size / 2**30}


def text_length(check: Check, settings: dict[str, Any]) -> dict[str, Any]:
    """A family's policy options or pipeline arguments, the text capped at `--text-tokens` if given."""
    cap = check.args.text_tokens
    if not cap or "max_sequence_length" not in settings:
        return dict(settings)
    return {**settings, "max_sequence_length": min(settings["max_sequence_length"], cap)}


def policy_options(check: Check, state: Loaded, lora: bool) -> dict[str, Any]:
    return {
        "model": str(state.folder),
        "resolution": check.args.resolution,
        "precision": "bf16",
        "lora": {"rank": 32, "alpha": 64.0} if lora else False,
        **text_length(check, state.family.options),
    }


def load_policy(check: Check, state: Loaded, lora: bool = True):
    from nft_core import registry

    began = time.perf_counter()
    policy = registry.create("policies", state.family.name, policy_options(check, state, lora), "policy")
    policy.to(check.device)
    check.sync()
    state.load_seconds = time.perf_counter() - began
    return policy


def text_tokens(family: Family, cond: dict[str, Any]) -> int:
    """The text tokens in the transformer's sequence per image (real ones where the policy keeps a mask)."""
    if not family.text_in_sequence:
        return 0
    for key in ("prompt_embeds_mask", "prompt_mask"):
        if key in cond:
            return int(cond[key].sum(dim=1).max())
    return int(cond["prompt_embeds"].shape[1])


def image_tokens(family: Family, latent_shape: tuple[int, ...]) -> int:
    _, height, width = latent_shape
    return (height // family.patch) * (width // family.patch)


def prepare(check: Check, state: Loaded) -> dict[str, Any]:
    """The LoRA policy on the device, the Euler solvers, the prompts' conditioning and the noise."""
    from nft_core import registry
    from nft_core.sampling import keyed_noise

    policy = state.policy = load_policy(check, state, lora=True)
    steps, warm = check.args.steps, check.args.warm_steps
    state.solver = registry.create(
        "solvers", "euler", {"steps": steps, "shift": policy.recommended_shift(steps)}
    )
    state.warm_solver = (
        registry.create("solvers", "euler", {"steps": warm, "shift": policy.recommended_shift(warm)})
        if warm
        else None
    )
    images = check.args.images
    state.cond = policy.encode_prompts([PROMPTS[i % len(PROMPTS)] for i in range(images)])
    state.noise = keyed_noise(range(images), tuple(policy.latent_shape), 0, 1, 0).to(check.device)
    image, text = image_tokens(state.family, policy.latent_shape), text_tokens(state.family, state.cond)
    state.tokens = image + text
    return {
        "load_seconds": round(state.load_seconds, 3),
        "latent_shape": list(policy.latent_shape),
        "image_tokens": image,
        "text_tokens": text,
        "tokens": state.tokens,
        "lora_parameters": sum(p.numel() for _, p in policy.trainable_parameters()),
    }


def our_rollout(
    check: Check, state: Loaded, levers: list, precision: str = "bf16", warm: bool = True
) -> float:
    """Seconds of one rollout as the collector runs it: the levers' contexts and the rollout precision's
    autocast around `sample_latents` of the old view, then `decode`."""
    from nft_core.loop.levers import rollout_context
    from nft_core.loop.precision import autocast
    from nft_core.sampling import sample_latents

    policy = state.policy

    def once(solver) -> float:
        check.sync()
        began = time.perf_counter()
        with autocast(precision, check.device), rollout_context(levers, policy):
            latents = sample_latents(
                policy, solver, state.cond, state.noise, view="old", batch_size=len(state.noise)
            )
        policy.decode(latents)
        check.sync()
        return time.perf_counter() - began

    if warm and state.warm_solver is not None:
        once(state.warm_solver)
    check.reset_peak()
    return once(state.solver)


def rollout_record(check: Check, state: Loaded, seconds: float) -> dict[str, Any]:
    """Seconds, images/s, peak memory and, once the policy has said its tokens, FLOPs and MFU."""
    images, steps = check.args.images, check.args.steps
    flops = 2.0 * state.parameters * state.tokens * images * steps if state.tokens else None
    return {
        "seconds_per_rollout": seconds,
        "images_per_second": images / seconds,
        "peak_memory_gib": check.peak_gib(),
        "model_flops": flops,
        "mfu": check.mfu(flops, seconds) if flops else None,
    }


def stock_rollout(check: Check, state: Loaded) -> dict[str, Any]:
    """The stock pipeline class on the same folder (bf16), called with the same steps, size and prompts."""
    import warnings

    import diffusers
    import torch

    family = state.family
    began = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
        pipeline = getattr(diffusers, family.pipeline).from_pretrained(
            str(state.folder), torch_dtype=torch.bfloat16
        )
    pipeline.to(check.device)
    pipeline.set_progress_bar_config(disable=True)
    check.sync()
    loaded = time.perf_counter() - began
    images = check.args.images
    call = dict(
        prompt=[PROMPTS[i % len(PROMPTS)] for i in range(images)],
        height=check.args.resolution,
        width=check.args.resolution,
        output_type="pt",
        **text_length(check, family.call),
    )

    def once(steps: int) -> float:
        check.sync()
        began = time.perf_counter()
        pipeline(num_inference_steps=steps, generator=torch.Generator().manual_seed(0), **call)
        check.sync()
        return time.perf_counter() - began

    if check.args.warm_steps:
        once(check.args.warm_steps)
    check.reset_peak()
    seconds = once(check.args.steps)
    return {"load_seconds": round(loaded, 3), **rollout_record(check, state, seconds)}


def nft_step(check: Check, state: Loaded, policy, label: str) -> dict[str, Any]:
    """NFT micro-steps as the update takes them: old, current and reference forwards (kl_weight 1e-4) under
    the training autocast, backward, gradient clipping, AdamW, the EMA update. Warm-up, then the median."""
    import torch

    from nft_core.ema import ParameterEMA
    from nft_core.loop.precision import autocast
    from nft_core.objective import NFTObjective

    batch = check.args.train_batch if policy.lora is not None else check.args.full_batch
    shape = tuple(policy.latent_shape)
    generator = torch.Generator().manual_seed(1)

    def draw(*size: int) -> torch.Tensor:
        return torch.randn(size, generator=generator).to(check.device)

    x0, noise = draw(batch, *shape), draw(batch, *shape)
    t = (torch.rand(batch, generator=generator) * 0.9 + 0.05).to(check.device)
    optimality = torch.rand(batch, generator=generator).to(check.device)
    cond = policy.encode_prompts([PROMPTS[i % len(PROMPTS)] for i in range(batch)])
    objective = NFTObjective(beta=1.0, kl_weight=1e-4, adv_clip=5.0)
    named = list(policy.trainable_parameters())
    parameters = [p for _, p in named]
    optimizer = torch.optim.AdamW(parameters, lr=3e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-4)
    ema = ParameterEMA(named, decay=0.9)
    losses: list[float] = []

    def step() -> float:
        check.sync()
        began = time.perf_counter()
        policy.train(True)
        with autocast("bf16", check.device):
            loss, _ = objective.loss(policy, x0, cond, t, optimality, noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema.update(policy.trainable_parameters())
        policy.train(False)
        check.sync()
        losses.append(float(loss.detach()))
        return time.perf_counter() - began

    for _ in range(check.args.train_warmup):
        step()
    check.reset_peak()
    seconds = sorted(step() for _ in range(check.args.train_repeats))
    median = seconds[len(seconds) // 2]
    tokens = state.tokens * batch
    flops = (6.0 + 2.0 + 2.0) * state.parameters * tokens
    record = {
        "mode": label,
        "batch": batch,
        "trained_parameters": sum(p.numel() for p in parameters),
        "seconds_per_step": median,
        "all_seconds": seconds,
        "peak_memory_gib": check.peak_gib(),
        "model_flops": flops,
        "mfu": check.mfu(flops, median),
        "losses": losses,
        "losses_finite": all(math.isfinite(v) for v in losses),
    }
    return record


# ---- the levers ----------------------------------------------------------------------------------------
def lever_objects(name: str, **extra: Any) -> list:
    """The registered lever(s) of a variant name, built as `build_levers` builds them."""
    from nft_core import registry

    kind, _, variant = name.partition("-")
    options = {
        "sdpa": lambda: {"backends": [variant]},
        "cache": lambda: {"kind": variant},
        "compile": lambda: {"mode": variant},
    }[kind]()
    return [registry.create("levers", kind, {**options, **extra}, f"rollout.lever_options.{kind}")]


def lever_stage(check: Check, state: Loaded, name: str) -> dict[str, Any]:
    seconds = our_rollout(check, state, lever_objects(name))
    record = rollout_record(check, state, seconds)
    record["speedup"] = state.plain_seconds / seconds if state.plain_seconds else None
    return record


@contextlib.contextmanager
def float32_weights(state: Loaded):
    """The LoRA policy's frozen weights in float32 and its own autocast off: `policy.precision = "fp32"`,
    where `[rollout] precision` decides the rollout's dtype (with `policy.precision = "bf16"`, the presets',
    the policy's own bf16 autocast wins and the rollout precision changes nothing)."""
    import torch

    policy, cond = state.policy, state.cond
    for parameter in policy.transformer.parameters():
        if parameter.is_floating_point():
            parameter.data = parameter.data.to(torch.float32)
    policy.compute_dtype = torch.float32  # the text encoders' outputs too, as an fp32 policy's
    state.cond = {k: v.float() if v.is_floating_point() else v for k, v in cond.items()}
    try:
        yield
    finally:
        state.cond = cond
        policy.compute_dtype = torch.bfloat16
        policy._cast_frozen_weights(policy.transformer)


def precision_stage(check: Check, state: Loaded) -> dict[str, Any]:
    import torch

    with float32_weights(state):
        bf16 = our_rollout(check, state, [], precision="bf16")
        bf16_peak = check.peak_gib()
        fp32 = our_rollout(check, state, [], precision="fp32")
        fp32_peak = check.peak_gib()
    images = check.args.images
    return {
        "weights": "float32 (policy.precision = fp32)",
        "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32) if check.cuda else None,
        "bf16_images_per_second": images / bf16,
        "fp32_images_per_second": images / fp32,
        "bf16_peak_memory_gib": bf16_peak,
        "fp32_peak_memory_gib": fp32_peak,
        "speedup": fp32 / bf16,
        "vs_plain": state.plain_seconds / bf16 if state.plain_seconds else None,
    }


def compile_stage(check: Check, state: Loaded, name: str) -> dict[str, Any]:
    """The first rollout with the lever (the cold compile; CUDA graphs are recorded in the next), a second
    warm-up, then the timed one. Where the transformer names no repeated blocks (diffusers' SD3 and SANA),
    the lever's default regional compile raises; the whole network is compiled instead (`regional =
    false`), and the record says so."""
    network = state.policy.rollout_networks()[0]
    regional = bool(getattr(network, "_repeated_blocks", None))
    levers = lever_objects(name, regional=regional)
    check.sync()
    began = time.perf_counter()
    our_rollout(check, state, levers, warm=False)  # compiles at the solver's shapes
    first = time.perf_counter() - began
    seconds = our_rollout(check, state, levers)
    record = rollout_record(check, state, seconds)
    record["first_rollout_seconds"] = first
    record["regional"] = regional
    if not regional:
        record["note"] = (
            f"{type(network).__name__} has no _repeated_blocks: the default regional compile raises "
            "ValueError, so the whole network is compiled (regional = false)"
        )
    record["speedup"] = state.plain_seconds / seconds if state.plain_seconds else None
    return record


# ---- one family ------------------------------------------------------------------------------------------
def estimates(check: Check, parameters: int, tokens: int) -> dict[str, float]:
    """Rough seconds of each stage (the guard's guesses, not measurements): moving weights at ~1 s (build and
    save), ~2 s (our load, through float32 on the host) and ~1 s (the stock bf16 load) per billion
    parameters, compute at 400 TFLOP/s (fp32 rollouts ~10x slower), a cold compile ~75 s."""
    if check.tiny:
        return dict.fromkeys(("build", "stock", "ours", "lora", "full", "lever", "precision", "compile"), 1.0)
    billions = parameters / 1e9
    rollout = 2.0 * parameters * tokens * check.args.images * check.args.steps / 400e12
    step = 10.0 * parameters * tokens * check.args.train_batch / 400e12
    steps = check.args.train_warmup + check.args.train_repeats
    return {
        "build": 3 + 1.0 * billions,
        "stock": 3 + 1.0 * billions + 1.5 * rollout,
        "ours": 4 + 2.0 * billions + 1.5 * rollout,
        "lora": 3 + steps * step,
        "full": 5 + 4.0 * billions + steps * step * 1.5 * check.args.full_batch / check.args.train_batch,
        "lever": 1.5 * rollout + 1,
        "precision": 12 * rollout + 2,
        "compile": 75 + 3 * rollout,
    }


def describe(check: Check, family: Family) -> tuple[Loaded, dict[str, Any]]:
    config = built_config(family, check.tiny, check.args.max_blocks)
    state = Loaded(family, config, count_parameters(family, config), count_parameters(family, family.real))
    built, full = (
        block_counts(family, config),
        block_counts(family, family.tiny if check.tiny else family.real),
    )
    entry = {
        "stands_for": family.stands_for,
        "pipeline": family.pipeline,
        "transformer": family.transformer,
        "config": config,
        "blocks": {name: {"built": built[name], "real": full[name]} for name in built},
        "reduced": built != full,
        "reduced_why": reduced_why(family, check.args.max_blocks) if built != full else None,
        "parameters": state.parameters,
        "parameters_real": state.parameters_real,
        "stand_ins": "random weights, nothing downloaded; text encoders of one or two layers at the real "
        "embedding widths with character tokenizers, and a VAE of 8-32 channels at the real downscale "
        "(their cost is negligible beside the transformer's)",
        "resolution": check.args.resolution,
        "stages": {},
        "levers": {},
    }
    return state, entry


def full_step_reason(state: Loaded) -> str | None:
    """Why full fine-tuning is not tried (the real model does not fit 80 GB), or None."""
    needed = FULL_FT_BYTES * state.parameters_real / 2**30
    if needed <= 0.92 * FULL_FT_MEMORY_GIB:
        return None
    return (
        f"the real model does not fit {FULL_FT_MEMORY_GIB:.0f} GB: {needed:.0f} GiB of float32 weights, "
        f"gradients, AdamW moments and EMA, the old and the reference copies ({FULL_FT_BYTES} bytes a "
        "parameter) before activations"
    )


def guess_tokens(check: Check, family: Family) -> int:
    """The transformer's tokens per image before the policy says (for the guard's estimates)."""
    image = (check.args.resolution // (32 if family.name == "sana" else 16)) ** 2
    if not family.text_in_sequence:
        return image
    length = text_length(check, family.options).get("max_sequence_length", 0)
    return image + {"sd3": 77 + length, "qwen-image": min(length, 64), "z-image": min(length, 64)}.get(
        family.name, length
    )


def plan_seconds(check: Check, state: Loaded) -> float:
    """The guard's estimate of a family's stages (compile levers apart)."""
    guess = estimates(check, state.parameters, state.tokens or guess_tokens(check, state.family))
    total = guess["build"] + guess["stock"] + guess["ours"] + guess["lever"] + guess["lora"]
    total += sum(guess["precision" if lever == "precision" else "lever"] for lever in check.args.levers)
    return total + (guess["full"] if full_step_reason(state) is None else 0.0)


def run_family(check: Check, state: Loaded, deadline: float, keep_folder: bool) -> None:
    """Build, stock rollout, our rollout, the LoRA step, the levers (while the family's time allowance
    lasts), full fine-tuning; the folder is removed unless a later phase needs it."""
    family, name = state.family, state.family.name
    entry = check.results["families"][name]
    stages, levers = entry["stages"], entry["levers"]
    guess = estimates(check, state.parameters, guess_tokens(check, family))
    not_full = full_step_reason(state)
    try:
        if not check.stage(stages, "build", f"{name}/build", guess["build"], lambda: build(check, state)):
            for key in ("stock_rollout", "policy", "our_rollout", "lora_step", "full_step"):
                check.skip(stages, key, "the build did not finish")
            return
        check.stage(
            stages,
            "stock_rollout",
            f"{name}/stock_rollout",
            guess["stock"],
            lambda: stock_rollout(check, state),
        )
        ready = check.stage(stages, "policy", f"{name}/policy", guess["ours"], lambda: prepare(check, state))
        if ready:
            entry.update(
                {k: stages["policy"][k] for k in ("latent_shape", "image_tokens", "text_tokens", "tokens")}
            )
            guess = estimates(check, state.parameters, state.tokens)
            stock = stages.get("stock_rollout", {})
            if stock.get("status") == "ok":  # the same tokens: its FLOPs now that the policy has said them
                flops = rollout_record(check, state, stock["seconds_per_rollout"])
                stock.update(model_flops=flops["model_flops"], mfu=flops["mfu"])

            def ours() -> dict[str, Any]:
                state.plain_seconds = our_rollout(check, state, [])
                return rollout_record(check, state, state.plain_seconds)

            if check.stage(stages, "our_rollout", f"{name}/our_rollout", guess["lever"], ours):
                stock = stages.get("stock_rollout", {})
                if stock.get("status") == "ok":
                    entry["ratio_ours_over_stock"] = (
                        stages["our_rollout"]["images_per_second"] / stock["images_per_second"]
                    )
                    stages["our_rollout"]["ratio"] = entry["ratio_ours_over_stock"]
            lora = partial(nft_step, check, state, state.policy, "lora r32")
            check.stage(stages, "lora_step", f"{name}/lora_step", guess["lora"], lora)
            levers_until = deadline - (guess["full"] if not_full is None else 0.0)
            for lever in check.args.levers:
                label = f"{name}/levers/{lever}"
                if state.plain_seconds is None:
                    check.skip(levers, lever, "no plain rollout to compare with")
                elif lever == "precision":
                    room = 0.85 * check.device_gib() - 4 * state.parameters / 2**30
                    if room < 2:
                        check.skip(levers, lever, "float32 weights do not fit this GPU")
                    else:
                        run = partial(precision_stage, check, state)
                        check.stage(levers, lever, label, guess["precision"], run, levers_until)
                else:
                    run = partial(lever_stage, check, state, lever)
                    check.stage(levers, lever, label, guess["lever"], run, levers_until)
        else:
            for key in ("our_rollout", "lora_step"):
                check.skip(stages, key, "our policy did not load")
        state.policy = state.cond = state.noise = None
        check.free()
        if not_full is not None:
            check.skip(stages, "full_step", not_full)
        elif not ready:
            check.skip(stages, "full_step", "our policy did not load")
        else:

            def full() -> dict[str, Any]:
                policy = load_policy(check, state, lora=False)
                try:
                    return {
                        "load_seconds": round(state.load_seconds, 3),
                        **nft_step(check, state, policy, "full"),
                    }
                finally:
                    del policy

            check.stage(stages, "full_step", f"{name}/full_step", guess["full"], full)
    finally:
        state.policy = state.cond = state.noise = None
        check.free()
        if not keep_folder and state.folder is not None:
            check.remove(state.folder)
            state.folder = None
        check.write()


def compile_phase(check: Check, state: Loaded) -> None:
    """The compile levers on a fresh load of the family's LoRA policy: the plain rollout again (the
    speed-ups' base in this process state), then each mode."""
    import torch

    entry = check.results["families"][state.family.name]
    levers, name = entry["levers"], state.family.name
    guess = estimates(check, state.parameters, state.tokens or guess_tokens(check, state.family))

    def plain() -> dict[str, Any]:
        record = prepare(check, state)
        state.plain_seconds = our_rollout(check, state, [])
        return {**record, **rollout_record(check, state, state.plain_seconds)}

    try:
        if not check.stage(levers, "compile-plain", f"{name}/levers/compile-plain", guess["ours"], plain):
            for lever in COMPILE_LEVERS:
                check.skip(levers, lever, "the plain rollout to compare with did not run")
            return
        for lever in COMPILE_LEVERS:
            run = partial(compile_stage, check, state, lever)
            check.stage(levers, lever, f"{name}/levers/{lever}", guess["compile"], run)
    finally:
        state.policy = state.cond = state.noise = None
        with contextlib.suppress(Exception):
            torch._dynamo.reset()
        check.free()
        check.write()


# ---- the end-to-end run ----------------------------------------------------------------------------------
E2E_CONFIG = """name = "gpu-check-e2e"

[policy]
name = "sd3"
model = "{model}"
resolution = {resolution}
precision = "bf16"
max_sequence_length = 128

[policy.lora]
rank = 32
alpha = 64.0

[solver]
name = "euler"
steps = {steps}
shift = 3.0

[objective]
name = "nft"
kl_weight = 1e-4
trained_times = 2

[data]
prompts = "{prompts}"
prompts_per_epoch = 2
images_per_prompt = 4

[train]
epochs = 2
batch_size = 4
sample_batch_size = 4
optimizer_steps_per_epoch = 1
precision = "bf16"
device = "{device}"
overlap_scoring = true
seed = 0
{threads}

[eval]
prompts = "{prompts}"
images_per_prompt = 1

[eval.solver]
name = "euler"
steps = {eval_steps}
shift = 3.0

[log]
grid_every = 0
progress = false

[[reward]]
name = "jpeg-compressibility"
normalize = "group-zscore"
"""


def end_to_end(check: Check, folder: Path) -> dict[str, Any]:
    """`nft run` in a child process on the SD3.5-M-sized folder: 2 epochs of a LoRA, jpeg-compressibility,
    overlapped scoring; its summary status and every training record's losses."""
    work = check.scratch("gpu-check-e2e-")
    try:
        prompts = work / "prompts.txt"
        prompts.write_text("\n".join(PROMPTS) + "\n")
        config = work / "e2e.toml"
        config.write_text(
            E2E_CONFIG.format(
                model=folder,
                resolution=check.args.resolution,
                steps=check.args.steps,
                eval_steps=max(check.args.warm_steps, 2),
                prompts=prompts,
                device="cuda" if check.cuda else check.device.type,
                threads="threads = 1" if not check.cuda else "",
            )
        )
        command = [sys.executable, "-m", "nft_core.cli", "run", str(config), "--out", str(work / "runs")]
        timeout = max(check.args.hard_limit - check.elapsed() - 5, 10)
        check.child = subprocess.Popen(
            command,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            output, _ = check.child.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(check.child.pid, 9)
            output, _ = check.child.communicate()
            raise TimeoutError(f"nft run did not finish in {timeout:.0f} s") from None
        finally:
            returncode = check.child.returncode
            check.child = None
        run_dir = work / "runs" / "gpu-check-e2e"
        summary_path = run_dir / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
        records = []
        metrics = run_dir / "metrics.jsonl"
        if metrics.is_file():
            records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
        train = [r for r in records if r.get("kind") == "train"]
        losses = [r.get("loss") for r in train]
        finite = bool(train) and all(isinstance(v, (int, float)) and math.isfinite(v) for v in losses)
        record = {
            "command": " ".join(command[1:]),
            "returncode": returncode,
            "summary_status": summary.get("status"),
            "epochs": summary.get("epochs"),
            "optimizer_steps": summary.get("optimizer_steps"),
            "train_seconds": summary.get("train_seconds"),
            "losses": losses,
            "losses_finite": finite,
            "skipped_steps": sum(r.get("skipped_steps", 0) for r in train),
            "images_per_second": [r.get("images_per_second") for r in train],
            "seconds_scoring": [r.get("seconds/scoring") for r in train],
            "seconds_scoring_unhidden": [r.get("seconds/scoring_unhidden") for r in train],
            "passed": returncode == 0 and summary.get("status") == "finished" and finite,
        }
        if not record["passed"]:
            record["output_tail"] = output[-2000:]
        return record
    finally:
        check.remove(work)


# ---- main ---------------------------------------------------------------------------------------------
def e2e_seconds(check: Check) -> float:
    """The guard's estimate of the end-to-end run (a child process: imports, load, 2 epochs, 2 evals)."""
    return 15.0 if check.tiny else 90.0


def run_all(check: Check, states: dict[str, Loaded]) -> None:
    """The families in order, each with a share of the time left in proportion to its estimate (its
    levers stop there; the other stages only at the budget), the end-to-end run right after `sd3` (on its
    folder), the compile levers last with what time is left."""
    args = check.args
    e2e = not args.no_e2e and "sd3" in states
    order = list(states)
    for index, name in enumerate(order):
        state, entry = states[name], check.results["families"][name]
        plans = {n: plan_seconds(check, states[n]) for n in order[index:]}
        available = args.budget - check.elapsed() - (e2e_seconds(check) if e2e else 0.0)
        allowance = max(available, 0.0) * plans[name] / sum(plans.values())
        entry["plan_estimate_seconds"] = round(plans[name], 1)
        entry["time_allowance_seconds"] = round(allowance, 1)
        keep = name in args.compile_families or (name == "sd3" and e2e)
        run_family(check, state, check.elapsed() + allowance, keep)
        if name == "sd3" and e2e:
            e2e = False
            if state.folder is not None:
                run = partial(end_to_end, check, state.folder)
                check.stage(check.results, "end_to_end", "end_to_end", e2e_seconds(check), run)
            else:
                check.skip(check.results, "end_to_end", "the sd3 pipeline was not built")
            if name not in args.compile_families and state.folder is not None:
                check.remove(state.folder)
                state.folder = None
    if check.results.get("end_to_end") is None:
        why = "--no-e2e" if args.no_e2e else "sd3 is not among --families (the run uses its pipeline)"
        check.skip(check.results, "end_to_end", why)
    for name in args.families:
        entry = check.results["families"].get(name, {})
        levers = entry.get("levers")
        if levers is None:
            continue
        state = states.get(name)
        if name not in args.compile_families:
            for lever in COMPILE_LEVERS:
                check.skip(
                    levers,
                    lever,
                    "only --compile-families get the compile levers (a cold compile: a minute or more)",
                )
        elif state is None or state.folder is None:
            for lever in COMPILE_LEVERS:
                check.skip(levers, lever, "the family's pipeline was not built")
        else:
            compile_phase(check, state)
            check.remove(state.folder)
            state.folder = None
    check.write()


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--tiny", action="store_true", help="tiny configs on the CPU: the code paths, no timings"
    )
    parser.add_argument("--device", default=None, help="torch device (default: cuda; --tiny: cpu)")
    parser.add_argument(
        "--out", type=Path, default=None, help="the JSON (default benchmarks/results/gpu-check.json)"
    )
    parser.add_argument("--families", default=",".join(FAMILIES), help="comma-separated, in the order run")
    parser.add_argument(
        "--levers", default=",".join(LEVERS), help="comma-separated rollout levers per family"
    )
    parser.add_argument(
        "--compile-families",
        default=None,
        help="families whose compile levers run at the end (default sd3; --tiny none)",
    )
    parser.add_argument("--no-e2e", action="store_true", help="leave out the end-to-end nft run")
    parser.add_argument("--resolution", type=int, default=None, help="px (default 512; --tiny 32)")
    parser.add_argument(
        "--steps", type=int, default=None, help="Euler steps of a rollout (default 10; --tiny 2)"
    )
    parser.add_argument(
        "--warm-steps", type=int, default=None, help="steps of a warm-up rollout (default 2; --tiny 0: none)"
    )
    parser.add_argument("--images", type=int, default=2, help="images per rollout (default 2)")
    parser.add_argument(
        "--train-batch", type=int, default=4, help="micro-batch of the LoRA NFT step (default 4)"
    )
    parser.add_argument(
        "--full-batch", type=int, default=2, help="micro-batch of the full fine-tuning step (default 2)"
    )
    parser.add_argument(
        "--train-warmup", type=int, default=None, help="untimed NFT steps first (default 1; --tiny 0)"
    )
    parser.add_argument(
        "--train-repeats", type=int, default=None, help="timed NFT steps (default 3; --tiny 1)"
    )
    parser.add_argument(
        "--peak-tflops", type=float, default=PEAK_BF16_TFLOPS, help="the GPU's dense bf16 peak"
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds: a stage that would end past it is skipped (default 420; --tiny 900)",
    )
    parser.add_argument(
        "--hard-limit",
        type=float,
        default=None,
        help="seconds: the watchdog writes the JSON and exits 3 (default: the budget + 50, at least 470)",
    )
    parser.add_argument("--max-blocks", type=int, default=None, help="cap every block list (a debugging aid)")
    parser.add_argument("--text-tokens", type=int, default=None, help="cap max_sequence_length (--tiny: 32)")
    parser.add_argument(
        "--tmp-dir", default=None, help="where pipeline folders go (default /dev/shm if roomy)"
    )
    args = parser.parse_args(argv)
    tiny = args.tiny
    args.device = args.device or ("cpu" if tiny else "cuda")
    args.out = args.out or ROOT / "benchmarks" / "results" / (
        "gpu-check-tiny.json" if tiny else "gpu-check.json"
    )
    args.resolution = args.resolution or (32 if tiny else 512)
    args.text_tokens = args.text_tokens or (32 if tiny else None)
    args.steps = args.steps or (2 if tiny else 10)
    args.train_repeats = args.train_repeats or (1 if tiny else 3)
    args.warm_steps = args.warm_steps if args.warm_steps is not None else (0 if tiny else 2)
    args.train_warmup = args.train_warmup if args.train_warmup is not None else (0 if tiny else 1)
    args.budget = args.budget or (900.0 if tiny else 420.0)
    args.hard_limit = args.hard_limit or max(args.budget + 50.0, 470.0 if not tiny else 0.0)
    args.families = [name for name in args.families.split(",") if name]
    args.levers = [name for name in args.levers.split(",") if name]
    compile_families = args.compile_families if args.compile_families is not None else ("" if tiny else "sd3")
    args.compile_families = [name for name in compile_families.split(",") if name]
    unknown = [n for n in (*args.families, *args.compile_families) if n not in FAMILIES]
    unknown += [n for n in args.levers if n not in LEVERS]
    if unknown:
        parser.error(f"unknown family or lever: {', '.join(unknown)}")
    return args


def header(check: Check) -> dict[str, Any]:
    import diffusers
    import peft
    import torch
    import transformers

    from nft_core.outputs.machine import machine_facts

    args = check.args
    gpu = None
    if check.cuda:
        properties = torch.cuda.get_device_properties(check.device)
        gpu = {
            "name": properties.name,
            "memory_gib": properties.total_memory / 2**30,
            "capability": f"{properties.major}.{properties.minor}",
            "cuda": torch.version.cuda,
            "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
        }
    return {
        "schema": 1,
        "script": "benchmarks/gpu_check.py",
        "argv": sys.argv[1:],
        "status": "running",
        "tiny": check.tiny,
        "device": str(check.device),
        "gpu": gpu,
        "machine": machine_facts(check.device),
        "versions": {
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
        },
        "peak_bf16_tflops": args.peak_tflops,
        "flops": "2 N T per forward, 6 N T per forward and backward; N the built transformer's parameters "
        "(LoRA adapters not counted), T its sequence's tokens per image (image patches plus text tokens in "
        "joint attention; image patches alone for SANA's cross-attention). A rollout: 2 N T x steps x "
        "images. An NFT step: (6 + 2 + 2) N T x batch (current forward and backward, the old and the "
        "reference forwards); a LoRA's backward computes no weight gradients of the frozen weights, so its "
        "MFU overstates the work by the convention",
        "settings": {
            "resolution": args.resolution,
            "steps": args.steps,
            "warm_steps": args.warm_steps,
            "rollout_images": args.images,
            "train_batch": args.train_batch,
            "full_batch": args.full_batch,
            "train_warmup": args.train_warmup,
            "train_repeats": args.train_repeats,
            "families": args.families,
            "levers": args.levers,
            "compile_families": args.compile_families,
            "end_to_end": not args.no_e2e,
            "max_blocks": args.max_blocks,
            "text_tokens": args.text_tokens,
        },
        "families": {},
        "end_to_end": None,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    import torch

    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        print(
            "error: no CUDA GPU: torch.cuda.is_available() is false; this check measures a GPU "
            "(--tiny runs its code on the CPU)",
            file=sys.stderr,
        )
        return 2
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    if args.device == "cpu":
        torch.set_num_threads(1 if args.tiny else torch.get_num_threads())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    check = Check(args)
    check.results = header(check)
    check.write()
    check.watchdog()
    states: dict[str, Loaded] = {}
    for name in args.families:
        try:
            states[name], check.results["families"][name] = describe(check, FAMILIES[name])
        except Exception as error:  # a config diffusers refuses: that family's error, the others go on
            check.results["families"][name] = {"status": "error", "error": one_line(error)}
    check.write()
    try:
        run_all(check, states)
    finally:
        for folder in list(check.folders):
            check.remove(folder)
    check.results["status"] = "complete"
    check.results["total_seconds"] = round(check.elapsed(), 1)
    check.write()
    print(f"-> {args.out} ({check.elapsed():.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
