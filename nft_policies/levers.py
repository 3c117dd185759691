"""The diffusers feature caches as a rollout lever (`[rollout] levers = ["cache"]`; docs/rollout.md).

diffusers 0.42 caches features of a transformer between denoising steps (`CacheMixin.enable_cache`): the
first-block cache reuses the rest of the network while the first block's residual barely changes,
TaylorSeer extrapolates cached features. Both change the samples (lossy), so NFT takes them and FlowGRPO
refuses them. The cache is on only while a rollout samples and off for the update's forwards. Pyramid
attention broadcast and FasterCache need the pipeline's current timestep and are not offered.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from nft_core.errors import ConfigError
from nft_core.protocols import RolloutNetworks

__all__ = ["CacheLever", "CacheOptions"]


class CacheOptions(BaseModel):
    """Options of the `cache` lever."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    kind: Literal["first-block", "taylorseer"] = Field(
        "first-block", description="diffusers' cache: first-block (FirstBlockCacheConfig) or taylorseer"
    )
    threshold: float = Field(
        0.05, gt=0, description="first-block: relative residual change below which to reuse"
    )
    interval: int = Field(5, ge=1, description="taylorseer: steps between full computations")


class CacheLever:
    """A diffusers feature cache on the rollout networks during rollouts only (lossy)."""

    name = "cache"
    lossless = False

    def __init__(self, **options: Any) -> None:
        self.options = CacheOptions(**options)

    def _config(self) -> Any:
        from diffusers import FirstBlockCacheConfig, TaylorSeerCacheConfig

        if self.options.kind == "taylorseer":
            return TaylorSeerCacheConfig(cache_interval=self.options.interval)
        return FirstBlockCacheConfig(threshold=self.options.threshold)

    @contextlib.contextmanager
    def rollout(self, policy: Any) -> Iterator[None]:
        from diffusers import CacheMixin

        networks = policy.rollout_networks() if isinstance(policy, RolloutNetworks) else []
        if not networks or not all(isinstance(network, CacheMixin) for network in networks):
            kinds = ", ".join(type(network).__name__ for network in networks) or type(policy).__name__
            raise ConfigError(
                f"rollout.levers: cache needs a diffusers transformer with feature caches; {kinds} has none"
            )
        for network in networks:
            network.enable_cache(self._config())
        try:
            with contextlib.ExitStack() as contexts:  # one cache state for the whole sampling loop
                for network in networks:
                    contexts.enter_context(network.cache_context("rollout"))
                yield
        finally:
            for network in networks:
                network.disable_cache()
