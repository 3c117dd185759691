"""Overlapped scoring and optional rewards: scoring on a worker thread changes the timing, never the
scores; an optional reward that cannot be built or whose calls fail leaves the total, not the run."""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path

import torch
from typer.testing import CliRunner

from nft_core.cli.app import build_app
from nft_core.loop.overlap import OverlappedScoring
from nft_core.normalization import make_normalizer
from nft_core.reward_set import RewardSet, RewardTerm, concat_raw
from nft_core.types import RewardOutput
from nft_rewards.serving.process import RewardServer, free_port

TESTS = Path(__file__).resolve().parent
TIMING = ("seconds/", "images_per_second", "train_seconds", "train_minutes", "wall_seconds")


class Brightness:
    """Mean brightness; remembers the threads it ran on."""

    name, native_range, higher_is_better, deterministic = "brightness", (0.0, 1.0), True, True

    def __init__(self) -> None:
        self.threads: set[str] = set()

    def __call__(self, images, prompts, metadata=None) -> RewardOutput:
        self.threads.add(threading.current_thread().name)
        return RewardOutput(images.mean(dim=(1, 2, 3)), {"first": images[:, 0].mean(dim=(1, 2))})

    def to(self, device):
        return self


class Broken(Brightness):
    def __call__(self, images, prompts, metadata=None) -> RewardOutput:
        raise ConnectionError("server went away")


def terms(*rewards, required=True):
    return [RewardTerm(r.name, r, 1.0, make_normalizer("none"), required) for r in rewards]


def test_overlap_gives_the_same_scores_as_scoring_in_line_and_runs_on_a_worker():
    images = torch.rand(10, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    prompts = [f"p{i // 2}" for i in range(10)]
    results = {}
    for overlap in (True, False):
        reward = Brightness()
        scoring = OverlappedScoring(RewardSet(terms(reward)), overlap=overlap)
        for start in range(0, 10, 4):
            scoring.submit(images[start : start + 4], prompts[start : start + 4], None)
        results[overlap] = scoring.result()
        assert (threading.current_thread().name in reward.threads) is not overlap
        assert scoring.seconds_scoring > 0
    whole = RewardSet(terms(Brightness())).raw_scores(images, prompts)
    for out in results.values():
        assert torch.equal(out.raw["brightness"], whole.raw["brightness"])
        assert torch.equal(out.details["brightness"]["first"], whole.details["brightness"]["first"])


def test_concat_raw_fills_details_of_a_failed_part_with_nan():
    ok = RewardSet(terms(Brightness())).raw_scores(torch.rand(2, 3, 4, 4), ["a", "b"])
    failed = RewardSet(terms(Broken())).raw_scores(torch.rand(3, 3, 4, 4), ["a", "b", "c"])
    merged = concat_raw([ok, failed])
    assert merged.raw["brightness"].shape == (5,) and merged.failed_calls == {"brightness": 2}
    assert torch.isnan(merged.details["brightness"]["first"][2:]).all()


def test_an_optional_reward_whose_calls_fail_leaves_the_total_not_the_samples():
    good, broken = Brightness(), Broken()
    broken.name = "broken"
    images, prompts = torch.rand(4, 3, 4, 4), ["a", "a", "b", "b"]
    optional = RewardSet(terms(good) + terms(broken, required=False)).score(images, prompts)
    assert optional.left_out == ["broken"] and bool(optional.valid.all())
    assert torch.equal(optional.total, images.mean(dim=(1, 2, 3)))
    required = RewardSet(terms(good, broken)).score(images, prompts)
    assert required.left_out == [] and not bool(required.valid.any()) and torch.isnan(required.total).all()


def metrics(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def untimed(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith(TIMING)} for r in records if r["kind"] == "train"]


def run(config: Path, out: Path, *overrides: str):
    args = ["run", str(config), "--out", str(out)]
    for override in overrides:
        args += ["--set", override]
    return CliRunner().invoke(build_app(), args)


def test_a_run_scores_the_same_with_and_without_overlap_and_logs_what_was_hidden(fast_config, tmp_path):
    one = ("train.epochs=1", "train.sample_batch_size=2")  # one epoch shows it: the test is on every record
    on = run(fast_config, tmp_path / "on", *one, "train.overlap_scoring=true")
    off = run(fast_config, tmp_path / "off", *one, "train.overlap_scoring=false")
    assert on.exit_code == 0 and off.exit_code == 0, on.output + off.output
    with_overlap, without = metrics(tmp_path / "on" / "tiny"), metrics(tmp_path / "off" / "tiny")
    assert untimed(with_overlap) == untimed(without)
    for record in (r for r in with_overlap + without if r["kind"] == "train"):
        assert 0 <= record["seconds/scoring_unhidden"] <= record["seconds/reward"] + 1e-6
        assert record["seconds/scoring"] > 0


def with_remote(url: str) -> str:
    """`--set reward=[...]`: the fast config's reward and an optional remote one at `url`."""
    remote = f'{{name="remote", required=false, options={{url="{url}", retries=0}}}}'
    return f'reward=[{{name="shapes-geneval", normalize="group-zscore"}}, {remote}]'


def test_optional_remote_reward_with_its_server_down_is_skipped(fast_config, tmp_path):
    dead = with_remote(f"http://127.0.0.1:{free_port()}")
    result = run(fast_config, tmp_path, dead)
    assert result.exit_code == 0, result.output
    assert "'remote' (required = false) skipped" in result.output and "no server" not in result.output
    required = run(fast_config, tmp_path, dead.replace("required=false", "required=true"))
    assert required.exit_code == 2 and "remote reward http://127.0.0.1" in required.output


def test_optional_remote_reward_that_fails_mid_run_leaves_the_total(fast_config, tmp_path):
    with RewardServer("_served_rewards:flaky", {"fail": True}, cwd=TESTS) as server:
        result = run(fast_config, tmp_path, with_remote(server.url))
    assert result.exit_code == 0, result.output
    assert "left out of this epoch's total" in result.output
    records = [r for r in metrics(tmp_path / "tiny") if r["kind"] == "train"]
    assert all(r["samples/excluded"] == 0 and r["reward/remote/failed_calls"] == 2 for r in records)
    assert all(math.isfinite(r["reward/total_mean"]) for r in records)


def test_auto_overlaps_only_where_scoring_does_not_compete_for_the_cpu():
    from nft_core.loop.overlap import overlap_wanted
    from nft_core.reward_set import RewardSet, RewardTerm

    class Local:
        higher_is_better = True

    class Remote(Local):
        scores_elsewhere = True

    def rewards(*kinds):
        return RewardSet([RewardTerm(f"r{i}", kind(), 1.0, lambda x, g: x) for i, kind in enumerate(kinds)])

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert not overlap_wanted("auto", rewards(Local), cpu)  # a CPU thread would slow the sampler
    assert not overlap_wanted("auto", rewards(Remote, Local), cpu)
    assert overlap_wanted("auto", rewards(Remote), cpu)  # it waits on the network
    assert overlap_wanted("auto", rewards(Local), cuda)  # its own CUDA stream
    assert overlap_wanted(True, rewards(Local), cpu) and not overlap_wanted(False, rewards(Remote), cpu)
