"""Any diffusers flow-matching scheduler, by class name, as a black-box solver.

diffusers' flow schedulers (`FlowMatchEulerDiscreteScheduler`, `FlowMatchHeunDiscreteScheduler`,
and `UniPCMultistepScheduler`, `DPMSolverMultistepScheduler`, `DEISMultistepScheduler`, ... with
`use_flow_sigmas=True`) use `sigma in [0, 1]` for our `t` (`x = (1 - sigma) x0 + sigma eps`) and
`timestep = sigma * num_train_timesteps`; with `prediction_type="flow_prediction"` (or natively for
the FlowMatch* classes) the model output is our velocity `v = eps - x0`. So the loop is the
pipeline's: `for k, timestep in enumerate(scheduler.timesteps): v = velocity(x, sigmas[k]);
x = scheduler.step(v, timestep, x)`. The time handed to `velocity` is `scheduler.sigmas[k]`, not
`timestep / 1000`, because several schedulers round their timesteps to integers.

Grids and shift:
- a scheduler whose `set_timesteps` takes `sigmas` (FlowMatchEuler, UniPC in flow mode, ...) gets our
  grid without its final 0: the given `grid`, or `shifted_grid(steps, shift)`. Its own shift
  (`shift` / `flow_shift`) is then fixed to 1.0 because the grid is already shifted.
- any other scheduler (DPMSolverMultistep, FlowMatchHeun, DEIS, ...) builds its own schedule from
  `steps`, with our `shift` as its `shift` / `flow_shift`; `default_grid()` reports that schedule
  (e.g. DPM-Solver's flow schedule starts at 1 - 1/1000) and a `grid` other than it is an error.

`config` is passed to the scheduler's constructor after these defaults (`use_flow_sigmas=True`,
`prediction_type="flow_prediction"` where the class has them), so it can override anything except
the shift of a scheduler fed with our grid. diffusers is imported only when an adapter is built.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import torch
from pydantic import Field

from nft_core.errors import UserError
from nft_solvers.base import GridSolver, SolverOptions
from nft_solvers.grids import shifted_grid

EXAMPLE_SCHEDULERS = (
    "FlowMatchEulerDiscreteScheduler",
    "FlowMatchHeunDiscreteScheduler",
    "UniPCMultistepScheduler",
    "DPMSolverMultistepScheduler",
    "DEISMultistepScheduler",
)


class DiffusersOptions(SolverOptions):
    """Options of `diffusers`."""

    scheduler: str = Field("FlowMatchEulerDiscreteScheduler", description="diffusers scheduler class name")
    steps: int = Field(20, ge=1, description="number of scheduler steps (num_inference_steps)")
    config: dict[str, Any] = Field(default_factory=dict, description="extra scheduler constructor arguments")


def _diffusers():
    try:
        import diffusers
    except ImportError as error:
        raise UserError(
            f"the `diffusers` solver needs the diffusers package ({error}); "
            "install it with `pip install 'diffusion-nft[diffusers]'`"
        ) from None
    return diffusers


def _is_flow_scheduler(cls: type) -> bool:
    parameters = inspect.signature(cls.__init__).parameters
    return "use_flow_sigmas" in parameters or "shift" in parameters


def flow_scheduler_names() -> list[str]:
    """Class names of the installed diffusers schedulers that can run in flow-matching mode."""
    diffusers = _diffusers()
    names = []
    for name in dir(diffusers):
        if not name.endswith("Scheduler") or "Inverse" in name:  # inverse schedulers run 0 -> 1
            continue
        try:
            cls = getattr(diffusers, name)
        except Exception:  # an optional backend of diffusers that is not installed
            continue
        if isinstance(cls, type) and issubclass(cls, diffusers.SchedulerMixin) and _is_flow_scheduler(cls):
            names.append(name)
    return sorted(names)


def scheduler_class(name: str) -> type:
    """The diffusers scheduler class of that name; an unknown or non-flow class is a `UserError`."""
    diffusers = _diffusers()
    cls = getattr(diffusers, name, None) if name.endswith("Scheduler") else None
    if not (isinstance(cls, type) and issubclass(cls, diffusers.SchedulerMixin)):
        raise UserError(
            f"unknown diffusers scheduler {name!r}; for example: {', '.join(EXAMPLE_SCHEDULERS)} "
            f"(all flow-capable ones: {', '.join(flow_scheduler_names())})"
        )
    if not _is_flow_scheduler(cls):
        raise UserError(
            f"diffusers scheduler {name!r} has no flow-matching mode (no `use_flow_sigmas` or `shift`); "
            f"use one of: {', '.join(flow_scheduler_names())}"
        )
    return cls


class DiffusersSolver(GridSolver):
    """A diffusers scheduler (by class name) run as a black-box flow-matching solver."""

    name = "diffusers"
    Options = DiffusersOptions

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.scheduler_class = scheduler_class(self.options.scheduler)
        parameters = inspect.signature(self.scheduler_class.__init__).parameters
        config: dict[str, Any] = {}
        if "use_flow_sigmas" in parameters:
            config["use_flow_sigmas"] = True
        if "prediction_type" in parameters:
            config["prediction_type"] = "flow_prediction"
        shift_key = next((key for key in ("shift", "flow_shift") if key in parameters), None)
        user_config = dict(self.options.config)
        config.update(user_config)
        set_timesteps = inspect.signature(self.scheduler_class.set_timesteps).parameters
        # UniPC and friends accept `sigmas` only in flow mode.
        self.takes_grid = "sigmas" in set_timesteps and config.get("use_flow_sigmas", True)
        if shift_key is not None:
            if self.takes_grid:
                if float(user_config.get(shift_key, 1.0)) != 1.0:
                    raise UserError(
                        f"solver.config.{shift_key}: {self.options.scheduler} is fed our grid; "
                        "set the solver's `shift` option instead"
                    )
                config[shift_key] = 1.0
            elif shift_key not in user_config:
                config[shift_key] = self.options.shift
        elif self.options.shift != 1.0 and not self.takes_grid:
            raise UserError(f"solver.shift: {self.options.scheduler} has no shift and takes no custom grid")
        try:
            self.scheduler_config = dict(self.scheduler_class(**config).config)
        except (TypeError, ValueError) as error:
            raise UserError(f"solver.config: {self.options.scheduler}({config}) failed: {error}") from None

    @property
    def stochastic(self) -> bool:  # type: ignore[override]
        """Whether the scheduler draws noise: `stochastic_sampling`, or an SDE `algorithm_type`."""
        config = self.scheduler_config
        return bool(config.get("stochastic_sampling")) or "sde" in str(config.get("algorithm_type", ""))

    def new_scheduler(self):
        """A fresh scheduler (they are stateful: step index, multistep history)."""
        return self.scheduler_class.from_config(self.scheduler_config)

    def default_grid(self) -> torch.Tensor:
        """Our shifted grid where the scheduler takes one, else the scheduler's own step boundaries."""
        if self.takes_grid:
            return shifted_grid(self.options.steps, self.options.shift)
        scheduler = self.new_scheduler()
        scheduler.set_timesteps(self.options.steps)
        return torch.unique_consecutive(scheduler.sigmas.detach().to("cpu", torch.float64))

    def sample(self, velocity, noise, grid=None, cond=None, generator=None):
        if grid is not None and not self.takes_grid:
            own = self.default_grid()
            given = torch.as_tensor(grid, dtype=torch.float64).cpu()
            if given.shape != own.shape or not torch.allclose(given, own, atol=1e-6):
                raise UserError(
                    f"{self.options.scheduler} builds its own schedule and takes no custom grid; "
                    "leave grid unset (or pass its default_grid())"
                )
            grid = None
        return super().sample(velocity, noise, grid=grid, cond=cond, generator=generator)

    def integrate(self, velocity, x, times, generator):
        scheduler = self.new_scheduler()
        if self.takes_grid:
            scheduler.set_timesteps(sigmas=np.asarray(times[:-1], dtype=np.float64), device=x.device)
        else:
            scheduler.set_timesteps(self.options.steps, device=x.device)
        sigmas = [float(sigma) for sigma in scheduler.sigmas.detach().cpu().tolist()]
        step_parameters = inspect.signature(scheduler.step).parameters
        step_kwargs = {"generator": generator} if "generator" in step_parameters else {}
        scale = getattr(scheduler, "scale_model_input", None)
        for index, timestep in enumerate(scheduler.timesteps):
            model_input = scale(x, timestep) if scale is not None else x
            v = velocity(model_input, sigmas[index])
            x = scheduler.step(v, timestep, x, return_dict=False, **step_kwargs)[0].to(x.dtype)
        return x

    def __repr__(self) -> str:
        options = self.options
        return f"DiffusersSolver({options.scheduler}, steps={options.steps}, shift={options.shift})"
