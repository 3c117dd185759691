"""`benchmarks/epoch.py`: its minimal loop is the trainer's update, written out (same passes, same result)."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import torch

from nft_core.config import load_config
from nft_core.loop.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
_SPEC = importlib.util.spec_from_file_location("bench_epoch", ROOT / "benchmarks" / "epoch.py")
epoch = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(epoch)


def _trainer(fast_config, tmp_path) -> Trainer:
    config = load_config(fast_config, ["objective.kl_weight=0.5"])
    return Trainer(config, tmp_path, echo=lambda *_: None)


def test_minimal_training_updates_the_weights_as_the_trainer_does(fast_config, tmp_path):
    trainer = _trainer(fast_config, tmp_path)
    samples = trainer.collect()
    # mixed optimality: at r = 0.5 everywhere the positive and negative terms cancel at v = v_old
    optimality = torch.tensor([0.9, 0.1, 0.3, 1.0])
    policy = trainer.policy
    with torch.no_grad():  # current, old and reference apart, so the NFT and KL terms both pull
        generator = torch.Generator().manual_seed(0)
        for parameter in policy.model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    # SGD: its step is linear in the gradient; Adam's first step is about lr * sign(g), so float noise in
    # a near-zero gradient would flip whole steps and hide what is compared
    trainer.updater.optimizer = torch.optim.SGD(policy.model.parameters(), lr=0.1)
    trainer.updater.lr_schedule = torch.optim.lr_scheduler.LambdaLR(
        trainer.updater.optimizer, lambda step: 1.0
    )
    start = {
        "model": copy.deepcopy(policy.model.state_dict()),
        "old": copy.deepcopy(policy.old_model.state_dict()),
        "optimizer": copy.deepcopy(trainer.updater.optimizer.state_dict()),
        "ema": {k: v.clone() for k, v in trainer.ema.shadow.items()},
        "generator": trainer.updater.generator.get_state(),
    }
    trainer.updater.step(samples, optimality)
    trainer.refresh_old()
    expected = [
        {k: v.clone() for k, v in state.items()}
        for state in (policy.model.state_dict(), policy.old_model.state_dict(), trainer.ema.shadow)
    ]

    policy.model.load_state_dict(start["model"])
    policy.old_model.load_state_dict(start["old"])
    trainer.updater.optimizer.load_state_dict(start["optimizer"])
    trainer.ema.shadow = start["ema"]
    trainer.updater.generator.set_state(start["generator"])
    trainer.state.global_step -= trainer.geometry.optimizer_steps
    plan = trainer.updater.plan(samples, optimality)
    epoch.minimal_training(trainer, samples, optimality, plan)
    found = [policy.model.state_dict(), policy.old_model.state_dict(), trainer.ema.shadow]

    moved = max((expected[0][k] - start["model"][k]).abs().max() for k in expected[0])
    assert moved > 1e-4  # the update did something to compare
    for want, got in zip(expected, found, strict=True):
        for key in want:
            torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-6, msg=key)


def test_the_benchmark_measures_every_phase_and_the_minimal_loop(fast_config, tmp_path):
    result = epoch.measure("fp32", ["objective.kl_weight=0.5"], repeats=1, config_path=fast_config)
    assert set(result["seconds"]) == {"sampling", "reward", "training"}
    assert set(result["ratio_to_minimal"]) == {"sampling", "training"}
    assert result["network_calls_sampling"] == 3  # euler, 3 steps, one batch of 4 samples
    assert all(value > 0 for value in result["images_per_second"].values())
