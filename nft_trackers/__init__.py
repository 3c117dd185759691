"""Experiment trackers for `[log] trackers`: TensorBoard and Weights & Biases (docs/trackers.md).

Each implements `nft_core.protocols.Tracker`; `nft_trackers.plugin` registers them through the
`register_trackers` hook. The tracker libraries are optional (`pip install "diffusion-nft[tensorboard]"`,
`"diffusion-nft[wandb]"`) and imported only when a run starts the tracker.
"""

from __future__ import annotations

from nft_trackers.tensorboard_tracker import TensorBoardOptions, TensorBoardTracker
from nft_trackers.wandb_tracker import WandbOptions, WandbTracker

__all__ = ["TensorBoardOptions", "TensorBoardTracker", "WandbOptions", "WandbTracker"]
