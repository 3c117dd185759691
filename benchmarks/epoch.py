"""One epoch of the embedded default, phase by phase, against a minimal hand-written loop.

    python benchmarks/epoch.py                       # fp32, and bf16 where the CPU computes it natively
    python benchmarks/epoch.py --precision fp32 --repeats 7 --label avx2 \\
        --set objective.trained_times=5              # any `nft run --set` override of the config
    python benchmarks/epoch.py --levers --precision fp32   # each lever of LEVERS on its own (one table)

The trainer's own `train_epoch` (what `nft run examples/shapes-geneval.toml` runs) is timed per phase:
sampling (collection), reward, training (update and old-policy refresh). Against it, with the same
networks, batch sizes and precision, a minimal PyTorch loop does exactly the same network passes:

- sampling: the forward calls the trainer's solver made (recorded by a forward hook: same networks,
  same inputs, same order), replayed one after the other, with no solver, prompt or image code around;
- training: per micro-batch of the trainer's plan, noise -> `x_t`, old and reference forward without
  gradient, current forward, the NFT + KL loss written out in a few lines, backward; then gradient
  clipping, one AdamW step, the EMA and the old-policy lerp.

Trainer and minimal loop alternate, `--repeats` times each, from the same weights and the same
samples; medians are reported with the median of the paired ratios (goal: training <= 1.05x), and
images per second per phase. Writes `benchmarks/results/epoch[-LABEL].json` with the CPU (model,
torch capability, bf16 units) and the thread count: timings belong to one machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nft_core.config import load_config  # noqa: E402
from nft_core.loop.collect import TRAINING_STREAM  # noqa: E402
from nft_core.loop.precision import autocast, native_bf16  # noqa: E402
from nft_core.loop.trainer import Trainer  # noqa: E402
from nft_core.outputs.machine import machine_facts  # noqa: E402
from nft_core.sampling import keyed_noise  # noqa: E402

DEFAULT_CONFIG = ROOT / "examples" / "shapes-geneval.toml"
NETWORKS = ("model", "old_model", "reference_model")
LEVERS: dict[str, tuple[list[str], bool]] = {
    "default": ([], False),
    "contiguous memory (channels_last off)": (["policy.channels_last=false"], False),
    "1 thread": (["train.threads=1"], False),
    "sampling batch 96 (one batch)": (["train.sample_batch_size=96"], False),
    "update micro-batch 96": (["train.batch_size=96"], False),
    "no reference pass (kl_weight 0)": (["objective.kl_weight=0"], False),
    "5 of 6 times per sample": (["objective.trained_times=5"], False),
    "torch.compile (inductor)": ([], True),
}
"""`--levers`: label -> (overrides of the default, compile the networks); timed without the minimal loop."""


class SamplingRecorder:
    """Records the forward calls of the policy's networks (network, args), in order, made inside the
    trainer's `collect` and nowhere else: the hooks live only while `collect` runs."""

    def __init__(self, trainer: Trainer) -> None:
        self.calls: list[tuple[torch.nn.Module, tuple]] = []
        self.trainer, self.collect = trainer, trainer.collect
        trainer.collect = self._recorded_collect

    def _hook(self, module, args, _output) -> None:
        self.calls.append((module, tuple(a.detach() if torch.is_tensor(a) else a for a in args)))

    def _recorded_collect(self):
        self.calls = []
        policy = self.trainer.policy
        handles = [getattr(policy, name).register_forward_hook(self._hook) for name in NETWORKS]
        try:
            return self.collect()
        finally:
            for handle in handles:
                handle.remove()

    def close(self) -> None:
        """Give the trainer back its own `collect`."""
        self.trainer.collect = self.collect


@torch.no_grad()
def minimal_sampling(calls, precision: str, device: torch.device) -> None:
    """The recorded forward calls, replayed bare."""
    with autocast(precision, device):
        for module, args in calls:
            module(*args)


def minimal_training(trainer: Trainer, samples, optimality: torch.Tensor, plan) -> None:
    """The trainer's update and refresh as a hand-written loop over the same micro-batches."""
    policy, objective = trainer.policy, trainer.objective
    model, old, reference = policy.model, policy.old_model, policy.reference_model
    tokens, mask = samples.cond["tokens"], samples.cond["mask"]
    parameters = list(model.parameters())
    beta, clip, kl_weight = objective.beta, objective.adv_clip, objective.kl_weight
    model.train(True)
    for step in plan:
        trainer.updater.optimizer.zero_grad(set_to_none=True)
        for batch in step:
            index = batch.index
            x0, t, r = samples.latents[index], batch.times.float(), optimality[index].float()
            key = (trainer.config.train.seed, TRAINING_STREAM, trainer.state.epoch, batch.visit)
            eps = keyed_noise(samples.ids[index].tolist(), tuple(x0.shape[1:]), *key)
            tb = t.view(-1, 1, 1, 1)
            x_t = ((1 - tb) * x0 + tb * eps).contiguous(memory_format=policy.memory_format)
            with autocast(trainer.precision, trainer.device):
                with torch.no_grad():
                    v_old = old(x_t, t, tokens[index], mask[index]).float()
                v = model(x_t, t, tokens[index], mask[index]).float()
                with torch.no_grad():
                    v_ref = reference(x_t, t, tokens[index], mask[index]).float()
            delta = v - v_old
            err_pos = x_t - tb * (v_old + beta * delta) - x0
            err_neg = x_t - tb * (v_old - beta * delta) - x0
            w_pos = err_pos.detach().abs().mean((1, 2, 3)).clamp_min(1e-5)
            w_neg = err_neg.detach().abs().mean((1, 2, 3)).clamp_min(1e-5)
            loss_pos = err_pos.square().mean((1, 2, 3)) / w_pos
            loss_neg = err_neg.square().mean((1, 2, 3)) / w_neg
            loss = clip * (r * loss_pos / beta + (1 - r) * loss_neg / beta).mean()
            loss = loss + kl_weight * (v - v_ref).square().mean()
            (loss * len(index) / batch.step_samples).backward()
        torch.nn.utils.clip_grad_norm_(parameters, trainer.config.train.grad_clip)
        trainer.updater.optimizer.step()
        with torch.no_grad():
            shadows = list(trainer.ema.shadow.values())
            torch._foreach_lerp_(shadows, [p.detach() for p in parameters], 1.0 - trainer.ema.decay)
    model.train(False)
    with torch.no_grad():  # the trainer refreshes after its steps, at the step count they reached
        decay = trainer.decay(trainer.state.global_step + len(plan))
        torch._foreach_lerp_(list(old.parameters()), parameters, 1.0 - decay)


def measure(
    precision: str,
    overrides: list[str],
    repeats: int,
    compile_networks: bool = False,
    config_path: Path = DEFAULT_CONFIG,
    minimal_loop: bool = True,
) -> dict[str, Any]:
    """Paired medians of the trainer's phases and (`minimal_loop`) the minimal loop's, at one precision."""
    with tempfile.TemporaryDirectory() as folder:
        config = load_config(
            config_path, [f'train.precision="{precision}"', "log.progress=false", *overrides]
        )
        trainer = Trainer(config, Path(folder), echo=lambda *_: None)
        if compile_networks:  # in place (`Module.compile`): parameter names stay those of the EMA
            for name in NETWORKS:
                getattr(trainer.policy, name).compile()
        began = time.perf_counter()
        trainer.train_epoch()  # warm-up: allocator, oneDNN primitive caches (and compilation)
        warm_up = time.perf_counter() - began
        start_weights = {k: v.clone() for k, v in trainer.policy.model.state_dict().items()}
        timings: dict[str, list[float]] = {key: [] for key in ("sampling", "reward", "training")}
        minimal: dict[str, list[float]] = {"sampling": [], "training": []}
        calls: list = []
        for _ in range(repeats):
            trainer.policy.model.load_state_dict(start_weights)
            # no hooks in a lever's timing: a compiled network would trace (and recompile for) them
            recorder = SamplingRecorder(trainer) if minimal_loop else None
            record, samples, scored = trainer.train_epoch()
            for phase in timings:
                timings[phase].append(record[f"seconds/{phase}"])
            if recorder is None:
                continue
            recorder.close()
            calls = recorder.calls
            began = time.perf_counter()
            minimal_sampling(calls, trainer.precision, trainer.device)
            minimal["sampling"].append(time.perf_counter() - began)
            optimality, _ = trainer.optimality(samples, scored.total)
            plan = trainer.updater.plan(samples, optimality)  # a fresh draw of the same geometry
            trainer.policy.model.load_state_dict(start_weights)
            began = time.perf_counter()
            minimal_training(trainer, samples, optimality, plan)
            minimal["training"].append(time.perf_counter() - began)
        geometry = trainer.geometry
        visits = geometry.images * geometry.trained_times * geometry.inner_epochs
        median = {phase: statistics.median(values) for phase, values in timings.items()}
        result = {
            "precision": trainer.precision,
            "geometry": geometry.describe(),
            "network_calls_sampling": len(calls),
            "compiled": compile_networks,
            "warm_up_epoch_seconds": warm_up,
            "seconds": median,
            "seconds_epoch": sum(median.values()),
            "images_per_second": {
                "sampling": geometry.images / median["sampling"],
                "reward": geometry.images / median["reward"],
                "training_visits": visits / median["training"],
            },
            "all_seconds": timings,
        }
        if minimal_loop:
            bare = {phase: statistics.median(values) for phase, values in minimal.items()}
            result["minimal_seconds"] = bare
            # the median of paired ratios: a machine's slow spells hit both halves of a pair alike
            result["ratio_to_minimal"] = {
                phase: statistics.median(a / b for a, b in zip(timings[phase], minimal[phase], strict=True))
                for phase in bare
            }
            result["all_minimal_seconds"] = minimal
        return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--precision", action="append", choices=("fp32", "bf16"), help="default: fp32 (+bf16)"
    )
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override")
    parser.add_argument("--label", default="", help="results file suffix: epoch-LABEL.json")
    parser.add_argument("--compile", action="store_true", help="torch.compile the networks (inductor)")
    parser.add_argument("--levers", action="store_true", help="time each variant of LEVERS (one precision)")
    parser.add_argument("--lever", action="append", default=[], help="with --levers: only these labels")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    precisions = args.precision or (["fp32", "bf16"] if native_bf16(torch.device("cpu")) else ["fp32"])
    result: dict[str, Any] = {
        "machine": machine_facts(),
        "config": str(DEFAULT_CONFIG.relative_to(ROOT)),
        "overrides": args.overrides,
        "repeats": args.repeats,
    }
    if args.levers:
        result["levers"] = {}
        unknown = [label for label in args.lever if label not in LEVERS]
        if unknown:
            parser.error(f"--lever: unknown {unknown}; allowed: {list(LEVERS)}")
        for label, (overrides, compile_networks) in LEVERS.items():
            if args.lever and label not in args.lever:
                continue
            torch.set_num_threads(args.threads)  # a variant's train.threads must not leak into the next
            run = measure(
                precisions[0], args.overrides + overrides, args.repeats, compile_networks, minimal_loop=False
            )
            result["levers"][label] = run
            cells = [run["seconds_epoch"], *run["seconds"].values(), run["warm_up_epoch_seconds"]]
            print(f"| {label} | " + " | ".join(f"{value:.2f}" for value in cells) + " |", flush=True)
        torch.set_num_threads(args.threads)
    else:
        result["runs"] = {
            precision: measure(precision, args.overrides, args.repeats, args.compile)
            for precision in precisions
        }
        for precision, run in result["runs"].items():
            seconds, ratio = run["seconds"], run["ratio_to_minimal"]
            print(
                f"{precision}: epoch {run['seconds_epoch']:.2f} s = sampling {seconds['sampling']:.2f} "
                f"(x{ratio['sampling']:.3f} minimal) + reward {seconds['reward']:.2f} + training "
                f"{seconds['training']:.2f} (x{ratio['training']:.3f} minimal)"
            )
    stem = "epoch-levers" if args.levers else "epoch"
    name = f"{stem}-{args.label}.json" if args.label else f"{stem}.json"
    out = ROOT / "benchmarks" / "results" / name
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
