"""Monitors: within-prompt pixel diversity (closed form), the shapes world's colour and layout entropy
on rendered scenes, and both (with `[[eval.reward]]` monitor rewards and |v - v_old|) in a run's metrics."""

from __future__ import annotations

import json
import math

import pytest
import torch

from nft_core.config import load_config
from nft_core.loop.trainer import Trainer
from nft_core.outputs.monitors import PixelDiversity, group_pairwise_distance
from nft_shapes.grammar import metadata_for
from nft_shapes.monitor import ShapesDiversity, entropy_bits
from nft_shapes.render import render_batch


def test_pairwise_distance_is_the_rms_distance_averaged_over_pairs_and_groups():
    base = torch.zeros(2, 3, 4, 4)
    shifted = torch.stack([torch.zeros(3, 4, 4), torch.full((3, 4, 4), 0.5)])
    single = torch.rand(1, 3, 4, 4)  # a group of one has no pair: left out
    images = torch.cat([base, shifted, single])
    groups = torch.tensor([0, 0, 1, 1, 2])
    assert group_pairwise_distance(images, groups) == pytest.approx((0.0 + 0.5) / 2)
    three = torch.stack([torch.zeros(3, 2, 2), torch.full((3, 2, 2), 0.3), torch.full((3, 2, 2), 0.9)])
    assert group_pairwise_distance(three, torch.zeros(3)) == pytest.approx((0.3 + 0.9 + 0.6) / 3)
    assert math.isnan(group_pairwise_distance(single, torch.tensor([0])))


def test_pixel_diversity_pools_large_images_and_is_zero_for_copies():
    image = torch.rand(1, 3, 256, 256)
    assert PixelDiversity()(image.repeat(4, 1, 1, 1), ["p"] * 4, torch.zeros(4))["distance"] == 0.0
    assert PixelDiversity()(torch.rand(4, 3, 256, 256), ["p"] * 4, torch.zeros(4))["distance"] > 0.1


def test_entropy_in_bits():
    assert entropy_bits(["red"] * 5) == 0.0
    assert entropy_bits(["red", "blue", "green", "yellow"]) == pytest.approx(2.0)
    assert entropy_bits([]) == 0.0


def test_shapes_diversity_sees_one_colour_as_a_collapse_and_a_fixed_colour_as_no_measure():
    free = metadata_for("a circle")
    red = dict(free, include=[{"class": "circle", "count": 1, "color": "red"}], prompt="a red circle")
    monitor = ShapesDiversity()
    # colour-free prompt drawn in one colour (collapsed) and in four colours
    collapsed = render_batch([red] * 4, seed=0)
    varied = render_batch(
        [
            dict(red, include=[{"class": "circle", "count": 1, "color": c}])
            for c in ("red", "blue", "green", "yellow")
        ],
        seed=0,
    )
    images = torch.cat([collapsed, varied])
    out = monitor(images, ["a circle"] * 8, torch.tensor([0] * 4 + [1] * 4), [free] * 8)
    assert out["colour_free_groups"] == 2
    assert out["colour_entropy"] == pytest.approx((0.0 + 2.0) / 2)
    assert 0 < out["layout_entropy"] <= math.log2(9)
    fixed = monitor(collapsed, ["a red circle"] * 4, torch.zeros(4), [red] * 4)
    assert fixed["colour_free_groups"] == 0 and math.isnan(fixed["colour_entropy"])


def test_a_run_logs_monitors_the_update_gap_and_monitor_rewards(fast_config, tmp_path):
    overrides = [
        'log.monitors=["pixel-diversity", "shapes-diversity"]',
        'eval.reward=[{name="jpeg-compressibility"}]',
        "eval.baseline_guidance=[]",
    ]
    Trainer(load_config(fast_config, overrides), tmp_path / "run", echo=lambda *_: None).run()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert train and all(r["monitor/pixel-diversity/distance"] >= 0 for r in train)
    assert all("monitor/shapes-diversity/colour_entropy" in r and r["v_old_gap"] >= 0 for r in train)
    evals = [r for r in records if r["kind"] == "eval"]
    assert evals and all("eval/jpeg-compressibility/score" in r for r in evals)
    # scored, never trained on: the training records hold only the trained reward
    assert not any(key.startswith("reward/jpeg") for r in train for key in r)


def test_an_unknown_monitor_is_a_config_error(fast_config, tmp_path):
    from nft_core.errors import ConfigError

    with pytest.raises(ConfigError, match="log.monitors"):
        Trainer(load_config(fast_config, ['log.monitors=["colourfulness"]']), tmp_path / "r", echo=print)
