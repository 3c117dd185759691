"""The whole loop on a tiny random shapes-tiny model: run directory, summary, checkpoints, CLI."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from nft_core.cli.app import build_app
from nft_core.config import load_config
from nft_core.loop.trainer import Trainer
from nft_shapes.policy import ShapesTinyPolicy

runner = CliRunner()


def test_run_writes_the_run_directory(fast_config, tmp_path, tiny_checkpoint):
    config = load_config(fast_config)
    trainer = Trainer(config, tmp_path / "run", echo=lambda *_: None)
    old_before = [p.clone() for p in trainer.policy.old_model.parameters()]
    trainer.run()
    run = tmp_path / "run"
    for name in (
        "config.resolved.toml",
        "metrics.jsonl",
        "curves.png",
        "summary.json",
        "samples/epoch_0000.png",
    ):
        assert (run / name).is_file(), name
    saved = json.loads((run / "summary.json").read_text())
    assert saved["eval_before"]["shapes-geneval"]["official"]["counts"]["counting"] == 9
    assert set(saved["eval_before_cfg"]) == {"2"}
    assert "eval_after" in saved and saved["optimizer_steps"] == 4 and saved["wall_seconds"] > 0
    phases = saved["seconds_per_phase"]
    assert set(phases) == {"sampling", "reward", "training", "evaluation"} and min(phases.values()) > 0
    assert sum(phases[p] for p in ("sampling", "reward", "training")) == pytest.approx(saved["train_seconds"])
    per_epoch = saved["seconds_per_epoch"]
    assert per_epoch == pytest.approx({p: phases[p] / 2 for p in ("sampling", "reward", "training")})
    assert saved["precision"] == "fp32"
    assert saved["machine"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert len(train) == 2
    for key in (
        "reward/shapes-geneval/raw_mean",
        "reward/shapes-geneval/normalized_mean",
        "advantage/std",
        "loss",
        "seconds/sampling",
        "seconds/reward",
        "seconds/training",
        "images_per_second",
    ):
        assert key in train[0], key
    assert [r["label"] for r in records if r["kind"] == "eval"] == ["before", "epoch 0", "after"]
    # the old policy moved towards the trained one; the reference stayed the base model
    assert any(
        not torch.equal(a, b) for a, b in zip(old_before, trainer.policy.old_model.parameters(), strict=True)
    )
    base = ShapesTinyPolicy(str(tiny_checkpoint))
    for a, b in zip(base.model.parameters(), trainer.policy.reference_model.parameters(), strict=True):
        assert torch.equal(a, b)
    # checkpoints are complete directories (no leftover staging) that load back
    checkpoints = sorted((run / "checkpoints").iterdir())
    assert [c.name for c in checkpoints] == ["step_00002", "step_00004"]
    reloaded = ShapesTinyPolicy(str(tiny_checkpoint))
    reloaded.load_trainable(str(checkpoints[-1]))
    with trainer.ema.swapped_in(trainer.policy.trainable_parameters()):
        for a, b in zip(reloaded.model.parameters(), trainer.policy.model.parameters(), strict=True):
            assert torch.equal(a, b)


def test_cli_run_and_validate(fast_config, tmp_path):
    app = build_app()
    result = runner.invoke(app, ["validate", str(fast_config)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        app, ["run", str(fast_config), "--set", "train.epochs=1", "--out", str(tmp_path / "runs")]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "runs" / "tiny" / "summary.json").is_file()
    result = runner.invoke(
        app, ["run", str(fast_config), "--set", "train.epochs=1", "--out", str(tmp_path / "runs")]
    )
    assert (tmp_path / "runs" / "tiny-2" / "summary.json").is_file(), (
        "a second run never overwrites the first"
    )


def test_cli_config_errors_exit_2_with_one_line(fast_config, tmp_path):
    app = build_app()
    for args in (
        ["validate", str(fast_config), "--set", "train.bogus=1"],
        ["run", str(fast_config), "--set", "reward[0].name='nope'", "--out", str(tmp_path)],
        ["validate", str(tmp_path / "missing.toml")],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert not any(tmp_path.glob("tiny*")), "nothing is written for an invalid config"


def test_plugins_lists_builtins_as_json():
    result = runner.invoke(build_app(), ["plugins"])
    assert result.exit_code == 0, result.output
    listing = json.loads(result.output)
    by_name = {p["name"]: p for p in listing["plugins"]}
    assert by_name["nft_shapes.plugin"]["registers"]["policies"] == ["shapes-tiny"]
    assert "euler" in by_name["nft_solvers.plugin"]["registers"]["solvers"]
    assert by_name["nft_core.builtin_plugin"]["distribution"] == "diffusion-nft"
    assert "register_rewards" in by_name["nft_rewards.plugin"]["hooks"]


def test_more_optimizer_steps_than_micro_batches_is_a_config_error(fast_config, tmp_path):
    import pytest

    from nft_core.errors import ConfigError

    config = load_config(fast_config, ["train.optimizer_steps_per_epoch=100"])
    with pytest.raises(ConfigError, match="train.optimizer_steps_per_epoch: 100 exceeds the 2 micro-batches"):
        Trainer(config, tmp_path / "run", echo=lambda *_: None)


def test_one_reward_twice_under_an_alias_trains_and_reports_both(fast_config, tmp_path):
    """Mixed outcomes of one reward (e.g. strict + partial GenEval) are two terms named by their labels."""
    extra = ["reward[1]={name='shapes-geneval', alias='strict', weight=0.5, options={outcome='strict'}}"]
    config = load_config(fast_config, extra)
    Trainer(config, tmp_path / "run", echo=lambda *_: None).run()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert {"reward/shapes-geneval/raw_mean", "reward/strict/raw_mean"} <= set(train[0])
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert set(summary["eval_after"]) == {"shapes-geneval", "strict"}
    assert set(summary["eval_after"]["strict"]["official"]["per_tag"]) == set(
        summary["eval_after"]["shapes-geneval"]["official"]["per_tag"]
    )


def test_tag_weights_set_each_tags_share_of_the_epoch(fast_config, tmp_path):
    import pytest

    from nft_core.errors import ConfigError

    overrides = ["data.prompts_per_epoch=16", "data.tag_weights={position=3, color_attr=2}"]
    trainer = Trainer(load_config(fast_config, overrides), tmp_path / "run", echo=lambda *_: None)
    tags = [item.metadata["tag"] for epoch in range(3) for item in trainer.prompts.draw(epoch)]
    shares = {tag: tags.count(tag) for tag in set(tags)}
    # one period is 3 + 2 + 4 x 1 = 9 draws; 48 draws are 5 periods and 3 draws
    assert shares["position"] in (15, 16, 17, 18) and shares["color_attr"] in (10, 11, 12)
    assert all(shares[tag] in (5, 6) for tag in ("single_object", "two_object", "counting", "colors"))
    unweighted = Trainer(load_config(fast_config), tmp_path / "plain", echo=lambda *_: None)
    assert unweighted.prompts.tag_cycle == sorted(shares)

    with pytest.raises(ConfigError, match="data.tag_weights: unknown tag 'postion'; tags of shapes:train: "):
        Trainer(load_config(fast_config, ["data.tag_weights={postion=2}"]), tmp_path / "bad", echo=print)
    with pytest.raises(ConfigError, match="needs data.balance_tags = true"):
        overrides = ["data.tag_weights={position=2}", "data.balance_tags=false"]
        Trainer(load_config(fast_config, overrides), tmp_path / "bad2", echo=print)
    with pytest.raises(ConfigError, match=r"data.tag_weights.*whole numbers >= 1"):
        load_config(fast_config, ["data.tag_weights={position=0}"])


def test_bf16_runs_collection_and_update_under_autocast_and_eval_in_fp32(fast_config, tmp_path):
    config = load_config(fast_config, ['train.precision="bf16"', "objective.kl_weight=1.0"])
    trainer = Trainer(config, tmp_path / "run", echo=lambda *_: None)
    seen: list[tuple[str, torch.dtype]] = []
    velocity = trainer.policy.velocity

    def recording(view, x_t, t, cond):
        out = velocity(view, x_t, t, cond)
        seen.append((view, out.dtype))
        return out

    trainer.policy.velocity = recording
    samples = trainer.collect()
    assert samples.latents.dtype == torch.float32 and {d for _, d in seen} == {torch.bfloat16}
    before = [p.detach().clone() for _, p in trainer.policy.trainable_parameters()]
    seen.clear()
    losses = trainer.updater.step(samples, torch.linspace(0, 1, len(samples)))
    assert {view for view, _ in seen} == {"old", "current", "reference"}
    assert {d for _, d in seen} == {torch.bfloat16}
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    after = [p for _, p in trainer.policy.trainable_parameters()]
    assert all(p.dtype == torch.float32 for p in after)  # master weights stay fp32
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
    seen.clear()
    trainer.evaluate("eval")
    assert seen and {d for _, d in seen} == {torch.float32}


def test_training_times_come_from_the_collection_grid_or_the_config(fast_config, tmp_path):
    default = Trainer(load_config(fast_config), tmp_path / "a", echo=lambda *_: None)
    assert default.train_times.tolist() == default.solver.default_grid()[:-1].tolist()
    assert default.train_times.tolist() == pytest.approx([1.0, 2 / 3, 1 / 3])
    overrides = ["objective.times=[0.5, 0.9]", "objective.timestep_fraction=1.0"]
    trainer = Trainer(load_config(fast_config, overrides), tmp_path / "b", echo=lambda *_: None)
    assert trainer.train_times.tolist() == [0.9, 0.5] and trainer.geometry.trained_times == 2
    seen = []
    loss = trainer.objective.loss

    def recording(policy, x0, cond, t, optimality, generator=None):
        seen.extend(t.tolist())
        return loss(policy, x0, cond, t, optimality, generator)

    trainer.objective.loss = recording
    samples = trainer.collect()
    trainer.updater.step(samples, torch.full((len(samples),), 0.5))
    assert sorted(seen) == pytest.approx([0.5] * len(samples) + [0.9] * len(samples))


def test_trained_times_counts_the_times_per_sample_directly(fast_config, tmp_path):
    from nft_core.errors import ConfigError

    trainer = Trainer(
        load_config(fast_config, ["objective.trained_times=1", "train.optimizer_steps_per_epoch=1"]),
        tmp_path,
        echo=lambda *_: None,
    )
    assert trainer.geometry.trained_times == 1 and trainer.geometry.grid_times == 3
    with pytest.raises(ConfigError, match=r"objective.trained_times: 4 exceeds the 3 training times"):
        Trainer(load_config(fast_config, ["objective.trained_times=4"]), tmp_path / "b", echo=print)
    with pytest.raises(ConfigError, match=r"timestep_fraction \(a share\), not both"):
        load_config(fast_config, ["objective.trained_times=1", "objective.timestep_fraction=0.5"])


def test_the_lr_schedule_runs_over_the_epochs_optimizer_steps(fast_config, tmp_path):
    import json

    overrides = ['train.lr_schedule="linear"', "train.lr_final=0.5", "train.lr=1e-3"]
    Trainer(load_config(fast_config, overrides), tmp_path, echo=lambda *_: None).run()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    # 2 epochs x 2 steps: the steps use 1, 5/6, 4/6, 3/6 of lr; each record holds the next step's rate
    assert [r["lr"] for r in records if r["kind"] == "train"] == pytest.approx([1e-3 * 4 / 6, 1e-3 * 0.5])


def test_a_checkpoint_replaces_the_staging_folder_a_killed_write_left(fast_config, tmp_path):
    trainer = Trainer(load_config(fast_config), tmp_path, echo=lambda *_: None)
    stale = tmp_path / "checkpoints" / "step_00000.tmp"
    stale.mkdir(parents=True)
    (stale / "half-written.bin").write_bytes(b"\0" * 10)
    final = trainer.run_state.save()
    assert final.name == "step_00000" and not stale.exists()
    assert sorted(p.name for p in final.iterdir()) == [
        "model.safetensors",
        "resume.safetensors",
        "state.json",
    ]


def test_the_evaluation_samples_with_the_configured_cfg_scale(fast_config, tmp_path, monkeypatch):
    import nft_core.loop.trainer as trainer_module

    trainer = Trainer(load_config(fast_config, ["eval.guidance=3.0"]), tmp_path / "a", echo=lambda *_: None)
    scales = []
    sample = trainer_module.evaluate

    def recording(*args, guidance, **kwargs):
        scales.append(guidance)
        return sample(*args, guidance=guidance, **kwargs)

    monkeypatch.setattr(trainer_module, "evaluate", recording)
    configured = trainer.evaluate("cfg").scores
    assert trainer.evaluate("asked", guidance=3.0).scores == configured  # the same fixed noise
    trainer.evaluate("cfg-free", guidance=1.0)
    assert scales == [3.0, 3.0, 1.0]
