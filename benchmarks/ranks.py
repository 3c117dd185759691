"""Images per second of the embedded default's epoch: one process with 2 threads against 2 gloo ranks
with 1 thread each (torchrun), the same global batch, and the part of it spent in collectives.

    python benchmarks/ranks.py [--epochs 6] [--out benchmarks/results/ranks.json]

Each layout runs `nft run examples/shapes-geneval.toml` for `--epochs` epochs (a small evaluation; no
grids); the epoch time is the median of the phase sums of every epoch but the first (warm-up), read
from `metrics.jsonl`. 2 ranks use `train.batch_size = 24` (a global micro-batch of 48, the default's).
Writes the JSON with the machine; the 8-GPU line in it is an estimate from a formula, not a
measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nft_core.outputs.machine import machine_facts  # noqa: E402

SHORT = ['eval.prompts="shapes:eval-1"', "eval.solver.steps=2", "log.grid_every=0", "log.progress=false"]
LAYOUTS = {
    "1 rank x 2 threads": (1, ["train.threads=2"]),
    "2 ranks x 1 thread": (2, ["train.threads=1", "train.batch_size=24", "train.sample_batch_size=32"]),
}


def run_layout(ranks: int, overrides: list[str], epochs: int, folder: Path) -> dict:
    """One run; the median epoch seconds (phases and collectives) after the first epoch."""
    nft = [
        "-m",
        "nft_core.cli",
        "run",
        str(ROOT / "examples" / "shapes-geneval.toml"),
        "--out",
        str(folder),
    ]
    for override in [*SHORT, f"train.epochs={epochs}", *overrides]:
        nft += ["--set", override]
    launcher = (
        [] if ranks == 1 else ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]
    )
    threads = "2" if ranks == 1 else "1"
    env = dict(os.environ, OMP_NUM_THREADS=threads)
    subprocess.run([sys.executable, *launcher, *nft], check=True, env=env, capture_output=True)
    run_dir = next(folder.iterdir())
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"][1:]
    phases = ("sampling", "reward", "training")
    epoch = statistics.median(sum(r[f"seconds/{p}"] for p in phases) for r in train)
    result = {
        "precision": json.loads((run_dir / "summary.json").read_text())["precision"],
        "ranks": ranks,
        "overrides": overrides,
        "epoch_seconds": epoch,
        "phase_seconds": {p: statistics.median(r[f"seconds/{p}"] for r in train) for p in phases},
        "images_per_second": 96 / epoch,
    }
    if ranks > 1:
        result["collective_seconds"] = statistics.median(r["seconds_collectives"] for r in train)
        result["collective_share"] = result["collective_seconds"] / epoch
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ranks.json")
    args = parser.parse_args()
    results = {}
    for name, (ranks, overrides) in LAYOUTS.items():
        with tempfile.TemporaryDirectory() as folder:
            results[name] = run_layout(ranks, overrides, args.epochs, Path(folder))
            print(f"{name}: {results[name]['images_per_second']:.1f} images/s", flush=True)
    one, two = results["1 rank x 2 threads"], results["2 ranks x 1 thread"]
    summary = {
        "machine": {**machine_facts(), "threads": "per layout"},
        "config": "examples/shapes-geneval.toml",
        "epochs": args.epochs,
        "layouts": results,
        "ratio_2_ranks_to_1": two["images_per_second"] / one["images_per_second"],
        "estimate_8_gpus": (
            "ESTIMATE, not measured: collection, scoring and the per-sample update split evenly over the "
            "ranks, so 8 GPUs would approach 8x one GPU's images per second, minus one all-reduce of the "
            "trained weights per optimizer step and the gathers of latents and scores; here on gloo over "
            f"loopback the collectives took {two['collective_share']:.1%} of a 2-rank epoch"
        ),
    }
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"2 ranks / 1 rank: {summary['ratio_2_ranks_to_1']:.2f}x -> {args.out}")


if __name__ == "__main__":
    main()
