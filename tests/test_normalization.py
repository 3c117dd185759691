"""Per-reward normalizers pinned to closed forms."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from nft_core.normalization import (
    NORMALIZERS,
    RunningZScore,
    affine,
    group_rank,
    group_zscore,
    make_normalizer,
    zscore,
)

X = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0]
G = [0, 0, 0, 1, 1, 1]


def test_affine():
    torch.testing.assert_close(
        affine(torch.tensor([0.0, 1.0, -2.0]), 2.0, 0.5), torch.tensor([0.5, 2.5, -3.5])
    )


def test_zscore():
    out = zscore(torch.tensor(X), eps=1e-6)
    mean, std = statistics.fmean(X), statistics.pstdev(X)
    torch.testing.assert_close(out, torch.tensor([(x - mean) / (std + 1e-6) for x in X]))
    assert out.dtype == torch.float32
    assert torch.equal(zscore(torch.tensor([2.0, 2.0])), torch.zeros(2))


def test_group_zscore():
    out = group_zscore(torch.tensor(X, dtype=torch.float64), torch.tensor(G), eps=1e-6)
    expected = []
    for lo, hi in ((0, 3), (3, 6)):
        part = X[lo:hi]
        m, s = statistics.fmean(part), statistics.pstdev(part)
        expected += [(x - m) / (s + 1e-6) for x in part]
    torch.testing.assert_close(out, torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=1e-12)
    # a group of one is 0
    assert group_zscore(torch.tensor([5.0, 1.0, 2.0]), torch.tensor([0, 1, 1]))[0].item() == 0.0


def test_group_rank_maps_to_minus_one_one_with_average_ties():
    x = torch.tensor([3.0, 1.0, 3.0, 2.0, 7.0, 0.5, 0.5, 0.5])
    g = torch.tensor([0, 0, 0, 0, 1, 2, 2, 2])
    # group 0: values 3,1,3,2 -> 0-based ranks 2.5, 0, 2.5, 1 -> 2r/3 - 1
    # group 1: a single sample -> 0; group 2: all tied -> average rank 1 of n=3 -> 0
    expected = [2 * 2.5 / 3 - 1, -1.0, 2 * 2.5 / 3 - 1, 2 * 1 / 3 - 1, 0.0, 0.0, 0.0, 0.0]
    torch.testing.assert_close(group_rank(x, g), torch.tensor(expected))
    ranks = group_rank(torch.tensor([10.0, 30.0, 20.0]), torch.tensor([4, 4, 4]))
    assert ranks.tolist() == [-1.0, 1.0, 0.0]


def test_running_zscore_first_batch_initialises_then_ema():
    norm = RunningZScore(momentum=0.9, eps=1e-6)
    first = norm(torch.tensor([1.0, 2.0, 3.0]), None)
    assert norm.mean == pytest.approx(2.0) and norm.var == pytest.approx(2 / 3)
    torch.testing.assert_close(first, torch.tensor([-1.0, 0.0, 1.0]) / (math.sqrt(2 / 3) + 1e-6))
    second = norm(torch.tensor([4.0, 6.0]), None)  # batch mean 5, var 1
    mean, var = 0.9 * 2.0 + 0.1 * 5.0, 0.9 * (2 / 3) + 0.1 * 1.0
    assert norm.mean == pytest.approx(mean) and norm.var == pytest.approx(var)
    torch.testing.assert_close(second, (torch.tensor([4.0, 6.0]) - mean) / (math.sqrt(var) + 1e-6))
    assert norm.count == 2


def test_running_zscore_state_round_trip():
    norm = RunningZScore(momentum=0.5)
    norm(torch.tensor([0.0, 4.0]), None)
    state = norm.state_dict()
    other = RunningZScore()
    other.load_state_dict(state)
    assert other.state_dict() == state
    x = torch.tensor([1.0, 3.0, 8.0])
    torch.testing.assert_close(other(x, None), norm(x, None))
    with pytest.raises(RuntimeError):
        RunningZScore().normalize(x)


def test_make_normalizer_each_kind():
    x, g = torch.tensor(X), torch.tensor(G)
    assert torch.equal(make_normalizer("none")(x, g), x)
    torch.testing.assert_close(make_normalizer("affine", scale=0.1, shift=-1.0)(x, g), 0.1 * x - 1.0)
    torch.testing.assert_close(make_normalizer("zscore")(x, g), zscore(x))
    torch.testing.assert_close(make_normalizer("group-zscore")(x, g), group_zscore(x, g))
    torch.testing.assert_close(make_normalizer("rank")(x, g), group_rank(x, g))
    running = make_normalizer("running-zscore", momentum=0.8)
    assert isinstance(running, RunningZScore) and running.momentum == 0.8
    torch.testing.assert_close(running(x, g), zscore(x))  # first batch: the batch's own stats
    assert set(NORMALIZERS) == {"none", "affine", "zscore", "group-zscore", "rank", "running-zscore"}


def test_unknown_normalizer_lists_the_allowed_ones():
    with pytest.raises(ValueError) as info:
        make_normalizer("minmax")
    assert all(kind in str(info.value) for kind in NORMALIZERS)


def test_integer_scores_become_float():
    assert zscore(torch.tensor([0, 1])).dtype == torch.float32
    assert make_normalizer("none")(torch.tensor([0, 1]), torch.tensor([0, 0])).dtype == torch.float32
