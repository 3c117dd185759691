"""One HTTP exchange with a reward server that is not trusted: an overall deadline for the whole exchange
(connecting, sending, waiting and reading together, not per read), the answer streamed under a byte cap,
and no compression (`Accept-Encoding: identity`; a compressed answer is refused, never unpacked).

Runs httpx's async client on a fresh event loop per call, so the deadline cancels the exchange wherever
it is and the connection closes (a server then stops scoring a request whose client went away, or answers
its retry from the first scoring: `nft_rewards.serving.ledger`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from dataclasses import dataclass
from typing import Any

__all__ = ["Answer", "AnswerRefused", "DeadlinePassed", "exchange", "ssl_context"]


class DeadlinePassed(Exception):
    """No whole answer within the deadline."""


class AnswerRefused(Exception):
    """An answer this client will not read: too large, or compressed."""


@dataclass(frozen=True)
class Answer:
    """A server's whole answer."""

    status: int
    headers: Any  # httpx.Headers
    content: bytes

    @property
    def media_type(self) -> str:
        """The Content-Type without its parameters, lower case."""
        return self.headers.get("content-type", "").split(";")[0].strip().lower()


def ssl_context() -> Any:
    """The TLS settings every exchange of one client shares (building them takes ~20 ms)."""
    import httpx

    make = getattr(httpx, "create_ssl_context", None)
    return make() if make is not None else True


async def _read(
    client: Any, method: str, url: str, body: bytes | None, headers: dict, max_bytes: int
) -> Answer:
    async with client.stream(method, url, content=body, headers=headers) as response:
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise AnswerRefused(f"the answer is {encoding}-encoded; this client takes identity only")
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            raise AnswerRefused(f"the answer of {declared} bytes exceeds this client's cap of {max_bytes}")
        chunks, size = [], 0
        async for chunk in response.aiter_raw():
            size += len(chunk)
            if size > max_bytes:
                raise AnswerRefused(f"the answer exceeds this client's cap of {max_bytes} bytes")
            chunks.append(chunk)
        return Answer(response.status_code, response.headers, b"".join(chunks))


async def _exchange(
    method: str, url: str, body: bytes | None, headers: dict, deadline: float, max_bytes: int, verify: Any
) -> Answer:
    import httpx

    async with httpx.AsyncClient(verify=verify, timeout=deadline, follow_redirects=False) as client:
        try:
            return await asyncio.wait_for(_read(client, method, url, body, headers, max_bytes), deadline)
        except asyncio.TimeoutError:
            raise DeadlinePassed(f"no whole answer within {deadline:g} s") from None


def exchange(
    method: str,
    url: str,
    *,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    deadline: float,
    max_bytes: int,
    verify: Any = True,
) -> Answer:
    """One request and its whole answer within `deadline` seconds: `DeadlinePassed` after it,
    `AnswerRefused` for an answer beyond `max_bytes` or compressed, httpx's `TransportError`s as they come.
    Redirects are answers like any other (never followed)."""
    headers = {**(headers or {}), "Accept-Encoding": "identity"}
    work = _exchange(method, url, body, headers, deadline, max_bytes, verify)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(work)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # called from inside an event loop
        return pool.submit(asyncio.run, work).result()
