"""Weighted multi-reward composition with two tiny fake rewards."""

from __future__ import annotations

import pytest
import torch

from nft_core.normalization import RunningZScore, group_rank, make_normalizer, zscore
from nft_core.reward_set import RewardSet, RewardTerm, combine
from nft_core.types import RewardOutput


class Brightness:
    """Higher is better, scores in [0, 100]."""

    name = "brightness"
    native_range = (0.0, 100.0)
    higher_is_better = True

    def __init__(self):
        self.device = "cpu"

    def __call__(self, images, prompts, metadata=None):
        scores = 100.0 * images.mean(dim=(1, 2, 3)).double()  # float64 on purpose: the set casts
        return RewardOutput(scores=scores, details={"red": images[:, 0].mean(dim=(1, 2))})

    def to(self, device):
        self.device = str(device)
        return self


class Distance:
    """Lower is better, scores in [0, 0.01]."""

    name = "distance"
    native_range = (0.0, 0.01)
    higher_is_better = False

    def __init__(self, scores=None):
        self.scores = scores
        self.device = "cpu"

    def __call__(self, images, prompts, metadata=None):
        if self.scores is not None:
            return RewardOutput(scores=self.scores)
        return RewardOutput(scores=0.01 * images[:, 1].mean(dim=(1, 2)))

    def to(self, device):
        self.device = str(device)
        return self


def _batch():
    torch.manual_seed(0)
    images = torch.rand(4, 3, 5, 5)
    prompts = ["a cat", "a cat", "a dog", "A  dog"]
    return images, prompts


def test_weighted_sum_of_normalized_rewards_with_direction():
    images, prompts = _batch()
    reward_set = RewardSet(
        [
            RewardTerm("brightness", Brightness(), 1.0, make_normalizer("zscore")),
            RewardTerm("distance", Distance(), 2.0, make_normalizer("none")),
        ]
    )
    out = reward_set.score(images, prompts)
    bright = 100.0 * images.mean(dim=(1, 2, 3))
    dist = 0.01 * images[:, 1].mean(dim=(1, 2))
    torch.testing.assert_close(out.raw["brightness"], bright)
    torch.testing.assert_close(out.raw["distance"], dist)  # raw keeps the native direction
    torch.testing.assert_close(out.normalized["brightness"], zscore(bright))
    torch.testing.assert_close(out.normalized["distance"], -dist)  # negated: higher is better
    torch.testing.assert_close(out.total, 1.0 * zscore(bright) + 2.0 * -dist)
    for tensor in [*out.raw.values(), *out.normalized.values(), out.total, out.details["brightness"]["red"]]:
        assert tensor.device.type == "cpu" and tensor.dtype == torch.float32
    assert out.details["distance"] == {}
    assert set(out.seconds) == {"brightness", "distance"} and all(s >= 0 for s in out.seconds.values())


def test_group_ids_default_to_prompt_groups():
    images, prompts = _batch()
    reward_set = RewardSet([RewardTerm("brightness", Brightness(), 0.5, make_normalizer("rank"))])
    out = reward_set.score(images, prompts)
    bright = 100.0 * images.mean(dim=(1, 2, 3))
    expected = group_rank(bright, torch.tensor([0, 0, 1, 1]))
    torch.testing.assert_close(out.normalized["brightness"], expected)
    torch.testing.assert_close(out.total, 0.5 * expected)
    # explicit group ids win
    out = reward_set.score(images, prompts, group_ids=torch.tensor([0, 0, 0, 0]))
    torch.testing.assert_close(
        out.normalized["brightness"], group_rank(bright, torch.zeros(4, dtype=torch.long))
    )


def test_combine_is_the_weighted_sum_and_checks_names():
    a, b = torch.tensor([1.0, 2.0]), torch.tensor([10.0, -10.0])
    torch.testing.assert_close(combine({"a": a, "b": b}, {"a": 0.5, "b": -1.0}), torch.tensor([-9.5, 11.0]))
    with pytest.raises(ValueError, match="names"):
        combine({"a": a}, {"a": 1.0, "b": 1.0})


def test_bad_scores_and_sets_are_errors():
    images, prompts = _batch()
    with pytest.raises(ValueError, match="distance"):
        RewardSet([RewardTerm("distance", Distance(torch.zeros(3)), 1.0, make_normalizer("none"))]).score(
            images, prompts
        )
    with pytest.raises(ValueError, match="repeated"):
        RewardSet(
            [
                RewardTerm("x", Brightness(), 1.0, make_normalizer("none")),
                RewardTerm("x", Distance(), 1.0, make_normalizer("none")),
            ]
        )
    with pytest.raises(ValueError):
        RewardSet([])
    with pytest.raises(ValueError, match="paired"):
        RewardSet([RewardTerm("b", Brightness(), 1.0, make_normalizer("none"))]).score(images, prompts[:3])


def test_to_moves_every_reward_and_normalizer_state_round_trips():
    reward_set = RewardSet(
        [
            RewardTerm("brightness", Brightness(), 1.0, make_normalizer("running-zscore", momentum=0.5)),
            RewardTerm("distance", Distance(), 1.0, make_normalizer("none")),
        ]
    )
    assert reward_set.to("meta") is reward_set
    assert [term.reward.device for term in reward_set.terms] == ["meta", "meta"]
    reward_set.to("cpu")
    images, prompts = _batch()
    reward_set.score(images, prompts)
    state = reward_set.state_dict()
    assert list(state) == ["brightness"]
    fresh = RunningZScore()
    other = RewardSet([RewardTerm("brightness", Brightness(), 1.0, fresh)])
    other.load_state_dict(state)
    assert fresh.state_dict() == state["brightness"]
    assert reward_set.names == ["brightness", "distance"]
    assert reward_set.weights == {"brightness": 1.0, "distance": 1.0}


def test_non_finite_scores_leave_the_normalizer_and_are_marked_invalid():
    images, prompts = _batch()
    bad = torch.tensor([0.0, float("nan"), 0.004, float("inf")])
    reward_set = RewardSet(
        [
            RewardTerm("brightness", Brightness(), 1.0, make_normalizer("zscore")),
            RewardTerm("distance", Distance(bad), 1.0, make_normalizer("zscore")),
        ]
    )
    out = reward_set.score(images, prompts)
    assert out.valid.tolist() == [True, False, True, False]
    assert out.invalid == {"brightness": 0, "distance": 2}
    keep = out.valid
    bright = 100.0 * images.mean(dim=(1, 2, 3))
    # each normalizer saw only the two valid samples: their z-scores are computed among themselves
    torch.testing.assert_close(out.normalized["brightness"][keep], zscore(bright[keep]))
    torch.testing.assert_close(out.normalized["distance"][keep], zscore(-bad[keep]))
    assert out.total[~keep].isnan().all() and out.total[keep].isfinite().all()


class Flaky:
    """Raises on its first `failures` calls, then scores 1.0."""

    name = "flaky"
    native_range = (0.0, 1.0)
    higher_is_better = True

    def __init__(self, failures):
        self.failures, self.calls = failures, 0

    def __call__(self, images, prompts, metadata=None):
        self.calls += 1
        if self.calls <= self.failures:
            raise RuntimeError(f"server busy ({self.calls})")
        return RewardOutput(scores=torch.ones(len(prompts)))

    def to(self, device):
        return self


def test_a_raising_reward_is_retried_once_then_its_batch_is_invalid():
    images, prompts = _batch()
    once = Flaky(failures=1)
    out = RewardSet([RewardTerm("flaky", once, 1.0, make_normalizer("none"))]).score(images, prompts)
    assert once.calls == 2 and out.valid.all() and out.failed_calls == {"flaky": 1}
    twice = Flaky(failures=2)
    out = RewardSet([RewardTerm("flaky", twice, 1.0, make_normalizer("none"))]).score(images, prompts)
    assert twice.calls == 2 and not out.valid.any()
    assert out.failed_calls == {"flaky": 2} and out.errors == {"flaky": "RuntimeError: server busy (2)"}
    assert out.invalid == {"flaky": 4}
