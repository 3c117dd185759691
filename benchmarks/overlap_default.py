"""Overlapped scoring as shipped against overlap off, on the embedded default: paired epochs, one process.

    python benchmarks/overlap_default.py [--precisions fp32,bf16] [--pairs 8] [--threads 2]
        [--config examples/shapes-geneval.toml] [--out benchmarks/results/overlap-default.json]

For each precision two trainers of the same config live in this process, one with
`train.overlap_scoring` as the config ships it (`auto`) and one with it off; after one warm-up epoch
each, they train whole epochs in turn (the order alternating from pair to pair) and the result is the
median of the per-pair ratios shipped / off of the epoch's seconds (sampling + reward + training, read
from the trainer's own record). `auto` resolves per device and rewards (a scoring thread only on a CUDA
device or when every reward scores elsewhere), so on a CPU the ratio measures that the resolution costs
nothing; `resolved` says what it chose. Precisions the CPU does not compute natively are skipped.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nft_core.config import load_config  # noqa: E402
from nft_core.loop.overlap import overlap_wanted  # noqa: E402
from nft_core.loop.precision import native_bf16  # noqa: E402
from nft_core.loop.trainer import Trainer  # noqa: E402
from nft_core.outputs.machine import machine_facts  # noqa: E402

PHASES = ("sampling", "reward", "training")


def epoch_seconds(trainer: Trainer) -> float:
    """One epoch of `trainer` (collect, score, update); its phases' seconds from its record."""
    record, _, _ = trainer.train_epoch()
    trainer.state.epoch += 1
    return sum(record[f"seconds/{phase}"] for phase in PHASES)


def paired(config: Path, precision: str, pairs: int, threads: int) -> dict[str, Any]:
    """`pairs` alternating epochs of the shipped and the overlap-off trainer; the per-pair ratios."""
    common = [f'train.precision="{precision}"', f"train.threads={threads}", "log.progress=false"]
    with tempfile.TemporaryDirectory() as folder:
        shipped = Trainer(load_config(config, common), Path(folder) / "shipped", echo=lambda *_: None)
        off = Trainer(
            load_config(config, [*common, "train.overlap_scoring=false"]),
            Path(folder) / "off",
            echo=lambda *_: None,
        )
        resolved = overlap_wanted(
            shipped.config.train.overlap_scoring, shipped.collector.rewards, shipped.device
        )
        for trainer in (shipped, off):
            epoch_seconds(trainer)  # warm-up
        times: dict[str, list[float]] = {"shipped": [], "off": []}
        for pair in range(pairs):
            order = (
                (("shipped", shipped), ("off", off))
                if pair % 2 == 0
                else (("off", off), ("shipped", shipped))
            )
            for name, trainer in order:
                times[name].append(epoch_seconds(trainer))
    ratios = [a / b for a, b in zip(times["shipped"], times["off"], strict=True)]
    return {
        "shipped_setting": str(shipped.config.train.overlap_scoring),
        "resolved": "overlap" if resolved else "no overlap",
        "ratio_median": statistics.median(ratios),
        "ratio_range": [min(ratios), max(ratios)],
        "seconds_median": {name: statistics.median(values) for name, values in times.items()},
        "seconds": times,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "examples" / "shapes-geneval.toml")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "overlap-default.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results: dict[str, Any] = {}
    for precision in args.precisions.split(","):
        if precision == "bf16" and not native_bf16(torch.device("cpu")):
            results[precision] = {"skipped": "this CPU does not compute bf16 natively"}
            continue
        results[precision] = paired(args.config, precision, args.pairs, args.threads)
        print(
            precision, json.dumps({k: v for k, v in results[precision].items() if k != "seconds"}), flush=True
        )
    payload = {"machine": machine_facts(), "threads": args.threads, "pairs": args.pairs, "results": results}
    args.out.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
