"""`remote`: a reward served by `nft reward serve` in another process or machine, used like a local one.

    [[reward]]
    name = "remote"
    required = false                       # optional: a server that is down skips this reward
    options = { url = "http://127.0.0.1:8765", timeout = 120, retries = 2 }

At construction it reads and checks the server's `/info` (native range, direction, determinism, metadata
need, aggregation, limits), so it declares exactly what the served reward declares; a field that is
missing or absurd is one line naming the server and the field. Each call sends the images losslessly
(`nft_rewards.serving.wire`, float in its own dtype by default), split so that every request fits the
server's `max_images` and `max_body_bytes`, and returns the served reward's scores, details and notes
unchanged. The server is not trusted: every answer has an overall deadline and a byte cap, compressed
answers and redirects are refused. Timeouts, dropped connections and 5xx answers are retried with a short
back-off under the same request id (the server scores it once); a 503 (busy) waits as the server asks; a
4xx (the request itself is wrong) is not retried.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field

from nft_core.errors import UserError
from nft_core.types import Aggregate, RewardOutput
from nft_rewards.base import BaseReward, RewardOptions
from nft_rewards.serving.client import Answer, AnswerRefused, DeadlinePassed, exchange, ssl_context
from nft_rewards.serving.info import parse_info
from nft_rewards.serving.wire import (
    CONTENT_TYPE,
    TOKEN_ENV,
    WIRE_DTYPES,
    Limits,
    WireError,
    aggregate_from_json,
    decode_output,
    encode_aggregate_request,
    encode_request,
    header_length,
)

__all__ = ["RemoteOptions", "RemoteReward"]

INFO_MAX_BYTES = 2**20
"""The largest `/info` answer this client reads."""

MAX_BUSY_WAIT_S = 30.0
"""The longest a busy server's Retry-After is honoured for, per wait."""


class RemoteOptions(RewardOptions):
    """`[reward.options]` of `remote`."""

    url: str = Field(..., description="the server's address, e.g. http://127.0.0.1:8765")
    timeout: float = Field(
        300.0,
        gt=0,
        description="seconds for one whole answer (connecting, sending, scoring and reading together)",
    )
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
    max_answer_mb: float = Field(
        64.0, gt=0, description="the largest answer read from the server, in MiB (beyond: a fault)"
    )


class RemoteReward(BaseReward):
    """A reward served over HTTP by `nft reward serve` (docs/serving.md)."""

    name: ClassVar[str] = "remote"
    Options = RemoteOptions
    scores_elsewhere: ClassVar[bool] = True
    """The served reward computes on the server: overlapped scoring waits on the network (RemoteScoring)."""

    def __init__(self, options: RemoteOptions) -> None:
        super().__init__(options)
        self.url = options.url.rstrip("/")
        token = options.token or os.environ.get(options.token_env) or None
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._verify = ssl_context()
        self.max_answer_bytes = int(options.max_answer_mb * 2**20)
        answer = self._request("GET", "/info", max_bytes=INFO_MAX_BYTES, media_type="application/json")
        self.info = _json(answer, f"{self.url}/info")
        self.served = parse_info(self.info, self.url)
        self.native_range = self.served.native_range
        self.higher_is_better = self.served.higher_is_better  # type: ignore[misc]
        self.deterministic = self.served.deterministic  # type: ignore[misc]
        self.needs_metadata = self.served.needs_metadata  # type: ignore[misc]
        served = self.served.batch_size
        size = min(options.batch_size, self.served.max_images)
        self.batch_size = size // served * served if size >= served else size

    def extra_repr(self) -> str:
        return f"url={self.url!r}, served={self.served.name!r}"

    def _request(
        self, method: str, path: str, body: bytes | None = None, *, max_bytes: int, media_type: str
    ) -> Answer:
        """One request with retries (same request id) after timeouts, dropped connections and 5xx; a busy
        server (503) is waited for as it asks, within `timeout`; a 4xx, a redirect or an answer this client
        refuses raises at once. Every fault is a one-line UserError naming the server."""
        import httpx

        where = f"{self.url}{path}"
        headers = dict(self._headers)
        if body is not None:
            headers |= {"Content-Type": CONTENT_TYPE, "X-Request-Id": uuid.uuid4().hex}
        deadline, tries, busy_s, problem = self.options.timeout, 0, 0.0, ""
        while True:
            try:
                answer = exchange(
                    method, where, body=body, headers=headers, deadline=deadline, max_bytes=max_bytes,
                    verify=self._verify,
                )  # fmt: skip
            except (DeadlinePassed, httpx.TimeoutException):
                problem = f"no whole answer within {deadline:g} s"
            except httpx.TransportError as error:
                problem = f"{type(error).__name__}: {error}"
            except AnswerRefused as error:
                raise UserError(f"remote reward {where}: {error}") from None
            else:
                status = answer.status
                if status == 200:
                    if answer.media_type != media_type:
                        raise UserError(
                            f"remote reward {where}: the answer is {answer.media_type or 'untyped'}, "
                            f"not {media_type}; is this a `nft reward serve` server?"
                        )
                    return answer
                if 300 <= status < 400:
                    target = answer.headers.get("location", "?")
                    raise UserError(
                        f"remote reward {where}: redirected ({status}) to {target[:200]}; redirects are "
                        "not followed: give the server's own address as url"
                    )
                message = _error_message(answer)
                if status in (429, 503) and busy_s < deadline:
                    wait = _retry_after(answer, default=min(0.25 * 2**tries, 5.0))
                    busy_s += wait
                    time.sleep(wait)
                    continue
                if status < 500 and status != 408:
                    raise UserError(f"remote reward {where}: {status}: {message}")
                problem = f"{status}: {message}"
            tries += 1
            if tries > self.options.retries:
                break
            time.sleep(min(0.25 * 2**tries, 5.0))
        raise UserError(
            f"remote reward {where}: {problem} (after {tries} tries); is `nft reward serve` running there?"
        )

    def _bodies(self, images: torch.Tensor, prompts: list[str], metadata: Any) -> list[tuple[int, bytes]]:
        """The batch as requests that each fit the server's limits: (image count, body) in order. Splits
        keep to multiples of the server's batch size where they can."""
        dtype = self.options.wire_dtype
        if metadata is not None:  # JSON only on the wire: an edit's `source_image` tensor stays here
            metadata = [
                {k: v for k, v in entry.items() if not isinstance(v, torch.Tensor)} for entry in metadata
            ]
        wire = images.dtype if dtype == "auto" else (torch.uint8 if dtype == "uint8" else WIRE_DTYPES[dtype])
        wire = wire if wire in WIRE_DTYPES.values() else torch.float32
        per_image = max(1, images[:1].numel() * torch.empty(0, dtype=wire).element_size())
        info, n, start, bodies = self.served, len(prompts), 0, []
        while start < n:
            count = max(1, min(n - start, info.max_images, (info.max_body_bytes - 4096) // per_image))
            while True:
                if info.batch_size <= count < n - start:
                    count = count // info.batch_size * info.batch_size
                part = slice(start, start + count)
                body = encode_request(
                    images[part], prompts[part], None if metadata is None else metadata[part], dtype=dtype
                )
                if len(body) <= info.max_body_bytes and header_length(body) <= info.max_header_bytes:
                    break
                if count == 1:
                    raise UserError(
                        f"remote reward {self.url}: one image with its prompt is {len(body)} bytes on the "
                        f'wire; the server takes at most {info.max_body_bytes} (send wire_dtype = "uint8", '
                        "or serve with a larger --max-body-mb)"
                    )
                count = max(1, count // 2)
            bodies.append((count, body))
            start += count
        return bodies

    def score_batch(self, images: torch.Tensor, prompts: list[str], metadata: Any) -> RewardOutput:
        outputs = []
        limits = Limits(max_body_bytes=self.max_answer_bytes, max_header_bytes=self.max_answer_bytes)
        for count, body in self._bodies(images, prompts, metadata):
            answer = self._request(
                "POST", "/score", body, max_bytes=self.max_answer_bytes, media_type=CONTENT_TYPE
            )
            try:
                outputs.append(decode_output(answer.content, count, limits))
            except WireError as error:
                raise RuntimeError(f"remote reward {self.url}/score: malformed answer: {error}") from None
        return _concat(outputs)

    def aggregate(
        self,
        output: RewardOutput,
        prompts: Sequence[str],
        metadata: Sequence[dict[str, Any]] | None = None,
    ) -> Aggregate:
        """The served reward's own aggregation when it has one (GenEval's table), else the mean."""
        if not self.served.custom_aggregate:
            return Aggregate.mean(output)
        body = encode_aggregate_request(output, prompts, metadata)
        answer = self._request(
            "POST", "/aggregate", body, max_bytes=self.max_answer_bytes, media_type="application/json"
        )
        data = _json(answer, f"{self.url}/aggregate")
        if not isinstance(data, dict):
            raise UserError(f"remote reward {self.url}/aggregate: the answer is not a JSON object")
        return aggregate_from_json(data)


def _concat(outputs: list[RewardOutput]) -> RewardOutput:
    """The outputs of consecutive requests as one."""
    if len(outputs) == 1:
        return outputs[0]
    keys = set(outputs[0].details)
    if any(set(output.details) != keys for output in outputs):
        raise RuntimeError("remote reward: the server's answers name different details")
    notes = [output.notes for output in outputs]
    return RewardOutput(
        scores=torch.cat([output.scores for output in outputs]),
        details={key: torch.cat([output.details[key] for output in outputs]) for key in keys},
        notes=None if any(part is None for part in notes) else [note for part in notes for note in part],
    )


def _json(answer: Answer, where: str) -> Any:
    try:
        return json.loads(answer.content)
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise UserError(f"remote reward {where}: the answer is not valid JSON ({error})") from None


def _retry_after(answer: Answer, default: float) -> float:
    """The wait a busy server asks for, in seconds (0.05..MAX_BUSY_WAIT_S)."""
    try:
        wait = float(answer.headers.get("retry-after", default))
    except ValueError:
        wait = default
    return min(max(wait, 0.05), MAX_BUSY_WAIT_S)


def _error_message(answer: Answer) -> str:
    """The server's one-line error, shortened."""
    try:
        message = json.loads(answer.content).get("error")
    except (UnicodeDecodeError, ValueError, AttributeError, RecursionError):
        message = None
    text = message if isinstance(message, str) else answer.content[:300].decode("utf-8", "replace")
    return " ".join(text.split())[:300]
