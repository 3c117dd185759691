"""Which rank was lost when a collective fails: counters and heartbeats on torchrun's rendezvous store.

A collective that times out or loses its peer says only that it failed (gloo does not name the peer).
Each rank posts to the store the number of collectives it has entered and, from a background thread,
a heartbeat counter. When a collective fails, the ranks whose entered count is below this rank's never
reached it, and the ranks whose heartbeat stands still are dead or stopped: those are named.
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any

import torch.distributed as dist

__all__ = ["Heartbeat", "failure_line", "lost_ranks", "post_entered"]

BEAT_SECONDS = 1.0


def _store() -> Any:
    """The process group's rendezvous store (torchrun's), or None when there is none to reach."""
    try:
        return dist.distributed_c10d._get_default_store()
    except (AttributeError, RuntimeError, ValueError):
        return None


def post_entered(rank: int, entered: int) -> None:
    """Record that `rank` has entered its `entered`-th collective."""
    store = _store()
    if store is not None:
        store.set(f"nft/entered/{rank}", str(entered))


def _counters(prefix: str, world_size: int) -> list[int | None]:
    store = _store()
    if store is None:
        return []
    found: list[int | None] = []
    for rank in range(world_size):
        key = f"{prefix}/{rank}"
        found.append(int(store.get(key)) if store.check([key]) else None)
    return found


def lost_ranks(rank: int, entered: int, world_size: int) -> dict[int, str]:
    """The other ranks that did not reach collective `entered`, or whose heartbeat stopped, with why;
    empty when the store cannot tell (it is gone, or every rank looks alive and there)."""
    try:
        reached = _counters("nft/entered", world_size)
        beats = _counters("nft/beat", world_size)
        time.sleep(2.5 * BEAT_SECONDS)
        later = _counters("nft/beat", world_size)
    except (RuntimeError, ValueError):  # the store's host died: nothing to tell
        return {}
    lost: dict[int, str] = {}
    for other in range(min(len(reached), len(later))):
        if other == rank:
            continue
        if reached[other] is None or reached[other] < entered:
            lost[other] = f"never reached collective #{entered}"
        elif later[other] is None or later[other] == beats[other]:
            lost[other] = "stopped answering (no heartbeat)"
    return lost


def failure_line(error: BaseException) -> str:
    """The backend's error as one short line (gloo's source location dropped)."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    text = re.sub(r"^\[[^\]]*\]\s*", "", text)
    return text if len(text) <= 160 else text[:157] + "..."


class Heartbeat:
    """A daemon thread posting this rank's heartbeat counter to the store every second."""

    def __init__(self, rank: int) -> None:
        self.rank = rank
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"nft-heartbeat-{rank}", daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _beat(self) -> None:
        store = _store()
        count = 0
        while store is not None and not self._stop.is_set():
            count += 1
            try:
                store.set(f"nft/beat/{self.rank}", str(count))
            except (RuntimeError, ValueError):  # the store is gone: the job is ending anyway
                return
            self._stop.wait(BEAT_SECONDS)
