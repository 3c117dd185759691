"""Time grids for flow-matching solvers: decreasing from t=1 (noise) to t=0 (data).

The SD3 time shift (Esser et al. 2024, "Scaling Rectified Flow Transformers", section 5.3.2) maps a
uniform time `t` to `t' = s t / (1 + (s - 1) t)`; `s > 1` spends more steps at high noise.
"""

from __future__ import annotations

import math
from itertools import pairwise

import torch

from nft_core.errors import UserError


def shift_time(t, shift: float):
    """The SD3 time shift `s t / (1 + (s - 1) t)` of a float or a tensor; `shift=1` is the identity."""
    if shift <= 0:
        raise ValueError(f"shift must be > 0, got {shift}")
    return shift * t / (1 + (shift - 1) * t)


def uniform_grid(steps: int, dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
    """`steps + 1` equally spaced times from exactly 1.0 down to exactly 0.0."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64).to(dtype=dtype, device=device)


def shifted_grid(
    steps: int, shift: float = 1.0, dtype: torch.dtype = torch.float64, device=None
) -> torch.Tensor:
    """The uniform grid passed through the SD3 shift; the end points 1 and 0 stay exact."""
    grid = shift_time(uniform_grid(steps), float(shift))
    return grid.to(dtype=dtype, device=device)


def diffusers_grid(
    steps: int, shift: float = 1.0, train_steps: int = 1000, dtype: torch.dtype = torch.float64, device=None
) -> torch.Tensor:
    """The grid diffusers' `FlowMatchEulerDiscreteScheduler(shift=shift).set_timesteps(steps)` samples on
    (SD3 and FLUX pipelines without dynamic shifting): `steps` points evenly spaced between 1 and the
    scheduler's smallest training sigma, `shift(1 / train_steps)`, then shifted, and a final 0. Its last
    step before 0 is tiny (0.0089 for 10 steps at shift 3, where the shifted uniform grid has 0.25)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    sigma_min = float(shift_time(torch.tensor([1.0 / train_steps], dtype=torch.float64), float(shift))[0])
    sigmas = shift_time(torch.linspace(1.0, sigma_min, steps, dtype=torch.float64), float(shift))
    return torch.cat([sigmas, sigmas.new_zeros(1)]).to(dtype=dtype, device=device)


def grid_times(grid: torch.Tensor | list[float] | tuple[float, ...]) -> list[float]:
    """Validate a time grid and return it as Python floats (solver coefficients are computed in float64).

    A grid is 1-D, has at least two points, is strictly decreasing, starts at or below 1 and ends
    at exactly 0 (a solver returns clean samples). A start below 1 is allowed: diffusers' DPM-Solver
    and UniPC schedules, for example, start at 1 - 1/1000.
    """
    if isinstance(grid, torch.Tensor):
        if grid.ndim != 1:
            raise UserError(f"time grid must be 1-D, got shape {tuple(grid.shape)}")
        times = [float(t) for t in grid.detach().to("cpu", torch.float64).tolist()]
    else:
        times = [float(t) for t in grid]
    if len(times) < 2:
        raise UserError(f"time grid needs at least 2 points (1 step), got {len(times)}")
    if not all(math.isfinite(t) for t in times):
        raise UserError("time grid has non-finite values")
    if any(later >= earlier for earlier, later in pairwise(times)):
        raise UserError(f"time grid must be strictly decreasing, got {_short(times)}")
    if times[0] > 1.0:
        raise UserError(f"time grid must start at t <= 1 (t=1 is pure noise), got {times[0]}")
    if times[-1] != 0.0:
        raise UserError(f"time grid must end at t = 0 (clean data), got {times[-1]}")
    return times


def _short(times: list[float]) -> str:
    shown = ", ".join(f"{t:.4g}" for t in times[:6])
    return f"[{shown}{', ...' if len(times) > 6 else ''}]"
