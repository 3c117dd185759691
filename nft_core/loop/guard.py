"""Divergence: a run stops loudly instead of training on NaN, with its last good state saved.

Before each optimizer step `StepGuard` copies the trained weights, the optimizer's state, the old (sampling)
weights and the EMA into buffers kept for the run (fused copies); after the step one fused reduction tells
whether every trained weight is still finite (`x * 0` is NaN exactly where `x` is not finite). A step that
leaves a weight non-finite is undone on the spot. A run whose model has gone bad although its weights are
finite (an lr far too large: huge weights that compute NaN) is stopped by the trainer after
`train.divergence_patience` bad events in a row, and the guard puts back the state from before the last
step that was taken: that is the checkpoint it writes. Memory: one more copy of the trained, old and EMA
weights and of the optimizer's moments (`train.divergence_patience = 0` turns the guard off).
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["Diverged", "StepGuard"]


class Diverged(Exception):
    """The run cannot go on: `train.divergence_patience` bad events in a row (an optimizer step whose
    gradient was not finite, skipped; one whose result was not finite, undone; a collection that sampled
    non-finite latents), or an evaluation that sampled non-finite latents. `weights_good`: every event was
    an undone step, so the live state is the last good one."""

    def __init__(self, reason: str, weights_good: bool = False) -> None:
        super().__init__(reason)
        self.weights_good = weights_good


def _local(tensor: torch.Tensor) -> torch.Tensor:
    """A DTensor's shard on this rank (FSDP2), or the tensor itself."""
    to_local = getattr(tensor, "to_local", None)
    return to_local() if to_local is not None else tensor.detach()


class StepGuard:
    """Snapshots of the state an optimizer step changes, to undo the step or to go back before it."""

    def __init__(
        self,
        parameters: list[torch.nn.Parameter],
        optimizer: torch.optim.Optimizer,
        old: list[torch.Tensor],
        ema: list[torch.Tensor],
    ) -> None:
        self.parameters, self.optimizer = parameters, optimizer
        self._tensors = {"trained": parameters, "old": old, "ema": ema}
        self._saved: dict[str, list[torch.Tensor]] = {}
        self._saved_state: dict[int, dict[str, Any]] = {}

    @property
    def saved(self) -> bool:
        """Whether a snapshot was taken (a step was made)."""
        return bool(self._saved)

    @torch.no_grad()
    def save(self) -> None:
        """Copy everything a step (and the epoch's refresh after it) changes, as it is now."""
        for name, tensors in self._tensors.items():
            live = [_local(t) for t in tensors]
            if name not in self._saved:
                self._saved[name] = [torch.empty_like(t) for t in live]
            torch._foreach_copy_(self._saved[name], live)
        state, saved = self.optimizer.state, self._saved_state
        for index, parameter in enumerate(self.parameters):
            if parameter not in state:
                saved.pop(index, None)
                continue
            kept = saved.setdefault(index, {})
            for key, value in state[parameter].items():
                if not isinstance(value, torch.Tensor):
                    kept[key] = value
                elif isinstance(kept.get(key), torch.Tensor) and kept[key].shape == value.shape:
                    kept[key].copy_(value)  # the buffer of an earlier step, reused
                else:
                    kept[key] = value.detach().clone()

    @torch.no_grad()
    def finite(self) -> bool:
        """Whether every trained weight is finite (this rank's shards)."""
        zeros = torch._foreach_mul([_local(p) for p in self.parameters], 0.0)
        return bool(torch.isfinite(torch.stack(torch._foreach_norm(zeros)).sum()))

    def undo_step(self) -> None:
        """Put back the trained weights and the optimizer's state of the last `save` (the step just made)."""
        self._restore(("trained",))

    def go_back(self) -> None:
        """Put back everything of the last `save`: the state before the last step that was taken."""
        self._restore(tuple(self._tensors))

    @torch.no_grad()
    def _restore(self, names: tuple[str, ...]) -> None:
        for name in names:
            torch._foreach_copy_([_local(t) for t in self._tensors[name]], self._saved[name])
        state = self.optimizer.state
        for index, parameter in enumerate(self.parameters):
            if index not in self._saved_state:
                state.pop(parameter, None)
                continue
            for key, value in self._saved_state[index].items():
                if isinstance(value, torch.Tensor):
                    state[parameter][key].copy_(value)
                else:
                    state[parameter][key] = value
