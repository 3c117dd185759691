"""The update's plan: which samples at which times go into which micro-batch and optimizer step.

`training_plan` is pure (given the generator's state) and has the reference's shape: every sample
visits `trained_times` of the training times, in a random order of its own; each visit (one column
of those orders) is a fresh permutation of the samples cut into micro-batches; the micro-batches of
the whole epoch are split into `optimizer_steps` consecutive chunks, one per optimizer step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Geometry", "MicroBatch", "path_plan", "training_plan"]


@dataclass(frozen=True)
class MicroBatch:
    """Sample indices, the training time of each, and how many (sample, time) visits its step has.

    `weighted(loss)` is `loss * len(index) / step_samples`: the accumulated gradient of a step's
    micro-batches equals the gradient of the mean loss over all of the step's visits at once.
    """

    index: torch.Tensor
    times: torch.Tensor
    step_samples: int
    visit: int = 0
    """Which visit of its samples this is (`pass * trained_times + column`): it keys their noise."""

    def weighted(self, loss: torch.Tensor, samples: int | None = None) -> torch.Tensor:
        """The mean `loss` of `samples` of this micro-batch's samples (default: all of them; one rank's
        part under data parallelism) weighted by their share of the step's visits."""
        return loss * (len(self.index) if samples is None else samples) / self.step_samples


@dataclass(frozen=True)
class Geometry:
    """The batch geometry derived from the config, printed at start-up."""

    prompts_per_epoch: int
    images_per_prompt: int
    grid_times: int
    trained_times: int
    micro_batch: int
    """Per rank; a micro-batch of the epoch's plan holds `micro_batch x ranks` samples."""
    inner_epochs: int
    optimizer_steps: int
    ranks: int = 1

    @property
    def images(self) -> int:
        return self.prompts_per_epoch * self.images_per_prompt

    @property
    def global_micro_batch(self) -> int:
        """Samples in one micro-batch of the plan, over all ranks."""
        return self.micro_batch * self.ranks

    @property
    def micro_batches(self) -> int:
        return self.micro_batches_for(self.images)

    def micro_batches_for(self, samples: int) -> int:
        """The micro-batches of an epoch of `samples` samples (fewer than planned when some leave)."""
        return self.inner_epochs * self.trained_times * math.ceil(samples / self.global_micro_batch)

    def describe(self) -> str:
        """One line: samples, times, passes, micro-batches and optimizer steps of an epoch (and ranks)."""
        per_step = math.ceil(self.micro_batches / self.optimizer_steps)
        ranks = (
            f"; {self.ranks} ranks: each samples {self.images // self.ranks} and trains "
            f"{self.micro_batch} of every micro-batch of {self.global_micro_batch}"
            if self.ranks > 1
            else ""
        )
        return (
            f"{self.prompts_per_epoch} prompts x {self.images_per_prompt} images = {self.images} samples; "
            f"{self.trained_times} of {self.grid_times} grid times x {self.inner_epochs} pass(es); "
            f"micro-batch {self.global_micro_batch} -> {self.micro_batches} micro-batches, "
            f"{self.optimizer_steps} optimizer step(s)/epoch (~{per_step} micro-batches accumulated each)"
            f"{ranks}"
        )


def training_plan(
    n: int,
    times: torch.Tensor,
    trained_times: int,
    micro_batch: int,
    optimizer_steps: int = 1,
    inner_epochs: int = 1,
    generator: torch.Generator | None = None,
) -> list[list[MicroBatch]]:
    """The micro-batches of each optimizer step for `n` samples and the training `times` `[T]`.

    Per pass (`inner_epochs`): one random order of the T times per sample, then for each of its first
    `trained_times` columns a random permutation of the samples cut into micro-batches of at most
    `micro_batch`. The epoch's micro-batches are split as evenly as possible into `optimizer_steps`
    consecutive chunks (`numpy.array_split`).
    """
    if not 1 <= trained_times <= len(times):
        raise ValueError(f"trained_times must be in [1, {len(times)}], got {trained_times}")
    visits: list[tuple[torch.Tensor, torch.Tensor, int]] = []
    for epoch_pass in range(inner_epochs):
        order = torch.stack([torch.randperm(len(times), generator=generator) for _ in range(n)])
        for column in range(trained_times):
            permutation = torch.randperm(n, generator=generator)
            visit = epoch_pass * trained_times + column
            for start in range(0, n, micro_batch):
                index = permutation[start : start + micro_batch]
                visits.append((index, times[order[index, column].to(times.device)], visit))
    if optimizer_steps > len(visits):
        raise ValueError(f"{optimizer_steps} optimizer steps but only {len(visits)} micro-batches")
    steps = []
    for chunk in np.array_split(np.arange(len(visits)), optimizer_steps):
        samples = sum(len(visits[i][0]) for i in chunk)
        steps.append([MicroBatch(visits[i][0], visits[i][1], samples, visits[i][2]) for i in chunk])
    return steps


def path_plan(
    index: torch.Tensor,
    times: torch.Tensor,
    first_step: torch.Tensor,
    trained_steps: int,
    micro_batch: int,
    optimizer_steps: int = 1,
    generator: torch.Generator | None = None,
) -> list[list[MicroBatch]]:
    """FlowGRPO's plan (`scripts/train_sd3.py` of yifan123/flow_grpo at ac4c86e, lines 827-871): the
    samples `index` in a random order, split as evenly as possible into `optimizer_steps` chunks; each
    optimizer step trains its chunk's paths on `trained_steps` steps in order (step `first_step[i] + j`
    of sample `i` at visit `j`, time `times[first_step[i] + j]`), each visit cut into micro-batches of at
    most `micro_batch`. So one step holds every trained step of its share of the samples."""
    if optimizer_steps > len(index):
        raise ValueError(f"{optimizer_steps} optimizer steps but only {len(index)} samples")
    order = index[torch.randperm(len(index), generator=generator)]
    steps = []
    for chunk in np.array_split(order.numpy(), optimizer_steps):
        chunk_index = torch.as_tensor(chunk, dtype=torch.long)
        batches = []
        for visit in range(trained_steps):
            for start in range(0, len(chunk_index), micro_batch):
                rows = chunk_index[start : start + micro_batch]
                at = (first_step[rows] + visit).to(times.device)
                batches.append(MicroBatch(rows, times[at], len(chunk_index) * trained_steps, visit))
        steps.append(batches)
    return steps
