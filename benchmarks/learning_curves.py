"""Held-out learning curves of finished runs, side by side: what each changed and how fast it learned.

    python benchmarks/learning_curves.py RUN [RUN ...] --out benchmarks/results/NAME.json
        [--reward official] [--against examples/shapes-geneval.toml] [--threshold 0.75]

For each run folder (`nft run` output): the config keys that differ from `--against` (resolved, so a
default spelled out and a default left out compare equal), the evaluation curve of `--reward` by epochs
trained (score and per tag), the first evaluation at or above `--threshold`, and the mean seconds per
epoch by phase (with the machine, where the run recorded it: timings belong to one machine, the curve
in epochs does not). Writes the JSON, a PNG of score against epochs next to it, and prints a
markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import tomllib

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nft_core.config import load_config, resolved_config  # noqa: E402
from nft_core.outputs.observer import PHASES  # noqa: E402
from nft_core.state.resume import flatten_config as flatten  # noqa: E402

IGNORED_KEYS = {"name", "train.max_minutes"}
"""Keys (besides `log.*`) that name or bound a run rather than change its training."""


def config_changes(run: Path, against: dict[str, Any]) -> dict[str, Any]:
    """The run's resolved config keys whose values differ from `against`.

    A key the run's config lacks is None: the run used the built-in default (a plugin option left out,
    or a field that an older version did not write)."""
    mine = flatten(tomllib.loads((run / "config.resolved.toml").read_text()))
    keys = sorted(set(mine) | set(against))
    return {
        key: mine.get(key)
        for key in keys
        if mine.get(key) != against.get(key) and key not in IGNORED_KEYS and not key.startswith("log.")
    }


def curve(run: Path, reward: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(evaluations, train records) of a run's metrics.jsonl; each evaluation with epochs trained."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    points = []
    for record in records:
        if record["kind"] != "eval" or f"eval/{reward}/score" not in record:
            continue
        trained = 0 if record["label"] == "before" else record["epoch"] + 1
        prefix = f"eval/{reward}/tag/"
        points.append(
            {
                "epochs": trained,
                "train_minutes": record["train_minutes"],
                "score": record[f"eval/{reward}/score"],
                "per_tag": {k[len(prefix) :]: v for k, v in record.items() if k.startswith(prefix)},
            }
        )
    return points, train


def summarize(run: Path, reward: str, against: dict[str, Any], threshold: float) -> dict[str, Any]:
    """One run's row: changes, curve, first epoch at the threshold, seconds per epoch by phase."""
    points, train = curve(run, reward)
    reached = next((p["epochs"] for p in points if p["score"] >= threshold), None)
    summary_path = run / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    return {
        "run": run.name if run.name != "shapes-geneval" else run.parent.name,
        "changes": config_changes(run, against),
        "epochs": len(train),
        "curve": points,
        f"first_epochs_at_{threshold:g}": reached,
        "seconds_per_epoch": {
            phase: statistics.fmean(r[f"seconds/{phase}"] for r in train) for phase in PHASES
        }
        if train
        else {},
        "machine": summary.get("machine"),
        "precision": summary.get("precision"),
    }


def plot(rows: list[dict[str, Any]], path: Path, threshold: float) -> None:
    """Score against epochs trained, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 5))
    for index, row in enumerate(rows):
        xs = [p["epochs"] for p in row["curve"]]
        style = ("-", "--", ":")[index // 10 % 3]  # the colour cycle repeats after ten runs
        ys = [p["score"] for p in row["curve"]]
        axis.plot(xs, ys, marker="o", markersize=3, linestyle=style, label=row["run"])
    axis.axhline(threshold, color="grey", linestyle="--", linewidth=1)
    axis.set_xlabel("epochs trained")
    axis.set_ylabel("held-out score")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="finished or partial run folders")
    parser.add_argument("--out", type=Path, required=True, help="JSON to write (a PNG goes next to it)")
    parser.add_argument("--reward", default="official", help="the reward whose evaluation is the curve")
    parser.add_argument("--against", type=Path, default=ROOT / "examples" / "shapes-geneval.toml")
    parser.add_argument("--threshold", type=float, default=0.75)
    args = parser.parse_args(argv)
    against = flatten(resolved_config(load_config(args.against)))
    rows = [summarize(run, args.reward, against, args.threshold) for run in args.runs]
    shown = args.against.resolve()
    shown = shown.relative_to(ROOT) if shown.is_relative_to(ROOT) else Path(shown.name)  # no machine paths
    report = {"against": str(shown), "reward": args.reward, "threshold": args.threshold, "runs": rows}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    plot(rows, args.out.with_suffix(".png"), args.threshold)
    for row in rows:
        scores = " / ".join(f"{p['score']:.3f}@{p['epochs']}" for p in row["curve"])
        changes = ", ".join(
            f"{k}={'(built-in default)' if v is None else v}" for k, v in row["changes"].items()
        )
        changes = changes or "(the default)"
        print(f"| {row['run']} | {changes} | {scores} |")


if __name__ == "__main__":
    main()
