"""Rollout levers: how collection samples faster, declared lossless or lossy (docs/rollout.md).

NFT trains on clean samples only, so it does not care how they were made: any solver, any cache, any
precision. A lever is a plugin (`register_levers`) built with its `[rollout.lever_options.<name>]` table;
the collector enters `lever.rollout(policy)` around each sampling micro-batch. An objective that trains on
the rollout's exact log-probs (`ExactRollout`: FlowGRPO) refuses lossy levers and a rollout precision
other than training's, in one config line.

Built in here (torch's own facilities): `compile` (regional `torch.compile` of the rollout networks'
repeated blocks where the network has them, else the whole network; `mode = "reduce-overhead"` is CUDA
graphs on a GPU; inductor's on-disk cache makes a second run's compile warm) and `sdpa` (the attention
backend of `torch.nn.functional.scaled_dot_product_attention`). The diffusers feature caches are
`nft_policies`' (`cache`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from nft_core import registry
from nft_core.config import RunConfig
from nft_core.errors import ConfigError
from nft_core.loop.precision import resolve_precision
from nft_core.protocols import ExactRollout, Lever, Policy, RolloutNetworks

__all__ = [
    "CompileLever",
    "CompileOptions",
    "SdpaLever",
    "SdpaOptions",
    "build_levers",
    "check_rollout",
    "describe_rollout",
    "rollout_context",
    "rollout_precision",
]


class CompileOptions(BaseModel):
    """Options of the `compile` lever."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    mode: Literal["default", "reduce-overhead", "max-autotune"] = Field(
        "default", description="torch.compile mode; reduce-overhead records CUDA graphs (GPU, static shapes)"
    )
    regional: bool = Field(
        True,
        description="compile each repeated block (diffusers' compile_repeated_blocks) rather than the whole"
        " network: a fraction of the cold compile time for most of the speed (a network that names no"
        " repeated blocks is compiled whole)",
    )


class CompileLever:
    """`torch.compile` of the policy's rollout networks, once, on the first rollout (lossless: the same
    computation, its float sums possibly in another order). `cold_seconds` is what compiling cost."""

    name = "compile"
    lossless = True

    def __init__(self, **options: Any) -> None:
        self.options = CompileOptions(**options)
        self.cold_seconds: float | None = None
        self._done: set[int] = set()

    @contextlib.contextmanager
    def rollout(self, policy: Policy) -> Iterator[None]:
        if not isinstance(policy, RolloutNetworks):
            raise ConfigError(
                f"rollout.levers: compile needs a policy that names its rollout networks; {policy!r}"
            )
        for network in policy.rollout_networks():
            if id(network) in self._done:
                continue
            began = time.perf_counter()
            # diffusers' ModelMixin; a class that names no repeated blocks (SD3, SANA) compiles whole
            blocks = getattr(network, "_repeated_blocks", None)
            if self.options.regional and blocks and hasattr(network, "compile_repeated_blocks"):
                network.compile_repeated_blocks(mode=self.options.mode)
            else:
                network.compile(mode=self.options.mode)
            self._done.add(id(network))
            self.cold_seconds = (self.cold_seconds or 0.0) + time.perf_counter() - began
        yield


class SdpaOptions(BaseModel):
    """Options of the `sdpa` lever."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    backends: list[Literal["flash", "efficient", "cudnn", "math"]] = Field(
        default_factory=lambda: ["flash", "efficient", "cudnn", "math"],
        description="scaled_dot_product_attention backends allowed during rollouts, in order of preference",
    )


class SdpaLever:
    """The attention kernels `scaled_dot_product_attention` may use during rollouts (lossless: the same
    attention, computed by another kernel)."""

    name = "sdpa"
    lossless = True
    KERNELS = {"flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION", "cudnn": "CUDNN_ATTENTION",
               "math": "MATH"}  # fmt: skip

    def __init__(self, **options: Any) -> None:
        self.options = SdpaOptions(**options)

    def rollout(self, policy: Policy) -> contextlib.AbstractContextManager:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        backends = [getattr(SDPBackend, self.KERNELS[name]) for name in self.options.backends]
        return sdpa_kernel(backends, set_priority=True)


def build_levers(config: RunConfig) -> list[Lever]:
    """The `[rollout] levers`, each built with its options table (an unknown name or option: one line)."""
    rollout = config.rollout
    levers = []
    for index, name in enumerate(rollout.levers):
        options = rollout.lever_options.get(name, {})
        lever = registry.create("levers", name, options, f"rollout.lever_options.{name}")
        if not isinstance(lever, Lever):
            raise ConfigError(f"rollout.levers[{index}]: {name!r} does not keep the lever contract")
        levers.append(lever)
    return levers


def rollout_precision(config: RunConfig, device: torch.device | str) -> str:
    """The precision collection runs in: `[rollout] precision`, `auto` meaning training's."""
    requested = config.rollout.precision
    if requested == "auto":
        return resolve_precision(config.train.precision, device)
    return resolve_precision(requested, device)


def check_rollout(config: RunConfig, objective: object, levers: list[Lever], device: str) -> None:
    """A ConfigError naming the lever (or the precision) when the objective needs the rollout's exact
    log-probs and the rollout is lossy; unknown lever options are the registry's errors."""
    for name in config.rollout.lever_options:
        if name not in config.rollout.levers:
            registry.check_options("levers", name, config.rollout.lever_options[name],
                                   f"rollout.lever_options.{name}", toml=True)  # fmt: skip
    if not (isinstance(objective, ExactRollout) and objective.needs_exact_rollout):
        return
    name = config.objective.name
    for index, lever in enumerate(levers):
        if not lever.lossless:
            raise ConfigError(
                f"rollout.levers[{index}]: {lever.name!r} is lossy and `{name}` trains on the rollout's exact"
                " log-probs; remove it (lossy levers are for objectives that train on clean samples: nft)"
            )
    training = resolve_precision(config.train.precision, device)
    if rollout_precision(config, device) != training:
        raise ConfigError(
            f"rollout.precision: {config.rollout.precision!r} differs from training's {training!r}, and "
            f"`{name}` trains on the rollout's exact log-probs; leave it auto"
        )


def describe_rollout(config: RunConfig, levers: list[Lever], device: str) -> str:
    """One line: the rollout precision and the levers in force, each lossless or lossy."""
    precision = rollout_precision(config, device)
    lossy_precision = precision != resolve_precision(config.train.precision, device)
    parts = [f"precision {precision}" + (" (lossy: training differs)" if lossy_precision else "")]
    parts += [f"{lever.name} ({'lossless' if lever.lossless else 'lossy'})" for lever in levers]
    if config.rollout.scout_candidates > 1:
        parts.append(f"scout rollouts x{config.rollout.scout_candidates}")
    return "rollout: " + ", ".join(parts)


@contextlib.contextmanager
def rollout_context(levers: list[Lever], policy: Policy, lossy: bool = True) -> Iterator[None]:
    """Every lever's rollout context at once (`lossy = False`: the lossless ones only, for an exact
    regeneration)."""
    with contextlib.ExitStack() as stack:
        for lever in levers:
            if lossy or lever.lossless:
                stack.enter_context(lever.rollout(policy))
        yield
