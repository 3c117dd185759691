"""Black-box solvers for flow-matching models: integrate from noise at t=1 to data at t=0.

Usable on its own, without the plugin system::

    import nft_solvers
    solver = nft_solvers.load("dpm2", steps=10, shift=3.0)
    x0 = solver.sample(velocity, noise)        # velocity(x, t, cond) -> v, t of shape [N]

Conventions: `x_t = (1 - t) x0 + t eps`, `v = eps - x0`, grids decrease from 1 to 0. Each solver is
one module named after its algorithm (`euler`, `heun`, `dpm2`, `flow_sde`, `diffusers_adapter`);
`nft_solvers.plugin` registers the same table through the `nft` hooks.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from nft_core.errors import ConfigError
from nft_core.lookup import lookup
from nft_core.options import explain
from nft_solvers.base import GridSolver, SolverOptions, VelocityCall
from nft_solvers.diffusers_adapter import DiffusersSolver
from nft_solvers.dpm2 import DPM2Solver
from nft_solvers.euler import EulerSolver
from nft_solvers.flow_sde import FlowSDESolver
from nft_solvers.grids import grid_times, shift_time, shifted_grid, uniform_grid
from nft_solvers.heun import HeunSolver

BUILTIN_SOLVERS: dict[str, type] = {
    "euler": EulerSolver,
    "heun": HeunSolver,
    "dpm2": DPM2Solver,
    "flow-sde": FlowSDESolver,
    "diffusers": DiffusersSolver,
}
"""Name -> solver class; each class has `Options` (its pydantic options model) and is its own factory."""


def available() -> list[str]:
    """Names of the built-in solvers (`nft_core.api.available("solvers")` adds plugins')."""
    return list(BUILTIN_SOLVERS)


def options_model(name: str) -> type[BaseModel]:
    """The pydantic model that validates a built-in solver's options (its `[solver]` TOML table)."""
    return _solver_class(name).Options


def load(name: str, **options: Any):
    """Build a built-in solver from its options; bad names and options raise a one-line `UserError`."""
    cls = _solver_class(name)
    try:
        return cls(**options)
    except ValidationError as error:
        raise ConfigError(f"solver {name!r}: {explain(error, cls.Options)}") from None


def _solver_class(name: str) -> type:
    return lookup(BUILTIN_SOLVERS, name, "solver")


__all__ = [
    "BUILTIN_SOLVERS",
    "DPM2Solver",
    "DiffusersSolver",
    "EulerSolver",
    "FlowSDESolver",
    "GridSolver",
    "HeunSolver",
    "SolverOptions",
    "VelocityCall",
    "available",
    "grid_times",
    "load",
    "options_model",
    "shift_time",
    "shifted_grid",
    "uniform_grid",
]
