"""One call to build anything registered, built-in or installed, outside a training run::

    from nft_core.api import load_reward

    reward = load_reward("shapes-geneval", outcome="strict")   # or "pickscore", or a plugin's reward
    out = reward(images, prompts, metadata)                     # images float [N,3,H,W] in [0, 1]
    summary = reward.aggregate(out, prompts, metadata)          # e.g. GenEval's official score

These go through the plugin manager, as `nft run` does (`nft_rewards.load` builds the built-in rewards
alone, without it). Bad names and options raise a one-line `UserError`.
"""

from __future__ import annotations

from typing import Any

from nft_core import registry
from nft_core.protocols import Policy, Reward, Solver

__all__ = ["available", "load_policy", "load_reward", "load_solver"]


def available(kind: str = "rewards") -> dict[str, str]:
    """Registered names of one kind (`rewards`, `solvers`, `policies`, ...) -> one-line description."""
    if kind not in registry.KINDS:
        raise ValueError(f"unknown kind {kind!r}; allowed: {', '.join(registry.KINDS)}")
    return {name: item.description for name, item in registry.registrations(kind).items()}


def _build(kind: str, label: str, name: str, options: dict[str, Any]) -> Any:
    registry.get(kind, name, label)  # an unknown name: "reward: unknown reward 'x'; available: ..."
    return registry.create(kind, name, options, f"{label} {name!r} options")


def load_reward(name: str, **options: Any) -> Reward:
    """The reward registered as `name`, built with `options` (its `[reward.options]` table)."""
    return _build("rewards", "reward", name, options)


def load_solver(name: str, **options: Any) -> Solver:
    """The solver registered as `name`, built with `options` (its `[solver]` table, without `name`)."""
    return _build("solvers", "solver", name, options)


def load_policy(name: str, **options: Any) -> Policy:
    """The policy registered as `name`, built with `options` (its `[policy]` table, without `name`)."""
    return _build("policies", "policy", name, options)
