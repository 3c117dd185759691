"""The run's experiment trackers (`[log] trackers`): built through the registry, fed on rank 0, and kept
from ever stopping the run.

The trainer calls a `Trackers` in four places: `start` (once, before the loop), `log` (every record it
appends to metrics.jsonl), `image` (every sample grid it writes; a video grid as a video where the
tracker can show one) and `finish` (the run's status, also on failure). A tracker that cannot start
is left out with a warning; one that raises later is disabled with one warning and closed. Nothing is
started until there is something to send, so a process that logs nothing (a resumed run that had
already finished) opens no tracker run.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nft_core import registry
from nft_core.errors import ConfigError
from nft_core.protocols import Tracker, VideoTracker

__all__ = ["Trackers", "check_trackers", "image_tag", "record_scalars"]

KIND = "trackers"
"""The registry kind of trackers (the `register_trackers` hook)."""


def check_trackers(names: list[str], options: dict[str, dict[str, Any]], toml: bool = True) -> None:
    """Validate `[log] trackers` and `[log.tracker_options.<name>]` without building anything: each name
    registered and listed once, each options table a registered tracker's and valid for its model (a table
    for a tracker that `trackers` leaves out is checked too, so it can be switched on with `--set`)."""
    seen: dict[str, int] = {}
    for index, name in enumerate(names):
        if name in seen:
            raise ConfigError(f"log.trackers[{index}]: {name!r} is already log.trackers[{seen[name]}]")
        seen[name] = index
        registry.get(KIND, name, f"log.trackers[{index}]")
    for name, table in options.items():
        registry.check_options(KIND, name, table, f"log.tracker_options.{name}", toml=toml)


def record_scalars(record: dict[str, Any]) -> dict[str, float]:
    """The numbers of a metrics.jsonl record under its keys (strings and flags left out); a None, which
    is how the file holds a non-finite number, becomes NaN."""
    non_finite = set(record.get("non_finite", ()))
    scalars = {}
    for key, value in record.items():
        if isinstance(value, bool) or key == "non_finite":
            continue
        if isinstance(value, (int, float)):
            scalars[key] = float(value)
        elif value is None and key in non_finite:
            scalars[key] = math.nan
    return scalars


def image_tag(path: Path) -> str:
    """A sample grid's tag: `samples/` and its file name without the epoch (`epoch_0003.png` ->
    `samples/epoch`), so a tracker shows one image per epoch under one tag."""
    return "samples/" + re.sub(r"_\d+$", "", path.stem)


class Trackers:
    """The trackers of one run, by name; `enabled = False` (every rank but 0) sends nothing."""

    def __init__(self, trackers: dict[str, Tracker], echo: Callable[[str], None], enabled: bool = True):
        self._built = trackers if enabled else {}
        self._active: dict[str, Tracker] = {}
        self._echo = echo
        self._opening: tuple[Path, dict[str, Any], str, int] | None = None

    @classmethod
    def build(
        cls,
        names: list[str],
        options: dict[str, dict[str, Any]],
        echo: Callable[[str], None],
        enabled: bool = True,
    ) -> Trackers:
        """Create each named tracker with its `[log.tracker_options.<name>]` table (on every rank, so a
        bad option fails everywhere alike); an unknown name or option is a one-line ConfigError."""
        check_trackers(names, options, toml=False)
        built = {
            name: registry.create(KIND, name, options.get(name, {}), f"log.tracker_options.{name}")
            for name in names
        }
        return cls(built, echo, enabled)

    def start(self, run_dir: Path, config: dict[str, Any], run_name: str, first_step: int = 0) -> None:
        """Remember how to start the trackers; each starts when the first record or image comes."""
        self._opening = (Path(run_dir), config, run_name, first_step)

    def _open(self) -> None:
        if self._opening is None or not self._built:
            return
        run_dir, config, run_name, first_step = self._opening
        for name, tracker in self._built.items():
            try:
                tracker.start(run_dir, config, run_name, first_step)
            except Exception as error:  # a tracker is never worth a run
                self._echo(f"warning: tracker {name!r} did not start ({_describe(error)}); the run goes on")
                continue
            self._active[name] = tracker
        self._built = {}

    def log(self, record: dict[str, Any]) -> None:
        """Send a metrics.jsonl record's numbers at step = its epoch."""
        self._open()
        if not self._active or "epoch" not in record:
            return
        step, scalars = int(record["epoch"]), record_scalars(record)
        self._each(lambda tracker: tracker.log_scalars(step, scalars), "logging")

    def image(self, step: int, path: Path, fps: float | None = None) -> None:
        """Send a sample grid the run wrote under `image_tag(path)`: a PNG, or with `fps` an animated GIF
        (a video policy's), which a `VideoTracker` gets as a video and any other as its first frame."""
        self._open()
        tag, path = image_tag(Path(path)), Path(path)

        def send(tracker: Tracker) -> None:
            if fps is not None and isinstance(tracker, VideoTracker):
                tracker.log_video(step, tag, path, fps)
            else:
                tracker.log_image(step, tag, path)

        self._each(send, "sending an image")

    def finish(self, status: str) -> None:
        """Close every started tracker with the run's status; never raises. Idempotent."""
        active, self._active, self._built = self._active, {}, {}
        for name, tracker in active.items():
            try:
                tracker.finish(status)
            except Exception as error:
                self._echo(f"warning: tracker {name!r} failed to finish ({_describe(error)})")

    def _each(self, call: Callable[[Tracker], None], doing: str) -> None:
        for name, tracker in list(self._active.items()):
            try:
                call(tracker)
            except Exception as error:
                del self._active[name]
                self._echo(
                    f"warning: tracker {name!r} failed while {doing} ({_describe(error)}); "
                    "disabled for the rest of the run"
                )
                try:
                    tracker.finish("failed")
                except Exception:  # already broken: the warning above is the one that matters
                    pass


def _describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
