"""Sampling from a policy view with any solver, optionally with classifier-free guidance."""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from nft_core.protocols import ConditionedPolicy, Policy, Solver, VelocityFn
from nft_core.types import Cond, cat_conds, index_cond


def policy_velocity(
    policy: Policy,
    view: str,
    guidance: float = 1.0,
    null: Cond | None = None,
    detach_uncond: bool = False,
) -> VelocityFn:
    """`velocity(x, t, cond)` of one policy view; guidance != 1 mixes in the unconditional velocity (CFG),
    in one batched call. `detach_uncond`: the unconditional half carries no gradient (FlowGRPO's training
    forward, so that the empty prompt is not trained)."""
    if guidance == 1.0:
        return lambda x, t, cond: policy.velocity(view, x, t, cond)

    def guided(x: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor:
        unconditional = null
        if unconditional is None:  # an editing policy's keeps each row's source image
            conditioned = isinstance(policy, ConditionedPolicy)
            unconditional = policy.null_cond_for(cond) if conditioned else policy.null_cond(x.shape[0])
        both = policy.velocity(view, torch.cat([x, x]), torch.cat([t, t]), cat_conds([cond, unconditional]))
        v_cond, v_uncond = both.chunk(2)
        if detach_uncond:
            v_uncond = v_uncond.detach()
        return v_uncond + guidance * (v_cond - v_uncond)

    return guided


def noise_for(indices: list[int] | range, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Noise that depends only on (seed, sample index): paired evaluations use the same noise per image."""
    rows = []
    for index in indices:
        generator = torch.Generator().manual_seed(seed * 1_000_003 + index)
        rows.append(torch.randn(shape, generator=generator))
    return torch.stack(rows)


def keyed_seed(*key: int) -> int:
    """A seed that depends only on `key` (non-negative ints): distinct keys give unrelated streams
    (numpy's SeedSequence hashes the whole key, so no two keys share a seed by arithmetic accident)."""
    return int(np.random.SeedSequence(list(key)).generate_state(1, np.uint64)[0] >> np.uint64(1))


def keyed_noise(indices: list[int] | range, shape: tuple[int, ...], *key: int) -> torch.Tensor:
    """`N(0, I)` rows `[len(indices), *shape]`, row `i` drawn from the stream `(*key, indices[i])`: the
    noise of a sample does not depend on which other samples share its batch, micro-batch or rank."""
    rows = []
    for index in indices:
        generator = torch.Generator().manual_seed(keyed_seed(*key, int(index)))
        rows.append(torch.randn(shape, generator=generator))
    return torch.stack(rows) if rows else torch.empty((0, *shape))


@torch.no_grad()
def sample_latents(
    policy: Policy,
    solver: Solver,
    cond: Cond,
    noise: torch.Tensor,
    view: str = "current",
    guidance: float = 1.0,
    generator: torch.Generator | None = None,
    batch_size: int = 64,
    progress: str | None = None,
) -> torch.Tensor:
    """Clean latents for each (cond row, noise row), in batches (a progress bar named `progress`)."""
    velocity = policy_velocity(policy, view, guidance)
    outputs = []
    bar = tqdm(total=noise.shape[0], desc=progress, leave=False, disable=progress is None, unit="img")
    for start in range(0, noise.shape[0], batch_size):
        part = slice(start, start + batch_size)
        outputs.append(solver.sample(velocity, noise[part], cond=index_cond(cond, part), generator=generator))
        bar.update(outputs[-1].shape[0])
    bar.close()
    return torch.cat(outputs)
