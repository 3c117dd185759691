"""Rollout levers measured, not assumed: collection speed and the held-out score, each lever against the
plain rollout in the same run.

    python benchmarks/rollout.py [--epochs 30] [--repeats 5] [--threads 2] [--skip-scores | --skip-speed]
        [--out benchmarks/results/rollout.json]

Embedded world (examples/shapes-geneval.toml): for each lever setting, `--repeats` collections of one
epoch's samples after one warm-up (images per second of sampling and decoding; scoring is left out),
then a run of `--epochs` epochs and its held-out shapes-GenEval score (fp32 training; CFG-free evaluation
in fp32, as always). A tiny random diffusers SD3 pipeline (timings only): the same for the levers that
apply to it. Every figure is also given as a ratio to the plain rollout of the same run, and the JSON
names the machine (CPU, torch's kernel set, bf16 units, threads). The scores are counted in epochs, so
they may be run apart from the timings (which want a quiet machine): `--skip-speed` / `--skip-scores`
and `--levers` keep the rest of an existing `--out` file, which is written after every lever, with the
machine and threads each part ran with.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nft_core.config import load_config  # noqa: E402
from nft_core.loop.precision import native_bf16  # noqa: E402
from nft_core.loop.trainer import Trainer  # noqa: E402
from nft_core.outputs.machine import machine_facts  # noqa: E402

DEFAULT = ROOT / "examples" / "shapes-geneval.toml"

SHAPES_LEVERS: dict[str, list[str]] = {
    "plain": [],
    "compile": ['rollout.levers=["compile"]'],
    "sdpa-math": ['rollout.levers=["sdpa"]', 'rollout.lever_options.sdpa={backends=["math"]}'],
    "bf16-rollout": ['rollout.precision="bf16"'],
    "fewer-steps (dpm2 4 of 6)": ["solver.steps=4", "objective.trained_times=2"],
    "scout x2 + fewer-steps": ["rollout.scout_candidates=2", "solver.steps=4"],
}
"""Lever settings of the embedded world (config overrides); bf16 only where the CPU computes it natively."""


def collection_speed(config_path: Path, overrides: list[str], repeats: int, threads: int) -> dict[str, Any]:
    """Images per second of `repeats` collections (sampling and decoding; on a CPU the scoring waits for
    `scores`, which is not called; scout rollouts score their candidates inside) after a warm-up, and the
    levers' cold cost (the warm-up collection's seconds)."""
    settings = ['train.precision="fp32"', f"train.threads={threads}", "log.progress=false", *overrides]
    with tempfile.TemporaryDirectory() as folder:
        trainer = Trainer(load_config(config_path, settings), Path(folder), echo=lambda *_: None)
        began = time.perf_counter()
        trainer.collect()
        warm_up = time.perf_counter() - began
        speeds = []
        for epoch in range(1, repeats + 1):
            trainer.state.epoch = epoch
            began = time.perf_counter()
            samples = trainer.collect()
            speeds.append(len(samples) / (time.perf_counter() - began))
    return {"images_per_second": statistics.median(speeds), "all": speeds, "warm_up_seconds": warm_up}


def held_out_score(config_path: Path, overrides: list[str], epochs: int, threads: int) -> dict[str, Any]:
    """The held-out score after `epochs` epochs with the lever (fp32 training, evaluation at the end)."""
    settings = ['train.precision="fp32"', f"train.threads={threads}", f"train.epochs={epochs}",
                "eval.every=0", "log.progress=false", "log.grid_every=0", *overrides]  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        summary = Trainer(load_config(config_path, settings), Path(folder), echo=lambda *_: None).run()
    name = next(iter(summary["eval_after"]))
    return {"score": summary["eval_after"][name]["score"], "train_seconds": summary["train_seconds"]}


def tiny_sd3(folder: Path, repeats: int, threads: int) -> dict[str, Any]:
    """Collection speed of a tiny random SD3 pipeline (LoRA) with the levers that apply to it."""
    sys.path.insert(0, str(ROOT))
    from tests._sd3_tiny import save_tiny_sd3

    model = save_tiny_sd3(folder / "tiny-sd3")
    config = folder / "sd3.toml"
    config.write_text(
        f'name = "sd3"\n[policy]\nname = "sd3"\nmodel = "{model}"\n'
        "resolution = 32\nmax_sequence_length = 16\n"
        '[policy.lora]\nrank = 4\nalpha = 8.0\n[solver]\nname = "euler"\nsteps = 8\nshift = 3.0\n'
        '[data]\nprompts = "shapes:train"\nprompts_per_epoch = 4\nimages_per_prompt = 4\n'
        '[train]\nsample_batch_size = 16\n[eval]\nprompts = "shapes:eval-1"\n'
        '[[reward]]\nname = "jpeg-compressibility"\n'
    )
    levers = {
        "plain": [],
        "compile (regional)": ['rollout.levers=["compile"]'],
        "sdpa-math": ['rollout.levers=["sdpa"]', 'rollout.lever_options.sdpa={backends=["math"]}'],
        "cache (first block)": ['rollout.levers=["cache"]'],
    }
    if native_bf16(torch.device("cpu")):
        levers["bf16-rollout"] = ['rollout.precision="bf16"']
    found: dict[str, Any] = {}
    for name, overrides in levers.items():
        try:
            found[name] = collection_speed(config, overrides, repeats, threads)
        except Exception as error:  # a lever this machine or policy lacks: said, not hidden
            found[name] = {"error": f"{type(error).__name__}: {error}"[:300]}
    return found


def with_ratios(results: dict[str, Any], key: str) -> None:
    """`ratio`: each lever's `key` over the plain rollout's, in place."""
    plain = results.get("plain", {}).get(key)
    for entry in results.values():
        if plain and key in entry:
            entry["ratio_to_plain"] = entry[key] / plain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(DEFAULT))
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--levers", help="comma-separated names of SHAPES_LEVERS (default: all)")
    parser.add_argument("--skip-scores", action="store_true", help="timings only")
    parser.add_argument("--skip-speed", action="store_true", help="held-out scores only")
    parser.add_argument("--skip-sd3", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "rollout.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    levers = dict(SHAPES_LEVERS)
    if not native_bf16(torch.device("cpu")):
        levers.pop("bf16-rollout")
    if args.levers:
        levers = {name: levers[name] for name in args.levers.split(",")}
    out = Path(args.out)
    kept = json.loads(out.read_text()) if out.is_file() else {}
    world = kept.get("shapes_world", {})
    speed: dict[str, Any] = world.get("collection", {})
    scores: dict[str, Any] = world.get("held_out_after_epochs", {})
    if kept.get("epochs", args.epochs) != args.epochs:
        scores = {}  # scores after another number of epochs do not compare
    sd3: dict[str, Any] = kept.get("tiny_sd3_collection", {})
    ran = {"machine": machine_facts(), "threads": args.threads}

    def write() -> None:  # after every lever: a stopped call keeps what it measured
        now = json.loads(out.read_text()) if out.is_file() else {}  # another call may have written parts
        if args.skip_speed:
            speed.update({k: v for k, v in now.get("shapes_world", {}).get("collection", {}).items()})
            sd3.update(now.get("tiny_sd3_collection", {}))
        if args.skip_scores:
            scores.update(now.get("shapes_world", {}).get("held_out_after_epochs", {}))
        with_ratios(speed, "images_per_second")
        with_ratios(sd3, "images_per_second")
        plain = scores.get("plain", {}).get("score")
        for entry in scores.values():
            if plain is not None:
                entry["change"] = entry["score"] - plain
        payload = {
            "machine": ran if not args.skip_speed else now.get("machine", ran),
            "scores_machine": ran if not args.skip_scores else now.get("scores_machine", ran),
            "epochs": args.epochs,
            "shapes_world": {"collection": speed, "held_out_after_epochs": scores},
            "tiny_sd3_collection": sd3,
        }
        if "note" in now:
            payload["note"] = now["note"]
        out.write_text(json.dumps(payload, indent=2) + "\n")

    if not args.skip_speed:
        for name, overrides in levers.items():
            speed[name] = collection_speed(Path(args.config), overrides, args.repeats, args.threads)
            write()
        print(json.dumps({"speed": speed}, indent=1), flush=True)
    if not args.skip_scores:
        for name, overrides in levers.items():
            scores[name] = held_out_score(Path(args.config), overrides, args.epochs, args.threads)
            write()
            print(json.dumps({name: scores[name]}), flush=True)
    if not args.skip_sd3 and not args.skip_speed:
        with tempfile.TemporaryDirectory() as folder:
            sd3 = tiny_sd3(Path(folder), args.repeats, args.threads)
    write()
    print(out.read_text())


if __name__ == "__main__":
    main()
