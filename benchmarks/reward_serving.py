"""Reward serving on loopback: the `remote` wrapper's overhead, and an epoch whose slow reward is hidden
behind sampling.

1. Overhead: the real rapidocr OCR reward on rendered text, in-process against the same reward behind
   `python -m nft_rewards.serving` on 127.0.0.1 (`remote`, float images on the wire), timed interleaved
   in one run. Goal: remote / in-process <= 1.10 for a reward of >= 50 ms per batch.
2. Overlap: the shapes-world default (`examples/shapes-geneval.toml`, sampling micro-batches of 16) with a
   second, slow reward (OCR on the images upscaled: `_ocr_on_shapes.py`, weight 0) served on loopback.
   The trainer is pinned to CPU 0 with one torch thread and the server to CPU 1 (the way a GPU sampler
   and a reward on other hardware split the work). One run scores after sampling
   (`train.overlap_scoring = false`), one while sampling, alternating for `--pairs` pairs. Goal: the
   overlapped epoch's sampling + reward phases <= 1.15 x max(sampling, scoring) of the run without
   overlap (instead of their sum). `slowdown_when_concurrent` shows how much the two sides slow each
   other down when they run at once (on virtual CPUs that share a physical core: a lot).

    python benchmarks/reward_serving.py [--epochs 4] [--out benchmarks/results/reward_serving.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import nft_rewards  # noqa: E402
from nft_core.outputs.machine import machine_facts  # noqa: E402
from nft_rewards.serving.process import RewardServer  # noqa: E402

NFT = [sys.executable, "-c", "from nft_core.cli.app import main; main()"]


def render_text(text: str, width: int = 320, height: int = 96) -> torch.Tensor:
    image = Image.new("RGB", (width, height), "white")
    ImageDraw.Draw(image).text((12, 28), text, fill="black", font=ImageFont.load_default(size=32))
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)


def timed(function, *args) -> float:
    started = time.perf_counter()
    function(*args)
    return time.perf_counter() - started


def overhead(repeats: int, batch: int) -> dict:
    """In-process vs remote seconds per call of the OCR reward on `batch` rendered text images."""
    words = ["hello", "world", "serve", "reward", "nft 42", "flow", "image", "text"]
    images = torch.stack([render_text(words[i % len(words)]) for i in range(batch)])
    prompts = [f'a sign that says "{words[i % len(words)]}"' for i in range(batch)]
    options = {"det_limit_side_len": 320, "batch_size": batch}
    local = nft_rewards.load("ocr", **options)
    with RewardServer("ocr", options) as server:
        remote = nft_rewards.load("remote", url=server.url)
        assert torch.equal(remote(images, prompts).scores, local(images, prompts).scores)
        times: dict[str, list[float]] = {"in_process": [], "remote": []}
        for _ in range(repeats):  # interleaved, so drift in the machine's speed hits both alike
            times["in_process"].append(timed(local, images, prompts))
            times["remote"].append(timed(remote, images, prompts))
    medians = {key: statistics.median(values) for key, values in times.items()}
    return {
        "reward": "ocr (rapidocr, real PP-OCR weights)",
        "images_per_call": batch,
        "image_size": list(images.shape[2:]),
        "wire_dtype": "float32",
        "repeats": repeats,
        "seconds_per_call_median": medians,
        "seconds_per_call_all": times,
        "ratio_remote_to_in_process": medians["remote"] / medians["in_process"],
        "goal": "<= 1.10 for >= 50 ms per batch",
    }


def train(config: Path, out: Path, overlap: bool, url: str, epochs: int) -> list[dict]:
    remote = f'{{name="remote", weight=0.0, options={{url="{url}", batch_size=16}}}}'
    sets = [
        f"train.epochs={epochs}",
        "train.threads=1",
        'train.precision="fp32"',
        "train.sample_batch_size=16",
        f"train.overlap_scoring={'true' if overlap else 'false'}",
        'eval.prompts="shapes:eval-1"',
        "eval.solver.steps=2",
        "eval.every=0",
        "log.grid_every=0",
        "log.progress=false",
        f'reward=[{{name="shapes-geneval", normalize="group-zscore"}}, {remote}]',
    ]
    command = ["taskset", "-c", "0", *NFT, "run", str(config), "--out", str(out)]
    for item in sets:
        command += ["--set", item]
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    lines = (out / "shapes-geneval" / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == "train"]


def overlap_pair(epochs: int, folder: Path, url: str) -> dict:
    """Median phase seconds per epoch (the first epoch, a warm-up, left out) without and with overlap."""
    found = {}
    for mode in ("sequential", "overlapped"):
        config = ROOT / "examples" / "shapes-geneval.toml"
        records = train(config, folder / mode, mode == "overlapped", url, epochs)
        keys = ("seconds/sampling", "seconds/reward", "seconds/scoring", "seconds/scoring_unhidden")
        found[mode] = {key: statistics.median(r[key] for r in records[1:]) for key in keys}
    sequential, overlapped = found["sequential"], found["overlapped"]
    sampling, scoring = sequential["seconds/sampling"], sequential["seconds/scoring"]
    epoch = overlapped["seconds/sampling"] + overlapped["seconds/reward"]
    return {
        "setup": "examples/shapes-geneval.toml, 96 images an epoch in sampling micro-batches of 16; "
        "reward 2: OCR on images upscaled to 160 px served on loopback; trainer on CPU 0 (1 torch "
        "thread), server on CPU 1",
        "epochs": epochs,
        "median_seconds_per_epoch": found,
        "sampling_alone": sampling,
        "scoring_alone": scoring,
        "sampling_plus_reward_overlapped": epoch,
        "ratio_to_max": epoch / max(sampling, scoring),
        "ratio_to_sum": epoch / (sampling + scoring),
        "sequential_ratio_to_max": (sequential["seconds/sampling"] + sequential["seconds/reward"])
        / max(sampling, scoring),
        "hidden_fraction_of_scoring": 1
        - overlapped["seconds/scoring_unhidden"] / overlapped["seconds/scoring"],
        "slowdown_when_concurrent": {
            "sampling": overlapped["seconds/sampling"] / sampling,
            "scoring": overlapped["seconds/scoring"] / scoring,
        },
    }


def overlap(epochs: int, pairs: int) -> dict:
    """`pairs` alternating (sequential, overlapped) pairs of runs against one served slow reward."""
    program = ["taskset", "-c", "1", sys.executable, "-m", "nft_rewards.serving"]
    env = {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "benchmarks")}
    server = RewardServer(
        "_ocr_on_shapes:factory", {"side": 160}, ["--threads", "1"], env=env, program=program
    )
    with tempfile.TemporaryDirectory() as folder, server:
        found = [overlap_pair(epochs, Path(folder) / str(index), server.url) for index in range(pairs)]
    return {
        "pairs": found,
        "ratio_to_max_median": statistics.median(pair["ratio_to_max"] for pair in found),
        "goal": "ratio_to_max <= 1.15",
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--pairs", type=int, default=3, help="alternating runs without / with overlap")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "reward_serving.json")
    args = parser.parse_args(argv)
    result = {
        "machine": machine_facts(),
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "overhead": overhead(args.repeats, args.batch),
        "overlap": overlap(args.epochs, args.pairs),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))


if __name__ == "__main__":
    main()
