"""nft-plugin-template: the `plugin-template` solver, registered through the `nft` plugin hooks.

The example update is the explicit Euler step of the probability-flow ODE `dx/dt = v(x, t)` from
`t` to `t' < t` (conventions: `x_t = (1 - t) x0 + t eps`, `v = eps - x0`, grids from 1 to 0):

    x' = x + (t' - t) v(x, t)

Replace `integrate` (and the options) with your own update. `GridSolver` supplies the contract:
option validation, the default grid (`steps`, SD3 `shift`), grid checks, dtype handling and the
velocity call with `t` as a `[N]` tensor (docs/plugins.md).
"""

from __future__ import annotations

from itertools import pairwise

from pydantic import Field

from nft_core.hookspecs import hookimpl
from nft_solvers.base import GridSolver, SolverOptions

__all__ = ["PluginTemplateOptions", "PluginTemplateSolver"]


class PluginTemplateOptions(SolverOptions):
    """`[solver]` options of `plugin-template` (besides `name`); unknown keys are errors."""

    steps: int = Field(20, ge=1, description="number of steps (= velocity calls)")


class PluginTemplateSolver(GridSolver):
    """Explicit Euler ODE solver: one velocity call per step, first order."""

    name = "plugin-template"
    Options = PluginTemplateOptions

    def integrate(self, velocity, x, times, generator):
        """`times` are the grid's Python floats from `grid[0]` to 0; `velocity(x, t)` takes a float `t`."""
        for t, t_next in pairwise(times):
            x = x + (t_next - t) * velocity(x, t)
        return x


@hookimpl
def register_solvers(register):
    """Register `plugin-template` with the model that validates its `[solver]` options."""
    register("plugin-template", PluginTemplateSolver, options=PluginTemplateOptions)
