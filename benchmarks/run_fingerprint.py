"""The fingerprint of a finished run: what must stay bitwise when code changes but behaviour must not.

    python benchmarks/run_fingerprint.py runs/shapes-geneval [more run folders ...]

Prints one JSON object per run: the sha256 of the final checkpoint's tensors (names and bytes, in name
order: the safetensors header's key order is not deterministic, so file bytes are not compared), the
sha256 of `metrics.jsonl` without its timing fields (`seconds/*`, `images_per_second`,
`train_minutes`), the final evaluation scores, the epoch count, and the machine (CPU model, torch's CPU
capability, threads), because float results are bitwise only on one CPU type at one thread count.
`benchmarks/results/layout-bitwise.json` holds the fingerprints of the embedded default before and
after the package layout change (the same on this machine).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nft_core.outputs.machine import machine_facts  # noqa: E402

TIMING = ("seconds/", "images_per_second", "train_minutes")


def tensors_sha256(path: Path) -> str:
    """sha256 over (name, dtype, shape, bytes) of every tensor of a safetensors file, in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(load_file(str(path)).items()):
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(tensor.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def metrics_sha256(path: Path) -> str:
    """sha256 of the metrics records without their timing fields, as canonical JSON."""
    records = []
    for line in path.read_text().splitlines():
        records.append({k: v for k, v in json.loads(line).items() if not k.startswith(TIMING)})
    return hashlib.sha256(json.dumps(records, sort_keys=True).encode()).hexdigest()


def fingerprint(run: Path) -> dict:
    """The fingerprint of one finished run folder."""
    summary = json.loads((run / "summary.json").read_text())
    checkpoint = Path(summary["checkpoint"])
    if not checkpoint.is_dir():  # a run folder that was moved: its own checkpoints folder
        checkpoint = run / "checkpoints" / checkpoint.name
    weights = {p.name: tensors_sha256(p) for p in sorted(checkpoint.glob("*.safetensors"))}
    return {
        "run": str(run),
        "epochs": summary["epochs"],
        "scores_after": {name: entry["score"] for name, entry in summary["eval_after"].items()},
        "weights_sha256": weights,
        "metrics_sha256": metrics_sha256(run / "metrics.jsonl"),
        "machine": machine_facts(),  # its threads: what a run without train.threads uses
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="finished run folders (with summary.json)")
    args = parser.parse_args(argv)
    for run in args.runs:
        json.dump(fingerprint(run), sys.stdout, indent=2)
        sys.stdout.write("\n")


if __name__ == "__main__":
    main()
