"""Request ids (`X-Request-Id`): a request that a client sends again, after a timeout or a dropped
connection, is answered from its first scoring instead of being scored twice.

An id is remembered while its scoring runs and for `keep_s` seconds after it succeeded (a failed or
cancelled scoring is forgotten at once, so a retry scores again). The oldest successes are forgotten
first beyond `max_entries` ids or `max_bytes` of remembered answers.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from nft_rewards.serving.wire import WireError

__all__ = ["Ledger", "check_request_id"]

MAX_ID_CHARS = 128


def check_request_id(value: str | None) -> str | None:
    """The `X-Request-Id` header's value, or None; one that is too long or not printable is a 400."""
    if value is None:
        return None
    if not 0 < len(value) <= MAX_ID_CHARS or not value.isascii() or not value.isprintable():
        raise WireError(f"X-Request-Id must be 1 to {MAX_ID_CHARS} printable ASCII characters")
    return value


@dataclass
class _Entry:
    future: Future
    body_bytes: int
    done_at: float | None = field(default=None)
    answer_bytes: int = 0


def _answer_bytes(output: Any) -> int:
    """About what a remembered `RewardOutput` holds, in bytes."""
    tensors = [getattr(output, "scores", None), *(getattr(output, "details", None) or {}).values()]
    size = sum(int(getattr(value, "nbytes", 8)) for value in tensors)
    return size + sum(len(str(note)) + 64 for note in getattr(output, "notes", None) or [])


class Ledger:
    """Scorings by request id: `find` an id's scoring, `add` a new one (thread-safe)."""

    def __init__(self, keep_s: float = 600.0, max_entries: int = 4096, max_bytes: int = 64 * 2**20) -> None:
        self.keep_s = keep_s
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def find(self, request_id: str | None, body_bytes: int) -> Future | None:
        """The scoring of `request_id`, if it runs or succeeded lately; a 409 when that request had
        another body size (the id was reused for another request)."""
        if request_id is None:
            return None
        with self._lock:
            self._prune()
            entry = self._entries.get(request_id)
        if entry is None:
            return None
        if entry.body_bytes != body_bytes:
            raise WireError(f"X-Request-Id {request_id!r} was used for another request", 409)
        return entry.future

    def add(self, request_id: str | None, future: Future, body_bytes: int) -> None:
        """Remember `future` as the scoring of `request_id` (nothing without an id)."""
        if request_id is None:
            return
        with self._lock:
            self._entries[request_id] = _Entry(future, body_bytes)
            self._prune()
        future.add_done_callback(lambda done: self._finished(request_id, done))

    def _finished(self, request_id: str, future: Future) -> None:
        with self._lock:
            entry = self._entries.get(request_id)
            if entry is None or entry.future is not future:
                return
            if future.cancelled() or future.exception() is not None:
                del self._entries[request_id]
            else:
                entry.done_at = time.monotonic()
                entry.answer_bytes = _answer_bytes(future.result())
                self._prune()

    def _prune(self) -> None:
        """Forget expired successes, then the oldest ones beyond `max_entries` or `max_bytes`."""
        now = time.monotonic()
        for key in [k for k, e in self._entries.items() if e.done_at and now - e.done_at > self.keep_s]:
            del self._entries[key]
        finished = [key for key, entry in self._entries.items() if entry.done_at is not None]
        held = sum(self._entries[key].answer_bytes for key in finished)
        for key in finished:
            if len(self._entries) <= self.max_entries and held <= self.max_bytes:
                break
            held -= self._entries.pop(key).answer_bytes
