"""DPM-Solver++(2M): the multistep second-order solver in data-prediction form, for flow matching.

Source: Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic
Models" (arXiv 2211.01095), Algorithm 2 (multistep second order); the flow-matching instance is
diffusers' `DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2,
use_flow_sigmas=True, prediction_type="flow_prediction", lower_order_final=True,
final_sigmas_type="zero")`, the reference's collection solver ("dpm2", 10 steps).

Flow matching as a Gaussian path: `x_t = alpha_t x0 + sigma_t eps` with `alpha_t = 1 - t`,
`sigma_t = t`, half log-SNR `lambda_t = log(alpha_t / sigma_t)`, data prediction
`x0_hat = x - t v`. One step from `s = t_i` to `t = t_{i+1}`, `h = lambda_t - lambda_s`:

    first order:  x_t = (sigma_t / sigma_s) x - alpha_t (e^{-h} - 1) D
    second order: the same with D = x0_hat_i + (x0_hat_i - x0_hat_{i-1}) / (2 r),
                  r = (lambda_s - lambda_{i-1}) / h

For this path `alpha_t (1 - e^{-h}) = (s - t) / s`, so the step is
`x_t = (t/s) x + ((s - t)/s) D`: no logarithm is needed for the step itself, and with
`D = x0_hat_i` it is exactly an Euler step.

Lower-order steps:
- the first step is first order (no previous data prediction);
- a step whose previous point is `t = 1` is also first order: there `lambda = -inf`, so `r` is
  infinite and the correction vanishes (diffusers avoids it by starting its flow schedule at
  `1 - 1/1000`; a grid passed in that starts below 1 gets the second-order step right away);
- the final step to `t = 0` (`lambda = +inf`) is first order, which returns the data prediction
  `x0_hat` at the last grid point ("lower_order_final" with `final_sigmas_type="zero"`).

One velocity call per step; global error O(1/steps^2).
"""

from __future__ import annotations

import math
from itertools import pairwise

from pydantic import Field

from nft_solvers.base import GridSolver, SolverOptions


def half_log_snr(t: float) -> float:
    """`lambda_t = log((1 - t) / t)` of the rectified-flow path (`-inf` at t=1, `+inf` at t=0)."""
    if t >= 1.0:
        return -math.inf
    if t <= 0.0:
        return math.inf
    return math.log1p(-t) - math.log(t)


class DPM2Options(SolverOptions):
    """Options of `dpm2`."""

    steps: int = Field(10, ge=1, description="number of steps (= velocity calls)")


class DPM2Solver(GridSolver):
    """Multistep DPM-Solver++(2M) for flow matching (2nd order, one velocity call per step)."""

    name = "dpm2"
    order = 2
    Options = DPM2Options

    def integrate(self, velocity, x, times, generator):
        previous_t = None
        previous_x0 = None
        for t, t_next in pairwise(times):
            x0 = x - t * velocity(x, t)
            if t_next == 0.0:
                x = x0
                break
            data = x0
            if previous_x0 is not None and previous_t < 1.0:
                h = half_log_snr(t_next) - half_log_snr(t)
                ratio = (half_log_snr(t) - half_log_snr(previous_t)) / h
                data = x0 + (x0 - previous_x0) / (2.0 * ratio)
            x = (t_next / t) * x + ((t - t_next) / t) * data
            previous_t, previous_x0 = t, x0
        return x
