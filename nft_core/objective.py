"""The DiffusionNFT objective (docs/algorithm.md step 5) and the positive-only RFT baseline.

`nft_loss` is the pure math on tensors; `NFTObjective` / `RFTObjective` draw the forward-process noise
(`nft_core.flow`) and query the policy's views, then call it.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from nft_core.flow import draw_noise, expand_time, forward_noising
from nft_core.protocols import Policy
from nft_core.types import Cond, index_cond

__all__ = [
    "NFTObjective",
    "NFTOptions",
    "RFTObjective",
    "RFTOptions",
    "nft_loss",
    "reward_adaptive_kl",
    "rft_loss",
    "velocity_norm_hinge",
]

ADAPTIVE_KL_FLOOR = 1e-4
"""The smallest per-sample KL weight of `reward_adaptive_kl` (CRD's `base_beta`)."""


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """At least float32: the loss is computed in fp32 (or fp64) even when the network runs in 16 bits."""
    dtype = torch.float32
    for tensor in tensors:
        dtype = torch.promote_types(dtype, tensor.dtype)
    return dtype


def velocity_norm_hinge(v: torch.Tensor, v_ref: torch.Tensor, margin: float = 0.0) -> torch.Tensor:
    """NormGuard's hinge on velocity-norm inflation (Pan et al. 2026, arXiv 2606.27771): zero while the
    trained velocity's norm stays within `(1 + margin)` of the reference's at the same inputs, else
    `mean_i ((|v_i| - (1 + margin) |v_ref_i|) / |v_ref_i|)^2` (norms per sample over all non-batch dims).

    The paper's abstract defines the penalty as a hinge that "activates only when |v_theta| exceeds
    |v_ref|" and adds to any velocity-local loss; its exact form was not public where we looked, so this
    is our reading of it: squared, relative to the reference's norm so that its weight does not depend on
    the latent's scale. `v_ref` is a constant."""
    dtype = torch.promote_types(v.dtype, torch.float32)
    norm = v.to(dtype).flatten(1).norm(dim=1)
    reference = v_ref.detach().to(dtype).flatten(1).norm(dim=1).clamp_min(1e-12)
    excess = torch.relu(norm - (1.0 + margin) * reference) / reference
    return excess.square().mean()


def reward_adaptive_kl(
    v: torch.Tensor, v_ref: torch.Tensor, optimality: torch.Tensor, kl_weight: float
) -> torch.Tensor:
    """CRD's reward-adaptive KL strength (Zhu et al. 2026, arXiv 2603.14128), as its first author wrote it
    (X-GenGroup/Flow-Factory `src/flow_factory/trainers/crd.py` lines 787-791 and 810-824 at a0b2bc5):
    `mean_i w_i mean((v_i - v_ref_i)^2)` with the per-sample weight
    `w_i = kl_weight (m + r_i (1 - m))`, `m = 1e-4 / kl_weight`, `r_i` the sample's optimality (its clipped
    advantage mapped to [0, 1]): the anchor is strongest on the samples the update pushes hardest towards,
    the ones a reward loophole would pay most, and 1e-4 on the worst."""
    dims = tuple(range(1, v.ndim))
    dtype = torch.promote_types(v.dtype, torch.float32)
    per_sample = (v.to(dtype) - v_ref.detach().to(dtype)).square().mean(dim=dims)
    floor = min(1.0, ADAPTIVE_KL_FLOOR / kl_weight) if kl_weight > 0 else 1.0
    weights = kl_weight * (floor + optimality.detach().to(dtype) * (1.0 - floor))
    return (weights * per_sample).mean()


def nft_loss(
    v: torch.Tensor,
    v_old: torch.Tensor,
    x0: torch.Tensor,
    x_t: torch.Tensor,
    t: torch.Tensor,
    optimality: torch.Tensor,
    beta: float,
    adv_clip: float,
    v_ref: torch.Tensor | None = None,
    kl_weight: float = 0.0,
    weight_floor: float = 1e-5,
    kl_adaptive: bool = False,
    norm_guard: float = 0.0,
    norm_margin: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The NFT loss of one batch, exactly as the reference implementation computes it.

    - `v_pos = beta v + (1 - beta) v_old`, `v_neg = (1 + beta) v_old - beta v`
      (computed as `v_old +/- beta (v - v_old)`: the same numbers, and bit-exactly symmetric at `v == v_old`)
    - `x0_pos = x_t - t v_pos`, `x0_neg = x_t - t v_neg`
    - `w_* = max(mean |x0_* - x0|, weight_floor)` per sample, detached
    - `L_* = mean (x0_* - x0)^2 / w_*` per sample (means over all non-batch dims)
    - `L_nft = adv_clip * mean_batch(r L_pos / beta + (1 - r) L_neg / beta)`
    - `L_kl = mean (v - v_ref)^2` when `v_ref` is given; total `L_nft + kl_weight L_kl`
    - guards (off by default): `kl_adaptive` weighs the KL per sample by its optimality instead
      (`reward_adaptive_kl`, CRD); `norm_guard > 0` adds `norm_guard * velocity_norm_hinge(v, v_ref,
      norm_margin)` (NormGuard)

    `v_old`, `v_ref`, `x0`, `x_t` are treated as constants. Arithmetic is in at least float32.
    Returns the total loss and detached statistics (each a 0-dim tensor).
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if v.shape != x0.shape or v_old.shape != x0.shape or x_t.shape != x0.shape:
        raise ValueError(
            f"v, v_old, x_t and x0 must share one shape; got {tuple(v.shape)}, {tuple(v_old.shape)}, "
            f"{tuple(x_t.shape)}, {tuple(x0.shape)}"
        )
    if optimality.shape != (x0.shape[0],):
        raise ValueError(f"optimality must have shape [N] = [{x0.shape[0]}], got {tuple(optimality.shape)}")
    if (kl_weight > 0 or norm_guard > 0) and v_ref is None:
        raise ValueError("kl_weight > 0 and norm_guard > 0 need v_ref (the reference view's velocity)")
    dtype = _compute_dtype(v, v_old, x0, x_t)
    v32 = v.to(dtype)
    v_old = v_old.detach().to(dtype)
    x0 = x0.detach().to(dtype)
    x_t = x_t.detach().to(dtype)
    tb = expand_time(t.detach(), x0).to(dtype)
    r = optimality.detach().to(dtype)
    dims = tuple(range(1, x0.ndim))

    delta = v32 - v_old
    v_pos = v_old + beta * delta
    v_neg = v_old - beta * delta
    err_pos = x_t - tb * v_pos - x0
    err_neg = x_t - tb * v_neg - x0
    with torch.no_grad():
        w_pos = err_pos.abs().mean(dim=dims).clamp_min(weight_floor)
        w_neg = err_neg.abs().mean(dim=dims).clamp_min(weight_floor)
    loss_pos = err_pos.square().mean(dim=dims) / w_pos
    loss_neg = err_neg.square().mean(dim=dims) / w_neg
    loss_nft = adv_clip * (r * loss_pos / beta + (1 - r) * loss_neg / beta).mean()

    total = loss_nft
    if v_ref is not None:
        if v_ref.shape != v.shape:
            raise ValueError(f"v_ref must have v's shape {tuple(v.shape)}, got {tuple(v_ref.shape)}")
        loss_kl = (v32 - v_ref.detach().to(dtype)).square().mean()
        if kl_weight != 0.0:
            if kl_adaptive:
                total = total + reward_adaptive_kl(v32, v_ref, r, kl_weight)
            else:
                total = total + kl_weight * loss_kl
        if norm_guard > 0:
            loss_norm = velocity_norm_hinge(v32, v_ref, norm_margin)
            total = total + norm_guard * loss_norm
    else:
        loss_kl = torch.zeros((), dtype=dtype, device=x0.device)

    stats = {
        "loss": total.detach(),
        "loss_nft": loss_nft.detach(),
        "loss_pos": loss_pos.detach().mean(),
        "loss_neg": loss_neg.detach().mean(),
        "loss_kl": loss_kl.detach(),
        "w_pos": w_pos.mean(),
        "w_neg": w_neg.mean(),
        # mean |v - v_old|: at 0 the positive and negative branches coincide and the negative-aware
        # term has nothing to push against (two implementations saw it sit at 0 for long stretches)
        "v_old_gap": delta.detach().abs().mean(),
    }
    if norm_guard > 0:
        stats["loss_norm_guard"] = loss_norm.detach()
    return total, stats


def rft_loss(
    v: torch.Tensor,
    x0: torch.Tensor,
    eps: torch.Tensor,
    v_ref: torch.Tensor | None = None,
    kl_weight: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Plain flow matching in velocity space: `mean (v - (eps - x0))^2` (+ `kl_weight mean (v - v_ref)^2`)."""
    dtype = _compute_dtype(v, x0, eps)
    v32 = v.to(dtype)
    target = (eps.detach() - x0.detach()).to(dtype)
    loss_fm = (v32 - target).square().mean()
    total = loss_fm
    if v_ref is not None:
        loss_kl = (v32 - v_ref.detach().to(dtype)).square().mean()
        if kl_weight != 0.0:
            total = total + kl_weight * loss_kl
    else:
        loss_kl = torch.zeros((), dtype=dtype, device=v.device)
    return total, {"loss": total.detach(), "loss_fm": loss_fm.detach(), "loss_kl": loss_kl.detach()}


class NFTOptions(BaseModel):
    """`[objective]` options of `nft`. `beta` (NFT strength) is not `kl_weight` (anchor to the reference)."""

    model_config = ConfigDict(extra="forbid")

    beta: float = Field(1.0, gt=0, description="NFT strength; reference 1.0, 0.1 for OCR / multi-reward")
    kl_weight: float = Field(0.0, ge=0, description="weight of mean (v - v_ref)^2; reference 1e-4")
    adv_clip: float = Field(
        5.0,
        gt=0,
        description="advantage clip A_max: A in [-A_max, A_max], r = A / A_max / 2 + 0.5; scales the loss",
    )
    weight_floor: float = Field(1e-5, gt=0, description="lower clamp of the adaptive x0-space weights")
    kl_adaptive: bool = Field(
        False,
        description="guard: weigh the KL per sample by its optimality r, kl_weight (m + r (1 - m)) with m = "
        "1e-4 / kl_weight (CRD's reward-adaptive KL, arXiv 2603.14128); needs kl_weight > 0",
    )
    norm_guard: float = Field(
        0.0,
        ge=0,
        description="guard: weight of NormGuard's hinge on the trained velocity's norm above the reference's"
        " (arXiv 2606.27771), mean ((|v| - (1 + norm_margin) |v_ref|)+ / |v_ref|)^2; 0: off",
    )
    norm_margin: float = Field(0.0, ge=0, description="guard: the norm growth NormGuard's hinge tolerates")

    @model_validator(mode="after")
    def _adaptive_needs_a_weight(self) -> NFTOptions:
        if self.kl_adaptive and self.kl_weight <= 0:
            raise ValueError("kl_adaptive weighs the KL anchor: set kl_weight > 0 too")
        return self


class NFTObjective:
    """DiffusionNFT: negative-aware fine-tuning on the forward process (the product)."""

    name = "nft"

    def __init__(self, **options: Any) -> None:
        self.options = NFTOptions(**options)
        for key, value in self.options.model_dump().items():
            setattr(self, key, value)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v}" for k, v in self.options.model_dump().items())
        return f"NFTObjective({fields})"

    def loss(
        self,
        policy: Policy,
        x0: torch.Tensor,
        cond: Cond,
        t: torch.Tensor,
        optimality: torch.Tensor,
        noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Noise `x0` to time `t`, query old (no grad), current and (if `kl_weight > 0`) reference views."""
        t = t.to(x0.device)
        eps = draw_noise(x0) if noise is None else noise.to(x0.device, x0.dtype)
        x_t = forward_noising(x0, t, eps)
        with torch.no_grad():
            v_old = policy.velocity("old", x_t, t, cond)
        v = policy.velocity("current", x_t, t, cond)
        v_ref = None
        if self.kl_weight > 0 or self.norm_guard > 0:
            with torch.no_grad():
                v_ref = policy.velocity("reference", x_t, t, cond)
        total, stats = nft_loss(
            v,
            v_old,
            x0,
            x_t,
            t,
            optimality.to(x0.device),
            beta=self.beta,
            adv_clip=self.adv_clip,
            v_ref=v_ref,
            kl_weight=self.kl_weight,
            weight_floor=self.weight_floor,
            kl_adaptive=self.kl_adaptive,
            norm_guard=self.norm_guard,
            norm_margin=self.norm_margin,
        )
        return total, _floats(stats)


class RFTOptions(BaseModel):
    """`[objective]` options of `rft` (positive-only baseline)."""

    model_config = ConfigDict(extra="forbid")

    threshold: float = Field(0.5, ge=0, lt=1, description="train only on samples with optimality > threshold")
    kl_weight: float = Field(0.0, ge=0, description="weight of mean (v - v_ref)^2")
    adv_clip: float = Field(5.0, gt=0, description="advantage clip A_max; r = A / A_max / 2 + 0.5")


class RFTObjective:
    """Rejection fine-tuning: flow matching on the better-than-average samples only (collapses; baseline)."""

    name = "rft"

    def __init__(self, threshold: float = 0.5, kl_weight: float = 0.0, adv_clip: float = 5.0) -> None:
        self.options = RFTOptions(threshold=threshold, kl_weight=kl_weight, adv_clip=adv_clip)
        self.threshold = self.options.threshold
        self.kl_weight = self.options.kl_weight
        self.adv_clip = self.options.adv_clip

    def __repr__(self) -> str:
        return (
            f"RFTObjective(threshold={self.threshold}, kl_weight={self.kl_weight}, adv_clip={self.adv_clip})"
        )

    def loss(
        self,
        policy: Policy,
        x0: torch.Tensor,
        cond: Cond,
        t: torch.Tensor,
        optimality: torch.Tensor,
        noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Flow matching on samples with `optimality > threshold`; a graph-connected zero if none."""
        t = t.to(x0.device)
        eps = draw_noise(x0) if noise is None else noise.to(x0.device, x0.dtype)
        keep = optimality.to(x0.device) > self.threshold
        n_keep = int(keep.sum())
        if n_keep == 0:
            zero = _zero_connected(policy, x0)
            return zero, {"loss": 0.0, "loss_fm": 0.0, "loss_kl": 0.0, "kept_fraction": 0.0}
        index = keep.nonzero(as_tuple=True)[0]
        x0_k, t_k, eps_k = x0[index], t[index], eps[index]
        cond_k = index_cond(cond, index) if isinstance(cond, dict) else cond
        x_t = forward_noising(x0_k, t_k, eps_k)
        v = policy.velocity("current", x_t, t_k, cond_k)
        v_ref = None
        if self.kl_weight > 0:
            with torch.no_grad():
                v_ref = policy.velocity("reference", x_t, t_k, cond_k)
        total, stats = rft_loss(v, x0_k, eps_k, v_ref=v_ref, kl_weight=self.kl_weight)
        out = _floats(stats)
        out["kept_fraction"] = n_keep / x0.shape[0]
        return total, out


def _zero_connected(policy: Policy, like: torch.Tensor) -> torch.Tensor:
    """A zero loss tied to the trainable parameters, so `backward()` works and gives zero gradients."""
    terms = [p.sum() * 0.0 for _, p in policy.trainable_parameters() if p.requires_grad]
    if terms:
        return torch.stack([term.float() for term in terms]).sum()
    return torch.zeros((), device=like.device, dtype=torch.float32, requires_grad=True)


def _floats(stats: dict[str, Any]) -> dict[str, float]:
    """Tensor stats to python floats with one device synchronisation."""
    keys = list(stats)
    tensors = [torch.as_tensor(stats[key]).detach().reshape(()) for key in keys]
    device = tensors[0].device if tensors else torch.device("cpu")
    dtype = torch.float64 if device.type in ("cpu", "cuda") else torch.float32
    values = torch.stack([tensor.to(device=device, dtype=dtype) for tensor in tensors]).tolist()
    return dict(zip(keys, values, strict=True))
