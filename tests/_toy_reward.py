"""Toy rewards for short runs on tiny random models: the images' mean brightness, and for editing the
brightness gained over the source image.

JPEG size moves in whole bytes, and a few small steps of a tiny model often leave it where it was;
brightness moves with every pixel. Registered for a test by the `brightness_reward` fixture (videos are
scored with `frames` around `brightness`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
import torch

from nft_core import plugins, registry
from nft_core.errors import UserError
from nft_core.hookspecs import hookimpl
from nft_core.types import SOURCE_IMAGE
from nft_rewards.base import BaseReward, RewardOptions


class Brightness(BaseReward):
    """The mean pixel value of each image, in [0, 1]: brighter scores higher."""

    name: ClassVar[str] = "brightness"
    Options = RewardOptions

    def __init__(self, options: RewardOptions | None = None) -> None:
        super().__init__(options or RewardOptions())
        self.native_range = (0.0, 1.0)

    def score_batch(
        self, images: torch.Tensor, prompts: list[str], metadata: Any
    ) -> tuple[torch.Tensor, dict]:
        return images.float().mean(dim=(1, 2, 3)), {}


class BrighterThanSource(BaseReward):
    """An edit's mean brightness minus its source image's (metadata `source_image`), in [-1, 1]."""

    name: ClassVar[str] = "brighter-than-source"
    needs_metadata: ClassVar[bool] = True
    Options = RewardOptions

    def __init__(self, options: RewardOptions | None = None) -> None:
        super().__init__(options or RewardOptions())
        self.native_range = (-1.0, 1.0)

    def score_batch(
        self, images: torch.Tensor, prompts: list[str], metadata: Any
    ) -> tuple[torch.Tensor, dict]:
        if any(SOURCE_IMAGE not in entry for entry in metadata):
            raise UserError("brighter-than-source: every sample needs its metadata's source_image")
        sources = torch.stack([entry[SOURCE_IMAGE].float().mean() for entry in metadata])
        result = images.float().mean(dim=(1, 2, 3))
        return result - sources.to(result.device), {"source_brightness": sources}


class _ToyPlugin:
    @staticmethod
    @hookimpl
    def register_rewards(register):
        register("brightness", Brightness.from_options, options=RewardOptions, description="mean brightness")
        register(
            "brighter-than-source",
            BrighterThanSource.from_options,
            options=RewardOptions,
            description="brightness gained over the source image",
        )


@pytest.fixture(scope="module")
def brightness_reward():
    """Register the `brightness` reward for the tests of a module."""
    plugins.load_plugins()
    plugins.pm.register(_ToyPlugin, name="nft-toy-brightness")
    registry.clear_cache()
    yield
    plugins.pm.unregister(name="nft-toy-brightness")
    registry.clear_cache()
