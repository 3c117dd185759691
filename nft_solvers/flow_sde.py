"""Flow-SDE: Euler-Maruyama on the reverse SDE with the FlowGRPO noise schedule.

Source: Liu et al. 2025, "Flow-GRPO: Training Flow Matching Models via Online RL" (arXiv
2505.05470), equation 9 and its reference `sde_step_with_logprob`. The SDE has the same marginals
as the probability-flow ODE for any noise level `a`. One step from `t` to `t' < t`,
`dt = t' - t < 0`, `z ~ N(0, I)`:

    std_t = a sqrt(t / (1 - t))
    mean  = x (1 + std_t^2 dt / (2 t)) + v (1 + std_t^2 (1 - t) / (2 t)) dt
    x'    = mean + std_t sqrt(-dt) z

(`mean = x + v dt + std_t^2 / (2 t) * eps_hat * dt` with `eps_hat = x + (1 - t) v`: the
score correction of the reverse-time SDE.)

Boundaries:
- at `t = 1`, `std_t` is infinite; as the FlowGRPO reference does (`torch.where(sigma == 1,
  sigma_max, sigma)` with `sigma_max = sigmas[1]`), the `1 - t` under the square root uses the next
  grid time instead: `std_1 = a sqrt(1 / (1 - t_1))`. The drift terms are finite at t = 1.
- the final step to `t' = 0` is deterministic by default (`deterministic_last_step`): an Euler step,
  which returns the data prediction `x0_hat = x - t v`, so samples are clean. The FlowGRPO
  reference adds noise on that step too (`deterministic_last_step = false` reproduces it).

Noise is drawn from `generator` (on the noise's device), so a seeded generator reproduces a sample;
without one, torch's global generator is used. `noise_level = 0` is exactly `euler`.
One velocity call per step; strong order 1/2, weak order 1.
"""

from __future__ import annotations

from itertools import pairwise

import torch
from pydantic import Field

from nft_core.sde import sde_transition
from nft_solvers.base import GridSolver, SolverOptions


class FlowSDEOptions(SolverOptions):
    """Options of `flow-sde`."""

    steps: int = Field(10, ge=1, description="number of Euler-Maruyama steps (= velocity calls)")
    noise_level: float = Field(0.7, ge=0, description="FlowGRPO noise level `a`; 0 = deterministic Euler")
    deterministic_last_step: bool = Field(True, description="no noise on the final step to t=0")


class FlowSDESolver(GridSolver):
    """Euler-Maruyama sampler of the FlowGRPO SDE (stochastic; noise level option, default 0.7)."""

    name = "flow-sde"
    Options = FlowSDEOptions
    order = 1  # weak order 1 (strong 1/2); with noise_level 0 it is Euler

    @property
    def stochastic(self) -> bool:  # type: ignore[override]
        """Stochastic unless `noise_level` is 0 (then it is deterministic Euler)."""
        return self.options.noise_level > 0

    def integrate(self, velocity, x, times, generator):
        a = self.options.noise_level
        for t, t_next in pairwise(times):
            dt = t_next - t
            v = velocity(x, t)
            last = t_next == 0.0
            if a == 0.0 or (last and self.options.deterministic_last_step):
                x = x + dt * v
                continue
            mean, step_std, _ = sde_transition(x, v, t, t_next, a, float(times[1]))
            z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = mean + step_std * z
        return x
