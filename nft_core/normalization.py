"""Per-reward normalization of raw scores, applied before the weighted sum of rewards.

Every normalizer has the signature `normalizer(x: Tensor[N], group_ids: LongTensor[N]) -> Tensor[N]`
(group ids are the per-prompt groups of `nft_core.advantages.prompt_group_ids`; normalizers that do not
use groups ignore them). Statistics are computed in float64 and the result is returned in the input's
float dtype (float32 for integer input). Standard deviations are population stds (`unbiased=False`)
and are used as `(x - mean) / (std + eps)`, as the advantages are.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from nft_core.advantages import dense_group_ids, group_mean, group_std

__all__ = [
    "NORMALIZERS",
    "Normalizer",
    "RunningZScore",
    "affine",
    "group_rank",
    "group_zscore",
    "make_normalizer",
    "zscore",
]

NORMALIZERS = ("none", "affine", "zscore", "group-zscore", "rank", "running-zscore")

Normalizer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _check(x: torch.Tensor) -> tuple[torch.Tensor, torch.dtype]:
    x = torch.as_tensor(x)
    if x.ndim != 1:
        raise ValueError(f"scores must have shape [N], got {tuple(x.shape)}")
    dtype = x.dtype if x.is_floating_point() else torch.float32
    return x.to(torch.float64), dtype


def affine(x: torch.Tensor, scale: float = 1.0, shift: float = 0.0) -> torch.Tensor:
    """`scale * x + shift` (e.g. map a native range onto about [0, 1])."""
    x64, dtype = _check(x)
    return (scale * x64 + shift).to(dtype)


def zscore(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """`(x - mean) / (std + eps)` over the whole batch."""
    x64, dtype = _check(x)
    if x64.numel() == 0:
        return x64.to(dtype)
    return ((x64 - x64.mean()) / (x64.std(unbiased=False) + eps)).to(dtype)


def group_zscore(x: torch.Tensor, group_ids: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """`(x - mean_group) / (std_group + eps)` within each prompt group (a group of one gives 0)."""
    x64, dtype = _check(x)
    if x64.numel() == 0:
        return x64.to(dtype)
    dense, groups = dense_group_ids(group_ids, x64.shape[0])
    dense = dense.to(x64.device)
    mean = group_mean(x64, dense, groups)
    std = group_std(x64, dense, groups)
    return ((x64 - mean) / (std + eps)).to(dtype)


def _average_ranks(values: torch.Tensor) -> torch.Tensor:
    """0-based ranks with ties given the average of the ranks they span."""
    less = (values[None, :] < values[:, None]).sum(dim=1).to(torch.float64)
    equal = (values[None, :] == values[:, None]).sum(dim=1).to(torch.float64)
    return less + (equal - 1) / 2


def group_rank(x: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """Ranks within each prompt group mapped linearly to [-1, 1]: lowest -1, highest +1.

    `2 rank / (n - 1) - 1` with 0-based ranks; ties share their average rank; a group of one gives 0.
    """
    x64, dtype = _check(x)
    if x64.numel() == 0:
        return x64.to(dtype)
    dense, groups = dense_group_ids(group_ids, x64.shape[0])
    dense = dense.to(x64.device)
    out = torch.zeros_like(x64)
    for g in range(groups):
        index = (dense == g).nonzero(as_tuple=True)[0]
        n = index.numel()
        if n > 1:
            out[index] = 2 * _average_ranks(x64[index]) / (n - 1) - 1
    return out.to(dtype)


class RunningZScore:
    """Z-score with exponential moving averages of the batch mean and (population) variance.

    The first batch initialises the statistics; later batches update them as
    `stat <- momentum * stat + (1 - momentum) * batch_stat`. Each batch is normalized with the
    statistics *after* its own update: `(x - mean) / (sqrt(var) + eps)`.
    """

    def __init__(self, momentum: float = 0.99, eps: float = 1e-6) -> None:
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        if eps < 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        self.momentum = float(momentum)
        self.eps = float(eps)
        self.mean: float | None = None
        self.var: float | None = None
        self.count = 0

    def __repr__(self) -> str:
        return f"RunningZScore(momentum={self.momentum}, eps={self.eps}, mean={self.mean}, var={self.var})"

    def update(self, x: torch.Tensor) -> None:
        """Fold one batch into the running statistics."""
        x64, _ = _check(x)
        if x64.numel() == 0:
            return
        batch_mean = float(x64.mean())
        batch_var = float(x64.var(unbiased=False))
        if self.mean is None or self.var is None:
            self.mean, self.var = batch_mean, batch_var
        else:
            m = self.momentum
            self.mean = m * self.mean + (1 - m) * batch_mean
            self.var = m * self.var + (1 - m) * batch_var
        self.count += 1

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Normalize with the current statistics, without updating them."""
        x64, dtype = _check(x)
        if self.mean is None or self.var is None:
            raise RuntimeError("RunningZScore has no statistics yet; call it on a batch first")
        return ((x64 - self.mean) / (self.var**0.5 + self.eps)).to(dtype)

    def __call__(self, x: torch.Tensor, group_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Update with the batch, then normalize it."""
        self.update(x)
        if self.mean is None:  # an empty first batch
            x64, dtype = _check(x)
            return x64.to(dtype)
        return self.normalize(x)

    def state_dict(self) -> dict[str, Any]:
        return {
            "momentum": self.momentum,
            "eps": self.eps,
            "mean": self.mean,
            "var": self.var,
            "count": self.count,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.momentum = float(state.get("momentum", self.momentum))
        self.eps = float(state.get("eps", self.eps))
        self.mean = None if state.get("mean") is None else float(state["mean"])
        self.var = None if state.get("var") is None else float(state["var"])
        self.count = int(state.get("count", 0))


def _identity(x: torch.Tensor, group_ids: torch.Tensor | None = None) -> torch.Tensor:
    x64, dtype = _check(x)
    return x64.to(dtype)


def make_normalizer(
    kind: str, scale: float = 1.0, shift: float = 0.0, momentum: float = 0.99, eps: float = 1e-6
) -> Normalizer:
    """A normalizer `f(x, group_ids) -> Tensor` by name (one of `NORMALIZERS`).

    `running-zscore` returns a stateful `RunningZScore` (checkpoint it with `state_dict()`); the other
    kinds are stateless functions.
    """
    if kind == "none":
        return _identity
    if kind == "affine":
        return lambda x, group_ids=None: affine(x, scale, shift)
    if kind == "zscore":
        return lambda x, group_ids=None: zscore(x, eps)
    if kind == "group-zscore":
        return lambda x, group_ids: group_zscore(x, group_ids, eps)
    if kind == "rank":
        return lambda x, group_ids: group_rank(x, group_ids)
    if kind == "running-zscore":
        return RunningZScore(momentum=momentum, eps=eps)
    raise ValueError(f"unknown normalizer {kind!r}; allowed: {', '.join(NORMALIZERS)}")
