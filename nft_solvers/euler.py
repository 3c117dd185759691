"""Euler: the first-order explicit solver of the probability-flow ODE `dx/dt = v(x, t)`.

Update from `t` to `t' < t` (Euler 1768; for rectified flows the sampler of Liu et al. 2022 and
SD3's `FlowMatchEulerDiscreteScheduler`):

    x' = x + (t' - t) v(x, t)

For flow matching this is the same map as DDIM and first-order DPM-Solver++: with
`x0_hat = x - t v` it reads `x' = (t'/t) x + (1 - t'/t) x0_hat`, so the last step to `t' = 0`
returns the model's data prediction. One velocity call per step; global error O(1/steps).
"""

from __future__ import annotations

from itertools import pairwise

from pydantic import Field

from nft_solvers.base import GridSolver, SolverOptions


class EulerOptions(SolverOptions):
    """Options of `euler`."""

    steps: int = Field(40, ge=1, description="number of Euler steps (= velocity calls)")


class EulerSolver(GridSolver):
    """Deterministic Euler ODE solver (1st order, one velocity call per step)."""

    name = "euler"
    order = 1
    Options = EulerOptions

    def integrate(self, velocity, x, times, generator):
        for t, t_next in pairwise(times):
            x = x + (t_next - t) * velocity(x, t)
        return x
