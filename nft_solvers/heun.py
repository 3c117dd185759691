"""Heun: the explicit trapezoidal (second-order Runge-Kutta) solver of `dx/dt = v(x, t)`.

Source: Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative Models"
(arXiv 2206.00364), Algorithm 1, with the flow velocity in place of the EDM derivative; the same
scheme as diffusers' `FlowMatchHeunDiscreteScheduler`. One step from `t` to `t' < t`:

    x_e = x + (t' - t) v(x, t)                        (Euler predictor)
    x'  = x + (t' - t) (v(x, t) + v(x_e, t')) / 2     (trapezoid corrector)

The final step to `t' = 0` is the Euler predictor alone, as in Karras' Algorithm 1 and the
diffusers scheduler: it returns the data prediction `x0_hat = x - t v` and saves the velocity call
at t=0, where a model is least reliable. So `steps` steps cost `2 * steps - 1` velocity calls;
global error O(1/steps^2).
"""

from __future__ import annotations

from itertools import pairwise

from pydantic import Field

from nft_solvers.base import GridSolver, SolverOptions


class HeunOptions(SolverOptions):
    """Options of `heun`."""

    steps: int = Field(20, ge=1, description="number of Heun steps (2 * steps - 1 velocity calls)")


class HeunSolver(GridSolver):
    """Deterministic Heun (trapezoid) ODE solver, 2nd order, two velocity calls per step, Euler last step."""

    name = "heun"
    order = 2
    Options = HeunOptions

    def integrate(self, velocity, x, times, generator):
        for t, t_next in pairwise(times):
            dt = t_next - t
            v = velocity(x, t)
            x_euler = x + dt * v
            if t_next == 0.0:
                x = x_euler
            else:
                x = x + dt * 0.5 * (v + velocity(x_euler, t_next))
        return x
