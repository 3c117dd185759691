"""Rollout levers: plugins declared lossless or lossy, refused where the objective needs exact rollouts,
applied around collection; the rollout precision apart from training's; scout rollouts."""

from __future__ import annotations

import contextlib
import json

import pytest
import torch
from typer.testing import CliRunner

from nft_core import plugins, registry
from nft_core.cli.app import build_app
from nft_core.config import load_config
from nft_core.errors import ConfigError
from nft_core.hookspecs import hookimpl
from nft_core.loop.levers import CompileLever
from nft_core.loop.trainer import Trainer

runner = CliRunner()
QUIET = ["log.grid_every=0", "eval.baseline_guidance=[]", "eval.every=0", "train.epochs=1"]
FLOWGRPO = ['objective={name="flowgrpo", old_decay="none", guidance=1.0}']


class Counting:
    """A test lever: counts the rollouts it wraps; `lossy` as its option says."""

    name = "counting"
    entered: list[str] = []

    def __init__(self, lossy: bool = False, tag: str = "x") -> None:
        self.lossless, self.tag = not lossy, tag

    @contextlib.contextmanager
    def rollout(self, policy):
        self.entered.append(self.tag)
        yield


class _LeverPlugin:
    @staticmethod
    @hookimpl
    def register_levers(register):
        register("counting", Counting, description="counts rollouts (a test lever)")


@pytest.fixture
def counting_lever():
    Counting.entered = []
    plugins.load_plugins()
    plugins.pm.register(_LeverPlugin, name="nft-test-lever")
    registry.clear_cache()
    yield Counting.entered
    plugins.pm.unregister(name="nft-test-lever")
    registry.clear_cache()


def test_a_third_party_lever_is_listed_applied_and_shown_by_validate(fast_config, tmp_path, counting_lever):
    listing = json.loads(runner.invoke(build_app(), ["plugins"]).output)
    entry = next(p for p in listing["plugins"] if p["name"] == "nft-test-lever")
    assert entry["registers"] == {"levers": ["counting"]}
    builtin = next(p for p in listing["plugins"] if p["name"] == "nft_core.builtin_plugin")
    assert {"compile", "sdpa"} <= set(builtin["registers"]["levers"])
    overrides = ['rollout.levers=["counting"]', "rollout.lever_options.counting={tag='on'}"]
    config = load_config(fast_config, [*QUIET, *overrides, "train.sample_batch_size=2"])
    Trainer(config, tmp_path, echo=lambda *_: None).collect()
    assert counting_lever == ["on"] * 2  # around each sampling micro-batch: 4 samples, 2 at a time
    result = runner.invoke(
        build_app(), ["validate", str(fast_config), *[x for o in overrides for x in ("--set", o)]]
    )
    assert result.exit_code == 0 and "rollout: precision fp32, counting (lossless)" in result.output


def test_a_lossy_lever_or_precision_is_refused_with_flowgrpo_and_runs_with_nft(
    fast_config, tmp_path, counting_lever
):
    lossy = ['rollout.levers=["counting"]', "rollout.lever_options.counting={lossy=true}"]
    with pytest.raises(
        ConfigError, match=r"rollout.levers\[0\]: 'counting' is lossy and `flowgrpo` trains on"
    ):
        Trainer(load_config(fast_config, [*QUIET, *FLOWGRPO, *lossy]), tmp_path / "g", echo=print)
    result = runner.invoke(
        build_app(), ["validate", str(fast_config), *[x for o in [*FLOWGRPO, *lossy] for x in ("--set", o)]]
    )
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    with pytest.raises(ConfigError, match="rollout.precision: 'bf16' differs from training's 'fp32'"):
        Trainer(
            load_config(fast_config, [*QUIET, *FLOWGRPO, 'rollout.precision="bf16"']),
            tmp_path / "h",
            echo=print,
        )
    summary = Trainer(
        load_config(fast_config, [*QUIET, *lossy]), tmp_path / "nft", echo=lambda *_: None
    ).run()
    assert summary["status"] == "finished" and counting_lever  # NFT trains on clean samples: any rollout


def test_the_rollout_precision_is_collections_alone(fast_config, tmp_path):
    trainer = Trainer(
        load_config(fast_config, [*QUIET, 'rollout.precision="bf16"']), tmp_path, echo=lambda *_: None
    )
    seen = []
    velocity = trainer.policy.velocity

    def recording(view, x_t, t, cond):
        out = velocity(view, x_t, t, cond)
        seen.append((view, out.dtype))
        return out

    trainer.policy.velocity = recording
    samples = trainer.collect()
    assert {d for _, d in seen} == {torch.bfloat16}
    seen.clear()
    trainer.updater.step(samples, torch.linspace(0, 1, len(samples)))
    assert {d for view, d in seen if view != "reference"} == {torch.float32}


def test_the_compile_lever_compiles_each_rollout_network_once(monkeypatch):
    compiled = []

    class Network(torch.nn.Module):
        def compile(self, mode=None):
            compiled.append(mode)

    class Policy:
        networks = [Network(), Network()]

        def rollout_networks(self):
            return self.networks

    lever = CompileLever(mode="reduce-overhead", regional=True)
    for _ in range(3):
        with lever.rollout(Policy()):
            pass
    assert compiled == ["reduce-overhead"] * 2 and lever.cold_seconds is not None and lever.lossless


def test_regional_compile_takes_the_repeated_blocks_and_a_network_without_them_whole():
    calls = []

    class Network(torch.nn.Module):
        def __init__(self, blocks):
            super().__init__()
            self._repeated_blocks = blocks

        def compile(self, mode=None):
            calls.append(("whole", mode))

        def compile_repeated_blocks(self, mode=None):  # diffusers raises when no block is named
            if not self._repeated_blocks:
                raise ValueError("_repeated_blocks is empty")
            calls.append(("blocks", mode))

    class Policy:
        networks = [Network(["FluxTransformerBlock"]), Network([])]

        def rollout_networks(self):
            return self.networks

    with CompileLever(regional=True).rollout(Policy()):
        pass
    assert calls == [("blocks", "default"), ("whole", "default")]


def test_the_sdpa_lever_gives_the_plain_rollout(fast_config, tmp_path):
    plain = Trainer(load_config(fast_config, QUIET), tmp_path / "a", echo=lambda *_: None).collect()
    config = load_config(
        fast_config, [*QUIET, 'rollout.levers=["sdpa"]', 'rollout.lever_options.sdpa={backends=["math"]}']
    )
    levered = Trainer(config, tmp_path / "b", echo=lambda *_: None).collect()
    torch.testing.assert_close(levered.latents, plain.latents, rtol=0, atol=1e-5)


def test_scout_rollouts_regenerate_the_extremes_of_each_group_exactly(fast_config, tmp_path, counting_lever):
    overrides = [*QUIET, "rollout.scout_candidates=2", 'rollout.levers=["counting"]',
                 "rollout.lever_options.counting={lossy=true}", "train.sample_batch_size=64"]  # fmt: skip
    trainer = Trainer(load_config(fast_config, overrides), tmp_path, echo=lambda *_: None)
    picked: list[list[int]] = []
    scout = trainer.collector._scout

    def recording(*args):
        picked.append(scout(*args))
        return picked[-1]

    trainer.collector._scout = recording
    samples = trainer.collect()
    assert len(samples) == 4 and samples.group_ids.tolist() == [0, 0, 1, 1]
    assert counting_lever == ["x"]  # the lossy lever on the candidates, not on the exact regeneration
    chosen = picked[0]
    assert len(chosen) == 4 and all(0 <= i < 4 for i in chosen[:2]) and all(4 <= i < 8 for i in chosen[2:])
    # each regenerated sample is its candidate, sampled again with the candidate's own noise
    plain = Trainer(
        load_config(fast_config, [*QUIET, "data.images_per_prompt=4"]), tmp_path / "p", echo=print
    )
    candidates = plain.collect()
    torch.testing.assert_close(samples.latents, candidates.latents[chosen], rtol=0, atol=1e-6)
