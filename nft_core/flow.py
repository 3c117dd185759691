"""The rectified flow's forward process, as pure functions (a contract module: plugins use it too).

Conventions (docs/algorithm.md): `x_t = (1 - t) x0 + t eps`, `t` in [0, 1] with t = 1 pure noise, and the
network predicts the velocity `v = eps - x0`, so `x0_hat = x_t - t v`.
"""

from __future__ import annotations

import torch

__all__ = ["draw_noise", "expand_time", "forward_noising"]


def expand_time(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape per-sample times `[N]` to `[N, 1, ..., 1]` so they broadcast over `like`'s non-batch dims."""
    if t.ndim != 1 or t.shape[0] != like.shape[0]:
        raise ValueError(f"t must have shape [N] = [{like.shape[0]}], got {tuple(t.shape)}")
    return t.reshape(-1, *([1] * (like.ndim - 1)))


def draw_noise(like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """`eps ~ N(0, I)` shaped like `like`, on its device and dtype, drawn with `generator`.

    A generator on another device (a CPU generator for CUDA latents) draws on its own device and the
    noise is moved, so a CPU seed gives the same noise whatever the training device.
    """
    if generator is not None and generator.device != like.device:
        noise = torch.randn(like.shape, generator=generator, device=generator.device, dtype=like.dtype)
        return noise.to(like.device)
    return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)


def forward_noising(x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """`x_t = (1 - t) x0 + t eps` with `t` of shape `[N]`."""
    tb = expand_time(t, x0).to(x0.dtype)
    return (1 - tb) * x0 + tb * eps
