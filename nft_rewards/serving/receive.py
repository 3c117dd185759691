"""Receiving a request body: under the size limit, the memory budget and the body deadline.

A body is charged to the budget before it is read (`nft_rewards.serving.budget`), refused with 413 as soon
as it is known to exceed the size limit, and cut off with 408 when it has not arrived by the deadline (a
client that stalls or whose Content-Length lies). A body the budget cannot take now is read and thrown
away (no memory), then answered 503 with Retry-After, so the client reads the answer instead of a reset.
"""

from __future__ import annotations

import asyncio

import numpy as np
from starlette.requests import ClientDisconnect, Request

from nft_rewards.serving.budget import MemoryBudget, Reservation, body_charge, header_charge
from nft_rewards.serving.wire import Limits, WireError, header_length

__all__ = ["Body", "Busy", "drain_body", "receive_body"]

RETRY_AFTER_S = 1
"""What a 503 asks a client to wait before it tries again."""


class Busy(WireError):
    """The memory budget or the queue cannot take a request now: 503 with Retry-After."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 503)


class Body:
    """A received body and the budget it holds; `take` hands the bytes over once (so that whoever decodes
    them holds the only reference, and they are freed as soon as the decoded tensor exists)."""

    def __init__(self, data: bytearray | memoryview, reservation: Reservation) -> None:
        self._data: bytearray | memoryview | None = data
        self.size = len(data)
        self.reservation = reservation

    def take(self) -> bytearray | memoryview:
        """The body's bytes; the holder keeps no reference to them."""
        data, self._data = self._data, None
        if data is None:
            raise RuntimeError("a request body is taken once")
        return data


def _declared(request: Request, limits: Limits) -> int | None:
    declared = request.headers.get("content-length")
    if declared is None:
        return None
    if not declared.isdigit():
        raise WireError(f"Content-Length {declared[:40]!r} is not a byte count")
    if int(declared) > limits.max_body_bytes:
        raise WireError(f"body of {declared} bytes exceeds the limit of {limits.max_body_bytes}", 413)
    return int(declared)


async def _before(deadline: float, work):
    """`work` (a coroutine) or a 408 when the body deadline passes first."""
    remaining = deadline - asyncio.get_running_loop().time()
    try:
        return await asyncio.wait_for(work, timeout=max(remaining, 0.0))
    except asyncio.TimeoutError:
        raise WireError("the request body did not arrive before the body deadline", 408) from None
    except ClientDisconnect:
        raise WireError("the client went away before the body arrived") from None


async def drain_body(request: Request, limits: Limits, deadline: float) -> int:
    """Read the body and throw it away (nothing is kept); its size. Bodies beyond the limit are a 413."""
    _declared(request, limits)

    async def drain() -> int:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limits.max_body_bytes:
                raise WireError(f"body exceeds the limit of {limits.max_body_bytes} bytes", 413)
        return size

    return await _before(deadline, drain())


async def receive_body(request: Request, limits: Limits, budget: MemoryBudget, deadline: float) -> Body:
    """The whole body, charged to `budget` (a `Busy` when it cannot be, after draining the body)."""
    declared = _declared(request, limits)
    busy = f"the server holds {budget.used / 2**20:.0f} MiB of requests; try again shortly"
    reservation = budget.reserve(body_charge(limits.max_body_bytes if declared is None else declared))
    if reservation is None:
        await drain_body(request, limits, deadline)
        raise Busy(busy)

    async def receive() -> bytearray | memoryview:
        # One allocation when the size is known, and not zero-filled: its pages are taken as bytes arrive
        data = bytearray() if declared is None else memoryview(np.empty(declared, dtype=np.uint8))
        size, charged_header = 0, False
        async for chunk in request.stream():
            end = size + len(chunk)
            if end > limits.max_body_bytes or (declared is not None and end > declared):
                raise WireError(f"body exceeds the limit of {limits.max_body_bytes} bytes", 413)
            if declared is None:
                data += chunk
            else:
                data[size:end] = chunk
            size = end
            if not charged_header and size >= 8:
                charged_header = True
                length = min(header_length(data), limits.max_header_bytes)  # longer: a 400 when decoded
                if not reservation.grow(header_charge(length)):
                    raise Busy(busy)
        if declared is not None and size != declared:
            raise WireError(f"body has {size} bytes but Content-Length says {declared}")
        return data

    try:
        return Body(await _before(deadline, receive()), reservation)
    except Busy:
        reservation.release()
        await drain_body(request, limits, deadline)
        raise
    except BaseException:
        reservation.release()
        raise
