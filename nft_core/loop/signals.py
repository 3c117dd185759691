"""Stopping a run cleanly: SIGINT / SIGTERM (a pre-emption) end it after the epoch, with a checkpoint."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["stop_at_epoch_end_on_signals"]


@contextlib.contextmanager
def stop_at_epoch_end_on_signals(trainer: Any) -> Iterator[None]:
    """SIGINT / SIGTERM set `trainer.stop_signal`; the loop checkpoints and returns at the end of the
    epoch. A second SIGINT stops at once (KeyboardInterrupt). Only the main thread can take signals."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(number: int, frame: Any) -> None:
        name = signal.Signals(number).name
        if trainer.stop_signal is not None and number == signal.SIGINT:
            raise KeyboardInterrupt
        trainer.stop_signal = name
        trainer.echo(f"{name}: stopping at the end of this epoch, with a checkpoint (Ctrl-C again: now)")

    previous = {number: signal.signal(number, handler) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old)
