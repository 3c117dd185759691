"""A run never fails in silence: non-finite config numbers are refused, a diverged run stops loudly with its
last good checkpoint, alarms land in every output, and the best evaluation's checkpoint is kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from nft_core import plugins, registry
from nft_core.cli.app import build_app
from nft_core.config import load_config
from nft_core.hookspecs import hookimpl
from nft_core.loop.trainer import Trainer
from nft_core.loop.update import Updater
from nft_core.state.checkpoints import best_checkpoint, checkpoint_folders, read_state

runner = CliRunner()
QUIET = ["log.grid_every=0", "eval.baseline_guidance=[]"]


@pytest.mark.parametrize(
    "override",
    ["train.lr=inf", "train.lr=nan", "objective.beta=inf", "train.weight_decay=-inf",
     "objective.adv_clip=inf", "reward[0].options={outcome='partial', scale=inf}", "train.betas=[0.9, nan]"],
)  # fmt: skip
def test_a_non_finite_number_is_one_config_line_before_anything_loads(
    fast_config, tmp_path, override, monkeypatch
):
    from nft_core.loop import setup

    monkeypatch.setattr(setup, "build_policy", lambda *a: pytest.fail("a model was loaded"))
    result = runner.invoke(
        build_app(), ["run", str(fast_config), "--set", override, "--out", str(tmp_path / "r")]
    )
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    key = override.split("=")[0]
    assert lines[0].startswith(f"error: {fast_config}: {key}") and "must be a finite number" in lines[0]
    assert not (tmp_path / "r").exists()


class Recorder:
    """A tracker that keeps what it was told."""

    name = "recorder"
    seen: list = []

    def start(self, run_dir, config, run_name, first_step=0):
        self.seen.append(("start",))

    def log_scalars(self, step, scalars):
        self.seen.append(("scalars", step, dict(scalars)))

    def log_image(self, step, tag, image):
        pass

    def finish(self, status):
        self.seen.append(("finish", status))


class _RecorderPlugin:
    @staticmethod
    @hookimpl
    def register_trackers(register):
        register("recorder", Recorder)


@pytest.fixture
def recorder():
    Recorder.seen = []
    plugins.load_plugins()
    plugins.pm.register(_RecorderPlugin, name="nft-test-recorder")
    registry.clear_cache()
    yield Recorder.seen
    plugins.pm.unregister(name="nft-test-recorder")
    registry.clear_cache()


def test_a_far_too_large_lr_ends_as_diverged_with_a_resumable_last_good_checkpoint(
    fast_config, tmp_path, recorder
):
    out = tmp_path / "runs"
    args = ["run", str(fast_config), "--out", str(out), "--set", "train.lr=1e36", "--set", "train.epochs=8"]
    args += ["--set", 'log.trackers=["recorder"]', *(x for q in QUIET for x in ("--set", q))]
    result = runner.invoke(build_app(), args)
    assert result.exit_code == 1, result.output
    error = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "the run diverged at epoch" in error[0] and "last good checkpoint" in error[0]
    run_dir = out / "tiny"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "diverged" and "non-finite" in summary["reason"]
    good = summary["last_good_checkpoint"]
    assert good and good in error[0]
    report = (run_dir / "report.html").read_text()
    assert '<span class="status-diverged">diverged</span>' in report and "last good checkpoint" in report
    assert ("finish", "diverged") in recorder
    # the last good state is the one before the step that broke the model: finite, and it resumes
    config = load_config(fast_config, ["train.lr=1e36", "train.epochs=8", *QUIET])
    trainer = Trainer(config, run_dir, echo=lambda *_: None)
    trainer.run_state.restore(run_dir / "checkpoints" / good.rsplit("/", 1)[-1])
    assert all(torch.isfinite(p).all() for _, p in trainer.policy.trainable_parameters())
    base = Trainer(load_config(fast_config, QUIET), tmp_path / "base", echo=lambda *_: None)
    for (_, a), (_, b) in zip(
        base.policy.trainable_parameters(), trainer.policy.trainable_parameters(), strict=True
    ):
        assert torch.equal(a, b)  # lr 1e36 broke the very first step: the last good weights are the base's


def test_steps_that_leave_a_weight_non_finite_are_undone_and_end_the_run_as_diverged(fast_config, tmp_path):
    trainer = Trainer(load_config(fast_config, [*QUIET, "train.epochs=4"]), tmp_path, echo=lambda *_: None)
    before = [p.detach().clone() for _, p in trainer.policy.trainable_parameters()]
    step = trainer.updater.optimizer.step

    def overflowing(*args, **kwargs):
        result = step(*args, **kwargs)
        with torch.no_grad():
            next(iter(trainer.policy.trainable_parameters()))[1].view(-1)[0] = torch.inf
        return result

    trainer.updater.optimizer.step = overflowing
    summary = trainer.run()
    assert summary["status"] == "diverged" and "3 undone" in summary["reason"]
    after = [p for _, p in trainer.policy.trainable_parameters()]
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))  # every step undone
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["undone_steps"] for r in records if r["kind"] == "train"] == [2]
    assert (
        read_state(checkpoint_folders(tmp_path)[-1])["written_for"] == "diverged"
        or summary["last_good_checkpoint"]
    )


def test_an_alarm_is_a_warning_a_record_a_curve_mark_a_report_section_and_a_tracker_scalar(
    fast_config, tmp_path, recorder, brightness_reward
):
    # old = current at every collection and one step an epoch: |v - v_old| is exactly 0 (NFT degenerates)
    learns = ['reward[0]={name="brightness", normalize="group-zscore"}', "train.lr=1e-2", "train.epochs=4"]
    overrides = [*QUIET, *learns, 'objective.old_decay="none"', "train.optimizer_steps_per_epoch=1"]
    lines: list[str] = []
    config = load_config(fast_config, [*overrides, 'log.trackers=["recorder"]'])
    Trainer(config, tmp_path, echo=lines.append).run()
    assert any(line.startswith("warning: alarm stalled_gap at epoch 2:") for line in lines)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    alarms = [r for r in records if r["kind"] == "alarm"]
    assert [(r["name"], r["epoch"], r["alarm/stalled_gap"]) for r in alarms] == [("stalled_gap", 2, 1)]
    assert "stalled_gap" in (tmp_path / "report.html").read_text()
    assert any(kind == "scalars" and scalars.get("alarm/stalled_gap") == 1.0 for kind, *_, scalars in
               (e for e in recorder if e[0] == "scalars"))  # fmt: skip
    # the reference's decay schedule sounds nothing
    Trainer(load_config(fast_config, [*QUIET, *learns]), tmp_path / "ok", echo=lines.append).run()
    healthy = [json.loads(line) for line in (tmp_path / "ok" / "metrics.jsonl").read_text().splitlines()]
    assert not [r for r in healthy if r["kind"] == "alarm"]
    assert all("velocity_norm_ratio" not in r for r in healthy if r["kind"] == "train")  # v_ref is 0 here


def test_the_velocity_probe_runs_every_probe_every_epochs(fast_config, tmp_path, monkeypatch):
    probed: list[int] = []

    def probe(updater, samples) -> float:
        probed.append(updater.counters.epoch)
        return 1.0 + updater.counters.epoch

    monkeypatch.setattr(Updater, "velocity_norm_ratio", probe)
    overrides = [*QUIET, "train.epochs=5", "alarms.probe_every=2", "log.checkpoint_every=0"]
    config = load_config(fast_config, overrides)
    Trainer(config, tmp_path, echo=lambda *_: None).run()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    ratios = {r["epoch"]: r.get("velocity_norm_ratio") for r in records if r["kind"] == "train"}
    assert probed == [0, 2, 4]
    assert ratios == {0: 1.0, 1: None, 2: 3.0, 3: None, 4: 5.0}


def test_the_best_evaluation_keeps_its_checkpoint_and_best_picks_it(fast_config, tmp_path):
    overrides = [*QUIET, "train.epochs=4", "log.checkpoint_every=0", "eval.every=1", "log.keep_checkpoints=1"]
    summary = Trainer(load_config(fast_config, overrides), tmp_path, echo=lambda *_: None).run()
    best = summary["eval_best"]
    assert best["reward"] == "shapes-geneval" and best["score"] == max(
        r["eval/shapes-geneval/score"]
        for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines())
        if r["kind"] == "eval" and r["label"] != "before"
    )
    folders = checkpoint_folders(tmp_path)
    assert str(best_checkpoint(tmp_path)) == best["checkpoint"] and len(folders) <= 2  # the best, the final
    assert read_state(best_checkpoint(tmp_path))["eval_score"] == best["score"]
    out = tmp_path / "best-samples"
    result = runner.invoke(
        build_app(), ["sample", str(tmp_path), "--best", "--prompts", "shapes:eval-1", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert json.loads((out / "sample.json").read_text())["checkpoint"] == best["checkpoint"]


def test_best_by_names_a_reward_and_is_checked(fast_config):
    from nft_core.errors import ConfigError

    with pytest.raises(
        ConfigError, match="log.best_by: 'held' is not a reward's label; allowed: shapes-geneval"
    ):
        load_config(fast_config, ['log.best_by="held"'])


def test_the_revert_guard_puts_back_the_best_weights_and_anchors_harder(fast_config, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    import nft_core.loop.trainer as trainer_module
    from nft_core.state.checkpoints import RESUME_FILE

    scripted = iter([0.5, 0.6, 0.5, 0.55, 0.7])  # before, epochs 0-2, after: epoch 1 falls 0.1 from 0.6
    real = trainer_module.evaluate

    def evaluate(*args, **kwargs):
        result = real(*args, **kwargs)
        result.scores["shapes-geneval"]["score"] = next(scripted)
        return result

    monkeypatch.setattr(trainer_module, "evaluate", evaluate)
    overrides = [*QUIET, "train.epochs=4", "eval.every=1", "objective.kl_weight=0.5"]
    overrides += ["train.revert_on_drop=0.05", "train.revert_kl_factor=3"]
    lines = []
    trainer = Trainer(load_config(fast_config, overrides), tmp_path, echo=lines.append)
    restored = []
    restore = trainer.reverter.restore

    def recording(folder, only):
        restore(folder, only)
        current = {name: p.detach().clone() for name, p in trainer.policy.trainable_parameters()}
        restored.append((folder, only, current, trainer.state.epoch))

    trainer.reverter.restore = recording
    summary = trainer.run()
    ((folder, only, current, epoch),) = restored
    assert epoch == 1 and read_state(folder)["eval_score"] == 0.6  # the best checkpoint then: epoch 0
    assert set(only) == {"current", "old", "ema", "optimizer", "scaler"}  # not the counters or prompts
    saved = load_file(str(folder / RESUME_FILE))
    assert all(torch.equal(value, saved[f"current.{name}"]) for name, value in current.items())
    assert trainer.objective.kl_weight == 1.5 and any("reverted to" in line for line in lines)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    (revert,) = [r for r in records if r["kind"] == "revert"]
    assert revert["epoch"] == 1 and revert["revert/to_epoch"] == 0 and revert["revert/kl_weight"] == 1.5
    assert summary["epochs"] == 4  # the epochs go on
    final = read_state(Path(summary["checkpoint"]))["resume"]["reverter"]
    assert final == {"kl_factor": 3.0, "reverts": 1}  # a resumed run keeps the harder anchor


def test_the_revert_guard_needs_the_best_checkpoint(fast_config):
    from nft_core.errors import ConfigError

    with pytest.raises(ConfigError, match="train.revert_on_drop: reverting needs the best checkpoint"):
        load_config(fast_config, ["train.revert_on_drop=0.05", "eval.every=0"])
