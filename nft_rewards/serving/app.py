"""The HTTP face of a served reward: a Starlette app with `/health`, `/info`, `/score` and `/aggregate`.

Every fault of a request is a 4xx with one JSON line `{"error": ...}` before the reward sees it (the
checks of `nft_rewards.serving.wire.decode_request`); a reward that raises is a 500 for that request
alone; the server keeps serving. With a token, every endpoint but `/health` wants `Authorization: Bearer
TOKEN`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import math
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from nft_core.errors import UserError
from nft_core.types import Aggregate
from nft_rewards.serving.batcher import Batcher
from nft_rewards.serving.wire import (
    CONTENT_TYPE,
    PROTOCOL,
    Limits,
    WireError,
    aggregate_to_json,
    decode_aggregate_request,
    decode_request,
    encode_output,
    error_body,
)

__all__ = ["build_app", "describe"]


def _bound(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _custom_aggregate(reward: Any) -> bool:
    """Whether the reward summarises an evaluation set its own way (GenEval); else the mean is enough."""
    from nft_rewards.base import BaseReward

    own = getattr(type(reward), "aggregate", None)
    return not (isinstance(reward, BaseReward) and own is BaseReward.aggregate)


def describe(reward: Any, name: str, batch_size: int, limits: Limits) -> dict[str, Any]:
    """`GET /info`: what a client needs to behave like the reward (range, direction, aggregation)."""
    options = getattr(reward, "options", None)
    low, high = reward.native_range
    return {
        "protocol": PROTOCOL,
        "name": name,
        "native_range": [_bound(low), _bound(high)],
        "higher_is_better": bool(reward.higher_is_better),
        "deterministic": bool(getattr(reward, "deterministic", True)),
        "needs_metadata": bool(getattr(reward, "needs_metadata", False)),
        "custom_aggregate": _custom_aggregate(reward),
        "batch_size": batch_size,
        "options": json.loads(options.model_dump_json()) if hasattr(options, "model_dump_json") else {},
        "limits": {
            "max_body_bytes": limits.max_body_bytes,
            "max_images": limits.max_images,
            "max_side": limits.max_side,
            "max_prompt_chars": limits.max_prompt_chars,
        },
    }


def _error(message: str, status: int) -> Response:
    return Response(error_body(message), status_code=status, media_type="application/json")


async def _body(request: Request, limits: Limits) -> bytes:
    """The request body, refused with 413 as soon as it exceeds the limit (never buffered whole)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limits.max_body_bytes:
        raise WireError(f"body of {declared} bytes exceeds the limit of {limits.max_body_bytes}", 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limits.max_body_bytes:
            raise WireError(f"body exceeds the limit of {limits.max_body_bytes} bytes", 413)
        chunks.append(chunk)
    return b"".join(chunks)


def build_app(
    reward: Any,
    *,
    name: str | None = None,
    token: str | None = None,
    limits: Limits = Limits(),
    batch_size: int | None = None,
) -> Starlette:
    """The app serving `reward`; requests are batched up to `batch_size` (default: the reward's)."""
    size = int(batch_size or getattr(reward, "batch_size", 16))
    info = describe(reward, name or reward.name, size, limits)
    batcher = Batcher(reward, size)
    expected = f"Bearer {token}".encode() if token else None

    def authorized(request: Request) -> bool:
        if expected is None:
            return True
        given = request.headers.get("authorization", "").encode()
        return hmac.compare_digest(given, expected)

    async def health(request: Request) -> Response:
        counts = {"calls": batcher.calls, "merged_calls": batcher.merged_calls}
        return JSONResponse({"status": "ok", "protocol": PROTOCOL, "name": info["name"], **counts})

    def guarded(work: Callable[[Request], Awaitable[Response]], what: str) -> Callable:
        """An endpoint that wants the token and maps faults: the request's a 4xx, the reward's a 500."""

        async def endpoint(request: Request) -> Response:
            if not authorized(request):
                return _error("missing or wrong token (send Authorization: Bearer TOKEN)", 401)
            try:
                return await work(request)
            except WireError as error:
                return _error(str(error), error.status)
            except UserError as error:  # the reward's own input checks: still the request's fault
                return _error(str(error), 400)
            except Exception as error:
                return _error(f"reward {info['name']!r} {what}: {type(error).__name__}: {error}", 500)

        return endpoint

    async def describe_endpoint(request: Request) -> Response:
        return JSONResponse(info)

    async def score(request: Request) -> Response:
        decoded = decode_request(await _body(request, limits), limits)
        if info["needs_metadata"] and decoded.metadata is None:
            raise WireError(f"reward {info['name']!r} needs one metadata object per image; got null")
        output = await asyncio.wrap_future(batcher.submit(decoded))
        return Response(encode_output(output), media_type=CONTENT_TYPE)

    async def aggregate(request: Request) -> Response:
        output, prompts, metadata = decode_aggregate_request(await _body(request, limits), limits)
        summary: Aggregate = await asyncio.to_thread(reward.aggregate, output, prompts, metadata)
        return JSONResponse(aggregate_to_json(summary))

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/info", guarded(describe_endpoint, "failed"), methods=["GET"]),
        Route("/score", guarded(score, "failed"), methods=["POST"]),
        Route("/aggregate", guarded(aggregate, "aggregate failed"), methods=["POST"]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        yield
        batcher.close()

    async def http_error(request: Request, error: Exception) -> Response:
        return _error(getattr(error, "detail", str(error)), getattr(error, "status_code", 500))

    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: http_error})
    app.state.batcher = batcher
    return app
