"""Per-prompt advantages, their clipping modes and the optimality probability (algorithm.md steps 3-4)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = [
    "ADVANTAGE_MODES",
    "advantage_stats",
    "advantage_step",
    "apply_mode",
    "clip_advantages",
    "compute_advantages",
    "dense_group_ids",
    "group_mean",
    "group_std",
    "normalize_prompt",
    "optimality_probability",
    "prompt_group_ids",
]

ADVANTAGE_MODES = ("all", "positive", "negative", "binary", "one")


def normalize_prompt(prompt: str) -> str:
    """The grouping key of a prompt: lower-cased, whitespace collapsed and stripped."""
    return " ".join(prompt.lower().split())


def prompt_group_ids(prompts: Sequence[str]) -> torch.Tensor:
    """Group ids `[N]` (int64) by normalized prompt text, numbered in order of first appearance."""
    ids: dict[str, int] = {}
    out = [ids.setdefault(normalize_prompt(p), len(ids)) for p in prompts]
    return torch.tensor(out, dtype=torch.long)


def dense_group_ids(group_ids: torch.Tensor, n: int) -> tuple[torch.Tensor, int]:
    """Arbitrary integer group ids to `0..G-1` (on the ids' device) and the number of groups G."""
    group_ids = torch.as_tensor(group_ids)
    if group_ids.shape != (n,):
        raise ValueError(f"group_ids must have shape [N] = [{n}], got {tuple(group_ids.shape)}")
    if n == 0:
        return group_ids.long(), 0
    _, inverse = torch.unique(group_ids, return_inverse=True)
    return inverse, int(inverse.max()) + 1


def group_mean(x: torch.Tensor, dense: torch.Tensor, groups: int) -> torch.Tensor:
    """Mean of `x` over each group, gathered back to `[N]`."""
    sums = torch.zeros(groups, dtype=x.dtype, device=x.device).index_add_(0, dense, x)
    counts = torch.zeros(groups, dtype=x.dtype, device=x.device).index_add_(0, dense, torch.ones_like(x))
    return (sums / counts)[dense]


def group_std(x: torch.Tensor, dense: torch.Tensor, groups: int) -> torch.Tensor:
    """Population standard deviation (`unbiased=False`) of `x` in each group, gathered back to `[N]`."""
    centered = x - group_mean(x, dense, groups)
    return group_mean(centered.square(), dense, groups).sqrt()


def _result_dtype(x: torch.Tensor) -> torch.dtype:
    return x.dtype if x.is_floating_point() else torch.float32


def compute_advantages(
    rewards: torch.Tensor, group_ids: torch.Tensor, global_std: bool = True, eps: float = 1e-4
) -> torch.Tensor:
    """`A = (R - mean_group(R)) / (std + eps)`.

    `std` is the population std (`unbiased=False`) of all rewards when `global_std` (the reference's
    setting), else of the sample's own group. Computed in float64; returned in the rewards' float dtype.
    """
    rewards = torch.as_tensor(rewards)
    if rewards.ndim != 1:
        raise ValueError(f"rewards must have shape [N], got {tuple(rewards.shape)}")
    n = rewards.shape[0]
    dense, groups = dense_group_ids(group_ids, n)
    dense = dense.to(rewards.device)
    r64 = rewards.to(torch.float64)
    if n == 0:
        return rewards.to(_result_dtype(rewards))
    mean = group_mean(r64, dense, groups)
    std = r64.std(unbiased=False).expand(n) if global_std else group_std(r64, dense, groups)
    return ((r64 - mean) / (std + eps)).to(_result_dtype(rewards))


def apply_mode(adv: torch.Tensor, mode: str = "all") -> torch.Tensor:
    """The advantage mode: `all` (keep), `positive` (`max(A, 0)`), `negative` (`min(A, 0)`),
    `binary` (`sign(A)`) or `one` (`1[A > 0]`)."""
    if mode not in ADVANTAGE_MODES:
        raise ValueError(f"unknown advantage mode {mode!r}; allowed: {', '.join(ADVANTAGE_MODES)}")
    if mode == "positive":
        return adv.clamp_min(0)
    if mode == "negative":
        return adv.clamp_max(0)
    if mode == "binary":
        return torch.sign(adv)
    if mode == "one":
        return (adv > 0).to(adv.dtype)
    return adv


def clip_advantages(adv: torch.Tensor, adv_clip: float = 5.0, mode: str = "all") -> torch.Tensor:
    """Clip to `[-adv_clip, adv_clip]`, then apply the mode (see `apply_mode`)."""
    if adv_clip <= 0:
        raise ValueError(f"adv_clip must be > 0, got {adv_clip}")
    return apply_mode(adv.clamp(-adv_clip, adv_clip), mode)


def optimality_probability(adv: torch.Tensor, adv_clip: float) -> torch.Tensor:
    """`r = clamp(A / adv_clip / 2 + 0.5, 0, 1)`: 0.5 is neutral, 1 fully positive, 0 fully negative."""
    if adv_clip <= 0:
        raise ValueError(f"adv_clip must be > 0, got {adv_clip}")
    return (adv / adv_clip / 2 + 0.5).clamp(0, 1)


def advantage_stats(
    adv: torch.Tensor, group_ids: torch.Tensor, rewards: torch.Tensor, adv_clip: float = 5.0
) -> dict[str, float]:
    """Log statistics of one epoch's advantages.

    `std` is the population std. `clipped_fraction` is the fraction with `|A|` at (or beyond) `adv_clip`,
    so pass the advantages clipped in mode `all` (before a positive/negative/binary/one mode).
    `zero_std_group_fraction` is the fraction of prompt groups whose rewards are all equal (no signal).
    """
    adv = torch.as_tensor(adv).detach().to(torch.float64).cpu()
    rewards = torch.as_tensor(rewards).detach().to(torch.float64).cpu()
    n = adv.shape[0]
    if n == 0:
        nan = float("nan")
        keys = ("mean", "std", "abs_mean", "min", "max", "clipped_fraction", "zero_std_group_fraction")
        return dict.fromkeys(keys, nan)
    dense, groups = dense_group_ids(torch.as_tensor(group_ids).cpu(), n)
    high = torch.full((groups,), -torch.inf, dtype=torch.float64).scatter_reduce(0, dense, rewards, "amax")
    low = torch.full((groups,), torch.inf, dtype=torch.float64).scatter_reduce(0, dense, rewards, "amin")
    spread = high - low
    at_bound = adv.abs() >= adv_clip * (1 - 1e-6)
    return {
        "mean": float(adv.mean()),
        "std": float(adv.std(unbiased=False)),
        "abs_mean": float(adv.abs().mean()),
        "min": float(adv.min()),
        "max": float(adv.max()),
        "clipped_fraction": float(at_bound.double().mean()),
        "zero_std_group_fraction": float((spread == 0).double().mean()),
    }


def advantage_step(
    rewards: torch.Tensor,
    group_ids: torch.Tensor,
    adv_clip: float,
    mode: str = "all",
    global_std: bool = True,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Steps 3-4 of one epoch (docs/algorithm.md): the optimality probability `r` of every sample.

    Per-prompt advantages (`compute_advantages`), clipped once to `[-adv_clip, adv_clip]`, the mode
    applied, then `r = optimality_probability(A, adv_clip)`. Returns `r` and the statistics of the
    clipped advantages before the mode (`advantage_stats`).
    """
    clipped = clip_advantages(compute_advantages(rewards, group_ids, global_std), adv_clip, "all")
    stats = advantage_stats(clipped, group_ids, rewards, adv_clip=adv_clip)
    return optimality_probability(apply_mode(clipped, mode), adv_clip), stats
