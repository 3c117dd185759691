"""The `wandb` tracker: metrics and sample grids as a Weights & Biases run, offline by default."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from nft_core.io import atomic_write_text
from nft_trackers.images import image_array

__all__ = ["RUN_ID_FILE", "WandbOptions", "WandbTracker"]

RUN_ID_FILE = Path("wandb") / "run-id"
"""Inside the run directory: the W&B run id, so that a resumed run logs to the same W&B run."""


class WandbOptions(BaseModel):
    """Options of `wandb` (`[log.tracker_options.wandb]`)."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["offline", "online", "disabled"] = Field(
        "offline",
        description="offline: files only, no network (`wandb sync RUN_DIR/wandb/offline-run-*` uploads them "
        "later); online: live, needs a login",
    )
    project: str = Field("diffusion-nft", min_length=1, description="the W&B project")
    entity: str | None = Field(None, description="the W&B user or team (default: your default entity)")
    name: str | None = Field(None, description="the W&B run's display name (default: the run directory's)")
    group: str | None = Field(None, description="a W&B group for related runs (seeds, ablations)")
    tags: list[str] = Field(default_factory=list, description="W&B tags of the run")
    dir: str = Field(
        ".", min_length=1, description="where W&B writes its `wandb/` folder; relative: in the run dir"
    )
    images: bool = Field(True, description="send the sample grids (samples/*.png; video grids *.gif)")


class WandbTracker:
    """Logs every record with `run.log` against the `epoch` axis (an evaluation and its epoch's training
    record share a point on it), every grid as a `wandb.Image` (a video grid as a `wandb.Video`), the
    resolved config as the run's config and the final status in its summary."""

    name = "wandb"

    def __init__(self, **options: Any) -> None:
        self.options = WandbOptions(**options)
        self._run: Any = None
        self._wandb: Any = None

    def start(self, run_dir: Path, config: dict[str, Any], run_name: str, first_step: int = 0) -> None:
        """`wandb.init` in `dir`; a resumed run (`first_step > 0`) reopens the W&B run this run directory
        started, a new one gets a new id."""
        try:
            import wandb
        except ImportError as error:
            raise ImportError(f"{error}; install it with: pip install 'diffusion-nft[wandb]'") from None
        run_dir = Path(run_dir)
        folder = run_dir / self.options.dir
        folder.mkdir(parents=True, exist_ok=True)
        id_file = run_dir / RUN_ID_FILE
        resumed = first_step > 0 and id_file.is_file()
        run_id = id_file.read_text(encoding="utf-8").strip() if resumed else secrets.token_hex(4)
        if not resumed:
            atomic_write_text(id_file, run_id + "\n")
        options = self.options
        self._wandb = wandb
        self._run = wandb.init(
            project=options.project,
            entity=options.entity,
            name=options.name or run_name,
            group=options.group,
            tags=options.tags or None,
            dir=str(folder),
            mode=options.mode,
            config=config,
            id=run_id,
            resume="allow" if resumed else None,
            reinit="create_new",  # a caller's own W&B run stays open
            # off: W&B would otherwise wrap the process's stdout and stderr to copy the console
            settings=wandb.Settings(console="off"),
        )
        self._run.define_metric("epoch")
        self._run.define_metric("*", step_metric="epoch")

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
        """One `run.log` of the scalars with `epoch = step`."""
        self._run.log({**scalars, "epoch": step})

    def log_image(self, step: int, tag: str, image: str | Path | np.ndarray) -> None:
        """One `run.log` of a `wandb.Image` (unless `images = false`)."""
        if not self.options.images:
            return
        source = str(image) if isinstance(image, (str, Path)) else image_array(image)
        self._run.log({tag: self._wandb.Image(source), "epoch": step})

    def log_video(self, step: int, tag: str, video: str | Path, fps: float) -> None:
        """One `run.log` of a `wandb.Video` of the animated GIF grid (unless `images = false`; the GIF
        holds its frame rate)."""
        if self.options.images:
            self._run.log({tag: self._wandb.Video(str(video), format="gif"), "epoch": step})

    def finish(self, status: str) -> None:
        """Put the status in the run's summary and finish it (exit code 0 only when it finished)."""
        if self._run is None:
            return
        self._run.summary["status"] = status
        self._run.finish(exit_code=0 if status == "finished" else 1)
        self._run = None
