"""The `tensorboard` tracker: metrics and sample grids (videos too) as TensorBoard event files
(RUN_DIR/tensorboard)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from nft_trackers.images import image_array

__all__ = ["TensorBoardOptions", "TensorBoardTracker"]


class TensorBoardOptions(BaseModel):
    """Options of `tensorboard` (`[log.tracker_options.tensorboard]`)."""

    model_config = ConfigDict(extra="forbid")

    log_dir: str = Field(
        "tensorboard", min_length=1, description="the event files' folder; a relative one is in the run dir"
    )
    flush_secs: int = Field(30, ge=1, description="seconds between writes of pending events to disk")
    images: bool = Field(True, description="send the sample grids (samples/*.png; video grids *.gif)")


class TensorBoardTracker:
    """Writes every scalar with `SummaryWriter.add_scalar`, every grid with `add_image` (a video grid as
    `add_video` does: an animated GIF), the resolved config and the final status as text. A resumed run
    purges the events of the epochs it redoes."""

    name = "tensorboard"

    def __init__(self, **options: Any) -> None:
        self.options = TensorBoardOptions(**options)
        self.log_dir: Path | None = None
        self._writer: Any = None
        self._step = 0

    def start(self, run_dir: Path, config: dict[str, Any], run_name: str, first_step: int = 0) -> None:
        """Open a `SummaryWriter` in `log_dir` (events of steps >= `first_step` from earlier processes are
        hidden by TensorBoard: a resumed run redoes them)."""
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:
            raise ImportError(f"{error}; install it with: pip install 'diffusion-nft[tensorboard]'") from None
        self.log_dir = Path(run_dir) / self.options.log_dir
        self._writer = SummaryWriter(
            log_dir=str(self.log_dir), purge_step=first_step or None, flush_secs=self.options.flush_secs
        )
        # four spaces: TensorBoard's text tab renders markdown, and this keeps the JSON as a code block
        text = "\n".join("    " + line for line in json.dumps(config, indent=2).splitlines())
        self._writer.add_text("config", f"run {run_name}\n\n{text}", global_step=first_step)
        self._step = first_step

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
        """One scalar event per key at `step`."""
        for key, value in scalars.items():
            self._writer.add_scalar(key, value, global_step=step)
        self._step = max(self._step, step)

    def log_image(self, step: int, tag: str, image: str | Path | np.ndarray) -> None:
        """One image event (unless `images = false`)."""
        if self.options.images:
            self._writer.add_image(tag, image_array(image), global_step=step, dataformats="HWC")

    def log_video(self, step: int, tag: str, video: str | Path, fps: float) -> None:
        """One video event (unless `images = false`): the animated GIF as it is, in the image summary
        `add_video` writes (which would re-encode the frames with moviepy 1.x)."""
        if not self.options.images:
            return
        from PIL import Image
        from tensorboard.compat.proto.summary_pb2 import Summary

        with Image.open(video) as opened:
            width, height = opened.size
        gif = Summary.Image(
            height=height, width=width, colorspace=3, encoded_image_string=Path(video).read_bytes()
        )
        self._writer._get_file_writer().add_summary(
            Summary(value=[Summary.Value(tag=tag, image=gif)]), global_step=step
        )

    def finish(self, status: str) -> None:
        """Write the status as text at the last step, flush and close the event file."""
        if self._writer is None:
            return
        self._writer.add_text("status", status, global_step=self._step)
        self._writer.close()
        self._writer = None
