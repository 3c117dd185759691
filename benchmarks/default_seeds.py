"""The embedded default, seeds x precisions: what the README's first command ends at on this machine.

    python benchmarks/default_seeds.py --seeds 0,1,2 --precisions fp32-avx2,fp32,bf16 \
        [--parallel 2] [--threads 1] [--config examples/shapes-geneval.toml] [--set KEY=VALUE ...] \
        [--out benchmarks/results/default-seeds.json]

Each run is `nft run CONFIG --set train.seed=S --set train.precision=P` in its own process:
`fp32-avx2` is fp32 with torch and oneDNN limited to AVX2 (`ATEN_CPU_CAPABILITY=avx2
ONEDNN_MAX_CPU_ISA=AVX2`: a CPU without AVX-512 or bf16 units), `fp32` and `bf16` use this CPU's own
kernels (`bf16` only where it computes bf16 natively: what `precision = "auto"` picks there, the update
in bf16 and the config's rollouts); `bf16-rollouts` also samples in bf16. The JSON holds
every run's evaluation curve, final and best scores (with the best's epoch), per-tag table, alarms, seconds
per epoch, and per precision the mean and standard deviation of the final score over seeds; the machine is
recorded beside them. Runs of the same settings that already finished are reused; one that stopped midway
goes on from its newest checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nft_core.outputs.machine import machine_facts  # noqa: E402

AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
PRECISIONS: dict[str, tuple[str, dict[str, str], list[str]]] = {
    "fp32-avx2": ("fp32", AVX2, []),
    "fp32": ("fp32", {}, []),
    "bf16": ("bf16", {}, []),
    "bf16-rollouts": ("bf16", {}, ['rollout.precision="bf16"']),
}
"""name -> (train.precision, environment, more overrides). `bf16` is what `auto` picks on a CPU with bf16
units (the update in bf16, the config's fp32 rollouts); `bf16-rollouts` samples in bf16 too."""


def run(config: str, precision: str, seed: int, threads: int, folder: Path, overrides: list[str]) -> dict:
    """One run in its own process (reused when it finished with the same command); its results."""
    dtype, env_extra, extra = PRECISIONS[precision]
    name = f"{precision}-seed{seed}"
    command = [sys.executable, "-m", "nft_core.cli", "run", config, "--out", str(folder)]
    settings = [f"name={json.dumps(name)}", f"train.seed={seed}", f'train.precision="{dtype}"',
                f"train.threads={threads}", "log.progress=false", *extra, *overrides]  # fmt: skip
    for setting in settings:
        command += ["--set", setting]
    run_dir, record = folder / name, folder / f"{name}.command.json"
    summary_file = run_dir / "summary.json"
    done = record.is_file() and json.loads(record.read_text()) == command and summary_file.is_file()
    if not done or json.loads(summary_file.read_text()).get("status") != "finished":
        same = record.is_file() and json.loads(record.read_text()) == command
        if same and any((run_dir / "checkpoints").glob("step_*")):  # stopped midway: go on from there
            command_now = [*command, "--resume", str(run_dir)]
        else:
            if run_dir.exists():
                shutil.rmtree(run_dir)
            command_now = command
        record.write_text(json.dumps(command))
        env = {**os.environ, **env_extra, "OMP_NUM_THREADS": str(threads)}
        with open(folder / f"{name}.log", "a") as log:
            subprocess.run(command_now, stdout=log, stderr=subprocess.STDOUT, env=env, check=True)
    return results(run_dir, precision, seed)


def results(run_dir: Path, precision: str, seed: int) -> dict[str, Any]:
    """A finished run's evaluation curve, final, best and per-tag scores, alarms and epoch seconds."""
    summary = json.loads((run_dir / "summary.json").read_text())
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    reward = next(iter(summary["eval_after"]))
    curve = {
        (-1 if r["label"] == "before" else r["epoch"]): r[f"eval/{reward}/score"]
        for r in records
        if r["kind"] == "eval"
    }
    trained = {epoch: score for epoch, score in curve.items() if epoch >= 0}
    best_epoch = max(trained, key=lambda epoch: trained[epoch])
    official = summary["eval_after"][reward].get("official", {})
    return {
        "precision": precision,
        "seed": seed,
        "curve": curve,
        "base": curve.get(-1),
        "final": summary["eval_after"][reward]["score"],
        "best": trained[best_epoch],
        "best_epoch": best_epoch,
        "per_tag_after": official.get("per_tag", {}),
        "alarms": [r["name"] for r in records if r["kind"] == "alarm"],
        "seconds_per_epoch": summary.get("seconds_per_epoch"),
        "epochs": summary.get("epochs"),
        "wall_seconds": summary.get("wall_seconds"),
        "machine": summary.get("machine"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "examples" / "shapes-geneval.toml"))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--precisions", default="fp32-avx2,fp32,bf16")
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--folder", default="/tmp/nft-default-seeds")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "default-seeds.json"))
    args = parser.parse_args()
    folder = Path(args.folder)
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(p, int(s)) for s in args.seeds.split(",") for p in args.precisions.split(",")]
    with ThreadPoolExecutor(args.parallel) as pool:
        futures = [pool.submit(run, args.config, p, s, args.threads, folder, args.overrides) for p, s in jobs]
        runs = [future.result() for future in futures]
    summary = {}
    for precision in dict.fromkeys(p for p, _ in jobs):
        finals = [r["final"] for r in runs if r["precision"] == precision]
        bests = [r["best"] for r in runs if r["precision"] == precision]
        summary[precision] = {
            "final_mean": statistics.mean(finals),
            "final_sd": statistics.stdev(finals) if len(finals) > 1 else 0.0,
            "final_min": min(finals),
            "best_minus_final_max": max(b - f for b, f in zip(bests, finals, strict=True)),
            "seeds": len(finals),
        }
    payload = {
        "config": args.config,
        "overrides": args.overrides,
        "threads": args.threads,
        "machine": machine_facts(),
        "summary": summary,
        "runs": runs,
    }
    Path(args.out).write_text(json.dumps(payload, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
