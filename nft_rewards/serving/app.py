"""The HTTP face of a served reward: a Starlette app with `/health`, `/info`, `/score` and `/aggregate`.

Every fault of a request is a 4xx with one JSON line `{"error": ...}` before the reward sees it (the
checks of `nft_rewards.serving.wire.decode_request`, the body's size, deadline and memory budget); a
reward that raises is a 500 for that request alone; the server keeps serving. With a token, every
endpoint but `/health` wants `Authorization: Bearer TOKEN`. Bodies are decoded and answers encoded on
threads, so the event loop (and `/health`) never waits for a large request.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import sys
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from nft_core.errors import UserError
from nft_core.types import Aggregate
from nft_rewards.serving.batcher import Batcher, WorkerDead
from nft_rewards.serving.budget import MemoryBudget, worker_reserve
from nft_rewards.serving.guards import guard_middleware
from nft_rewards.serving.info import describe
from nft_rewards.serving.ledger import Ledger, check_request_id
from nft_rewards.serving.receive import RETRY_AFTER_S, Body, drain_body, receive_body
from nft_rewards.serving.settings import Guards, allowed_hosts
from nft_rewards.serving.wire import (
    CONTENT_TYPE,
    PROTOCOL,
    Limits,
    ScoreRequest,
    WireError,
    aggregate_to_json,
    decode_aggregate_request,
    decode_request,
    encode_output,
    error_body,
)

__all__ = ["build_app", "describe"]

WATCH_INTERVAL_S = 0.5
"""How often the app checks that the scoring worker still runs."""


def _error(message: str, status: int) -> Response:
    headers = {"Connection": "close"}  # the body may be unread: never reuse the connection
    if status == 503:
        headers["Retry-After"] = str(RETRY_AFTER_S)
    return Response(error_body(message), status_code=status, media_type="application/json", headers=headers)


def _decode(body: Body, limits: Limits) -> ScoreRequest:
    """Decode on a thread; the images are read in place from the body's bytes (no copy)."""
    return decode_request(body.take(), limits)


def _aggregate(reward: Any, body: Body, limits: Limits) -> dict[str, Any]:
    output, prompts, metadata = decode_aggregate_request(bytes(body.take()), limits)
    summary: Aggregate = reward.aggregate(output, prompts, metadata)
    return aggregate_to_json(summary)


async def _client_gone(request: Request) -> None:
    """Returns when the client closes its connection (after its body was read)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def build_app(
    reward: Any,
    *,
    name: str | None = None,
    token: str | None = None,
    limits: Limits = Limits(),
    batch_size: int | None = None,
    guards: Guards = Guards(),
    host: str = "127.0.0.1",
    on_death: Callable[[str], None] | None = None,
) -> Starlette:
    """The app serving `reward`; requests are batched up to `batch_size` (default: the reward's).
    `on_death` is told (once, from any thread) when the scoring worker has died: the server must exit
    (without it, one line goes to stderr and every request gets 503)."""
    size = int(batch_size or getattr(reward, "batch_size", 16))
    info = describe(reward, name or reward.name, size, limits)
    budget = MemoryBudget(guards.max_inflight_bytes - worker_reserve(limits))
    ledger = Ledger()
    expected = f"Bearer {token}".encode() if token else None
    deaths: list[str] = []

    def died(message: str) -> None:
        if deaths:
            return
        deaths.append(message)
        if on_death is not None:
            on_death(message)
        else:
            print(f"error: {message}; the server cannot score any more", file=sys.stderr, flush=True)

    batcher = Batcher(reward, size, max_merge_bytes=limits.max_body_bytes, on_death=died)

    def authorized(request: Request) -> bool:
        if expected is None:
            return True
        given = request.headers.get("authorization", "").encode()
        return hmac.compare_digest(given, expected)

    async def health(request: Request) -> Response:
        dead = not batcher.alive and not batcher.closing
        state = {
            "status": "dead" if dead else "ok",
            "protocol": PROTOCOL,
            "name": info["name"],
            **batcher.health(),
            "inflight_bytes": budget.used,
            "inflight_budget_bytes": budget.limit,
            "remembered_request_ids": len(ledger),
        }
        if dead:
            state["death"] = batcher.death or "the scoring worker thread ended"
        return JSONResponse(state, status_code=503 if dead else 200)

    def guarded(work: Callable[[Request], Awaitable[Response]], what: str) -> Callable:
        """An endpoint that wants the token and maps faults: the request's a 4xx, the reward's a 500."""

        async def endpoint(request: Request) -> Response:
            if not authorized(request):
                return _error("missing or wrong token (send Authorization: Bearer TOKEN)", 401)
            try:
                return await work(request)
            except WireError as error:
                return _error(str(error), error.status)
            except WorkerDead as error:
                return _error(str(error), 503)
            except UserError as error:  # the reward's own input checks: still the request's fault
                return _error(str(error), 400)
            except Exception as error:
                return _error(f"reward {info['name']!r} {what}: {type(error).__name__}: {error}", 500)

        return endpoint

    async def describe_endpoint(request: Request) -> Response:
        return JSONResponse(info)

    async def answer(future: Future, request: Request, cancel_if_gone: bool) -> Response:
        """The scoring's answer; a request without an id is dropped from the queue if its client leaves."""
        waiter = asyncio.wrap_future(future)
        if cancel_if_gone:
            gone = asyncio.ensure_future(_client_gone(request))
            await asyncio.wait({waiter, gone}, return_when=asyncio.FIRST_COMPLETED)
            gone.cancel()
            if not waiter.done():
                future.cancel()  # only a request not started yet: a running call finishes
                return _error("the client went away", 400)
        output = await waiter
        return Response(await asyncio.to_thread(encode_output, output), media_type=CONTENT_TYPE)

    async def score(request: Request) -> Response:
        deadline = asyncio.get_running_loop().time() + guards.body_timeout
        request_id = check_request_id(request.headers.get("x-request-id"))
        declared = request.headers.get("content-length", "")
        first = ledger.find(request_id, int(declared)) if declared.isdigit() else None
        if first is not None:  # a retry: answered from the first scoring, its body thrown away
            await drain_body(request, limits, deadline)
            return await answer(first, request, cancel_if_gone=False)
        body = await receive_body(request, limits, budget, deadline)
        try:
            decoded = await asyncio.to_thread(_decode, body, limits)
            if info["needs_metadata"] and decoded.metadata is None:
                raise WireError(f"reward {info['name']!r} needs one metadata object per image; got null")
            first = ledger.find(request_id, body.size)  # the same request may have come in meanwhile
            future = first or batcher.submit(decoded)
        except BaseException:
            body.reservation.release()
            raise
        del decoded
        if first is not None:
            body.reservation.release()
        else:
            future.add_done_callback(lambda _: body.reservation.release())
            ledger.add(request_id, future, body.size)
        return await answer(future, request, cancel_if_gone=request_id is None)

    async def aggregate(request: Request) -> Response:
        deadline = asyncio.get_running_loop().time() + guards.body_timeout
        body = await receive_body(request, limits, budget, deadline)
        try:
            return JSONResponse(await asyncio.to_thread(_aggregate, reward, body, limits))
        finally:
            body.reservation.release()

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/info", guarded(describe_endpoint, "failed"), methods=["GET"]),
        Route("/score", guarded(score, "failed"), methods=["POST"]),
        Route("/aggregate", guarded(aggregate, "aggregate failed"), methods=["POST"]),
    ]

    async def watch() -> None:
        """The worker's supervisor: a worker that stopped without being told to is reported."""
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            if not batcher.alive and not batcher.closing:
                died(batcher.death or "the scoring worker thread ended")
                return

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        watcher = asyncio.ensure_future(watch())
        yield
        watcher.cancel()
        await asyncio.to_thread(batcher.close)

    async def http_error(request: Request, error: Exception) -> Response:
        return _error(getattr(error, "detail", str(error)), getattr(error, "status_code", 500))

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error},
        middleware=guard_middleware(allowed_hosts(host, guards.allowed_hosts), guards.allowed_origins),
    )
    app.state.batcher = batcher
    app.state.budget = budget
    app.state.deaths = deaths
    return app
