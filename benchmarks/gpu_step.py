"""One NFT micro-step of a randomly initialised SD3.5-Medium transformer on a GPU: seconds, peak
memory and model FLOPs utilisation, with a LoRA (rank 32, the reference) and with full fine-tuning.

    python benchmarks/gpu_step.py [--batch 8] [--peak-tflops 989] [--out benchmarks/results/gpu-step.json]
    python benchmarks/gpu_step.py --tiny --device cpu      # the same code on a tiny config (a smoke run)

The transformer is built from SD3.5-Medium's configuration (24 MMDiT blocks, dual attention in blocks
0-12: 2.24 B parameters and a 0.23 B positional-embedding table) with random weights: nothing is
downloaded. A micro-step is what the trainer does per micro-batch at 512 px (64 x 64 latents, 333 text
tokens): the old view's forward without gradient, the current view's forward, the NFT loss and its
backward, under bf16 autocast; for the LoRA the old view is the second adapter, for full fine-tuning a
frozen copy. The optimizer step is not timed (it is once per optimizer step, not per micro-batch).
MFU counts 2 FLOPs per parameter and token for each forward and 4 for the backward, against
`--peak-tflops` (989: an H100/H200's dense bf16).

Full fine-tuning runs on one GPU without FSDP2 (sharding needs several: `train.parallel = "fsdp2"`,
docs/distributed.md); it needs ~55 GB before activations. Without a CUDA GPU (and without
--device cpu) the script says so and exits with code 2: it is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nft_core.flow import forward_noising  # noqa: E402
from nft_core.objective import nft_loss  # noqa: E402
from nft_core.outputs.machine import machine_facts  # noqa: E402

SD35_MEDIUM = {
    "sample_size": 128,
    "patch_size": 2,
    "in_channels": 16,
    "num_layers": 24,
    "attention_head_dim": 64,
    "num_attention_heads": 24,
    "joint_attention_dim": 4096,
    "caption_projection_dim": 1536,
    "pooled_projection_dim": 2048,
    "out_channels": 16,
    "pos_embed_max_size": 384,
    "dual_attention_layers": tuple(range(13)),
    "qk_norm": "rms_norm",
}
"""The `transformer/config.json` of stabilityai/stable-diffusion-3.5-medium."""

TINY = {
    **SD35_MEDIUM,
    "num_layers": 2,
    "attention_head_dim": 8,
    "num_attention_heads": 2,
    "joint_attention_dim": 32,
    "caption_projection_dim": 16,
    "pooled_projection_dim": 16,
    "pos_embed_max_size": 16,
    "dual_attention_layers": (0,),
}
LATENT_SIDE, TEXT_TOKENS = 64, 333  # 512 px through the 8x VAE; 77 CLIP + 256 T5 tokens


def build(config: dict[str, Any], device: torch.device, lora: bool):
    """The transformer (frozen weights in bf16, trained ones in fp32) and a `velocity(view, ...)`."""
    from diffusers import SD3Transformer2DModel

    from nft_policies.base.lora import LoraViews
    from nft_policies.base.options import LoraOptions

    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(**config).to(device)
    if lora:
        views = LoraViews(transformer, LoraOptions(rank=32, alpha=64.0))
        trained = {id(p) for p in views.trained.values()} | {id(p) for p in views.old.values()}
        for parameter in transformer.parameters():
            if id(parameter) not in trained:
                parameter.data = parameter.data.to(torch.bfloat16)

        def velocity(view: str, **inputs: Any) -> torch.Tensor:
            with views.use(view):
                return transformer(**inputs, return_dict=False)[0]

        return transformer, list(views.trained.values()), velocity
    transformer.requires_grad_(True)
    old = copy.deepcopy(transformer).requires_grad_(False).to(torch.bfloat16)

    def velocity(view: str, **inputs: Any) -> torch.Tensor:
        return (transformer if view == "current" else old)(**inputs, return_dict=False)[0]

    return transformer, list(transformer.parameters()), velocity


def micro_step(velocity, config: dict[str, Any], batch: int, side: int, tokens: int, device: torch.device):
    """Old forward (no grad), current forward, NFT loss and backward on random data."""
    generator = torch.Generator(device="cpu").manual_seed(1)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=generator).to(device)

    x0, eps = randn(batch, config["in_channels"], side, side), randn(batch, config["in_channels"], side, side)
    t = torch.rand(batch, generator=generator).to(device)
    inputs = {
        "encoder_hidden_states": randn(batch, tokens, config["joint_attention_dim"]),
        "pooled_projections": randn(batch, config["pooled_projection_dim"]),
        "timestep": t * 1000,
    }
    x_t = forward_noising(x0, t, eps)
    optimality = torch.rand(batch, generator=generator).to(device)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        with torch.no_grad():
            v_old = velocity("old", hidden_states=x_t, **inputs).float()
        v = velocity("current", hidden_states=x_t, **inputs).float()
    loss, _ = nft_loss(v, v_old, x0, x_t, t, optimality, beta=1.0, adv_clip=5.0)
    loss.backward()


def measure(config: dict[str, Any], device: torch.device, lora: bool, args: argparse.Namespace) -> dict:
    transformer, trained, velocity = build(config, device, lora)
    side = 8 if args.tiny else LATENT_SIDE
    tokens = 8 if args.tiny else TEXT_TOKENS

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(args.warmup):
        micro_step(velocity, config, args.batch, side, tokens, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = []
    for _ in range(args.repeats):
        for parameter in trained:
            parameter.grad = None
        sync()
        began = time.perf_counter()
        micro_step(velocity, config, args.batch, side, tokens, device)
        sync()
        seconds.append(time.perf_counter() - began)
    median = sorted(seconds)[len(seconds) // 2]
    parameters = sum(p.numel() for name, p in transformer.named_parameters() if "lora_" not in name)
    image_tokens = (side // config["patch_size"]) ** 2
    # two forwards (old, current) and one backward: 2 + 2 + 4 FLOPs per parameter and token
    flops = 8 * parameters * args.batch * (image_tokens + tokens)
    result = {
        "mode": "lora r32" if lora else "full fine-tuning (one GPU, no FSDP2)",
        "parameters": parameters,
        "trained_parameters": sum(p.numel() for p in trained),
        "batch": args.batch,
        "seconds_per_micro_step": median,
        "all_seconds": seconds,
        "model_tflops_per_second": flops / median / 1e12,
    }
    if device.type == "cuda":
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        result["mfu"] = result["model_tflops_per_second"] / args.peak_tflops
    del transformer, trained, velocity
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=8, help="micro-batch (the presets' train.batch_size)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="the GPU's dense bf16 peak")
    parser.add_argument("--device", default="cuda")
    parser.add_argument(
        "--tiny", action="store_true", help="a tiny config: checks the script, measures nothing"
    )
    parser.add_argument("--modes", default="lora,full", help="comma-separated: lora, full")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu-step.json")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_step: no CUDA GPU here; this benchmark times a GPU micro-step (it is not a test)")
        return 2
    config = TINY if args.tiny else SD35_MEDIUM
    results = {
        "machine": machine_facts(device),
        "config": "tiny" if args.tiny else "SD3.5-Medium",
        "runs": [],
    }
    for mode in args.modes.split(","):
        run = measure(config, device, mode == "lora", args)
        results["runs"].append(run)
        print(
            f"{run['mode']}: {run['seconds_per_micro_step']:.3f} s per micro-step of {args.batch}", flush=True
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
