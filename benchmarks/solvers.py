"""Solvers on the shipped shapes model: held-out score and time per image, and NFT training per solver.

Part 1 (always): every solver at 4/6/10/20/40 steps samples the fixed paired evaluation set (`shapes:eval`,
48 images per tag, CFG-free) from the shipped `shapes-tiny` checkpoint; the official shapes-GenEval score
and the sampling time per image are recorded. Goal: dpm2 at 10 steps within 0.02 of euler at 40.

Part 2 (`--train`): the embedded default run (`examples/shapes-geneval.toml`) once per collection solver
(euler, dpm2 and a diffusers scheduler), same budget and seed; the final held-out scores should agree
within +-0.03 (solver freedom: NFT only needs clean final samples).

    python benchmarks/solvers.py                         # part 1 (~20 min on 2 cores)
    python benchmarks/solvers.py --train --runs runs/bench
        # parts 1 and 2 at the embedded default's epochs (3 NFT runs more; --epochs N for another budget)

`--runs DIR` keeps the NFT runs in DIR/solver-LABEL and reuses a finished one found there whose resolved
config is exactly the one the benchmark runs (so `nft run examples/shapes-geneval.toml`, moved to
DIR/solver-dpm2, counts as the dpm2 run); the JSON marks reused runs.

Writes `benchmarks/results/solvers.json` and `solvers.png` (score vs steps, score vs time per image).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import nft_solvers  # noqa: E402
from nft_core.loop.evaluation import evaluate, paired_difference  # noqa: E402
from nft_core.sampling import noise_for, sample_latents  # noqa: E402
from nft_shapes.plugin import shapes_prompts  # noqa: E402
from nft_shapes.policy import ShapesTinyPolicy  # noqa: E402
from nft_shapes.reward import shapes_geneval  # noqa: E402

SOLVERS: dict[str, dict[str, Any]] = {
    "euler": {"name": "euler"},
    "heun": {"name": "heun"},
    "dpm2": {"name": "dpm2"},
    "dpm2-shift3": {"name": "dpm2", "shift": 3.0},  # SD3's grid: more steps at high noise
    "flow-sde": {"name": "flow-sde"},
    "diffusers-unipc": {"name": "diffusers", "scheduler": "UniPCMultistepScheduler"},
}
"""Label -> solver name and options (steps added per run)."""

STEPS = (4, 6, 10, 20, 40)
TRAIN_SOLVERS = ("euler", "dpm2", "diffusers-unipc")


def velocity_calls(solver, policy, noise: torch.Tensor) -> int:
    """How many times the solver calls the model for one batch (heun: about twice its steps)."""
    calls = 0

    def velocity(x: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
        nonlocal calls
        calls += 1
        return x * 0

    solver.sample(velocity, noise[:1])
    return calls


def sampling_table(
    checkpoint: str | None,
    seed: int,
    solvers: list[str],
    step_counts: list[int],
    split: str = "eval",
    correct: dict[tuple[str, int], torch.Tensor] | None = None,
) -> list[dict[str, Any]]:
    """Score and time per image of each solver at each step count on the evaluation set.

    `correct`, if given, receives each (solver, steps) run's per-image official correctness (for paired
    comparisons: every run samples the same noise).
    """
    policy = ShapesTinyPolicy(checkpoint=checkpoint).train(False)
    items = shapes_prompts(split)
    reward = shapes_geneval()
    noise = noise_for(range(len(items)), tuple(policy.latent_shape), seed)
    cond = policy.encode_prompts([item.prompt for item in items])
    rows = []
    for label in solvers:
        spec = SOLVERS[label]
        for steps in step_counts:
            options = {k: v for k, v in spec.items() if k != "name"}
            solver = nft_solvers.load(spec["name"], steps=steps, **options)
            with torch.no_grad():  # time sampling alone (the score below re-samples the same noise)
                started = time.perf_counter()
                sample_latents(policy, solver, cond, noise, view="current")
                seconds = time.perf_counter() - started
            result = evaluate(policy, solver, items, {"shapes-geneval": reward}, seed=seed)
            entry = result.scores["shapes-geneval"]
            if correct is not None:
                correct[(label, steps)] = result.per_image["shapes-geneval.correct"]
            row = {
                "solver": label,
                "steps": steps,
                "velocity_calls": velocity_calls(solver, policy, noise),
                "score": entry["score"],
                "per_tag": entry["official"]["per_tag"],
                "ms_per_image": 1000 * seconds / len(items),
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def train_table(epochs: int | None, solver_steps: int, runs: Path | None) -> list[dict[str, Any]]:
    """The embedded default NFT run once per collection solver; final held-out score of each.

    `runs`: keep each run in `runs/solver-LABEL` and reuse one found there whose `summary.json` exists and
    whose `config.resolved.toml` is the config this benchmark would run (an interrupted benchmark resumes;
    an `nft run` made by hand with the same settings counts). None: runs go to a temporary folder.
    """
    import tempfile

    from nft_core.config import load_config, resolved_config
    from nft_core.loop.trainer import Trainer

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = runs or Path(scratch)
        for label in TRAIN_SOLVERS:
            spec = SOLVERS[label]
            overrides = [f'solver.name="{spec["name"]}"', f"solver.steps={solver_steps}"]
            overrides += [f"train.epochs={epochs}"] if epochs else []
            overrides += [f"solver.{k}={json.dumps(v)}" for k, v in spec.items() if k != "name"]
            config = load_config(ROOT / "examples" / "shapes-geneval.toml", overrides)
            run_dir = folder / f"solver-{label}"
            reused = is_finished_run(run_dir, resolved_config(config))
            if not reused:
                if run_dir.exists():
                    raise SystemExit(f"{run_dir}: an unfinished run or another config; move it away")
                Trainer(config, run_dir, echo=print).run()
            summary = json.loads((run_dir / "summary.json").read_text())
            after = summary["eval_after"]["shapes-geneval"]
            row = {
                "solver": label,
                "solver_steps": solver_steps,
                "score_before": summary["eval_before"]["shapes-geneval"]["score"],
                "score_after": after["score"],
                "per_tag_after": after["official"]["per_tag"],
                "epochs": summary["epochs"],
                "train_minutes": summary["train_seconds"] / 60,
                "reused_run": reused,
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def is_finished_run(run_dir: Path, resolved: dict[str, Any]) -> bool:
    """Whether `run_dir` holds a finished run (summary.json) whose resolved config is exactly `resolved`."""
    import tomllib

    written, summary = run_dir / "config.resolved.toml", run_dir / "summary.json"
    return written.is_file() and summary.is_file() and tomllib.loads(written.read_text()) == resolved


def plot(rows: list[dict[str, Any]], out: Path) -> None:
    """Score against steps and against sampling time per image, one line per solver."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_steps, by_time) = plt.subplots(1, 2, figsize=(10, 4))
    for label in dict.fromkeys(r["solver"] for r in rows):
        mine = [r for r in rows if r["solver"] == label]
        by_steps.plot([r["steps"] for r in mine], [r["score"] for r in mine], marker="o", label=label)
        by_time.plot([r["ms_per_image"] for r in mine], [r["score"] for r in mine], marker="o", label=label)
    by_steps.set(xscale="log", xlabel="steps", ylabel="held-out shapes-GenEval (CFG-free)")
    by_time.set(xscale="log", xlabel="sampling ms / image", ylabel="held-out shapes-GenEval (CFG-free)")
    steps = sorted({r["steps"] for r in rows})
    by_steps.set_xticks(steps, [str(s) for s in steps])
    by_steps.minorticks_off()
    by_time.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    by_time.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    by_time.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    by_steps.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--checkpoint", default=None, help="shapes-tiny checkpoint (default: the shipped one)"
    )
    parser.add_argument("--seed", type=int, default=1234, help="evaluation noise seed (as examples/)")
    parser.add_argument("--solvers", default=",".join(SOLVERS), help="comma-separated subset of SOLVERS")
    parser.add_argument("--steps", default=",".join(map(str, STEPS)), help="comma-separated step counts")
    parser.add_argument("--split", default="eval", help="shapes prompt split (eval-N: N images per tag)")
    parser.add_argument("--train", action="store_true", help="also run NFT once per collection solver")
    parser.add_argument(
        "--epochs", type=int, default=None, help="epochs per NFT run (default: the embedded default's)"
    )
    parser.add_argument("--solver-steps", type=int, default=6, help="collection solver steps")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "solvers.json")
    parser.add_argument(
        "--runs",
        type=Path,
        default=None,
        help="keep the NFT runs in RUNS/solver-LABEL and reuse finished ones there with the same config",
    )
    args = parser.parse_args()

    solvers = [name.strip() for name in args.solvers.split(",") if name.strip()]
    unknown = [name for name in solvers if name not in SOLVERS]
    if unknown:
        parser.error(f"--solvers: unknown {', '.join(unknown)}; allowed: {', '.join(SOLVERS)}")
    step_counts = [int(part) for part in args.steps.split(",") if part.strip()]
    correct: dict[tuple[str, int], torch.Tensor] = {}
    rows = sampling_table(args.checkpoint, args.seed, solvers, step_counts, args.split, correct)
    report: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "threads": torch.get_num_threads()},
        "split": args.split,
        "sampling": rows,
    }
    tags = [item.metadata["tag"] for item in shapes_prompts(args.split)]
    for label in ("dpm2", "dpm2-shift3"):  # the goal: dpm2 at 10 steps within 0.02 of euler at 40
        if (label, 10) in correct and ("euler", 40) in correct:
            gap, error = paired_difference(tags, correct[(label, 10)], correct[("euler", 40)])
            report[f"goal_{label}_10_vs_euler_40"] = {
                "gap": gap,
                "paired_standard_error": error,
                "met": abs(gap) <= 0.02,
            }
    if args.train:
        trained = train_table(args.epochs, args.solver_steps, args.runs)
        finals = [r["score_after"] for r in trained]
        report["training"] = trained
        centre = sum(finals) / len(finals)
        deviation = max(abs(score - centre) for score in finals)
        report["goal_training_agreement"] = {
            "max_deviation_from_mean": deviation,
            "all_reach_0.75": min(finals) >= 0.75,
            "met": deviation <= 0.03 and min(finals) >= 0.75,
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    plot(rows, args.out.with_suffix(".png"))
    print(json.dumps({k: v for k, v in report.items() if k.startswith("goal")}, indent=2))


if __name__ == "__main__":
    main()
