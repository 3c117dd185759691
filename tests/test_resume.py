"""Resume: a run stopped (SIGTERM, kill -9, or in-process) and resumed ends bitwise where an
uninterrupted run ends; a resume with a changed config is refused; checkpoints are kept or pruned."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from nft_core.cli.app import build_app
from nft_core.config import load_config
from nft_core.errors import ConfigError
from nft_core.loop.trainer import Trainer
from nft_core.state.checkpoints import RESUME_FILE, checkpoint_folders, latest_checkpoint, read_state
from nft_core.state.resume import check_same_run, config_differences

TIMINGS = ("seconds/", "images_per_second", "train_minutes")
# the tiny random model scores 0 on shapes-geneval everywhere (no advantage, so no gradient); JPEG size
# differs from image to image, so the update moves the weights and there is something to compare
QUIET = [
    "log.grid_every=0",
    "eval.baseline_guidance=[]",
    "train.threads=1",
    'reward[0].name="jpeg-compressibility"',
]


def quiet(*_):
    pass


def metrics(run_dir: Path) -> list[dict]:
    """metrics.jsonl without the wall-clock fields (they differ between any two runs)."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith(TIMINGS)} for r in records]


def final_state(run_dir: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the run's last checkpoint: weights, old, EMA, optimizer moments, RNG states."""
    return load_file(str(latest_checkpoint(run_dir) / RESUME_FILE))


def assert_same_run(resumed: Path, reference: Path) -> None:
    a, b = final_state(resumed), final_state(reference)
    assert a.keys() == b.keys()
    assert any(float(a[k].abs().max()) > 0 for k in a if k.startswith("optimizer.") and "exp_avg" in k)
    assert any(k.startswith("optimizer.") for k in a) and any(k.startswith("ema.") for k in a)
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"differ after resuming: {different[:5]}"
    assert metrics(resumed) == metrics(reference)
    assert json.loads((resumed / "summary.json").read_text())["status"] == "finished"


def stop_after(trainer: Trainer, epoch: int) -> None:
    """Make `trainer` behave as if SIGTERM arrived during `epoch`."""
    original = trainer.after_epoch

    def after_epoch(record, samples, scored, last):
        written = original(record, samples, scored, last)
        if trainer.state.epoch == epoch:
            trainer.stop_signal = "SIGTERM"
        return written

    trainer.after_epoch = after_epoch


def test_a_stopped_and_resumed_run_ends_bitwise_as_an_uninterrupted_one(fast_config, tmp_path):
    overrides = [*QUIET, "train.epochs=5", "log.checkpoint_every=2", "eval.every=2"]
    config = load_config(fast_config, overrides)
    Trainer(config, tmp_path / "whole", echo=quiet).run()
    first = Trainer(config, tmp_path / "parts", echo=quiet)
    stop_after(first, 2)  # no periodic checkpoint at epoch 2: the stop writes one
    summary = first.run()
    assert summary["status"] == "interrupted" and summary["stopped_by"] == "SIGTERM"
    checkpoint = latest_checkpoint(tmp_path / "parts", resumable=True)
    assert read_state(checkpoint)["epoch"] == 2
    Trainer(config, tmp_path / "parts", echo=quiet).run(resume=checkpoint)
    assert_same_run(tmp_path / "parts", tmp_path / "whole")


def test_resuming_a_finished_run_with_more_epochs_trains_on(fast_config, tmp_path):
    config = load_config(fast_config, [*QUIET, "train.epochs=2"])
    Trainer(config, tmp_path, echo=quiet).run()
    lines = []
    summary = Trainer(config, tmp_path, echo=lines.append).run(resume=latest_checkpoint(tmp_path))
    assert any("already finished" in line for line in lines) and summary["status"] == "finished"
    longer = load_config(fast_config, [*QUIET, "train.epochs=3"])
    summary = Trainer(longer, tmp_path, echo=quiet).run(resume=latest_checkpoint(tmp_path))
    assert summary["epochs"] == 3 and read_state(latest_checkpoint(tmp_path))["epoch"] == 2


def test_a_changed_config_is_refused_with_the_keys_named(fast_config, tmp_path):
    config = load_config(fast_config, [*QUIET, "train.epochs=1"])
    Trainer(config, tmp_path, echo=quiet).run()
    check_same_run(tmp_path, load_config(fast_config, [*QUIET, "train.epochs=4", "log.progress=true"]))
    with pytest.raises(
        ConfigError, match=r"reward\[0\]\.weight \(1\.0 -> 2\.0\); train\.lr \(0\.0003 -> 0\.001\)"
    ):
        check_same_run(tmp_path, load_config(fast_config, [*QUIET, "train.lr=1e-3", "reward[0].weight=2"]))
    scheduled = {"train": {"lr_schedule": "cosine", "epochs": 2}}
    assert config_differences(scheduled, {"train": {"lr_schedule": "cosine", "epochs": 3}}) == [
        "train.epochs (2 -> 3)"
    ]


def test_checkpoints_beyond_keep_are_pruned_but_the_best_stays(fast_config, tmp_path):
    overrides = [*QUIET, "train.epochs=6", "log.checkpoint_every=1", "eval.every=1", "log.keep_checkpoints=2"]
    Trainer(load_config(fast_config, overrides), tmp_path, echo=quiet).run()
    folders = checkpoint_folders(tmp_path)
    scores = {f.name: read_state(f)["eval_score"] for f in folders}
    assert 2 <= len(folders) <= 3 and folders[-1].name == "step_00012"
    assert all(score is not None for score in scores.values())


def test_cli_resume_auto_starts_fresh_then_resumes(fast_config, tmp_path):
    runner, app = CliRunner(), build_app()
    base = ["run", str(fast_config), "--out", str(tmp_path), *sum((["--set", o] for o in QUIET), [])]
    result = runner.invoke(app, [*base, "--set", "train.epochs=1", "--resume", "auto"])
    assert result.exit_code == 0, result.output
    assert "a new run" in result.output and (tmp_path / "tiny" / "summary.json").is_file()
    result = runner.invoke(app, [*base, "--set", "train.epochs=2", "--resume", "auto"])
    assert result.exit_code == 0, result.output
    assert "resumed from" in result.output and not (tmp_path / "tiny-2").exists()
    result = runner.invoke(app, [*base, "--set", "train.lr=0.1", "--resume", str(tmp_path / "tiny")])
    assert result.exit_code == 2 and "train.lr" in result.output and "Traceback" not in result.output


# ---- the real thing: separate processes, killed -------------------------------------------------------

LONG = [*QUIET, "train.epochs=60", "eval.every=0", "log.checkpoint_every=5", "log.keep_checkpoints=2"]


def nft_run(config: Path, out: Path, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "nft_core.cli", "run", str(config), "--out", str(out)]
    for override in LONG:
        command += ["--set", override]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen(
        [*command, *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True
    )


def wait_for_checkpoint(process: subprocess.Popen, run_dir: Path, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while latest_checkpoint(run_dir, resumable=True) is None:
        assert process.poll() is None, f"the run ended before its first checkpoint:\n{process.stdout.read()}"
        assert time.time() < deadline, "no checkpoint in time"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_checkpoint) -> tuple[Path, Path]:
    from conftest import FAST_CONFIG

    folder = tmp_path_factory.mktemp("whole")
    config = folder / "fast.toml"
    config.write_text(FAST_CONFIG.format(checkpoint=tiny_checkpoint))
    process = nft_run(config, folder / "runs")
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output
    return config, folder / "runs" / "tiny"


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_a_killed_nft_run_resumes_to_the_uninterrupted_result(uninterrupted, tmp_path, how):
    config, reference = uninterrupted
    process = nft_run(config, tmp_path)
    wait_for_checkpoint(process, tmp_path / "tiny")
    process.send_signal(getattr(signal, how))
    output, _ = process.communicate(timeout=120)
    if how == "SIGTERM":  # a clean stop at the end of the epoch, with a checkpoint and the way back
        assert process.returncode == 0, output
        assert "resume with: nft run" in output and "Traceback" not in output
        assert json.loads((tmp_path / "tiny" / "summary.json").read_text())["status"] == "interrupted"
    else:
        assert process.returncode == -signal.SIGKILL
    assert latest_checkpoint(tmp_path / "tiny", resumable=True) is not None
    resumed = nft_run(config, tmp_path, "--resume", str(tmp_path / "tiny"))
    output, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, output
    assert_same_run(tmp_path / "tiny", reference)
