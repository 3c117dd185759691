"""Reward models for text-to-image RL, usable on their own (no trainer, diffusers, typer or pluggy)::

    import nft_rewards

    reward = nft_rewards.load("pickscore", batch_size=8).to("cuda")
    out = reward(images, prompts)            # images float [N,3,H,W] in [0,1], one prompt per image
    out.scores                               # float32 [N] on the CPU; out.details: named [N] tensors
    nft_rewards.available()                  # {name: one-line description}

Each reward is one module named after it (`pickscore`, `hps`, `clip_score`, `aesthetic`, `jpeg`, `ocr`,
`geneval.reward`); the catalogue with models, checkpoints, formulas and ranges is docs/rewards.md.
`nft_rewards.plugin` registers the same table through the `nft` hooks. Model libraries are imported
only when a reward is built.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["BUILTIN_REWARDS", "available", "load", "options_model", "reward_class"]

BUILTIN_REWARDS: dict[str, str] = {
    "pickscore": "nft_rewards.pickscore:PickScoreReward",
    "hpsv2": "nft_rewards.hps:HpsReward",
    "clipscore": "nft_rewards.clip_score:ClipScoreReward",
    "aesthetic": "nft_rewards.aesthetic:AestheticReward",
    "ocr": "nft_rewards.ocr:OcrReward",
    "geneval": "nft_rewards.geneval.reward:GenEvalReward",
    "jpeg-compressibility": "nft_rewards.jpeg:JpegCompressibility",
    "jpeg-incompressibility": "nft_rewards.jpeg:JpegIncompressibility",
    "remote": "nft_rewards.remote:RemoteReward",
}
"""Name -> `module:Class`; each class carries its pydantic `Options` and builds with `from_options`."""


def reward_class(name: str) -> type:
    """The class of a built-in reward (imports its module, not its model library)."""
    from nft_core.lookup import lookup

    target = lookup(BUILTIN_REWARDS, name, "reward")
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


def options_model(name: str) -> type:
    """The pydantic model validating a built-in reward's options (its `[reward.options]` table)."""
    return reward_class(name).Options


def available() -> dict[str, str]:
    """The built-in rewards: name -> one-line description (`nft_core.api.available()` adds plugins')."""
    table = {}
    for name in BUILTIN_REWARDS:
        doc = (reward_class(name).__doc__ or "").strip()
        table[name] = doc.split("\n")[0]
    return table


def load(name: str, **options: Any):
    """Build a built-in reward; bad names and options raise a one-line `UserError`."""
    return reward_class(name).from_options(**options)
