"""Building a run's parts from its config: the rewards, the monitors, the policy (warm-started, sharded).

Every part comes from the plugin registry, as a third party's would; an optional reward that cannot be
built is left out with a warning. The policy is built last by the trainer, so a mistake anywhere else is
found before the biggest model loads.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from nft_core import registry
from nft_core.config import RunConfig
from nft_core.distributed import Distributed
from nft_core.errors import ConfigError
from nft_core.loop.prompts import PromptDrawer, load_prompts
from nft_core.normalization import make_normalizer
from nft_core.protocols import Monitor, Policy, Reward, ShardablePolicy
from nft_core.reward_set import RewardSet, RewardTerm
from nft_core.state.checkpoints import latest_checkpoint
from nft_core.types import PromptItem

__all__ = [
    "build_eval_rewards",
    "build_monitors",
    "build_policy",
    "build_prompts",
    "build_rewards",
    "precision_reason",
]


def build_rewards(config: RunConfig, device: torch.device, echo: Callable[[str], Any]) -> RewardSet:
    """The `[[reward]]` entries as a weighted, normalized set; an optional one (`required = false`) that
    fails to build is skipped with a warning."""
    terms = []
    for index, reward_config in enumerate(config.reward):
        try:
            reward = registry.create(
                "rewards", reward_config.name, reward_config.options, f"reward[{index}].options"
            )
        except Exception as error:
            if reward_config.required:
                raise
            echo(f"warning: reward[{index}] {reward_config.label!r} (required = false) skipped: {error}")
            continue
        normalizer = make_normalizer(
            reward_config.normalize,
            scale=reward_config.scale,
            shift=reward_config.shift,
            momentum=reward_config.momentum,
        )
        label, weight, required = reward_config.label, reward_config.weight, reward_config.required
        terms.append(RewardTerm(label, reward.to(device), weight, normalizer, required))
    if not terms:
        raise ConfigError("reward: none of the [[reward]] entries could be built; nothing to train on")
    return RewardSet(terms)


def build_prompts(config: RunConfig) -> tuple[PromptDrawer, list[PromptItem]]:
    """The drawer of the training prompts and the evaluation's items (each `eval.images_per_prompt` times)."""
    data = config.data
    drawer = PromptDrawer(
        load_prompts(data.prompts, "data.prompts"),
        data.prompts_per_epoch,
        config.train.seed,
        data.balance_tags,
        data.tag_weights,
        data.prompts,
    )
    items = load_prompts(config.eval.prompts, "eval.prompts")
    return drawer, [item for item in items for _ in range(config.eval.images_per_prompt)]


def build_eval_rewards(config: RunConfig, device: torch.device) -> dict[str, Reward]:
    """The `[[eval.reward]]` monitor rewards: scored at every evaluation, never trained on."""
    return {
        watched.label: registry.create(
            "rewards", watched.name, watched.options, f"eval.reward[{index}].options"
        ).to(device)
        for index, watched in enumerate(config.eval.reward)
    }


def build_monitors(config: RunConfig) -> list[Monitor]:
    """The `[log] monitors` of each epoch's samples."""
    return [
        registry.create("monitors", name, {}, f"log.monitors[{index}]")
        for index, name in enumerate(config.log.monitors)
    ]


def build_policy(
    config: RunConfig, dist: Distributed, device: torch.device, echo: Callable[[str], Any]
) -> tuple[Policy, bool]:
    """The policy on `device`, warm-started from `policy.init_from` and sharded under FSDP2; and whether
    it is sharded."""
    policy: Policy = registry.create("policies", config.policy.name, config.policy.options(), "policy")
    policy.to(device)
    if config.policy.init_from:
        warm_start(policy, Path(config.policy.init_from), echo)
    return policy, shard_policy(policy, config, dist, device, echo)


def warm_start(policy: Policy, source: Path, echo: Callable[[str], Any]) -> Path:
    """Load the weights of a run directory's newest checkpoint, or of one checkpoint folder, into the
    policy's current and old views (`policy.init_from`); the optimizer and counters start fresh."""
    if not source.is_dir():
        raise ConfigError(f"policy.init_from: {source} is not a folder (a run directory or a checkpoint)")
    folder = latest_checkpoint(source) if (source / "checkpoints").is_dir() else source
    if folder is None:
        raise ConfigError(f"policy.init_from: {source} holds no complete checkpoint")
    verify_init_from(folder)
    policy.load_trainable(str(folder))
    echo(f"warm start: weights from {folder}")
    return folder


def verify_init_from(folder: Path) -> None:
    """A ConfigError naming `policy.init_from` and the file when the checkpoint folder's files differ
    from the digests its state.json records (a folder without a state.json is not a checkpoint of a run
    and is not checked)."""
    from nft_core.state.checkpoints import STATE_FILE, CorruptCheckpoint, verify_checkpoint

    if not (folder / STATE_FILE).is_file():
        return
    try:
        verify_checkpoint(folder)
    except CorruptCheckpoint as error:
        raise ConfigError(f"policy.init_from: {error}") from None


def shard_policy(
    policy: Policy, config: RunConfig, dist: Distributed, device: torch.device, echo: Callable[[str], Any]
) -> bool:
    """`train.parallel = "fsdp2"`: the policy's networks sharded over the ranks (FSDP2 `fully_shard`);
    whether they are."""
    if config.train.parallel != "fsdp2":
        return False
    if not isinstance(policy, ShardablePolicy):
        raise ConfigError(
            f"train.parallel: fsdp2, but the {config.policy.name} policy cannot shard its "
            "parameters (it has no fully_shard); use replicate"
        )
    if not dist.enabled:
        return False  # one process: nothing to shard over
    from torch.distributed.device_mesh import init_device_mesh

    ranks = dist.world_size
    group = config.train.shard_ranks or int(os.environ.get("LOCAL_WORLD_SIZE", ranks))
    if ranks % group:
        raise ConfigError(f"train.shard_ranks: {group} does not divide the {ranks} ranks")
    if group == ranks:
        mesh = init_device_mesh(device.type, (ranks,))
        echo(f"parallel: fsdp2, the policy's parameters sharded over {ranks} ranks")
    else:  # HSDP: shard inside each group, replicate across the groups
        mesh = init_device_mesh(device.type, (ranks // group, group), mesh_dim_names=("replicate", "shard"))
        echo(
            f"parallel: fsdp2, the policy's parameters sharded over {group} ranks and replicated "
            f"{ranks // group} times (hybrid)"
        )
    policy.fully_shard(mesh)
    return True


def precision_reason(precision: str, device: torch.device) -> str:
    """Why `train.precision = "auto"` chose `precision` on `device`, for the start-up line."""
    where = (
        f"{device.type} ({torch.backends.cpu.get_cpu_capability()})" if device.type == "cpu" else str(device)
    )
    native = "computes bf16 natively" if precision == "bf16" else "has no native bf16"
    return f" (train.precision = auto: {where} {native})"
