"""Checkpoint folders: a write killed at any point, or failing on a full disk, leaves the old or the new
checkpoint loadable and never a broken one; warm starts load a run's weights into a new run."""

from __future__ import annotations

import errno
import os
import pathlib
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from nft_core.config import load_config
from nft_core.errors import ConfigError
from nft_core.loop.trainer import Trainer
from nft_core.state.checkpoints import (
    RESUME_FILE,
    CheckpointWriteError,
    checkpoint_folders,
    latest_checkpoint,
    read_state,
    write_checkpoint,
)

QUIET = ["log.grid_every=0", "eval.baseline_guidance=[]", "eval.every=0", "train.epochs=1"]


class Killed(BaseException):
    """Stands for SIGKILL: no `except Exception` and no cleanup runs after it."""


def loadable(folder: pathlib.Path) -> bool:
    state = read_state(folder)
    load_file(str(folder / RESUME_FILE))
    with safe_open(str(folder / "model.safetensors"), framework="pt") as handle:
        handle.keys()
    return "resume" in state


def kill_at(monkeypatch, operation: int) -> list[int]:
    """Make the `operation`-th file-system step (write, fsync, rename, mkdir, rmtree) raise Killed."""
    count = [0]

    def wrap(function):
        def step(*args, **kwargs):
            count[0] += 1
            if count[0] == operation:
                raise Killed
            return function(*args, **kwargs)

        return step

    for owner, name in [(os, "fsync"), (os, "replace"), (shutil, "rmtree"), (os, "fdopen")]:
        monkeypatch.setattr(owner, name, wrap(getattr(owner, name)))
    for name in ("rename", "mkdir"):
        monkeypatch.setattr(pathlib.Path, name, wrap(getattr(pathlib.Path, name)))
    return count


@pytest.fixture
def trained(fast_config, tmp_path):
    """A finished one-epoch run (its checkpoint at step 2) and its trainer, one more epoch trained."""
    trainer = Trainer(load_config(fast_config, QUIET), tmp_path, echo=lambda *_: None)
    trainer.run()
    trainer.state.epoch = 1
    trainer.train_epoch()
    return trainer


@pytest.mark.parametrize("same_step", [False, True], ids=["new-step", "rewrite-same-step"])
def test_a_checkpoint_write_killed_at_any_point_leaves_the_old_or_the_new(trained, monkeypatch, same_step):
    run_dir = trained.run_dir
    old = latest_checkpoint(run_dir)
    if same_step:
        trained.state.global_step = 2
    operation, outcomes = 1, set()
    while True:
        with monkeypatch.context() as patch:
            count = kill_at(patch, operation)
            try:
                trained.run_state.save()
                finished = True
            except Killed:
                finished = False
        found = latest_checkpoint(run_dir, resumable=True)
        assert found is not None and loadable(found), f"no loadable checkpoint after step {operation}"
        outcomes.add(found.name.removesuffix(".replaced"))  # the old copy, set aside during a rewrite
        if finished:
            break
        assert count[0] == operation
        operation += 1
    assert operation > 8  # every rename, fsync and write of the checkpoint was a kill point
    assert outcomes <= {old.name, f"step_{trained.state.global_step:05d}"}
    assert [f.name for f in checkpoint_folders(run_dir)][-1] == f"step_{trained.state.global_step:05d}"
    assert not any(p.name.endswith((".tmp", ".replaced")) for p in (run_dir / "checkpoints").iterdir())


def test_a_full_disk_during_a_checkpoint_is_one_clear_error_and_the_previous_stays(trained, monkeypatch):
    old = latest_checkpoint(trained.run_dir)
    real = os.fdopen

    class FullFile:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fdopen", lambda fd, mode: FullFile(real(fd, mode)))
    with pytest.raises(
        CheckpointWriteError, match="the disk is full; the last complete checkpoint.*is intact"
    ):
        trained.run_state.save()
    monkeypatch.undo()
    assert latest_checkpoint(trained.run_dir) == old and loadable(old)
    assert [p.name for p in (trained.run_dir / "checkpoints").iterdir()] == [old.name]


def test_write_checkpoint_replaces_a_folder_only_once_the_new_one_is_whole(tmp_path):
    final = tmp_path / "checkpoints" / "step_00001"

    def fill(text):
        def write(folder):
            (folder / "state.json").write_text(text)

        return write

    write_checkpoint(final, fill('{"v": 1}'))
    with pytest.raises(RuntimeError):
        write_checkpoint(final, lambda folder: (_ for _ in ()).throw(RuntimeError("bug in fill")))
    assert read_state(final) == {"v": 1}
    write_checkpoint(final, fill('{"v": 2}'))
    assert read_state(final) == {"v": 2} and sorted(p.name for p in final.parent.iterdir()) == ["step_00001"]


def test_warm_start_loads_the_weights_with_a_fresh_optimizer_and_counters(trained, fast_config, tmp_path):
    source = latest_checkpoint(trained.run_dir)
    saved = load_file(str(source / "model.safetensors"))  # the EMA weights
    overrides = [*QUIET, f'policy.init_from="{trained.run_dir}"']
    lines: list[str] = []
    warm = Trainer(load_config(fast_config, overrides), tmp_path / "warm", echo=lines.append)
    assert any(f"weights from {source}" in line for line in lines)
    for name, parameter in warm.policy.trainable_parameters():
        torch.testing.assert_close(parameter, saved[name], rtol=0, atol=0)
    for name, parameter in warm.policy.old_parameters():
        torch.testing.assert_close(parameter, saved[name], rtol=0, atol=0)
    assert warm.state.global_step == 0 and not warm.updater.optimizer.state
    torch.testing.assert_close(warm.ema.shadow[next(iter(saved))], saved[next(iter(saved))])
    with pytest.raises(ConfigError, match="policy.init_from: .* is not a folder"):
        Trainer(load_config(fast_config, [*QUIET, 'policy.init_from="nowhere"']), tmp_path / "x")
