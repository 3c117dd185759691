"""Plain values that flow between the stages of one epoch (prompts -> samples -> scores -> advantages)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

Cond = dict[str, torch.Tensor]
"""Policy-specific prompt conditioning: a dict of batch-first tensors (index it with `index_cond`)."""


def index_cond(cond: Cond, index: torch.Tensor | slice | list[int]) -> Cond:
    """Select rows of every tensor in a conditioning dict."""
    return {key: value[index] for key, value in cond.items()}


def cat_conds(conds: list[Cond]) -> Cond:
    """Concatenate conditioning dicts along the batch dimension."""
    return {key: torch.cat([c[key] for c in conds]) for key in conds[0]}


@dataclass
class PromptItem:
    """One prompt with its optional per-sample metadata (GenEval metadata for GenEval-style sets)."""

    prompt: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class Samples:
    """What collection keeps of a batch of generations: clean latents, decoded images and their prompts."""

    latents: torch.Tensor
    images: torch.Tensor
    prompts: list[str]
    metadata: list[dict[str, Any]]
    cond: Cond
    group_ids: torch.Tensor

    def __len__(self) -> int:
        return len(self.prompts)


@dataclass
class RewardOutput:
    """Per-sample scores `[N]` plus named per-sample details (each a tensor `[N]`)."""

    scores: torch.Tensor
    details: dict[str, torch.Tensor] = field(default_factory=dict)
