"""What every built-in solver shares: the options model, the default grid, the velocity call."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from nft_solvers.grids import diffusers_grid, grid_times, shifted_grid

VelocityFn = Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor]


class SolverOptions(BaseModel):
    """Options every solver accepts: the number of steps and the SD3 time shift of the default grid."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: int = Field(10, ge=1, description="number of solver steps (grid intervals)")
    shift: float = Field(1.0, gt=0, description="SD3 time shift of the default grid; 1.0 = uniform")
    grid: Literal["shifted", "diffusers"] = Field(
        "shifted",
        description="the default grid: the uniform grid shifted (shifted), or the one diffusers' "
        "FlowMatchEulerDiscreteScheduler samples on (diffusers: its last step before 0 is tiny, as in SD3 "
        "and FlowGRPO)",
    )


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Solver state is kept in float32 when samples are half precision (as diffusers schedulers do)."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


class VelocityCall:
    """Calls `velocity(x, t, cond)` with `t` as a `[N]` tensor and `x` in the dtype of the noise.

    Counts its calls (`calls`), which the convergence tests read as the number of function evaluations.
    """

    def __init__(self, velocity: VelocityFn, noise: torch.Tensor, cond: Any):
        if not torch.is_floating_point(noise) or noise.ndim < 1:
            raise ValueError(f"noise must be a float tensor [N, ...], got {noise.dtype} {tuple(noise.shape)}")
        self.velocity = velocity
        self.cond = cond
        self.batch = noise.shape[0]
        self.dtype = noise.dtype
        self.device = noise.device
        self.calls = 0

    def __call__(self, x: torch.Tensor, t: float) -> torch.Tensor:
        self.calls += 1
        t_vector = torch.full((self.batch,), t, dtype=self.dtype, device=self.device)
        return self.velocity(x.to(self.dtype), t_vector, self.cond).to(x.dtype)


class GridSolver:
    """Base of the built-in solvers: validated options, `default_grid`, and `sample` over a grid.

    Subclasses set `name` and `Options` and implement `integrate(velocity, x, times, generator)`,
    where `times` is the validated grid as Python floats and `x` the noise in the compute dtype. They
    declare `stochastic` (the result depends on the generator: an SDE) and `order` (the global
    convergence order of the deterministic solve, errors shrinking like steps^-order; None: unknown).
    """

    name: ClassVar[str] = ""
    Options: ClassVar[type[SolverOptions]] = SolverOptions
    stochastic: bool = False
    order: float | None = None

    def __init__(self, **options: Any):
        self.options = self.Options(**options)

    @property
    def steps(self) -> int:
        return self.options.steps

    @property
    def shift(self) -> float:
        return self.options.shift

    def default_grid(self) -> torch.Tensor:
        """`steps + 1` float64 times from 1 to 0, SD3-shifted by `shift` (`grid = "diffusers"`: the grid
        of diffusers' flow-matching Euler scheduler)."""
        if self.options.grid == "diffusers":
            return diffusers_grid(self.options.steps, self.options.shift)
        return shifted_grid(self.options.steps, self.options.shift)

    def sample(
        self,
        velocity: VelocityFn,
        noise: torch.Tensor,
        grid: torch.Tensor | None = None,
        cond: Any = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Integrate from the noise at `grid[0]` to `t = 0`; returns the clean sample in the noise's dtype.

        `grid` (decreasing, ending at 0) overrides the default grid and with it the `steps` option.
        """
        times = grid_times(self.default_grid() if grid is None else grid)
        call = VelocityCall(velocity, noise, cond)
        x = noise.to(compute_dtype(noise.dtype))
        x = self.integrate(call, x, times, generator)
        return x.to(noise.dtype)

    def integrate(
        self, velocity: VelocityCall, x: torch.Tensor, times: list[float], generator: torch.Generator | None
    ) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        options = ", ".join(f"{key}={value!r}" for key, value in self.options.model_dump().items())
        return f"{type(self).__name__}({options})"
