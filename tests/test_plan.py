"""The update's plan: its visits, its split into optimizer steps and the loss weights of accumulation."""

from __future__ import annotations

import math

import pytest
import torch

from nft_core.plan import Geometry, training_plan

TIMES = torch.tensor([1.0, 0.8, 0.6, 0.4, 0.2])


def plan(n=10, trained=4, micro=3, steps=3, inner=2, seed=0):
    return training_plan(n, TIMES, trained, micro, steps, inner, torch.Generator().manual_seed(seed))


def test_every_sample_visits_distinct_times_each_pass():
    steps = plan()
    batches = [batch for step in steps for batch in step]
    assert len(batches) == 2 * 4 * math.ceil(10 / 3)  # passes x times x micro-batches per column
    assert [len(step) for step in steps] == [11, 11, 10]  # numpy.array_split of 32
    per_pass = len(batches) // 2
    for passed in (batches[:per_pass], batches[per_pass:]):
        seen: dict[int, list[float]] = {}
        for batch in passed:
            assert len(batch.index) <= 3 and batch.times.shape == batch.index.shape
            for i, t in zip(batch.index.tolist(), batch.times.tolist(), strict=True):
                seen.setdefault(i, []).append(t)
        assert sorted(seen) == list(range(10))
        assert all(len(ts) == 4 and len(set(ts)) == 4 for ts in seen.values())
    for step in steps:
        assert {batch.step_samples for batch in step} == {sum(len(b.index) for b in step)}


def test_the_plan_is_the_generator_stream_of_the_reference_loop():
    """The same draws, in the same order, as the loop the trainer had inline (and the reference has)."""
    generator = torch.Generator().manual_seed(3)
    expected = []
    for _ in range(2):
        order = torch.stack([torch.randperm(5, generator=generator) for _ in range(10)])
        for column in range(4):
            permutation = torch.randperm(10, generator=generator)
            for start in range(0, 10, 3):
                index = permutation[start : start + 3]
                expected.append((index, TIMES[order[index, column]]))
    got = [batch for step in plan(seed=3) for batch in step]
    assert len(got) == len(expected)
    for batch, (index, times) in zip(got, expected, strict=True):
        assert torch.equal(batch.index, index) and torch.equal(batch.times, times)


def test_accumulated_micro_batches_give_the_full_batch_gradient():
    """Unequal micro-batches (3, 3, 3, 1) and unequal steps: each step's accumulated gradient is the
    gradient of the mean loss over all of its visits computed at once."""
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(10, 6, generator=generator)
    weights = torch.randn(6, generator=generator, requires_grad=True)

    def losses(index, times):
        return ((x[index] @ weights) * times - times.square()).square()

    for step in plan(seed=5):
        weights.grad = None
        for batch in step:
            batch.weighted(losses(batch.index, batch.times).mean()).backward()
        accumulated = weights.grad.clone()
        weights.grad = None
        index = torch.cat([batch.index for batch in step])
        times = torch.cat([batch.times for batch in step])
        losses(index, times).mean().backward()
        torch.testing.assert_close(accumulated, weights.grad, rtol=1e-5, atol=1e-6)


def test_geometry_and_bad_plans():
    geometry = Geometry(12, 8, 6, 5, 48, 1, 1)
    assert geometry.images == 96 and geometry.micro_batches == 10
    assert "96 samples; 5 of 6 grid times" in geometry.describe()
    with pytest.raises(ValueError, match="trained_times must be in"):
        plan(trained=6)
    with pytest.raises(ValueError, match="40 optimizer steps but only 32 micro-batches"):
        plan(steps=40)
