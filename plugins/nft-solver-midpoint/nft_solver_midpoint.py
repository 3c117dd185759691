"""The explicit midpoint method (second-order Runge-Kutta) as an `nft` solver plugin.

Source: Runge 1895; Hairer, Nørsett & Wanner, "Solving Ordinary Differential Equations I", §II.1,
the method (1.7). For the probability-flow ODE `dx/dt = v(x, t)` of a flow-matching model, one step
from `t` to `t' < t` with `h = t' - t`:

    x_m = x + (h / 2) v(x, t)
    x'  = x + h v(x_m, t + h / 2)

Two velocity calls per step, both at `t > 0` (the model is never asked at t = 0); local error
O(h^3), global error O(1/steps^2). On the straight trajectories of a single data point it is exact,
like every consistent solver.
"""

from __future__ import annotations

from itertools import pairwise

from pydantic import Field

from nft_core.hookspecs import hookimpl
from nft_solvers.base import GridSolver, SolverOptions

__all__ = ["MidpointOptions", "MidpointSolver"]


class MidpointOptions(SolverOptions):
    """`[solver]` options of `midpoint` (besides `name`): steps and the SD3 shift of the default grid."""

    steps: int = Field(10, ge=1, description="number of midpoint steps (2 * steps velocity calls)")


class MidpointSolver(GridSolver):
    """Explicit midpoint (RK2) ODE solver: second order, two velocity calls per step."""

    name = "midpoint"
    Options = MidpointOptions

    def integrate(self, velocity, x, times, generator):
        """Midpoint steps over the grid's times (Python floats from `grid[0]` down to 0)."""
        for t, t_next in pairwise(times):
            h = t_next - t
            x_mid = x + (0.5 * h) * velocity(x, t)
            x = x + h * velocity(x_mid, t + 0.5 * h)
        return x


@hookimpl
def register_solvers(register):
    """Register `midpoint` with the model that validates its `[solver]` options."""
    register("midpoint", MidpointSolver, options=MidpointOptions)
