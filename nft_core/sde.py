"""The FlowGRPO SDE step on a rectified flow, as pure functions (shared by the `flow-sde` solver and the
`flowgrpo` objective).

Source: Liu et al. 2025, "Flow-GRPO" (arXiv 2505.05470), equation 9. From `t` to `t' < t`,
`dt = t' - t < 0`, noise level `a`:

    std_t = a sqrt(t / (1 - t))               (at t = 1: `1 - t` is taken at the grid's second time)
    mean  = x (1 + std_t^2 dt / (2 t)) + v (1 + std_t^2 (1 - t) / (2 t)) dt
    x'    = mean + std_t sqrt(-dt) z,  z ~ N(0, I)

The step's density is Gaussian with that mean and standard deviation `std_t sqrt(-dt)`; its log-prob
is averaged over the non-batch dimensions, as the FlowGRPO reference does.

The reference's later "CPS" step (`sde_type = "cps"`, `flow_grpo/diffusers_patch/sd3_sde_with_logprob.py`
at 54809b5, the Fast recipes' sampler) keeps the noise level of the next time instead:

    std   = t' sin(a pi / 2)
    mean  = (x - t v) (1 - t') + (x + (1 - t) v) sqrt(t'^2 - std^2)
    x'    = mean + std z,   log-prob = -mean_dims (x' - mean)^2   (constants dropped, as there)
"""

from __future__ import annotations

import math

import torch

__all__ = ["cps_log_prob", "cps_transition", "flowgrpo_std", "gaussian_log_prob", "sde_transition"]


def flowgrpo_std(t: float, noise_level: float, t_next: float) -> float:
    """`std_t = a sqrt(t / (1 - t))`, with `1 - t` replaced by `1 - t_next` at `t = 1` (FlowGRPO)."""
    t_denominator = t_next if t >= 1.0 else t
    return noise_level * math.sqrt(t / (1.0 - t_denominator))


def _per_sample(value: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    tensor = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    return tensor.reshape(-1, *([1] * (like.ndim - 1))) if tensor.ndim else tensor


def sde_transition(
    x: torch.Tensor,
    v: torch.Tensor,
    t: torch.Tensor | float,
    t_next: torch.Tensor | float,
    noise_level: float,
    second_time: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`(mean, step_std, std_t)` of the step from `t` to `t_next` (scalars or `[N]` tensors) at `(x, v)`;
    `second_time` is the grid's second time (it stands in for `t` in `1 - t` at `t = 1`)."""
    t_b, t_next_b = _per_sample(t, x), _per_sample(t_next, x)
    dt = t_next_b - t_b
    denominator = torch.where(t_b >= 1.0, torch.full_like(t_b, second_time), t_b)
    std_t = noise_level * torch.sqrt(t_b / (1.0 - denominator))
    variance_over_2t = std_t * std_t / (2.0 * t_b)
    mean = x * (1.0 + variance_over_2t * dt) + v * ((1.0 + variance_over_2t * (1.0 - t_b)) * dt)
    return mean, std_t * torch.sqrt(-dt), std_t


def gaussian_log_prob(x_next: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """`log N(x_next; mean, std^2)` per element, averaged over every dimension but the first: `[N]`."""
    log_density = -((x_next - mean) ** 2) / (2.0 * std**2) - torch.log(std) - 0.5 * math.log(2.0 * math.pi)
    return log_density.mean(dim=tuple(range(1, log_density.ndim)))


def cps_transition(
    x: torch.Tensor,
    v: torch.Tensor,
    t: torch.Tensor | float,
    t_next: torch.Tensor | float,
    noise_level: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(mean, std)` of FlowGRPO's CPS step from `t` to `t_next` at `(x, v)` (scalars or `[N]` times)."""
    t_b, t_next_b = _per_sample(t, x), _per_sample(t_next, x)
    std = t_next_b * math.sin(noise_level * math.pi / 2)
    x0_hat, x1_hat = x - t_b * v, x + (1.0 - t_b) * v
    mean = x0_hat * (1.0 - t_next_b) + x1_hat * torch.sqrt(t_next_b * t_next_b - std * std)
    return mean, std


def cps_log_prob(x_next: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """The CPS step's log-prob as the reference computes it: `-mean((x' - mean)^2)` over all but the first
    dimension, its constants dropped (they cancel in the ratio)."""
    return -((x_next - mean) ** 2).mean(dim=tuple(range(1, x_next.ndim)))
