"""The server's memory budget: the bytes every request in flight may hold at once, charged before its body
is read, so that no mix of requests can take the server beyond `--max-inflight-mb` (docs/serving.md).

What a request costs is charged up front, so that a request is never admitted and then refused half way:

* its body (received into one buffer; the decoded images are read in place from it, no copy), and, as
  soon as its first 8 bytes give the JSON header's length, `HEADER_EXPANSION` times that length (Python
  objects of parsed JSON are up to 24x its text);
* the worker's own memory is set aside once, since the one worker handles one batch at a time: a merged
  batch is copied once (at most one largest body) and uint8 images become float32 (4x that).

A request that does not fit gets 503 with `Retry-After`; the charge is released when its answer is ready.
"""

from __future__ import annotations

import threading

from nft_rewards.serving.wire import Limits

__all__ = [
    "HEADER_EXPANSION",
    "MIN_CHARGE",
    "MemoryBudget",
    "Reservation",
    "body_charge",
    "header_charge",
    "required_budget",
    "worker_reserve",
]

HEADER_EXPANSION = 32
"""Bytes of Python objects per byte of a JSON header, at most (measured: up to 24 for `[{},{},...]`)."""

MIN_CHARGE = 64 * 2**10
"""The least a request costs (buffers, the parsed request): many tiny requests are bounded too."""


def body_charge(length: int) -> int:
    """The charge of a body of `length` bytes (its images are decoded in place)."""
    return max(MIN_CHARGE, length)


def header_charge(length: int) -> int:
    """The charge of a JSON header of `length` bytes, once parsed."""
    return HEADER_EXPANSION * length


def worker_reserve(limits: Limits) -> int:
    """Set aside for the worker: a merged batch of at most one largest body, and its float32 copy."""
    return 5 * limits.max_body_bytes


def required_budget(limits: Limits) -> int:
    """The smallest budget that admits one request of every allowed size."""
    header = min(limits.max_header_bytes, limits.max_body_bytes)  # a header never outgrows its body
    return worker_reserve(limits) + body_charge(limits.max_body_bytes) + header_charge(header)


class MemoryBudget:
    """A count of bytes that reservations take and give back; thread-safe (the worker releases too)."""

    def __init__(self, limit: int) -> None:
        self.limit = int(limit)
        self.used = 0
        self._lock = threading.Lock()

    def reserve(self, size: int) -> Reservation | None:
        """A reservation of `size` bytes, or None when they do not fit now."""
        reservation = Reservation(self)
        return reservation if reservation.grow(size) else None

    def _take(self, reservation: Reservation, size: int) -> bool:
        with self._lock:
            if self.used + size > self.limit:
                return False
            self.used += size
            reservation.size += size
            return True

    def _give(self, reservation: Reservation) -> None:
        with self._lock:
            self.used -= reservation.size
            reservation.size = 0


class Reservation:
    """Bytes held in a `MemoryBudget` by one request; `release` (idempotent) gives them back."""

    def __init__(self, budget: MemoryBudget) -> None:
        self.budget = budget
        self.size = 0

    def grow(self, size: int) -> bool:
        """Hold `size` more bytes; False (holding what it held) when they do not fit."""
        return size <= 0 or self.budget._take(self, size)

    def release(self) -> None:
        """Give every byte back."""
        self.budget._give(self)
