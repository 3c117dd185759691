"""`remote`: a reward served by `nft reward serve` in another process or machine, used like a local one.

    [[reward]]
    name = "remote"
    required = false                       # optional: a server that is down skips this reward
    options = { url = "http://127.0.0.1:8765", timeout = 120, retries = 2 }

At construction it reads the server's `/info` (native range, direction, determinism, metadata need,
aggregation), so it declares exactly what the served reward declares. Each call sends the images
losslessly (`nft_rewards.serving.wire`, float in its own dtype by default) and returns the served
reward's scores, details and notes unchanged. Timeouts, dropped connections and 5xx answers are retried
with a short back-off; a 4xx (the request itself is wrong) is not.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field

from nft_core.errors import UserError
from nft_core.types import Aggregate, RewardOutput
from nft_rewards.base import BaseReward, RewardOptions
from nft_rewards.serving.wire import (
    CONTENT_TYPE,
    TOKEN_ENV,
    WireError,
    aggregate_from_json,
    decode_output,
    encode_aggregate_request,
    encode_request,
)

__all__ = ["RemoteOptions", "RemoteReward"]


class RemoteOptions(RewardOptions):
    """`[reward.options]` of `remote`."""

    url: str = Field(..., description="the server's address, e.g. http://127.0.0.1:8765")
    timeout: float = Field(300.0, gt=0, description="seconds to wait for one answer")
    retries: int = Field(
        2, ge=0, description="retries of a request after a timeout, a dropped connection or a 5xx"
    )
    token: str | None = Field(
        None, description="the server's token (default: the variable named by token_env)"
    )
    token_env: str = Field(TOKEN_ENV, description="environment variable holding the token")
    wire_dtype: Literal["auto", "uint8", "float32", "float16", "bfloat16"] = Field(
        "auto",
        description="how images travel: auto = their own float dtype (bit-exact); uint8 = 4x smaller, exact "
        "for rewards that quantize to uint8 themselves (most do: docs/rewards.md)",
    )
    batch_size: int = Field(
        256,
        ge=1,
        description="images per request, rounded down to a multiple of the server's batch size (so the "
        "served reward sees the same batches as in-process)",
    )


class RemoteReward(BaseReward):
    """A reward served over HTTP by `nft reward serve` (docs/serving.md)."""

    name: ClassVar[str] = "remote"
    Options = RemoteOptions

    def __init__(self, options: RemoteOptions) -> None:
        import httpx

        super().__init__(options)
        self.url = options.url.rstrip("/")
        token = options.token or os.environ.get(options.token_env) or None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(headers=headers, timeout=options.timeout)
        self.info = self._request("GET", "/info").json()
        low, high = self.info["native_range"]
        self.native_range = (-float("inf") if low is None else low, float("inf") if high is None else high)
        self.higher_is_better = bool(self.info["higher_is_better"])  # type: ignore[misc]
        self.deterministic = bool(self.info["deterministic"])  # type: ignore[misc]
        self.needs_metadata = bool(self.info["needs_metadata"])  # type: ignore[misc]
        served = int(self.info.get("batch_size") or 1)
        most = int(self.info.get("limits", {}).get("max_images") or options.batch_size)
        size = min(options.batch_size, most)
        self.batch_size = size // served * served if size >= served else size

    def extra_repr(self) -> str:
        return f"url={self.url!r}, served={self.info.get('name')!r}"

    def _request(self, method: str, path: str, body: bytes | None = None) -> Any:
        """One HTTP request with retries on timeouts, dropped connections and 5xx; a 4xx raises at once."""
        import httpx

        where = f"{self.url}{path}"
        problem = ""
        for attempt in range(self.options.retries + 1):
            if attempt:
                time.sleep(min(0.25 * 2**attempt, 5.0))
            try:
                answer = self._http.request(
                    method, where, content=body, headers={"Content-Type": CONTENT_TYPE} if body else None
                )
            except httpx.TimeoutException as error:
                problem = f"no answer within {self.options.timeout} s ({type(error).__name__})"
                continue
            except httpx.TransportError as error:
                problem = f"{type(error).__name__}: {error}"
                continue
            if answer.status_code < 400:
                return answer
            message = _error_message(answer)
            if answer.status_code < 500:
                raise UserError(f"remote reward {where}: {answer.status_code}: {message}")
            problem = f"{answer.status_code}: {message}"
        tries = self.options.retries + 1
        raise UserError(
            f"remote reward {where}: {problem} (after {tries} tries); is `nft reward serve` running there?"
        )

    def score_batch(self, images: torch.Tensor, prompts: list[str], metadata: Any) -> RewardOutput:
        body = encode_request(images, prompts, metadata, dtype=self.options.wire_dtype)
        answer = self._request("POST", "/score", body)
        try:
            return decode_output(answer.content, len(prompts))
        except WireError as error:
            raise RuntimeError(f"remote reward {self.url}/score: malformed answer: {error}") from None

    def aggregate(
        self,
        output: RewardOutput,
        prompts: Sequence[str],
        metadata: Sequence[dict[str, Any]] | None = None,
    ) -> Aggregate:
        """The served reward's own aggregation when it has one (GenEval's table), else the mean."""
        if not self.info.get("custom_aggregate"):
            return Aggregate.mean(output)
        answer = self._request("POST", "/aggregate", encode_aggregate_request(output, prompts, metadata))
        return aggregate_from_json(answer.json())


def _error_message(answer: Any) -> str:
    try:
        return str(answer.json().get("error", answer.text))
    except ValueError:
        return answer.text.strip()[:200]
