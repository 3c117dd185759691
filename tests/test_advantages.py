"""Advantages, clipping modes and optimality probability against their formulas on fixed arrays."""

from __future__ import annotations

import statistics

import pytest
import torch

from nft_core.advantages import (
    ADVANTAGE_MODES,
    advantage_stats,
    advantage_step,
    clip_advantages,
    compute_advantages,
    optimality_probability,
    prompt_group_ids,
)

REWARDS = [1.0, 2.0, 3.0, 10.0, 10.0, 13.0]
GROUPS = [0, 0, 0, 1, 1, 1]


def test_prompt_group_ids_normalize_text_and_number_by_first_appearance():
    prompts = ["A  cat", "dog", " a cat ", "A CAT", "Dog\t", "a red\ncube"]
    ids = prompt_group_ids(prompts)
    assert ids.dtype == torch.long
    assert ids.tolist() == [0, 1, 0, 0, 1, 2]
    assert prompt_group_ids([]).tolist() == []


def test_global_std_advantages():
    adv = compute_advantages(torch.tensor(REWARDS), torch.tensor(GROUPS), global_std=True)
    std = statistics.pstdev(REWARDS)
    means = [2.0, 2.0, 2.0, 11.0, 11.0, 11.0]
    expected = [(x - m) / (std + 1e-4) for x, m in zip(REWARDS, means, strict=True)]
    torch.testing.assert_close(adv, torch.tensor(expected), rtol=1e-6, atol=1e-7)
    assert adv.dtype == torch.float32


def test_per_group_std_advantages():
    adv = compute_advantages(
        torch.tensor(REWARDS, dtype=torch.float64), torch.tensor(GROUPS), global_std=False
    )
    s0, s1 = statistics.pstdev(REWARDS[:3]), statistics.pstdev(REWARDS[3:])
    expected = [(1 - 2) / (s0 + 1e-4), 0.0, (3 - 2) / (s0 + 1e-4)] + [
        (10 - 11) / (s1 + 1e-4),
        (10 - 11) / (s1 + 1e-4),
        (13 - 11) / (s1 + 1e-4),
    ]
    torch.testing.assert_close(adv, torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=1e-12)


def test_advantages_custom_eps_and_arbitrary_group_labels():
    rewards = torch.tensor([0.0, 1.0, 1.0, 1.0])
    adv = compute_advantages(rewards, torch.tensor([7, 7, 3, 3]), global_std=True, eps=0.5)
    std = statistics.pstdev([0.0, 1.0, 1.0, 1.0])
    torch.testing.assert_close(adv, torch.tensor([-0.5 / (std + 0.5), 0.5 / (std + 0.5), 0.0, 0.0]))


def test_constant_group_has_zero_advantage():
    adv = compute_advantages(torch.tensor([4.0, 4.0, 4.0]), torch.tensor([0, 0, 0]), global_std=False)
    assert torch.equal(adv, torch.zeros(3))


def test_advantage_shape_errors():
    with pytest.raises(ValueError, match="group_ids"):
        compute_advantages(torch.zeros(3), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="rewards"):
        compute_advantages(torch.zeros(3, 1), torch.zeros(3, dtype=torch.long))


ADV = torch.tensor([-7.0, -2.0, 0.0, 0.5, 5.0, 9.0])


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("all", [-5.0, -2.0, 0.0, 0.5, 5.0, 5.0]),
        ("positive", [0.0, 0.0, 0.0, 0.5, 5.0, 5.0]),
        ("negative", [-5.0, -2.0, 0.0, 0.0, 0.0, 0.0]),
        ("binary", [-1.0, -1.0, 0.0, 1.0, 1.0, 1.0]),
        ("one", [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]),
    ],
)
def test_clip_modes(mode, expected):
    assert clip_advantages(ADV, adv_clip=5.0, mode=mode).tolist() == expected


def test_clip_bound_is_configurable_and_unknown_mode_lists_modes():
    assert clip_advantages(ADV, adv_clip=1.0).tolist() == [-1.0, -1.0, 0.0, 0.5, 1.0, 1.0]
    with pytest.raises(ValueError) as info:
        clip_advantages(ADV, mode="pos")
    assert all(mode in str(info.value) for mode in ADVANTAGE_MODES)


def test_optimality_probability():
    r = optimality_probability(torch.tensor([-5.0, -2.5, 0.0, 1.0, 5.0, 8.0, -9.0]), adv_clip=5.0)
    torch.testing.assert_close(r, torch.tensor([0.0, 0.25, 0.5, 0.6, 1.0, 1.0, 0.0]))
    # binary mode advantages with adv_clip 5 give r in {0.4, 0.5, 0.6}, as in the reference
    torch.testing.assert_close(
        optimality_probability(torch.tensor([-1.0, 0.0, 1.0]), 5.0), torch.tensor([0.4, 0.5, 0.6])
    )


def test_advantage_stats():
    rewards = torch.tensor([1.0, 1.0, 2.0, 5.0, 3.0, 3.0])
    groups = torch.tensor([0, 0, 1, 1, 2, 2])
    adv = torch.tensor([0.0, 0.0, -5.0, 5.0, 0.0, 2.0])
    stats = advantage_stats(adv, groups, rewards, adv_clip=5.0)
    values = adv.tolist()
    assert stats["mean"] == pytest.approx(statistics.fmean(values))
    assert stats["std"] == pytest.approx(statistics.pstdev(values))
    assert stats["abs_mean"] == pytest.approx(12.0 / 6)
    assert (stats["min"], stats["max"]) == (-5.0, 5.0)
    assert stats["clipped_fraction"] == pytest.approx(2 / 6)
    assert stats["zero_std_group_fraction"] == pytest.approx(2 / 3)  # groups 0 and 2 are constant


@pytest.mark.parametrize("mode", ADVANTAGE_MODES)
def test_advantage_step_is_steps_3_and_4_with_one_clip(mode):
    """r from the per-prompt advantages clipped once to +-0.3, the mode, then A / 0.3 / 2 + 1/2; the
    statistics are those of the clipped advantages before the mode."""
    rewards, groups = torch.tensor(REWARDS), torch.tensor(GROUPS)
    r, stats = advantage_step(rewards, groups, adv_clip=0.3, mode=mode, global_std=True)
    advantages = compute_advantages(rewards, groups, global_std=True)  # +-0.215 and 0.43 (the 13)
    clipped = advantages.clamp(-0.3, 0.3)
    assert torch.equal(r, optimality_probability(clip_advantages(advantages, 0.3, mode), 0.3))
    assert stats == advantage_stats(clipped, groups, rewards, adv_clip=0.3)
    assert stats["clipped_fraction"] == pytest.approx(1 / 6)  # only the 13 reaches the clip
    assert float(r.min()) >= 0 and float(r.max()) <= 1
