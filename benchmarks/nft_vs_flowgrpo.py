"""NFT against FlowGRPO (and positive-only RFT) on the same world, head to head, on this machine.

    python benchmarks/nft_vs_flowgrpo.py [--seeds 0 1 2] [--targets 0.6 0.7] [--cap-factor 5]
        [--out benchmarks/results/nft_vs_flowgrpo] [--base examples/shapes-geneval.toml]
        [--threads 1 --jobs 2]

Every run starts from the same checkpoint (the base config's policy), draws the same training prompts
and is scored by the same held-out evaluation (`--eval-prompts`, the base config's eval solver) every
few epochs. Each run is its own `nft run` process (its peak memory is its own) and **runs until its
held-out score reaches the highest target** (the benchmark stops it with SIGTERM after that
evaluation) **or until its cap**: NFT's is `--nft-max-minutes`, FlowGRPO's is `--cap-factor` times
the slowest NFT seed's training minutes to the highest target. Training minutes count sampling,
scoring and the update, not the evaluations. Every run is fp32 (training and rollouts: FlowGRPO's ratio
needs them alike) with a constant learning rate (the runs stop at a target, not at an epoch count).

FlowGRPO runs as its reference does (`nft_core/flowgrpo.py` names each default's source; the recipe
and its adaptations to the world are written into the result), in two protocols:

- **equal** (CFG-free, equal group size): guidance 1, every method evaluated CFG-free. Its learning
  rate and noise level are swept on the first seed (`SWEEP`, the published setting first); the best
  setting (reached the target, sooner; else the higher best score) runs on the other seeds.
- **paper**: FlowGRPO as published, CFG 4.5 in sampling and training, evaluated with CFG 4.5
  (`eval.guidance`); NFT stays CFG-free (its claim). The best setting of the sweep.

For each protocol and target, `result.json` holds per seed the training minutes, epochs and images to
the target (None where the cap was hit, stated as `capped`), and the ratio FlowGRPO / NFT of the mean
minutes (and images) over seeds with a 95% bootstrap interval over seeds (a capped seed counts as the
cap, and the ratio is then marked a lower bound). `result.png` draws every curve against training
minutes and against images sampled. Timings belong to this machine (recorded in the JSON); the curves
in images do not. With `--jobs 2` two runs share the machine at every moment (each `--threads` wide), so
every method's minutes carry the same contention; images to a target carry none.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import tomli_w
import tomllib

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from learning_curves import curve  # noqa: E402

from nft_core.outputs.machine import machine_facts  # noqa: E402

FLOWGRPO_SOURCE = "yifan123/flow_grpo at ac4c86e: config/grpo.py geneval_sd3, scripts/train_sd3.py"

FLOWGRPO_RECIPE: dict[str, Any] = {
    "objective": {
        "name": "flowgrpo",
        "noise_level": 0.7,
        "clip_range": 1e-4,
        "kl_weight": 0.04,
        "guidance": 1.0,
        "adv_clip": 5.0,
        "detach_uncond": True,
        "drop_zero_advantage": True,
        "old_decay": "none",
        "global_std": True,
        "trained_times": 9,
    },
    "solver": {"name": "euler", "steps": 10, "grid": "diffusers"},
    "train": {"optimizer_steps_per_epoch": 2, "lr": 3e-4},
}
"""FlowGRPO's GenEval recipe (`FLOWGRPO_SOURCE`) on the world, CFG-free (merged into the base config)."""

PAPER_PROTOCOL: dict[str, Any] = {"objective": {"guidance": 4.5}, "eval": {"guidance": 4.5}}
"""The published protocol: CFG 4.5 in sampling and training, the evaluation with CFG 4.5."""

ADAPTATIONS = [
    "KL 0.04, clip range 1e-4, noise level 0.7, advantages clipped at 5, batch (global) reward std, "
    "zero-advantage samples dropped, the unconditional prediction detached: as config/grpo.py "
    "geneval_sd3 and train_sd3.py run it",
    "10 SDE steps on diffusers' SD3 grid with the base config's shift; the first 9 steps of every path "
    "trained, in order (timestep fraction 0.99); two optimizer steps per epoch, each on every trained "
    "step of half the samples",
    "group size: the base config's images per prompt (8 here; published 24), the same as NFT's; "
    "12 prompts per epoch (published 48)",
    "EMA of the weights for the evaluation: the base config's (the same for every method; published "
    "0.9 every 8 steps)",
    "protocol equal: CFG off in sampling, training and evaluation; protocol paper: CFG 4.5 in all three",
    "learning rate and noise level swept on the first seed (SWEEP); the best setting runs on every seed",
]
"""How the published recipe was adapted to the world, written into the result."""

SWEEP = [
    {"train.lr": 3e-4, "objective.noise_level": 0.7},
    {"train.lr": 1e-3, "objective.noise_level": 0.7},
    {"train.lr": 3e-4, "objective.noise_level": 1.0},
    {"train.lr": 1e-3, "objective.noise_level": 1.0},
]
"""FlowGRPO's learning rate and noise level sweep (the published values first)."""

RFT: dict[str, Any] = {"objective": {"name": "rft", "kl_weight": 1.0, "adv_clip": 5.0}}
"""Positive-only: flow matching on the better half, the base config's KL anchor kept."""

LOOP_KEYS = (
    "adv_mode",
    "global_std",
    "old_decay",
    "times",
    "timestep_fraction",
    "trained_times",
    "ema_decay",
)
"""`[objective]` keys of the training loop rather than of one objective (`ObjectiveConfig`)."""

BOOTSTRAP_RESAMPLES = 10_000


def merged(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """`base` with the tables of `changes` replacing (objective, solver) or updating (others) its own; a
    replaced objective keeps the base's loop knobs, a replaced solver the base's shift."""
    config = copy.deepcopy(base)
    for table, values in changes.items():
        mine = config.get(table, {})
        if table == "objective" and values.get("name", mine.get("name")) != mine.get("name"):
            kept = {k: v for k, v in mine.items() if k in LOOP_KEYS}
            config["objective"] = {**kept, **values}
        elif table == "solver" and values.get("name", mine.get("name")) != mine.get("name"):
            kept = {k: v for k, v in mine.items() if k == "shift"}
            config["solver"] = {**kept, **values}
        else:
            config.setdefault(table, {}).update(values)
    return config


def _scores(metrics: Path, reward: str, seen: int) -> tuple[list[float], int]:
    """The held-out scores of `reward` in `metrics` past its first `seen` bytes, and the new offset."""
    if not metrics.is_file():
        return [], seen
    with open(metrics, "rb") as handle:
        handle.seek(seen)
        chunk = handle.read()
    complete = chunk[: chunk.rfind(b"\n") + 1]
    scores = []
    for line in complete.splitlines():
        record = json.loads(line)
        if record.get("kind") == "eval" and f"eval/{reward}/score" in record:
            scores.append(record[f"eval/{reward}/score"])
    return scores, seen + len(complete)


def run_one(
    config: dict[str, Any],
    folder: Path,
    overrides: dict[str, Any],
    stop_at: tuple[str, float] | None = None,
) -> dict[str, Any]:
    """One `nft run` of `config` in its own process; its run folder and peak memory. With `stop_at =
    (reward, score)` the run is stopped (SIGTERM: it ends after the epoch) once an evaluation of `reward`
    reaches `score`. A folder that holds a finished (or so stopped) run of the same request is reused (a
    report can be rewritten without training again)."""
    folder.mkdir(parents=True, exist_ok=True)
    path, record = folder / "config.toml", folder / "run.json"
    run_dir = folder / config["name"]
    asked = {"config": config, "overrides": overrides, "stop_at": stop_at}
    if record.is_file() and (run_dir / "summary.json").is_file():
        done = json.loads(record.read_text())
        status = json.loads((run_dir / "summary.json").read_text()).get("status")
        if status in ("finished", "interrupted") and done.get("asked") == json.loads(json.dumps(asked)):
            return {"run_dir": run_dir, **done["measured"], "reused": True}
    if run_dir.exists():
        shutil.rmtree(run_dir)
    path.write_text(tomli_w.dumps(config))
    command = [sys.executable, "-m", "nft_core.cli", "run", str(path), "--out", str(folder)]
    for key, value in overrides.items():
        command += ["--set", f"{key}={json.dumps(value)}"]
    began = time.time()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    stopped = False
    with open(folder / "output.log", "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        seen, waited = 0, (0, 0, None)
        while waited[0] == 0:  # wait4, not poll: poll would reap the child and lose its peak memory
            waited = os.wait4(process.pid, os.WNOHANG if stop_at is not None else 0)
            if waited[0] == 0:
                time.sleep(1.0)
                scores, seen = _scores(run_dir / "metrics.jsonl", stop_at[0], seen)
                if not stopped and any(score >= stop_at[1] for score in scores):
                    process.send_signal(signal.SIGTERM)
                    stopped = True
        _, status, usage = waited
        process.returncode = os.waitstatus_to_exitcode(status)
    if status != 0:
        raise SystemExit(f"{' '.join(command)} failed; see {folder / 'output.log'}")
    measured = {
        "wall_seconds": time.time() - began,
        "peak_rss_mib": usage.ru_maxrss / 1024,
        "stopped_at_target": stopped,
    }
    record.write_text(json.dumps({"asked": asked, "measured": measured}, indent=1))
    return {"run_dir": run_dir, **measured, "reused": False}


def summarize(
    run: dict[str, Any], reward: str, targets: tuple[float, ...], images_per_epoch: int
) -> dict[str, Any]:
    """The curve against minutes, epochs and images; the first evaluation at or above each target
    (minutes, epochs, images; None where never reached); bytes stored per sample."""
    points, train = curve(run["run_dir"], reward)
    for point in points:
        point["images"] = point["epochs"] * images_per_epoch

    def first(level: float) -> dict[str, Any] | None:
        return next((p for p in points if p["score"] >= level), None)

    reached = {f"{level:g}": first(level) for level in targets}
    stored = [r["samples/stored_bytes_per_sample"] for r in train if "samples/stored_bytes_per_sample" in r]
    return {
        "curve": points,
        "epochs": len(train),
        "images": len(train) * images_per_epoch,
        "train_minutes": points[-1]["train_minutes"] if points else 0.0,
        "final_score": points[-1]["score"] if points else None,
        "best_score": max((p["score"] for p in points), default=None),
        "to": {
            level: None if p is None else {k: p[k] for k in ("train_minutes", "epochs", "images")}
            for level, p in reached.items()
        },
        "seconds_per_epoch": statistics.fmean(
            sum(r[f"seconds/{phase}"] for phase in ("sampling", "reward", "training")) for r in train
        )
        if train
        else None,
        "peak_rss_mib": run.get("peak_rss_mib"),
        "stored_bytes_per_sample": stored[0] if stored else None,
    }


def bootstrap_ratio(
    method: list[float], reference: list[float], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> dict[str, Any]:
    """mean(method) / mean(reference) over seeds, with the 2.5 and 97.5 percentiles of the same ratio
    over `resamples` draws of the seeds of each side with replacement (independently: the seeds of
    two methods are not paired)."""
    point = statistics.fmean(method) / statistics.fmean(reference)
    draw = random.Random(seed)
    ratios = sorted(
        statistics.fmean(draw.choices(method, k=len(method)))
        / statistics.fmean(draw.choices(reference, k=len(reference)))
        for _ in range(resamples)
    )
    return {"ratio": point, "interval": [ratios[int(0.025 * resamples)], ratios[int(0.975 * resamples) - 1]]}


def time_ratio(
    method: list[dict[str, Any]], nft: list[dict[str, Any]], level: str, cap_minutes: float
) -> dict[str, Any]:
    """FlowGRPO (or any method) over NFT to the target `level`: training minutes and images, per seed and
    as a ratio of means with its bootstrap interval. A method's seed that never reached the target
    counts as `cap_minutes` (and as the images it had sampled), and makes the ratio a lower bound."""
    references = [row["to"][level] for row in nft if row["to"][level] is not None]
    if not references:
        return {"ratio": None, "reason": f"NFT did not reach {level}"}
    mine = [row["to"][level] for row in method]
    minutes = [cap_minutes if m is None else m["train_minutes"] for m in mine]
    images = [row["images"] if m is None else m["images"] for m, row in zip(mine, method, strict=True)]
    reference_minutes = [r["train_minutes"] for r in references]
    reference_images = [r["images"] for r in references]
    # a target reached before any training (the base already scores it) takes no time
    if min(reference_minutes) <= 0 or min(reference_images) <= 0:
        return {"ratio": None, "reason": f"NFT's base model already scores {level}"}
    return {
        "minutes": minutes,
        "images": images,
        "capped_seeds": [row["seed"] for m, row in zip(mine, method, strict=True) if m is None],
        "lower_bound": any(m is None for m in mine),
        "minutes_ratio": bootstrap_ratio(minutes, reference_minutes),
        "images_ratio": bootstrap_ratio(images, reference_images),
    }


def _sweep_rank(row: dict[str, Any], level: str) -> tuple:
    """Best first: reached the target, sooner, then the higher best score."""
    reached = row["to"][level]
    return (reached is not None, -(reached or {}).get("train_minutes", 0.0), row["best_score"] or 0.0)


def plot(methods: dict[str, list[dict[str, Any]]], targets: tuple[float, ...], path: Path) -> None:
    """Held-out score against training minutes and against images sampled, every run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    colours = {"nft": "tab:blue", "flowgrpo": "tab:red", "flowgrpo-paper": "tab:orange", "rft": "tab:green"}
    for name, runs in methods.items():
        for index, run in enumerate(runs):
            for axis, x in zip(axes, ("train_minutes", "images"), strict=True):
                axis.plot(
                    [p[x] for p in run["curve"]],
                    [p["score"] for p in run["curve"]],
                    color=colours.get(name, "tab:gray"),
                    alpha=0.9 if index == 0 else 0.5,
                    marker="o",
                    markersize=3,
                    label=name if index == 0 else None,
                )
    for axis, label in zip(axes, ("training minutes (this machine)", "images sampled"), strict=True):
        for target in targets:
            axis.axhline(target, color="grey", linestyle="--", linewidth=1)
        axis.set(xlabel=label, ylabel="held-out score (flowgrpo-paper: with CFG 4.5)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", type=Path, default=ROOT / "examples" / "shapes-geneval.toml")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "nft_vs_flowgrpo")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--targets", type=float, nargs="+", default=[0.6, 0.7])
    parser.add_argument("--cap-factor", type=float, default=5.0, help="FlowGRPO's cap: this x NFT's time")
    parser.add_argument("--nft-max-minutes", type=float, default=10.0)
    parser.add_argument("--reward", default="official", help="the eval reward the score is read from")
    parser.add_argument("--eval-prompts", default="shapes:eval-24")
    parser.add_argument("--eval-every", type=int, nargs=2, default=[4, 2], metavar=("NFT", "FLOWGRPO"))
    parser.add_argument("--sweep", type=int, default=len(SWEEP), help="FlowGRPO settings to sweep (0: none)")
    parser.add_argument("--protocols", nargs="+", choices=("equal", "paper"), default=["equal", "paper"])
    parser.add_argument("--threads", type=int, default=0, help="train.threads of every run (0: the default)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (each its own process)")
    parser.add_argument("--rft", action="store_true", help="also run positive-only RFT (NFT's cap)")
    parser.add_argument("--work", type=Path, default=None, help="run folders (default: a folder in --out)")
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = _parser().parse_args(argv)
    base = tomllib.loads(args.base.read_text())
    work = args.work or args.out / "runs"
    images_per_epoch = base["data"]["prompts_per_epoch"] * base["data"]["images_per_prompt"]
    targets = tuple(sorted(args.targets))
    levels = [f"{level:g}" for level in targets]
    stop_at = (args.reward, targets[-1])
    common = {  # fp32 and a constant lr for every method: runs stop at a target, not at an epoch count
        "train.epochs": 100_000,
        "train.lr_schedule": "constant",
        "train.precision": "fp32",
        "eval.prompts": args.eval_prompts,
        "eval.baseline_guidance": [],
        "log.grid_every": 0,
        "log.checkpoint_every": 0,
        "log.keep_best": False,
        "log.progress": False,
        **({"train.threads": args.threads} if args.threads else {}),
    }

    def one_run(label: str, config: dict[str, Any], every: int, seed: int, extra: dict, cap: float) -> dict:
        setting = "_".join(f"{key.split('.')[-1]}{value:g}" for key, value in extra.items())
        folder = work / label / (setting or "recipe") / f"seed{seed}"
        print(f"{label} {setting or 'recipe'} seed {seed}, cap {cap:.2f} training minutes", flush=True)
        overrides = {**common, "train.max_minutes": cap, "eval.every": every, "train.seed": seed, **extra}
        run = run_one(config, folder, overrides, stop_at)
        return {"seed": seed, **extra, **summarize(run, args.reward, targets, images_per_epoch)}

    def in_parallel(requests: list[tuple]) -> list[dict[str, Any]]:
        """`one_run(*request)` of every request, `--jobs` at a time, in the order asked."""
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            return list(pool.map(lambda request: one_run(*request), requests))

    def method_runs(
        label: str, config: dict[str, Any], every: int, seeds: list[int], extra: dict, cap: float
    ) -> list[dict[str, Any]]:
        return in_parallel([(label, config, every, seed, extra, cap) for seed in seeds])

    nft = method_runs("nft", base, args.eval_every[0], args.seeds, {}, args.nft_max_minutes)
    reached = [row["to"][levels[-1]] for row in nft]
    if any(r is None for r in reached):
        cap = args.cap_factor * args.nft_max_minutes
        print(f"NFT missed {levels[-1]} on a seed: FlowGRPO's cap is {args.cap_factor:g} x its own cap")
    else:
        # at least one NFT epoch: a target the base already scores takes no time
        cap = args.cap_factor * max(
            max(r["train_minutes"], row["seconds_per_epoch"] / 60)
            for r, row in zip(reached, nft, strict=True)
        )
    equal = merged(base, FLOWGRPO_RECIPE)
    every = args.eval_every[1]
    settings = SWEEP[: args.sweep]
    first = args.seeds[0]
    swept = in_parallel([("flowgrpo-sweep", equal, every, first, setting, cap) for setting in settings])
    sweep = [{"setting": setting, **row} for setting, row in zip(settings, swept, strict=True)]
    best = max(sweep, key=lambda row: _sweep_rank(row, levels[-1])) if sweep else None
    best_setting = best["setting"] if best else {}
    methods: dict[str, list[dict[str, Any]]] = {"nft": nft}
    # the rest of both protocols share one queue, so that `--jobs` runs stay busy
    queue: list[tuple[str, tuple]] = []
    if "equal" in args.protocols:
        rest = args.seeds[1:] if best else args.seeds
        methods["flowgrpo"] = [best] if best else []
        queue += [("flowgrpo", ("flowgrpo", equal, every, seed, best_setting, cap)) for seed in rest]
    if "paper" in args.protocols:
        paper = merged(equal, PAPER_PROTOCOL)
        label = "flowgrpo-paper"
        queue += [(label, (label, paper, every, seed, best_setting, cap)) for seed in args.seeds]
    for (name, _), row in zip(queue, in_parallel([request for _, request in queue]), strict=True):
        methods.setdefault(name, []).append(row)
    if args.rft:
        methods["rft"] = method_runs(
            "rft", merged(base, RFT), args.eval_every[0], args.seeds, {}, args.nft_max_minutes
        )
    steps = FLOWGRPO_RECIPE["solver"]["steps"]
    nft_bytes = nft[0]["stored_bytes_per_sample"]
    flowgrpo_bytes = next(
        (runs[0]["stored_bytes_per_sample"] for name, runs in methods.items() if name.startswith("flowgrpo")),
        None,
    )
    result = {
        "what": "training time and images to held-out targets, NFT against FlowGRPO as its reference runs "
        "it, same world, starting checkpoint, prompts and evaluation; each run stops at the highest "
        "target or its cap",
        "base_config": str(args.base.relative_to(ROOT) if args.base.is_relative_to(ROOT) else args.base),
        "targets": list(targets),
        "reward": args.reward,
        "eval_prompts": args.eval_prompts,
        "eval_every": {"nft": args.eval_every[0], "flowgrpo": args.eval_every[1]},
        "seeds": args.seeds,
        "threads_per_run": args.threads or "the base config's",
        "runs_at_a_time": args.jobs,
        "images_per_epoch": images_per_epoch,
        "nft_cap_minutes": args.nft_max_minutes,
        "flowgrpo_cap_minutes": cap,
        "cap_rule": f"{args.cap_factor:g} x the slowest NFT seed's training minutes to {levels[-1]}",
        "flowgrpo_source": FLOWGRPO_SOURCE,
        "flowgrpo_recipe": FLOWGRPO_RECIPE,
        "paper_protocol": PAPER_PROTOCOL,
        "flowgrpo_adaptations": ADAPTATIONS,
        "flowgrpo_sweep": [
            {k: row[k] for k in ("setting", "to", "best_score", "final_score", "epochs", "train_minutes")}
            for row in sweep
        ],
        "flowgrpo_best_setting": best_setting,
        "methods": {
            name: {
                "runs": runs,
                "against_nft": {level: time_ratio(runs, nft, level, cap) for level in levels}
                if name != "nft"
                else None,
                "peak_rss_mib": max((r["peak_rss_mib"] for r in runs if r["peak_rss_mib"]), default=None),
                "stored_bytes_per_sample": runs[0]["stored_bytes_per_sample"],
            }
            for name, runs in methods.items()
        },
        "stored_bytes_nft_over_flowgrpo": None if not flowgrpo_bytes else nft_bytes / flowgrpo_bytes,
        "stored_bytes_bound": f"1/(steps+1) = 1/{steps + 1} = {1 / (steps + 1):.4f}",
        "machine": machine_facts("cpu"),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "result.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    plot(methods, targets, args.out / "result.png")
    report(result)
    print(f"wrote {args.out / 'result.json'}")
    return result


def report(result: dict[str, Any]) -> None:
    """Markdown tables: per run, minutes and images to each target; per method, the ratios to NFT."""
    levels = [f"{level:g}" for level in result["targets"]]
    header = " | ".join(f"min / images to {level}" for level in levels)
    print(f"\n| method | seed | {header} | best | epochs | s/epoch | peak MiB |")
    print("| --- | --- |" + " --- |" * (len(levels) + 4))
    for name, method in result["methods"].items():
        for run in method["runs"]:
            cells = " | ".join(
                "capped"
                if run["to"][level] is None
                else f"{run['to'][level]['train_minutes']:.2f} / {run['to'][level]['images']}"
                for level in levels
            )
            print(
                f"| {name} | {run['seed']} | {cells} | {run['best_score']:.3f} | {run['epochs']} | "
                f"{run['seconds_per_epoch'] or 0:.2f} | {run['peak_rss_mib'] or 0:.0f} |"
            )
    for name, method in result["methods"].items():
        for level, ratio in (method["against_nft"] or {}).items():
            if ratio.get("minutes_ratio") is None:
                print(f"{name} / nft to {level}: {ratio.get('reason')}")
                continue
            minutes, images = ratio["minutes_ratio"], ratio["images_ratio"]
            bound = " (lower bound: capped)" if ratio["lower_bound"] else ""
            print(
                f"{name} / nft to {level}: minutes {minutes['ratio']:.2f}x [{minutes['interval'][0]:.2f}, "
                f"{minutes['interval'][1]:.2f}], images {images['ratio']:.2f}x [{images['interval'][0]:.2f}, "
                f"{images['interval'][1]:.2f}]{bound}"
            )


if __name__ == "__main__":
    main()
