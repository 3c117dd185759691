"""FlowGRPO (Liu et al. 2025, arXiv 2505.05470), the baseline NFT is measured against, as its reference
implementation runs it (yifan123/flow_grpo at ac4c86e; `scripts/train_sd3.py` and `config/grpo.py`).

Collection samples an SDE (`nft_core.sde`) with the sampling (old) policy and keeps the whole path and
each step's log-prob. The update re-evaluates, for a (sample, step) pair, the step's log-prob under the
current policy and minimises PPO's clipped surrogate with GRPO's group advantages, plus a KL to the
reference model (the squared difference of the step means over `2 std_t^2`, as the reference has it).
Where the reference differs from a textbook reading, we follow the reference:

- CFG (4.5 in sampling and training): one batched forward of the conditional and unconditional halves,
  the unconditional prediction detached in training (`train_sd3.py` line 190, `noise_pred_uncond.detach()`;
  the reference's newer revisions dropped the detach: `detach_uncond = false`); the reference model's
  prediction in the KL uses the same CFG;
- the trained steps are the first `floor(S timestep_fraction)` of each path, in order, for every sample
  (lines 345 and 864-871), and each optimizer step holds every trained step of its share of the samples
  (`nft_core.plan.path_plan`);
- samples whose advantage is exactly zero are left out of the update (lines 796-817);
- the defaults are `config/grpo.py`'s `geneval_sd3` (KL 0.04, clip 1e-4, noise 0.7, advantages clipped at
  5), with the batch std of the rewards (`global_std`) and two optimizer steps per epoch.

FlowGRPO-Fast (`scripts/train_sd3_fast.py` at 74db691; the window from its
`sd3_pipeline_with_logprob_fast.py`): `sde_window = w > 0` samples an SDE only on `w` consecutive steps,
starting at a step drawn uniformly from `sde_window_range` once per sampling batch, deterministic Euler
steps elsewhere, and trains only those `w` steps; its published recipe also uses the CPS step
(`sde_type = "cps"`, noise level 0.8, clip 1e-5, no KL, no CFG).

The objective is on-policy: its ratio is against the policy that sampled, so the old policy must be the
current one at collection (`objective.old_decay = "none"`).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from nft_core.protocols import Policy
from nft_core.sampling import policy_velocity
from nft_core.sde import cps_log_prob, cps_transition, gaussian_log_prob, sde_transition
from nft_core.types import Cond, Trajectory

__all__ = ["FlowGRPOObjective", "FlowGRPOOptions", "clipped_policy_loss", "path_steps", "sde_trajectory"]


def _step(
    x: torch.Tensor, v: torch.Tensor, t: Any, t_next: Any, noise_level: float, second: float, sde_type: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`(mean, step std, the std the KL divides by)` of one SDE or CPS step."""
    if sde_type == "cps":
        mean, std = cps_transition(x, v, t, t_next, noise_level)
        return mean, std, std
    mean, std, std_t = sde_transition(x, v, t, t_next, noise_level, second)
    return mean, std, std_t


def _log_prob(x_next: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, sde_type: str) -> torch.Tensor:
    return cps_log_prob(x_next, mean) if sde_type == "cps" else gaussian_log_prob(x_next, mean, std)


def sde_trajectory(
    velocity: Any,
    x1: torch.Tensor,
    cond: Cond,
    times: torch.Tensor,
    noise_level: float,
    step_noise: torch.Tensor,
    window: tuple[int, int] | None = None,
    sde_type: str = "sde",
) -> Trajectory:
    """Integrate the FlowGRPO SDE from the noise `x1` over `times` (decreasing, 1 to 0) with the step
    noises `step_noise` `[N, S, *shape]`; every state and each step's log-prob under the sampler.

    Steps outside `window` (`[start, stop)`, default every step) and every step at `noise_level = 0` are
    Euler steps (the deterministic sampler) with log-prob 0."""
    n, steps = x1.shape[0], len(times) - 1
    start, stop = window if window is not None else (0, steps)
    second = float(times[1])
    x = x1.float()
    states, log_probs = [x], []
    for k in range(steps):
        t, t_next = times[k], times[k + 1]
        v = velocity(x, t.expand(n).to(x.dtype), cond).float()
        if noise_level == 0.0 or not start <= k < stop:
            x = x + (t_next - t) * v
            log_probs.append(torch.zeros(n, device=x.device))
        else:
            mean, std, _ = _step(x, v, t, t_next, noise_level, second, sde_type)
            x = mean + std * step_noise[:, k].to(x.device, x.dtype)
            log_probs.append(_log_prob(x, mean, std, sde_type))
        states.append(x)
    first = torch.full((n,), start, dtype=torch.long)
    return Trajectory(
        torch.stack(states, dim=1), torch.stack(log_probs, dim=1), times.detach().cpu().clone(), first
    )


def path_steps(
    path: Trajectory, rows: torch.Tensor, times: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The steps of the paths `rows` that start at the training `times` `[N]` (each a time of the path's
    grid: time `t_k` is step `k`, from `t_k` to `t_{k+1}`): `(states, next_states, old_log_probs, steps)`."""
    device = path.states.device
    index = rows.to(device)
    grid = path.times.to(times.device, times.dtype)
    steps = torch.searchsorted(-grid, -times.contiguous()).to(device)  # t_k is grid[k]
    states = path.states[index]
    arange = torch.arange(len(index), device=device)
    return states[arange, steps], states[arange, steps + 1], path.log_probs[index][arange, steps], steps


def clipped_policy_loss(
    log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor, clip_range: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped surrogate `mean(max(-A r, -A clip(r, 1 - c, 1 + c)))`, `r = exp(log_prob - old)`;
    with the ratio's mean, the fraction of clipped samples and the approximate KL `mean((r - 1) - log r)`."""
    log_ratio = log_prob - old_log_prob
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = torch.maximum(unclipped, clipped).mean()
    with torch.no_grad():
        stats = {
            "ratio": ratio.mean(),
            "clip_fraction": ((ratio - 1.0).abs() > clip_range).float().mean(),
            "approx_kl": ((ratio - 1.0) - log_ratio).mean(),
        }
    return loss, stats


class FlowGRPOOptions(BaseModel):
    """`[objective]` options of `flowgrpo` (defaults: flow_grpo's `config/grpo.py` `geneval_sd3`)."""

    model_config = ConfigDict(extra="forbid")

    noise_level: float = Field(0.7, gt=0, description="SDE noise level `a` (std_t = a sqrt(t / (1 - t)))")
    clip_range: float = Field(1e-4, gt=0, description="PPO ratio clip: r in [1 - c, 1 + c]")
    kl_weight: float = Field(
        0.04,
        ge=0,
        description="weight of the KL to the reference (config/grpo.py geneval_sd3: 0.04; 0.004 in June "
        "2025)",
    )
    guidance: float = Field(4.5, ge=1, description="CFG scale during sampling and training (1: off)")
    adv_clip: float = Field(5.0, gt=0, description="GRPO advantages are clipped to [-adv_clip, adv_clip]")
    detach_uncond: bool = Field(
        True,
        description="with CFG, the unconditional prediction of the training forward carries no gradient "
        "(train_sd3.py line 190 at ac4c86e; false: its newer revisions)",
    )
    drop_zero_advantage: bool = Field(
        True, description="leave samples whose advantage is exactly 0 out of the update (the reference does)"
    )
    sde_type: Literal["sde", "cps"] = Field(
        "sde", description="the step: sde (FlowGRPO's) or cps (the Fast recipes', noise at the next time)"
    )
    sde_window: int = Field(
        0,
        ge=0,
        description="FlowGRPO-Fast: SDE on this many consecutive steps, Euler elsewhere, and only they are "
        "trained (0: SDE on every step)",
    )
    sde_window_range: tuple[int, int] | None = Field(
        None,
        description="FlowGRPO-Fast: the window starts at a step drawn in [lo, hi - sde_window] once per "
        "sampling batch (default: the whole path; the published Fast recipe: [0, steps // 2])",
    )

    @model_validator(mode="after")
    def _window_fits_its_range(self) -> FlowGRPOOptions:
        if self.sde_window_range is not None:
            lo, hi = self.sde_window_range
            if not 0 <= lo < hi or hi - lo < max(self.sde_window, 1):
                raise ValueError(
                    f"sde_window_range {[lo, hi]} must hold the window of {self.sde_window} steps"
                )
        return self


class FlowGRPOObjective:
    """FlowGRPO: SDE sampling with per-step log-probs, PPO-clipped ratio per step, KL to the reference."""

    name = "flowgrpo"
    collects = "trajectory"
    on_policy = True
    needs_exact_rollout = True
    """Its ratio is against the rollout's log-probs: lossy rollout levers are refused (ExactRollout)."""

    def __init__(self, **options: Any) -> None:
        self.options = FlowGRPOOptions(**options)
        for key, value in self.options.model_dump().items():
            setattr(self, key, value)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v}" for k, v in self.options.model_dump().items())
        return f"FlowGRPOObjective({fields})"

    def trained_steps(self, grid_steps: int, requested: int) -> int:
        """How many steps of each path are trained: the window (Fast), else the requested count."""
        return min(self.sde_window, grid_steps) if self.sde_window else requested

    def trained_samples(self, optimality: torch.Tensor) -> torch.Tensor:
        """The samples the update trains on: those with a non-zero advantage (`optimality != 1/2`)."""
        if not self.drop_zero_advantage:
            return torch.ones_like(optimality, dtype=torch.bool)
        return optimality != 0.5

    def _window(self, steps: int, generator: torch.Generator | None) -> tuple[int, int] | None:
        if not self.sde_window:
            return None
        lo, hi = self.sde_window_range or (0, steps)
        start = lo + int(
            torch.randint(0, min(hi, steps) - self.sde_window - lo + 1, (1,), generator=generator)
        )
        return start, start + self.sde_window

    @torch.no_grad()
    def sample(
        self,
        policy: Policy,
        x1: torch.Tensor,
        cond: Cond,
        times: torch.Tensor,
        step_noise: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> Trajectory:
        """The old (sampling) policy's SDE paths from `x1` over `times`, with guidance; with a window,
        drawn once for this batch from `generator`."""
        velocity = policy_velocity(policy, "old", self.guidance)
        window = self._window(len(times) - 1, generator)
        return sde_trajectory(
            velocity, x1, cond, times.to(x1.device), self.noise_level, step_noise, window, self.sde_type
        )

    def trajectory_loss(
        self,
        policy: Policy,
        states: torch.Tensor,
        next_states: torch.Tensor,
        old_log_prob: torch.Tensor,
        steps: torch.Tensor,
        times: torch.Tensor,
        cond: Cond,
        optimality: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss of a micro-batch of steps: sample `i` went from `states[i]` to `next_states[i]` on
        step `steps[i]` of `times` with the sampler's log-prob `old_log_prob[i]`; its GRPO advantage is
        `optimality` mapped back (`A = (r - 1/2) 2 A_max`)."""
        dtype = torch.promote_types(states.dtype, torch.float32)  # the step in at least float32, as there
        times = times.to(states.device, dtype)
        t, t_next = times[steps], times[steps + 1]
        second = float(times[1])
        x = states.to(dtype)
        current = policy_velocity(policy, "current", self.guidance, detach_uncond=self.detach_uncond)
        v = current(states, t.to(states.dtype), cond).to(dtype)
        mean, std, std_t = _step(x, v, t, t_next, self.noise_level, second, self.sde_type)
        log_prob = _log_prob(next_states.to(dtype), mean, std, self.sde_type)
        advantages = (optimality.to(x.device, dtype) - 0.5) * 2.0 * self.adv_clip
        loss, stats = clipped_policy_loss(
            log_prob, old_log_prob.to(x.device, dtype), advantages, self.clip_range
        )
        stats["loss_policy"] = loss.detach()
        kl = torch.zeros((), device=x.device, dtype=dtype)
        if self.kl_weight > 0:
            with torch.no_grad():
                v_ref = policy_velocity(policy, "reference", self.guidance)(states, t.to(states.dtype), cond)
                mean_ref, _, _ = _step(x, v_ref.to(dtype), t, t_next, self.noise_level, second, self.sde_type)
            per_sample = ((mean - mean_ref) ** 2).mean(dim=tuple(range(1, x.ndim)))
            kl = (per_sample / (2.0 * std_t.reshape(-1) ** 2)).mean()
            loss = loss + self.kl_weight * kl
        stats["loss_kl"] = kl.detach()
        stats["loss"] = loss.detach()
        return loss, {key: float(value) for key, value in stats.items()}
