"""Why bf16 learns worse on the embedded default: the update's gradient in bf16 against fp32's, per view.

    python benchmarks/precision_gradients.py [--epochs 0,20,60] [--out FILE.json]

Trains the embedded default in fp32 and, at each listed epoch, collects one epoch of samples and computes
the epoch's whole update gradient (every micro-batch of the plan, the same keyed noise) several ways:
every forward in fp32 (the reference), every forward in bf16 autocast (what `precision = "bf16"` does),
and bf16 in one view only (`current` = the trained network, `old` = the sampling copy of the NFT
contrast, `reference` = the KL anchor's base model). Reports each gradient's cosine similarity to the
fp32 one and its relative error `|g - g32| / |g32|`, and the same for the NFT term and the KL term of the
loss alone (`objective.kl_weight` 0 and NFT off), so the view and the term whose rounding drowns the
signal are named. The machine (CPU, kernel set, bf16 units) is recorded beside the numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nft_core.config import load_config  # noqa: E402
from nft_core.loop.collect import TRAINING_STREAM  # noqa: E402
from nft_core.loop.trainer import Trainer  # noqa: E402
from nft_core.outputs.machine import machine_facts  # noqa: E402
from nft_core.sampling import keyed_noise  # noqa: E402

VIEWS = ("current", "old", "reference")
MODES = {
    "fp32": (),
    "bf16 (all views)": VIEWS,
    "bf16 current only": ("current",),
    "bf16 old only": ("old",),
    "bf16 reference only": ("reference",),
}


@contextlib.contextmanager
def views_in_bf16(policy, views: tuple[str, ...]):
    """`policy.velocity` of the named views under bf16 autocast, the others in fp32."""
    velocity = policy.velocity

    def mixed(view, x_t, t, cond):
        context = torch.autocast("cpu", dtype=torch.bfloat16) if view in views else contextlib.nullcontext()
        with context:
            return velocity(view, x_t, t, cond)

    policy.velocity = mixed
    try:
        yield
    finally:
        policy.velocity = velocity


def epoch_gradient(trainer: Trainer, samples, optimality, plan, views: tuple[str, ...]) -> torch.Tensor:
    """The accumulated gradient of one epoch's plan (what `Updater.step` sums before clipping)."""
    policy, collector = trainer.policy, trainer.collector
    parameters = [p for _, p in policy.trainable_parameters()]
    for parameter in parameters:
        parameter.grad = None
    shape, seed, epoch = tuple(policy.latent_shape), trainer.config.train.seed, trainer.state.epoch
    policy.train(True)
    with views_in_bf16(policy, views):
        for step in plan:
            for batch in step:
                ids = samples.ids[batch.index].tolist()
                noise = keyed_noise(ids, shape, seed, TRAINING_STREAM, epoch, batch.visit)
                loss, _ = collector.loss(samples, batch.index, batch.times, optimality, noise)
                batch.weighted(loss).backward()
    policy.train(False)
    return torch.cat([p.grad.reshape(-1) for p in parameters]).double()


def compare(gradient: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    cosine = float(torch.nn.functional.cosine_similarity(gradient, reference, dim=0))
    return {"cosine": cosine, "relative_error": float((gradient - reference).norm() / reference.norm())}


def measure(trainer: Trainer) -> dict[str, dict[str, dict[str, float]]]:
    """Every mode's gradient against fp32's, for the whole loss and for each of its two terms."""
    samples = trainer.collect()
    scored = trainer.collector.scores(samples)
    optimality, _ = trainer.optimality(samples, scored.total)
    generator_state = trainer.updater.generator.get_state()
    plan = trainer.updater.plan(samples, optimality)
    trainer.updater.generator.set_state(generator_state)
    objective = trainer.objective
    terms = {"loss": objective.kl_weight, "nft term": 0.0}
    if objective.kl_weight > 0:
        terms["kl term"] = objective.kl_weight
    found: dict[str, dict[str, dict[str, float]]] = {}
    for term, kl_weight in terms.items():
        saved = objective.kl_weight, objective.adv_clip
        objective.kl_weight = kl_weight
        if term == "kl term":  # the KL alone: the NFT term scaled to nothing
            objective.adv_clip = 0.0
        try:
            reference = epoch_gradient(trainer, samples, optimality, plan, ())
            found[term] = {
                mode: compare(epoch_gradient(trainer, samples, optimality, plan, views), reference)
                for mode, views in MODES.items()
                if views
            }
        finally:
            objective.kl_weight, objective.adv_clip = saved
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", default="0,20,60", help="epochs of fp32 training at which to measure")
    parser.add_argument("--config", default=str(ROOT / "examples" / "shapes-geneval.toml"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "precision-gradients.json"))
    args = parser.parse_args()
    at = sorted(int(e) for e in args.epochs.split(","))
    overrides = ['train.precision="fp32"', f"train.threads={args.threads}", "log.progress=false"]
    config = load_config(args.config, overrides)
    trainer = Trainer(config, Path("/tmp/nft-precision-gradients"), echo=lambda *_: None)
    results = {}
    for epoch in range(at[-1] + 1):
        trainer.state.epoch = epoch
        if epoch in at:
            results[str(epoch)] = measure(trainer)
            print(json.dumps({epoch: results[str(epoch)]}, indent=1), flush=True)
        trainer.train_epoch()
    payload = {"config": args.config, "epochs": at, "machine": machine_facts(), "results": results}
    Path(args.out).write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
