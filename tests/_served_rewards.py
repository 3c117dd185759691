"""Rewards for the serving tests, built by `python -m nft_rewards.serving tests._served_rewards:NAME`."""

from __future__ import annotations

import time
from typing import Any, ClassVar

import torch
from pydantic import Field

from nft_rewards.base import BaseReward, RewardOptions


class FlakyOptions(RewardOptions):
    """Options of `Flaky`."""

    delay: float = Field(0.0, ge=0, description="seconds each call sleeps (lets requests queue up)")
    fail: bool = Field(False, description="raise on every call (a reward that is broken)")


class Flaky(BaseReward):
    """Mean brightness plus the image index inside its call's batch as a detail; raises on the prompt
    "boom" (a reward failing on one request's input), or always with `fail`; scores NaN for the prompt
    "nan" (a per-sample failure)."""

    name: ClassVar[str] = "flaky"
    Options = FlakyOptions

    def __init__(self, options: FlakyOptions) -> None:
        super().__init__(options)
        self.native_range = (0.0, 1.0)

    def score_batch(self, images: torch.Tensor, prompts: list[str], metadata: Any):
        time.sleep(self.options.delay)
        if self.options.fail or "boom" in prompts:
            raise RuntimeError("boom prompt")
        scores = images.float().mean(dim=(1, 2, 3))
        scores[[prompt == "nan" for prompt in prompts]] = float("nan")  # a per-sample failure
        return scores, {"size": torch.full((len(prompts),), float(len(prompts)))}


def flaky(**options: Any) -> Flaky:
    """The `Flaky` reward from keyword options."""
    return Flaky.from_options(**options)
