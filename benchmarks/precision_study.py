"""Where bf16 costs the embedded default its learning: collection and update precision varied apart.

    python benchmarks/precision_study.py --variants fp32,bf16,bf16-collect,bf16-update --seeds 0,1 \
        --epochs 60 [--config examples/shapes-geneval.toml] [--out benchmarks/results/precision-study.json]

Each variant trains the config (held-out evaluations at `eval.every`, always in fp32) with the policy's
forward passes in bf16 autocast in collection only (`bf16-collect`), in the update only (`bf16-update`),
in both (`bf16`, what `precision = "bf16"` does) or in neither (`fp32`). Runs are independent processes,
one thread each, so two run side by side on two cores. The JSON holds every run's evaluation curve,
its final and best scores, and the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS = {
    "fp32": ("fp32", "fp32"),
    "bf16": ("bf16", "bf16"),
    "bf16-collect": ("bf16", "fp32"),
    "bf16-update": ("fp32", "bf16"),
}
"""Variant -> (collection precision, update precision)."""


def run_one(config: str, variant: str, seed: int, epochs: int, folder: Path, overrides: list[str]) -> dict:
    """One run in its own process (so that runs do not share a thread pool); its evaluation curve."""
    code = (
        f"import json, sys; sys.path.insert(0, {str(ROOT)!r}); from benchmarks.precision_study import child; "
        "print(json.dumps(child(*json.loads(sys.argv[1]))))"
    )
    arguments = json.dumps([config, variant, seed, epochs, str(folder), overrides])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", code, arguments], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"{variant} seed {seed} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def child(config: str, variant: str, seed: int, epochs: int, folder: str, overrides: list[str]) -> dict:
    """In the run's process: build the trainer in fp32, switch the phases' autocast, train, report."""
    from nft_core.config import load_config
    from nft_core.loop.precision import autocast
    from nft_core.loop.trainer import Trainer
    from nft_core.outputs.machine import machine_facts

    collection, update = VARIANTS[variant]
    settings = [
        'train.precision="fp32"',
        f"train.seed={seed}",
        f"train.epochs={epochs}",
        "train.threads=1",
        "log.progress=false",
        "log.grid_every=0",
        *overrides,
    ]
    settings.append('rollout.precision="fp32"')  # the variant sets each phase's autocast itself
    trainer = Trainer(load_config(config, settings), Path(folder), echo=lambda *_: None)
    trainer.collector.autocast = lambda exact=False: autocast(collection, trainer.device)
    trainer.updater.autocast = lambda: autocast(update, trainer.device)
    with contextlib.redirect_stdout(sys.stderr):
        summary = trainer.run()
    records = [json.loads(line) for line in (Path(folder) / "metrics.jsonl").read_text().splitlines()]
    name = trainer.rewards.terms[0].name
    curve = {
        str(r["epoch"] if r["label"] != "before" else -1): r[f"eval/{name}/score"]
        for r in records
        if r["kind"] == "eval"
    }
    tags = summary["eval_after"][name].get("official", {}).get("per_tag", {})
    return {
        "variant": variant,
        "seed": seed,
        "curve": curve,
        "final": summary["eval_after"][name]["score"],
        "best": max(v for k, v in curve.items() if k != "-1"),
        "per_tag_after": tags,
        "train_seconds": summary["train_seconds"],
        "machine": machine_facts(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "examples" / "shapes-geneval.toml"))
    parser.add_argument("--variants", default="fp32,bf16,bf16-collect,bf16-update")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--parallel", type=int, default=2, help="runs at a time (one thread each)")
    parser.add_argument("--folder", default="/tmp/nft-precision-study")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "precision-study.json"))
    args = parser.parse_args()
    jobs = [(v, int(s)) for s in args.seeds.split(",") for v in args.variants.split(",")]
    with ThreadPoolExecutor(args.parallel) as pool:
        futures = [
            pool.submit(
                run_one, args.config, v, s, args.epochs, Path(args.folder) / f"{v}-seed{s}", args.overrides
            )
            for v, s in jobs
        ]
        results = []
        for future in futures:
            results.append(future.result())
            print(json.dumps(results[-1]), flush=True)
    payload = {"config": args.config, "epochs": args.epochs, "overrides": args.overrides, "runs": results}
    Path(args.out).write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
