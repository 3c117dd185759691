"""The latent and text layouts the diffusers families share, and their schedulers' time shift.

- Patch packing: FLUX.1 and Qwen-Image feed their transformers 2 x 2 patches of the VAE latent as
  tokens; FLUX.2's latent is already patchified, so its tokens are 1 x 1 patches. `pack` / `unpack`
  with `patch` cover both (within a token the channels run slowest, then the patch row and column).
- Position ids of a token grid (FLUX.1's 3 axes, FLUX.2's 4).
- Variable-length text: Qwen-Image and Z-Image keep only a prompt's real tokens; the policy stores them
  right-padded to a fixed length with a mask (so prompts cache and batch like fixed-length ones) and
  trims a batch back to its longest prompt before the transformer (`trim_text`).
- The schedulers' resolution-dependent time shift (`resolution_mu`, `grid_shift`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch


def pack(latents: torch.Tensor, patch: int = 2) -> torch.Tensor:
    """`[N, C, h, w]` -> tokens `[N, (h/p)(w/p), C p^2]` of `patch` x `patch` patches."""
    n, c, h, w = latents.shape
    patches = latents.reshape(n, c, h // patch, patch, w // patch, patch).permute(0, 2, 4, 1, 3, 5)
    return patches.reshape(n, (h // patch) * (w // patch), c * patch * patch)


def unpack(tokens: torch.Tensor, height: int, width: int, patch: int = 2) -> torch.Tensor:
    """The inverse of `pack` for a latent of `height x width`."""
    n, _, channels = tokens.shape
    c = channels // (patch * patch)
    grid = tokens.reshape(n, height // patch, width // patch, c, patch, patch).permute(0, 3, 1, 4, 2, 5)
    return grid.reshape(n, c, height, width)


def grid_ids(rows: int, columns: int, axes: int, device: torch.device) -> torch.Tensor:
    """Rotary position ids of a token grid: `[rows * columns, axes]`, axis 1 the row, axis 2 the column,
    the others zero."""
    ids = torch.zeros(rows, columns, axes)
    ids[..., 1] = torch.arange(rows)[:, None]
    ids[..., 2] = torch.arange(columns)[None, :]
    return ids.reshape(-1, axes).to(device)


def pad_text(rows: Sequence[torch.Tensor], length: int) -> dict[str, torch.Tensor]:
    """Variable-length token embeddings `[L_i, D]` -> `embeds [N, length, D]` right-padded with zeros and
    `mask [N, length]` (1 on real tokens)."""
    first = rows[0]
    embeds = first.new_zeros(len(rows), length, first.shape[-1])
    mask = torch.zeros(len(rows), length, dtype=torch.long, device=first.device)
    for index, row in enumerate(rows):
        embeds[index, : len(row)] = row[:length]
        mask[index, : len(row)] = 1
    return {"embeds": embeds, "mask": mask}


def trim_text(embeds: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A right-padded batch cut to its longest prompt (what a pipeline batches), embeddings and mask."""
    longest = max(int(mask.sum(dim=1).max()), 1)
    return embeds[:, :longest], mask[:, :longest]


def resolution_mu(tokens: int, scheduler_config: Mapping[str, Any]) -> float:
    """`mu` of the schedulers' dynamic shifting: linear in the image's token count between
    (`base_image_seq_len`, `base_shift`) and (`max_image_seq_len`, `max_shift`)."""
    base_tokens = scheduler_config.get("base_image_seq_len", 256)
    max_tokens = scheduler_config.get("max_image_seq_len", 4096)
    base_shift = scheduler_config.get("base_shift", 0.5)
    max_shift = scheduler_config.get("max_shift", 1.15)
    slope = (max_shift - base_shift) / (max_tokens - base_tokens)
    return base_shift + slope * (tokens - base_tokens)


def grid_shift(mu: float, scheduler_config: Mapping[str, Any]) -> float:
    """The SD3 shift `s` whose grid equals the scheduler's shifted by `mu`: `exp(mu)` for the
    exponential time shift, `mu` for the linear one; the static `shift` without dynamic shifting."""
    if not scheduler_config.get("use_dynamic_shifting"):
        return float(scheduler_config.get("shift", 1.0))
    if scheduler_config.get("time_shift_type", "exponential") == "linear":
        return float(mu)
    return math.exp(mu)


__all__ = ["grid_ids", "grid_shift", "pack", "pad_text", "resolution_mu", "trim_text", "unpack"]
