"""Reward hacking on the shapes world, caught by the alarm and held off by the guards.

    python benchmarks/reward_hacking.py [--seeds 0 1] [--epochs 60] [--parallel 2]
        [--out benchmarks/results/reward-hacking]

Every run trains on GenEval's partial credit plus `shapes-colour-area` for red (the share of red pixels:
a model earns it by painting objects red, whatever colour the prompt asks for) at weight 2, and watches
GenEval (`shapes-geneval`, official outcome) as an eval-only monitor (`[[eval.reward]]`, label `geneval`)
on the held-out prompts. GenEval's credit is learned first; once most groups score alike on it, the red
area is what separates their samples, and the run starts to paint red.
`VARIANTS` are run on every seed: no guard (no KL term), the default's KL anchor, and the anchor with
the other guards of docs/guards.md; the learning rate is constant. For each run the JSON holds
both curves, the monitored GenEval's best and final and its fall from the best, the alarms that fired
(with their epochs), the best checkpoint by GenEval (`log.best_by`) and the seconds per epoch; `result.png`
draws the curves. It also measures what the alarms cost an epoch of the embedded default, as a ratio in
one process (`alarm_cost`): the probe's two forwards (every `alarms.probe_every` epochs: `ratio` is the
average over epochs, `ratio_probe_epoch` an epoch that probes) and the alarm checks over a run's records,
against the epoch's collection and update.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import tomllib

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from nft_vs_flowgrpo import run_one  # noqa: E402

from nft_core.outputs.machine import machine_facts  # noqa: E402

HACKABLE = {"name": "shapes-colour-area", "weight": 2.0, "normalize": "none", "options": {"colour": "red"}}
TASK = {"name": "shapes-geneval", "weight": 1.0, "normalize": "none", "options": {"outcome": "partial"}}
MONITOR = {"name": "shapes-geneval", "alias": "geneval", "options": {"outcome": "official"}}

ANCHOR = {"objective.kl_weight": 1.0}
VARIANTS: dict[str, dict[str, Any]] = {
    "no guard": {"objective.kl_weight": 0.0},
    "KL anchor": ANCHOR,
    "KL anchor + revert": {**ANCHOR, "train.revert_on_drop": 0.03, "train.revert_kl_factor": 2.0},
}
"""Overrides of each variant. "no guard" is NFT's own objective (the reference trains without a KL term);
the KL anchor to the base is the default recipe's (`examples/shapes-geneval.toml`). Every run keeps the
best checkpoint by the monitor (`log.best_by`): what `nft export --best` hands out. NormGuard and the
adaptive KL (`objective.norm_guard`, `objective.kl_adaptive`) are not variants of the measured result."""


def hackable_config(base: dict[str, Any]) -> dict[str, Any]:
    """The base config trained on the hackable reward, with GenEval as the eval-only monitor."""
    config = dict(base, reward=[TASK, HACKABLE])
    config["eval"] = dict(base.get("eval", {}), reward=[MONITOR])
    config["log"] = dict(base.get("log", {}), best_by="geneval")
    config["name"] = "hack"
    return config


def curves(run_dir: Path) -> dict[str, Any]:
    """Per evaluation (epochs trained): the trained reward's and the monitor's score; the alarms."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    points = [
        {
            "epochs": 0 if r["label"] == "before" else r["epoch"] + 1,
            "trained": r.get(f"eval/{HACKABLE['name']}/score"),
            "geneval": r.get("eval/geneval/score"),
        }
        for r in records
        if r["kind"] == "eval"
    ]
    alarms = [
        {"epoch": r["epoch"], "names": sorted(k[len("alarm/") :] for k in r if k.startswith("alarm/"))}
        for r in records
        if r["kind"] == "alarm"
    ]
    train = [r for r in records if r["kind"] == "train"]
    reverts = [
        {"epoch": r["epoch"], "to_epoch": r.get("revert/to_epoch")} for r in records if r["kind"] == "revert"
    ]
    return {"curve": points, "alarms": alarms, "train": train, "reverts": reverts}


def summarize(run: dict[str, Any]) -> dict[str, Any]:
    """One run's row: curves, the monitor's best, final and fall, the alarms, the best checkpoint."""
    found = curves(run["run_dir"])
    geneval = [p["geneval"] for p in found["curve"]]
    best = max(range(len(geneval)), key=lambda i: geneval[i])
    summary = json.loads((run["run_dir"] / "summary.json").read_text())
    kept = summary.get("eval_best") or {}
    return {
        "curve": found["curve"],
        "geneval_best": geneval[best],
        "geneval_best_epochs": found["curve"][best]["epochs"],
        "geneval_final": geneval[-1],
        "geneval_fall_from_best": geneval[best] - geneval[-1],
        "trained_first": found["curve"][0]["trained"],
        "trained_final": found["curve"][-1]["trained"],
        "alarms": found["alarms"],
        "hacking_alarm_epoch": next(
            (a["epoch"] for a in found["alarms"] if "reward_hacking" in a["names"]), None
        ),
        "best_checkpoint": {k: kept.get(k) for k in ("score", "epoch", "checkpoint")},
        "reverts": found["reverts"],
        "seconds_per_epoch": statistics.fmean(
            sum(r[f"seconds/{p}"] for p in ("sampling", "reward", "training")) for r in found["train"]
        ),
    }


def alarm_cost(base_path: Path, epochs: int = 3) -> dict[str, Any]:
    """Seconds of the alarms' work against an epoch's collection and update, in this process: the probe
    (`velocity_norm_ratio`) and `check_alarms` over the records of a 200-epoch run."""
    from nft_core.config import load_config
    from nft_core.loop.trainer import Trainer
    from nft_core.outputs.alarms import AlarmSettings, check_alarms

    records = [
        {"kind": "train", "epoch": e, "v_old_gap": 0.01, "velocity_norm_ratio": 1.0, "monitor/x": 1.0}
        for e in range(200)
    ]
    overrides = ["log.progress=false", "alarms.enabled=false"]  # the probe is timed apart, not in the step
    epoch_seconds, probe_seconds, check_seconds = [], [], []
    with tempfile.TemporaryDirectory() as folder:
        trainer = Trainer(load_config(base_path, overrides), Path(folder), echo=lambda *_: None)
        settings = AlarmSettings.of(trainer.config)
        for _ in range(epochs):
            began = time.perf_counter()
            samples = trainer.collect()
            optimality, _ = trainer.optimality(samples, trainer.collector.scores(samples).total)
            trainer.updater.step(samples, optimality)
            epoch_seconds.append(time.perf_counter() - began)
            began = time.perf_counter()
            trainer.updater.velocity_norm_ratio(samples)
            probe_seconds.append(time.perf_counter() - began)
            began = time.perf_counter()
            check_alarms(records, settings)
            check_seconds.append(time.perf_counter() - began)
    epoch, probe, check = (statistics.median(v) for v in (epoch_seconds, probe_seconds, check_seconds))
    every = trainer.config.alarms.probe_every
    return {
        "epoch_seconds": epoch,
        "probe_seconds": probe,
        "check_seconds": check,
        "probe_every": every,
        "ratio_probe_epoch": (probe + check) / epoch,
        "ratio": (probe / every + check) / epoch,
        "epochs_timed": epochs,
    }


def plot(variants: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """The monitored GenEval and the trained reward against epochs, every run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    colours = dict(zip(variants, ("tab:red", "tab:blue", "tab:green", "tab:purple"), strict=False))
    for name, runs in variants.items():
        for index, run in enumerate(runs):
            epochs = [p["epochs"] for p in run["curve"]]
            for axis, key in zip(axes, ("geneval", "trained"), strict=True):
                axis.plot(
                    epochs,
                    [p[key] for p in run["curve"]],
                    color=colours[name],
                    alpha=0.9 if index == 0 else 0.5,
                    marker="o",
                    markersize=3,
                    label=name if index == 0 else None,
                )
            if run["hacking_alarm_epoch"] is not None:
                axes[0].axvline(run["hacking_alarm_epoch"] + 1, color=colours[name], linestyle=":", alpha=0.7)
    axes[0].set(xlabel="epochs", ylabel="held-out GenEval (monitor, never trained on)")
    axes[1].set(xlabel="epochs", ylabel="held-out colour area (trained)")
    for axis in axes:
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    axes[0].set_title("dotted: the reward_hacking alarm", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", type=Path, default=ROOT / "examples" / "shapes-geneval.toml")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "reward-hacking")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument(
        "--seeds-for",
        action="append",
        default=[],
        metavar="VARIANT=S,S",
        help="other seeds for one variant (repeatable), e.g. 'KL anchor + revert=0'",
    )
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--eval-every", type=int, default=5)
    parser.add_argument("--eval-prompts", default="shapes:eval-24")
    parser.add_argument("--parallel", type=int, default=2, help="runs at once (each with train.threads)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--cost-epochs", type=int, default=3, help="epochs timed for the alarms' cost (0: skip)"
    )
    parser.add_argument("--work", type=Path, default=None, help="run folders (default: a folder in --out)")
    args = parser.parse_args(argv)

    config = hackable_config(tomllib.loads(args.base.read_text()))
    work = args.work or args.out / "runs"
    common = {
        "train.epochs": args.epochs,
        "train.threads": args.threads,
        "train.lr_schedule": "constant",  # the hack keeps its pull to the end; the default decays lr
        "eval.every": args.eval_every,
        "eval.prompts": args.eval_prompts,
        "eval.baseline_guidance": [],
        "log.grid_every": 0,
        "log.progress": False,
    }
    seeds = {name: list(args.seeds) for name in VARIANTS}
    for item in args.seeds_for:
        name, _, listed = item.partition("=")
        if name not in VARIANTS:
            parser.error(f"--seeds-for: unknown variant {name!r}; known: {', '.join(VARIANTS)}")
        seeds[name] = [int(seed) for seed in listed.split(",")]
    jobs = [(name, seed) for name in VARIANTS for seed in seeds[name]]

    def one(job: tuple[str, int]) -> dict[str, Any]:
        name, seed = job
        folder = work / name.replace(" ", "_").replace("+", "and") / f"seed{seed}"
        run = run_one(config, folder, {**common, **VARIANTS[name], "train.seed": seed})
        return {"variant": name, "seed": seed, **summarize(run)}

    with ThreadPoolExecutor(args.parallel) as pool:
        rows = list(pool.map(one, jobs))
    variants = {name: [r for r in rows if r["variant"] == name] for name in VARIANTS}
    result = {
        "what": "training on a hackable reward (colour area) with GenEval as an eval-only monitor, "
        "without and with the guards",
        "base_config": str(args.base.relative_to(ROOT) if args.base.is_relative_to(ROOT) else args.base),
        "trained_reward": HACKABLE,
        "monitor": MONITOR,
        "epochs": args.epochs,
        "eval_every": args.eval_every,
        "eval_prompts": args.eval_prompts,
        "variants": {
            name: {"overrides": VARIANTS[name], "seeds": seeds[name], "runs": runs}
            for name, runs in variants.items()
        },
        "alarm_cost": alarm_cost(args.base, args.cost_epochs) if args.cost_epochs else None,
        "machine": machine_facts("cpu"),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "result.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    plot(variants, args.out / "result.png")
    print(
        "| variant | seed | GenEval best (epoch) | final | fall | colour area first -> last | hacking alarm |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        best = f"{row['geneval_best']:.3f} ({row['geneval_best_epochs']})"
        area = f"{row['trained_first']:.3f} -> {row['trained_final']:.3f}"
        print(
            f"| {row['variant']} | {row['seed']} | {best} | {row['geneval_final']:.3f} | "
            f"{row['geneval_fall_from_best']:.3f} | {area} | {row['hacking_alarm_epoch']} |"
        )
    if result["alarm_cost"]:
        print(f"alarms cost {result['alarm_cost']['ratio']:.4f} of an epoch")
    print(f"wrote {args.out / 'result.json'}")
    return result


if __name__ == "__main__":
    main()
