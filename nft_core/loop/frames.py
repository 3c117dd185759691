"""The `frames` reward: a video policy's samples `[N,F,3,H,W]` scored frame by frame with any registered
image reward, the frames' scores aggregated per video (`mean` or `min`), optionally minus a temporal
term that penalises flicker (the mean absolute change between consecutive frames).

It lives in the core because it builds its image reward through the registry, as a run builds any
reward; the image reward sees the frames as images, each with its video's prompt and metadata.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from nft_core import registry
from nft_core.errors import UserError
from nft_core.protocols import Reward
from nft_core.types import Aggregate, RewardOutput

__all__ = ["FramesOptions", "FramesReward", "frame_indices", "temporal_change"]


class FramesOptions(BaseModel):
    """`[reward.options]` of `frames`."""

    model_config = ConfigDict(extra="forbid")

    reward: str = Field(..., min_length=1, description="the registered image reward that scores each frame")
    reward_options: dict[str, Any] = Field(
        default_factory=dict, description="that reward's options (its own `[reward.options]` table)"
    )
    aggregate: Literal["mean", "min"] = Field(
        "mean", description="a video's score from its frames' scores: their mean, or the worst frame's"
    )
    temporal_weight: float = Field(
        0.0,
        ge=0,
        description="subtract this times the mean absolute pixel change between consecutive frames "
        "(in [0, 1]; 0: no temporal term)",
    )
    max_frames: int = Field(
        0, ge=0, description="score this many frames spread evenly over the video, the last included (0: all)"
    )

    @model_validator(mode="after")
    def _image_reward_exists(self) -> FramesOptions:
        if self.reward == "frames":
            raise ValueError("reward: frames cannot score its own frames; name an image reward")
        try:  # the image reward's name and options, each complaint naming its key of this table
            registry.get("rewards", self.reward, "reward")
            registry.check_options("rewards", self.reward, self.reward_options, "reward_options")
        except UserError as error:
            raise ValueError(str(error)) from None
        return self


def frame_indices(frames: int, limit: int) -> list[int]:
    """`limit` frame indices spread evenly over `frames`, the first and last included (all when `limit`
    is 0 or at least `frames`)."""
    if not limit or limit >= frames:
        return list(range(frames))
    if limit == 1:
        return [frames - 1]
    return sorted({round(k * (frames - 1) / (limit - 1)) for k in range(limit)})


def temporal_change(videos: torch.Tensor) -> torch.Tensor:
    """`[N]`: the mean absolute change between consecutive frames of videos `[N,F,3,H,W]` (0: one frame)."""
    if videos.shape[1] < 2:
        return videos.new_zeros(videos.shape[0], dtype=torch.float32)
    return (videos[:, 1:].float() - videos[:, :-1].float()).abs().mean(dim=(1, 2, 3, 4))


class FramesReward:
    """Scores videos `[N,F,3,H,W]` with an image reward on their frames (mean or min over frames), minus
    `temporal_weight` times the mean absolute change between consecutive frames."""

    name = "frames"
    higher_is_better = True

    def __init__(self, **options: Any) -> None:
        self.options = FramesOptions(**options)
        self.inner: Reward = registry.create(
            "rewards", self.options.reward, self.options.reward_options, "reward_options"
        )
        if not self.inner.higher_is_better:
            raise UserError(f"reward 'frames': {self.options.reward} is lower-is-better; frames needs higher")
        self.deterministic = self.inner.deterministic
        low, high = self.inner.native_range
        self.native_range = (low - self.options.temporal_weight, high)

    def __call__(
        self,
        images: torch.Tensor,
        prompts: Sequence[str],
        metadata: Sequence[dict[str, Any]] | None = None,
    ) -> RewardOutput:
        if images.ndim != 5 or images.shape[2] != 3:
            raise UserError(f"frames: videos must have shape [N,F,3,H,W], got {tuple(images.shape)}")
        if len(prompts) != images.shape[0] or (metadata is not None and len(metadata) != len(prompts)):
            raise UserError(
                f"frames: {images.shape[0]} videos but {len(prompts)} prompts (paired one-to-one)"
            )
        n = images.shape[0]
        chosen = frame_indices(images.shape[1], self.options.max_frames)
        count = len(chosen)
        frames = images[:, chosen].reshape(n * count, *images.shape[2:])
        repeat = [p for p in prompts for _ in range(count)]
        extra = None if metadata is None else [m for m in metadata for _ in range(count)]
        out = self.inner(frames, repeat, extra)
        per_frame = out.scores.float().cpu().view(n, count)
        pooled = per_frame.mean(dim=1) if self.options.aggregate == "mean" else per_frame.min(dim=1).values
        change = temporal_change(images).cpu()
        details = {key: value.float().cpu().view(n, count).mean(dim=1) for key, value in out.details.items()}
        details |= {"frame_mean": per_frame.mean(dim=1), "frame_min": per_frame.min(dim=1).values}
        details["temporal_change"] = change
        return RewardOutput(scores=pooled - self.options.temporal_weight * change, details=details)

    def aggregate(
        self,
        output: RewardOutput,
        prompts: Sequence[str],
        metadata: Sequence[dict[str, Any]] | None = None,
    ) -> Aggregate:
        """The mean score over the evaluation's videos."""
        return Aggregate.mean(output)

    def to(self, device: torch.device | str) -> FramesReward:
        """Move the image reward."""
        self.inner = self.inner.to(device)
        return self
