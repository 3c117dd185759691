"""FlowGRPO (Liu et al. 2025, arXiv 2505.05470), the baseline NFT is measured against.

Collection samples an SDE (`nft_core.sde`) with the sampling (old) policy and keeps the whole path and
each step's Gaussian log-prob. The update re-evaluates, for a (sample, step) pair, the step's log-prob
under the current policy and minimises PPO's clipped surrogate with GRPO's group advantages, plus a KL
to the reference model (the closed form between the two Gaussian steps, as the reference code has it).
Sampling and training may use classifier-free guidance (the published recipe: 4.5).

The objective is on-policy: its ratio is against the policy that sampled, so the old policy must be the
current one at collection (`objective.old_decay = "0"`).
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from nft_core.protocols import Policy
from nft_core.sampling import policy_velocity
from nft_core.sde import gaussian_log_prob, sde_transition
from nft_core.types import Cond, Trajectory

__all__ = ["FlowGRPOObjective", "FlowGRPOOptions", "clipped_policy_loss", "path_steps", "sde_trajectory"]


def sde_trajectory(
    velocity: Any,
    x1: torch.Tensor,
    cond: Cond,
    times: torch.Tensor,
    noise_level: float,
    step_noise: torch.Tensor,
) -> Trajectory:
    """Integrate the FlowGRPO SDE from the noise `x1` over `times` (decreasing, 1 to 0) with the step
    noises `step_noise` `[N, S, *shape]`; every state and each step's log-prob under the sampler.

    At `noise_level = 0` the steps are Euler steps (the deterministic sampler) and the log-probs are 0."""
    n, steps = x1.shape[0], len(times) - 1
    second = float(times[1])
    x = x1.float()
    states, log_probs = [x], []
    for k in range(steps):
        t, t_next = times[k], times[k + 1]
        v = velocity(x, t.expand(n).to(x.dtype), cond).float()
        if noise_level == 0.0:
            x = x + (t_next - t) * v
            log_probs.append(torch.zeros(n, device=x.device))
        else:
            mean, std, _ = sde_transition(x, v, t, t_next, noise_level, second)
            x = mean + std * step_noise[:, k].to(x.device, x.dtype)
            log_probs.append(gaussian_log_prob(x, mean, std))
        states.append(x)
    return Trajectory(torch.stack(states, dim=1), torch.stack(log_probs, dim=1), times.detach().cpu().clone())


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
    """`[objective]` options of `flowgrpo` (defaults: the published SD3.5 GenEval recipe)."""

    model_config = ConfigDict(extra="forbid")

    noise_level: float = Field(0.7, gt=0, description="SDE noise level `a` (std_t = a sqrt(t / (1 - t)))")
    clip_range: float = Field(1e-4, gt=0, description="PPO ratio clip: r in [1 - c, 1 + c]")
    kl_weight: float = Field(0.004, ge=0, description="weight of the KL to the reference (published: 0.004)")
    guidance: float = Field(4.5, ge=1, description="CFG scale during sampling and training (1: off)")
    adv_clip: float = Field(5.0, gt=0, description="GRPO advantages are clipped to [-adv_clip, adv_clip]")


class FlowGRPOObjective:
    """FlowGRPO: SDE sampling with per-step log-probs, PPO-clipped ratio per step, KL to the reference."""

    name = "flowgrpo"
    collects = "trajectory"
    on_policy = True

    def __init__(
        self,
        noise_level: float = 0.7,
        clip_range: float = 1e-4,
        kl_weight: float = 0.004,
        guidance: float = 4.5,
        adv_clip: float = 5.0,
    ) -> None:
        self.options = FlowGRPOOptions(
            noise_level=noise_level,
            clip_range=clip_range,
            kl_weight=kl_weight,
            guidance=guidance,
            adv_clip=adv_clip,
        )
        self.noise_level = self.options.noise_level
        self.clip_range = self.options.clip_range
        self.kl_weight = self.options.kl_weight
        self.guidance = self.options.guidance
        self.adv_clip = self.options.adv_clip

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v}" for k, v in self.options.model_dump().items())
        return f"FlowGRPOObjective({fields})"

    @torch.no_grad()
    def sample(
        self, policy: Policy, x1: torch.Tensor, cond: Cond, times: torch.Tensor, step_noise: torch.Tensor
    ) -> Trajectory:
        """The old (sampling) policy's SDE paths from `x1` over `times`, with guidance."""
        velocity = policy_velocity(policy, "old", self.guidance)
        return sde_trajectory(velocity, x1, cond, times.to(x1.device), self.noise_level, step_noise)

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
        times = times.to(states.device)
        t, t_next = times[steps], times[steps + 1]
        second = float(times[1])
        x = states.float()
        v = policy_velocity(policy, "current", self.guidance)(states, t.to(states.dtype), cond).float()
        mean, std, std_t = sde_transition(x, v, t, t_next, self.noise_level, second)
        log_prob = gaussian_log_prob(next_states.float(), mean, std)
        advantages = (optimality.to(x.device).float() - 0.5) * 2.0 * self.adv_clip
        loss, stats = clipped_policy_loss(
            log_prob, old_log_prob.to(x.device).float(), advantages, self.clip_range
        )
        stats["loss_policy"] = loss.detach()
        kl = torch.zeros((), device=x.device)
        if self.kl_weight > 0:
            with torch.no_grad():
                v_ref = policy_velocity(policy, "reference", self.guidance)(states, t.to(states.dtype), cond)
                mean_ref, _, _ = sde_transition(x, v_ref.float(), t, t_next, self.noise_level, second)
            per_sample = ((mean - mean_ref) ** 2).mean(dim=tuple(range(1, x.ndim)))
            kl = (per_sample / (2.0 * std_t.reshape(-1) ** 2)).mean()
            loss = loss + self.kl_weight * kl
        stats["loss_kl"] = kl.detach()
        stats["loss"] = loss.detach()
        return loss, {key: float(value) for key, value in stats.items()}
