"""`torchrun` on this CPU (gloo): 2 ranks train as 1 rank does with the same global batch, a 2-rank run
resumes on 1 or 2 ranks, and a rank that dies ends the job promptly."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nft_core.state.checkpoints import RESUME_FILE, latest_checkpoint, read_resume_tensors, read_state
from nft_core.state.sharded import SHARDS_FOLDER
from tests._torchrun import finish, kill_job, nft_command, start

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="torchrun with gloo: Linux and macOS")

COMMON = [
    "log.grid_every=0",
    "eval.baseline_guidance=[]",
    "train.threads=1",
    "eval.every=0",
    # the tiny random model scores 0 on shapes-geneval everywhere (no advantage, no gradient): JPEG size
    # differs from image to image
    'reward[0].name="jpeg-compressibility"',
    # Adam with eps 1e-8 turns float noise in a near-zero gradient into a whole lr-sized step of either
    # sign; with eps 1 its step is proportional to the gradient, so what is compared is the arithmetic
    "train.adam_eps=1.0",
    "train.lr=0.05",
]
TOLERANCE = 1e-5


def command(config: Path, out: Path, ranks: int, *overrides: str, extra: tuple[str, ...] = ()) -> list[str]:
    return nft_command(config, out, ranks, [*COMMON, *overrides], extra)


def train_records(run_dir: Path) -> list[dict]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if r["kind"] == "train"]


def eval_records(run_dir: Path) -> list[dict]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if r["kind"] == "eval"]


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    state = read_resume_tensors(latest_checkpoint(run_dir))
    return {k: v for k, v in state.items() if k.startswith(("current.", "old.", "ema.", "optimizer."))}


def assert_close_runs(a: Path, b: Path) -> None:
    """The same rewards and advantages every epoch, and the same final weights, within TOLERANCE."""
    first, second = train_records(a), train_records(b)
    assert len(first) == len(second)
    for one, other in zip(first, second, strict=True):
        keys = [k for k in one if k.startswith(("advantage/", "reward/")) and isinstance(one[k], float)]
        assert keys
        for key in keys:
            assert one[key] == pytest.approx(other[key], abs=TOLERANCE), (one["epoch"], key)
    evals = [(one, other) for one, other in zip(*(eval_records(run) for run in (a, b)), strict=True)]
    assert len(evals) == 2  # before and after
    for one, other in evals:  # sharded over the ranks with uneven shares, gathered, aggregated
        keys = [k for k in one if k.startswith("eval/")]
        assert keys and all(one[k] == pytest.approx(other[k], abs=TOLERANCE) for k in keys)
    x, y = weights(a), weights(b)
    assert x.keys() == y.keys()
    worst = max(float((x[k].double() - y[k].double()).abs().max()) for k in x)
    assert worst <= TOLERANCE, worst


def wait_for_a_checkpoint(process, run_dir: Path, timeout: float = 300) -> None:
    """Until the running job has written its first resumable checkpoint (it must still be running)."""
    deadline = time.time() + timeout
    while latest_checkpoint(run_dir, resumable=True) is None:
        assert process.poll() is None, process.stdout.read()
        assert time.time() < deadline, "no checkpoint in time"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def one_rank(tmp_path_factory, tiny_checkpoint):
    """A 12-epoch run of the tiny shapes config on one process, with a micro-batch of 4."""
    from conftest import FAST_CONFIG

    folder = tmp_path_factory.mktemp("one-rank")
    # 5 evaluation prompts: shares of 3 and 2 on 2 ranks, so the gathers see unequal parts
    prompts = folder / "eval.txt"
    prompts.write_text("a red circle\ntwo blue squares\na green triangle\nthree circles\na square\n")
    config = folder / "fast.toml"
    text = FAST_CONFIG.format(checkpoint=tiny_checkpoint)
    config.write_text(text.replace('prompts = "shapes:eval-1"', f'prompts = "{prompts}"'))
    assert str(prompts) in config.read_text()
    finish(start(command(config, folder / "runs", 1, "train.epochs=12", "train.batch_size=4")))
    run_dir = folder / "runs" / "tiny"
    base = load_file(str(tiny_checkpoint))
    moved = max(float((weights(run_dir)[f"current.{k}"] - v.float()).abs().max()) for k, v in base.items())
    assert moved > 1e-3, "the update must move the weights for the comparisons to mean something"
    return config, run_dir


def test_two_gloo_ranks_give_the_one_rank_run(one_rank, tmp_path):
    config, reference = one_rank
    # the same global micro-batch: 2 ranks x 2 samples
    output = finish(start(command(config, tmp_path, 2, "train.epochs=12", "train.batch_size=2")))
    assert "2 ranks: each samples 2 and trains 2 of every micro-batch of 4" in output
    assert_close_runs(tmp_path / "tiny", reference)
    assert json.loads((tmp_path / "tiny" / "summary.json").read_text())["status"] == "finished"


@pytest.mark.parametrize("ranks", [1, 2])
def test_a_killed_two_rank_run_resumes_on_any_number_of_ranks(one_rank, tmp_path, ranks):
    config, reference = one_rank
    overrides = ["train.epochs=12", "log.checkpoint_every=1"]
    # 2 ranks x 2 or 1 rank x 4: the same global micro-batch of 4
    process = start(command(config, tmp_path, 2, *overrides, "train.batch_size=2"))
    run_dir = tmp_path / "tiny"
    wait_for_a_checkpoint(process, run_dir)
    kill_job(process)
    assert not read_state(latest_checkpoint(run_dir))["final"], "the job must be killed mid-run"
    batch = "train.batch_size=4" if ranks == 1 else "train.batch_size=2"
    finish(start(command(config, tmp_path, ranks, *overrides, batch, extra=("--resume", str(run_dir)))))
    assert_close_runs(run_dir, reference)


def test_a_rank_that_dies_ends_the_job_within_a_minute(one_rank, tmp_path):
    config, _ = one_rank
    process = start(command(config, tmp_path, 2, "train.epochs=100000", "log.checkpoint_every=1"))
    wait_for_a_checkpoint(process, tmp_path / "tiny")
    workers = subprocess.run(
        ["pgrep", "-f", "nft_core.cli run", "-P", str(process.pid)], capture_output=True, text=True
    ).stdout.split()
    assert len(workers) == 2, workers
    killed = time.time()
    os.kill(int(workers[-1]), signal.SIGKILL)
    try:
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            kill_job(process)
    assert process.returncode != 0 and time.time() - killed < 60
    assert re.search(r"error: rank 0 of 2: collective #\d+ \(\w+\) failed: rank 1 (never|stopped)", output)


@pytest.mark.parametrize("ranks", [1, 2])
def test_fsdp2_shards_the_shapes_model_and_trains_as_one_process_does(one_rank, tmp_path, ranks):
    config, reference = one_rank
    fsdp = ['train.parallel="fsdp2"', "train.epochs=12", "log.checkpoint_every=1", "train.batch_size=2"]
    process = start(command(config, tmp_path, 2, *fsdp))
    run_dir = tmp_path / "tiny"
    wait_for_a_checkpoint(process, run_dir)
    kill_job(process)
    killed_at = latest_checkpoint(run_dir)
    assert not read_state(killed_at)["final"], "the job must be killed mid-run"
    # each rank wrote its own shards (torch.distributed.checkpoint); no whole trained tensor is stored
    assert len(list((killed_at / SHARDS_FOLDER).glob("*.safetensors"))) == 2
    assert not any(k.startswith(("current.", "ema.")) for k in load_file(str(killed_at / RESUME_FILE)))
    # they are resharded on 2 ranks (moments and EMA included) and read whole on 1 rank (replicate)
    resumed = [*fsdp[:-1], "train.batch_size=2" if ranks == 2 else "train.batch_size=4"]
    output = finish(start(command(config, tmp_path, ranks, *resumed, extra=("--resume", str(run_dir)))))
    assert ("parameters sharded over 2 ranks" in output) == (ranks == 2)
    assert_close_runs(run_dir, reference)


def test_hybrid_fsdp2_shards_in_groups_and_replicates_across_them(one_rank, tmp_path):
    config, reference = one_rank
    # 4 ranks: 2 groups of 2 (as 2 nodes of 2 GPUs would be), 1 sample per rank, global micro-batch 4
    hybrid = ['train.parallel="fsdp2"', "train.shard_ranks=2", "train.epochs=12", "train.batch_size=1"]
    output = finish(start(command(config, tmp_path, 4, *hybrid)))
    assert "sharded over 2 ranks and replicated 2 times (hybrid)" in output
    assert_close_runs(tmp_path / "tiny", reference)


def test_a_rank_that_hangs_ends_the_job_after_the_collective_timeout(one_rank, tmp_path):
    config, _ = one_rank
    overrides = ("train.epochs=100000", "log.checkpoint_every=1", "train.collective_timeout=10")
    process = start(command(config, tmp_path, 2, *overrides))
    wait_for_a_checkpoint(process, tmp_path / "tiny")
    workers = subprocess.run(
        ["pgrep", "-f", "nft_core.cli run", "-P", str(process.pid)], capture_output=True, text=True
    ).stdout.split()
    assert len(workers) == 2, workers
    stopped = time.time()
    os.kill(int(workers[-1]), signal.SIGSTOP)  # alive, holding its sockets, never answering
    try:
        output, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            kill_job(process)
    assert process.returncode != 0 and time.time() - stopped < 120
    # one line naming the rank: it never reached the collective, or reached it and its heartbeat stopped
    assert re.search(r"error: rank 0 of 2: collective #\d+ \(\w+\) failed: rank 1 (never|stopped)", output)
