"""Fault injection: a reward that returns NaN / inf for some samples, raises for a batch, or leaves an
epoch with nothing valid, and a non-finite loss: the run finishes with finite weights and counts."""

from __future__ import annotations

import json
import math

import pytest
import torch
from pydantic import BaseModel, ConfigDict
from safetensors.torch import load_file

from nft_core import plugins, registry
from nft_core.config import load_config
from nft_core.hookspecs import hookimpl
from nft_core.loop.trainer import Trainer
from nft_core.state.checkpoints import RESUME_FILE, latest_checkpoint
from nft_core.types import Aggregate, RewardOutput


class FaultyOptions(BaseModel):
    """When the `faulty` reward misbehaves; calls are counted from 1, retries and evaluations included."""

    model_config = ConfigDict(extra="forbid")

    nan_every: int = 0
    inf_every: int = 0
    raise_on_calls: list[int] = []
    all_nan_on_calls: list[int] = []


class Faulty:
    """Brightness (the mean pixel), with NaN, inf and exceptions injected on schedule."""

    name = "faulty"
    native_range = (0.0, 1.0)
    higher_is_better = True
    deterministic = True

    def __init__(self, **options):
        self.options = FaultyOptions(**options)
        self.calls = 0

    def __call__(self, images, prompts, metadata=None):
        self.calls += 1
        opts = self.options
        if self.calls in opts.raise_on_calls:
            raise RuntimeError(f"reward server unreachable (call {self.calls})")
        scores = images.float().mean(dim=(1, 2, 3))
        index = torch.arange(len(scores))
        if opts.nan_every:
            scores[index % opts.nan_every == 0] = math.nan
        if opts.inf_every:
            scores[index % opts.inf_every == 1] = math.inf
        if self.calls in opts.all_nan_on_calls:
            scores[:] = math.nan
        return RewardOutput(scores=scores)

    def aggregate(self, output, prompts, metadata=None):
        return Aggregate.mean(output)

    def to(self, device):
        return self


class _FaultyPlugin:
    @staticmethod
    @hookimpl
    def register_rewards(register):
        register("faulty", Faulty, FaultyOptions, "test reward with injected faults")


@pytest.fixture
def faulty_reward():
    plugins.load_plugins()
    plugins.pm.register(_FaultyPlugin, name="nft-faulty")
    registry.clear_cache()
    yield
    plugins.pm.unregister(name="nft-faulty")
    registry.clear_cache()


BASE = ["log.grid_every=1", "eval.baseline_guidance=[]", "eval.every=0", "train.epochs=4"]


def run(fast_config, tmp_path, options: str, lines: list[str] | None = None) -> list[dict]:
    overrides = [
        *BASE,
        'reward[0].name="faulty"',
        'reward[0].normalize="none"',
        f"reward[0].options={options}",
    ]
    summary = Trainer(
        load_config(fast_config, overrides), tmp_path, echo=(lines if lines is not None else []).append
    ).run()
    assert summary["status"] == "finished"
    weights = load_file(str(latest_checkpoint(tmp_path) / RESUME_FILE))
    assert all(torch.isfinite(v).all() for k, v in weights.items() if k.startswith(("current.", "ema.")))
    return [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]


def train(records):
    return [r for r in records if r["kind"] == "train"]


@pytest.mark.parametrize("options", ["{nan_every = 2}", "{inf_every = 3}"], ids=["nan", "inf"])
def test_non_finite_scores_for_some_samples_leave_training_and_are_counted(
    fast_config, tmp_path, faulty_reward, options
):
    records = train(run(fast_config, tmp_path, options))
    excluded = 2 if "nan" in options else 1  # of the 4 samples of an epoch
    assert [r["reward/faulty/invalid"] for r in records] == [excluded] * 4
    assert [r["samples/excluded"] for r in records] == [excluded] * 4
    assert all(math.isfinite(r["reward/faulty/raw_mean"]) for r in records)
    assert all(r["skipped_steps"] == 0 and r["step"] > 0 for r in records)


def test_a_reward_that_raises_is_retried_then_its_batch_is_excluded(fast_config, tmp_path, faulty_reward):
    # call 1: the evaluation before; 2: epoch 0 (fails, the retry 3 succeeds); 4, 5: epoch 1 fails twice
    lines: list[str] = []
    records = train(run(fast_config, tmp_path, "{raise_on_calls = [2, 4, 5]}", lines))
    assert records[0]["reward/faulty/failed_calls"] == 1 and records[0]["samples/excluded"] == 0
    assert records[1]["reward/faulty/failed_calls"] == 2 and records[1]["samples/excluded"] == 4
    assert records[1]["skipped_epoch"] == 1 and records[1]["step"] == records[0]["step"]
    assert "reward/faulty/failed_calls" not in records[2] and records[2]["step"] > records[1]["step"]
    assert any("reward 'faulty' raised 2 time(s)" in line and "excluded" in line for line in lines)
    assert sum("no sample has a valid score" in line for line in lines) == 1


def test_an_epoch_with_no_valid_sample_makes_no_update(fast_config, tmp_path, faulty_reward):
    records = train(run(fast_config, tmp_path, "{all_nan_on_calls = [3]}"))
    assert records[1]["samples/excluded"] == 4 and records[1]["reward/faulty/raw_mean"] is None
    assert records[1]["step"] == records[0]["step"] and "non_finite" in records[1]


def test_an_evaluation_whose_reward_raises_twice_is_recorded_and_the_run_goes_on(
    fast_config, tmp_path, faulty_reward
):
    records = run(fast_config, tmp_path, "{raise_on_calls = [1, 2]}")
    before = records[0]
    assert before["kind"] == "eval" and before["eval/faulty/score"] is None
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert "RuntimeError" in summary["eval_before"]["faulty"]["error"]


def test_a_non_finite_loss_skips_its_optimizer_step(fast_config, tmp_path):
    trainer = Trainer(load_config(fast_config, BASE), tmp_path, echo=lambda *_: None)
    loss = trainer.objective.loss
    calls = []

    def poisoned(*args, **kwargs):
        value, stats = loss(*args, **kwargs)
        calls.append(1)
        return (value * math.nan if len(calls) == 2 else value), stats

    trainer.objective.loss = poisoned
    trainer.run()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped_steps"] for r in records if r["kind"] == "train"] == [1, 0, 0, 0]
    assert all(torch.isfinite(p).all() for _, p in trainer.policy.trainable_parameters())
    assert all(torch.isfinite(v).all() for v in trainer.ema.shadow.values())


def test_a_run_that_fails_writes_its_summary_with_the_error_and_last_checkpoint(fast_config, tmp_path):
    trainer = Trainer(
        load_config(fast_config, [*BASE, "log.checkpoint_every=1"]), tmp_path, echo=lambda *_: None
    )
    loss = trainer.objective.loss

    def breaks_in_epoch_2(*args, **kwargs):
        if trainer.state.epoch == 2:
            raise RuntimeError("CUDA out of memory (simulated)")
        return loss(*args, **kwargs)

    trainer.objective.loss = breaks_in_epoch_2
    with pytest.raises(RuntimeError, match="out of memory"):
        trainer.run()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["epoch"] == 2
    assert summary["error"] == "RuntimeError: CUDA out of memory (simulated)"
    assert summary["last_checkpoint"] == str(latest_checkpoint(tmp_path, resumable=True))
    assert summary["last_checkpoint"].endswith("step_00004") and "eval_before" in summary
