"""The built-in experiment trackers as an `nft` plugin (the `register_trackers` hook)."""

from __future__ import annotations

from nft_core.hookspecs import hookimpl
from nft_trackers.tensorboard_tracker import TensorBoardOptions, TensorBoardTracker
from nft_trackers.wandb_tracker import WandbOptions, WandbTracker


@hookimpl
def register_trackers(register):
    register(
        "tensorboard",
        TensorBoardTracker,
        options=TensorBoardOptions,
        description="TensorBoard event files in RUN_DIR/tensorboard: scalars, sample grids, config, status",
    )
    register(
        "wandb",
        WandbTracker,
        options=WandbOptions,
        description="a Weights & Biases run (offline by default: RUN_DIR/wandb/offline-run-*)",
    )
