"""Ablations of NFT on the shapes world: each knob the paper argues about, changed alone from the default.

    python benchmarks/ablations.py [--epochs 40] [--only beta kl ...]
        [--out benchmarks/results/ablations] [--base examples/shapes-geneval.toml]

Groups (each against the same default run):
- `beta`: NFT strength 0.3 / 1 (default) / 3 (the paper: larger is faster and risks over-fitting);
- `positive`: positive-only RFT against NFT (the paper: positive-only collapses);
- `kl`: the KL anchor to the base off (0) against the default (1);
- `decay`: old-policy refresh `none` (old = current), the default linear, a delayed schedule;
- `solver`: the collection solver: dpm2 (default), Euler, the stochastic flow-SDE (the paper: any
  solver works).

Every run trains the same number of epochs (the result is the same on every machine), evaluated on
held-out prompts every few epochs; the monitors (pixel diversity, the shapes world's colour and layout
entropy on colour-free prompts, mean |v - v_old|) are read from the training records. Writes
`result.json` and `result.png` (score and colour entropy against epochs, one row per group) into `--out`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import tomllib

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from nft_vs_flowgrpo import RFT, merged, run_one, summarize  # noqa: E402

from nft_core.outputs.machine import machine_facts  # noqa: E402

GROUPS: dict[str, dict[str, dict[str, Any]]] = {
    "beta": {"beta 0.3": {"objective.beta": 0.3}, "beta 3": {"objective.beta": 3.0}},
    "positive": {"positive-only (rft)": {}},
    "kl": {"kl 0": {"objective.kl_weight": 0.0}},
    "decay": {
        "decay none": {"objective.old_decay": "none"},
        "decay delayed": {"objective.old_decay": "delayed-10-0.05-0.9"},
    },
    "solver": {
        "solver euler": {"solver.name": "euler"},
        "solver flow-sde": {"solver.name": "flow-sde"},
    },
}
"""Per group, the runs that change one thing from the default (`--set` overrides)."""

MONITORS = (
    "monitor/shapes-diversity/colour_entropy",
    "monitor/shapes-diversity/layout_entropy",
    "monitor/pixel-diversity/distance",
    "v_old_gap",
)


def monitor_curves(run_dir: Path) -> dict[str, list[float | None]]:
    """Per monitor key, its value at every training epoch (None where it was not logged)."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    return {key: [r.get(key) for r in train] for key in MONITORS}


def plot(groups: dict[str, dict[str, Any]], default: dict[str, Any], path: Path) -> None:
    """One row per group: held-out score against epochs, and colour entropy against epochs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(groups), 2, figsize=(12, 3.2 * len(groups)), squeeze=False)
    for row, (group, runs) in enumerate(groups.items()):
        for label, run in {"default": default, **runs}.items():
            style = {"color": "black"} if label == "default" else {}
            axes[row][0].plot(
                [p["epochs"] for p in run["curve"]],
                [p["score"] for p in run["curve"]],
                marker="o",
                markersize=3,
                label=label,
                **style,
            )
            entropy = run["monitors"]["monitor/shapes-diversity/colour_entropy"]
            axes[row][1].plot(range(1, len(entropy) + 1), entropy, label=label, **style)
        axes[row][0].set(title=f"{group}: held-out score", xlabel="epochs", ylabel="score")
        axes[row][1].set(title=f"{group}: colour entropy (colour-free prompts, bits)", xlabel="epochs")
        for axis in axes[row]:
            axis.grid(alpha=0.3)
            axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", type=Path, default=ROOT / "examples" / "shapes-geneval.toml")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ablations")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--eval-prompts", default="shapes:eval-24")
    parser.add_argument("--reward", default="official")
    parser.add_argument("--only", nargs="+", choices=sorted(GROUPS), default=sorted(GROUPS))
    parser.add_argument("--work", type=Path, default=None, help="run folders (default: a folder in --out)")
    args = parser.parse_args(argv)

    base = tomllib.loads(args.base.read_text())
    base.setdefault("log", {})["monitors"] = ["pixel-diversity", "shapes-diversity"]
    work = args.work or args.out / "runs"
    images_per_epoch = base["data"]["prompts_per_epoch"] * base["data"]["images_per_prompt"]
    common = {
        "train.epochs": args.epochs,
        "eval.every": args.eval_every,
        "eval.prompts": args.eval_prompts,
        "eval.baseline_guidance": [],
        "log.grid_every": 0,
        "log.checkpoint_every": 0,
        "log.progress": False,
    }

    def one(label: str, config: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
        print(f"{label} ...", flush=True)
        run = run_one(
            config, work / label.replace(" ", "_").replace("(", "").replace(")", ""), {**common, **overrides}
        )
        row = summarize(run, args.reward, (), images_per_epoch)
        return {"changes": overrides, **row, "monitors": monitor_curves(run["run_dir"])}

    default = one("default", base, {})
    groups: dict[str, dict[str, Any]] = {}
    for group in args.only:
        groups[group] = {}
        for label, overrides in GROUPS[group].items():
            config = merged(base, RFT) if group == "positive" else base
            groups[group][label] = one(label, config, overrides)
    result = {
        "what": "NFT ablations on the shapes world, each run changing one thing from the default",
        "base_config": str(args.base.relative_to(ROOT) if args.base.is_relative_to(ROOT) else args.base),
        "epochs": args.epochs,
        "reward": args.reward,
        "eval_prompts": args.eval_prompts,
        "default": default,
        "groups": groups,
        "machine": machine_facts("cpu"),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "result.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    plot(groups, default, args.out / "result.png")
    print("| run | final | best | colour entropy first -> last | s/epoch |")
    print("| --- | --- | --- | --- | --- |")
    for label, row in {"default": default, **{k: v for g in groups.values() for k, v in g.items()}}.items():
        entropy = [e for e in row["monitors"]["monitor/shapes-diversity/colour_entropy"] if e is not None]
        span = f"{entropy[0]:.2f} -> {entropy[-1]:.2f}" if entropy else "-"
        print(
            f"| {label} | {row['final_score']:.3f} | {row['best_score']:.3f} | {span} | "
            f"{row['seconds_per_epoch']:.2f} |"
        )
    print(f"wrote {args.out / 'result.json'}")


if __name__ == "__main__":
    main()
