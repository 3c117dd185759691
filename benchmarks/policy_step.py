"""The diffusers policy base's NFT micro-step against a minimal hand-written loop of the same passes.

    python benchmarks/policy_step.py [--layers 4] [--batch 4] [--micro-batches 6] [--repeats 7]

A randomly initialised SD3 transformer (the tiny test pipeline's text encoders and VAE, a bigger
transformer: `--layers` MMDiT blocks, 4 heads of 32, 16 latent channels at 32 x 32) with the reference
LoRA layout. Per micro-batch, both sides do exactly the same network passes on the same inputs:
the old view (no gradient), the current view, the reference view (no gradient, `kl_weight` > 0), the
NFT + KL loss and its backward.

- ours: `NFTObjective.loss(policy, ...)` through `SD3Policy.velocity` (adapter switching in
  `LoraViews`, the autocast context, the time conversion), as the trainer calls it;
- minimal: peft's `set_adapter("old")`, `set_adapter("default")`, `disable_adapters()` on the bare
  transformer and the loss written out.

The two alternate `--repeats` times from the same weights; medians and the median of the paired
ratios are written to `benchmarks/results/policy_step.json` with the CPU (timings belong to one
machine). Goal: ours <= 1.0x the minimal loop per trained sample (within noise).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nft_core.flow import forward_noising  # noqa: E402
from nft_core.objective import NFTObjective  # noqa: E402
from nft_core.outputs.machine import machine_facts  # noqa: E402


def build(folder: Path, layers: int) -> Path:
    """The tiny SD3 test pipeline with a bigger random transformer, saved into `folder`."""
    from diffusers import SD3Transformer2DModel

    from tests._sd3_tiny import build_tiny_sd3

    pipeline = build_tiny_sd3(0)
    pipeline.transformer = SD3Transformer2DModel(
        sample_size=16,
        patch_size=2,
        in_channels=4,
        out_channels=4,
        num_layers=layers,
        attention_head_dim=32,
        num_attention_heads=4,
        joint_attention_dim=64,
        caption_projection_dim=128,
        pooled_projection_dim=64,
    )
    pipeline.save_pretrained(str(folder))
    return folder


def minimal_step(transformer, x0, eps, t, r, cond, objective: NFTObjective) -> None:
    """One micro-batch, written out: three passes through peft's adapter calls, the loss, backward."""
    x_t = forward_noising(x0, t, eps)
    timestep = t * 1000.0
    kwargs = dict(
        encoder_hidden_states=cond["prompt_embeds"],
        pooled_projections=cond["pooled_prompt_embeds"],
        return_dict=False,
    )
    with torch.no_grad():
        transformer.set_adapter("old")
        v_old = transformer(hidden_states=x_t, timestep=timestep, **kwargs)[0]
        transformer.disable_adapters()
        v_ref = transformer(hidden_states=x_t, timestep=timestep, **kwargs)[0]
        transformer.enable_adapters()
    transformer.set_adapter("default")
    v = transformer(hidden_states=x_t, timestep=timestep, **kwargs)[0]
    tb = t.view(-1, 1, 1, 1)
    beta, delta = objective.beta, v - v_old
    err_pos = x_t - tb * (v_old + beta * delta) - x0
    err_neg = x_t - tb * (v_old - beta * delta) - x0
    w_pos = err_pos.detach().abs().mean((1, 2, 3)).clamp_min(1e-5)
    w_neg = err_neg.detach().abs().mean((1, 2, 3)).clamp_min(1e-5)
    loss = (
        objective.adv_clip
        * (
            r * err_pos.square().mean((1, 2, 3)) / w_pos / beta
            + (1 - r) * err_neg.square().mean((1, 2, 3)) / w_neg / beta
        ).mean()
    )
    (loss + objective.kl_weight * (v - v_ref).square().mean()).backward()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--micro-batches", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "policy_step.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from nft_core import registry

    with tempfile.TemporaryDirectory() as scratch:
        folder = build(Path(scratch) / "sd3", args.layers)
        options = {"model": str(folder), "resolution": 32, "max_sequence_length": 16, "lora": True}
        policy = registry.create("policies", "sd3", options, "policy")
        objective = NFTObjective(beta=1.0, kl_weight=1e-4)
        generator = torch.Generator().manual_seed(0)
        shape = (args.micro_batches, args.batch, *policy.latent_shape)
        x0, eps = torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)
        t = torch.rand(args.micro_batches, args.batch, generator=generator) * 0.9 + 0.05
        r = torch.rand(args.micro_batches, args.batch, generator=generator)
        cond = policy.encode_prompts(["a red circle", "two blue squares", "a cat", "a dog"][: args.batch])
        with torch.no_grad():  # a LoRA whose B is not zero, so every pass does real work
            for name, parameter in policy.lora.trained.items():
                if "lora_B" in name:
                    parameter.normal_(0, 0.01, generator=generator)
            policy.lora.sync_old()
        parameters = [p for _, p in policy.trainable_parameters()]

        def ours() -> None:
            for k in range(args.micro_batches):
                loss, _ = objective.loss(policy, x0[k], cond, t[k], r[k], eps[k])
                loss.backward()

        def minimal() -> None:
            for k in range(args.micro_batches):
                minimal_step(policy.transformer, x0[k], eps[k], t[k], r[k], cond, objective)
            policy.lora.view = None  # the bare calls moved the adapters under LoraViews
            policy.lora.activate("current")

        def timed(run) -> float:
            for parameter in parameters:
                parameter.grad = None
            began = time.perf_counter()
            run()
            return time.perf_counter() - began

        policy.train(True)
        timed(ours), timed(minimal)  # warm-up
        times: dict[str, list[float]] = {"ours": [], "minimal": []}
        for _ in range(args.repeats):
            times["ours"].append(timed(ours))
            times["minimal"].append(timed(minimal))
        ratios = [a / b for a, b in zip(times["ours"], times["minimal"], strict=True)]
        samples = args.micro_batches * args.batch
        trainable = sum(p.numel() for p in parameters)
        total = sum(p.numel() for p in policy.transformer.parameters())
        result = {
            "what": "NFT micro-steps of the sd3 policy (diffusers base, LoRA) against peft calls written out",
            "transformer_parameters": total - trainable,
            "lora_parameters": trainable,
            "lora_tensors": len(parameters),
            "micro_batches": args.micro_batches,
            "batch": args.batch,
            "repeats": args.repeats,
            "seconds_median": {k: statistics.median(v) for k, v in times.items()},
            "ms_per_trained_sample": {k: 1000 * statistics.median(v) / samples for k, v in times.items()},
            "ratio_ours_over_minimal_median": statistics.median(ratios),
            "ratios": ratios,
            "precision": "fp32",
            "threads": args.threads,
            "machine": machine_facts("cpu"),
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("seconds_median", "ratio_ours_over_minimal_median")}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
