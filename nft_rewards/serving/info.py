"""`GET /info`: what a served reward declares (server side, `describe`) and the client's strict reading of
it (`parse_info`): a server is not trusted, so every field is checked and a bad one is one line."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from nft_core.errors import UserError
from nft_rewards.serving.wire import PROTOCOL, Limits

__all__ = ["ServedInfo", "describe", "parse_info"]


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
            "max_header_bytes": limits.max_header_bytes,
            "max_images": limits.max_images,
            "max_side": limits.max_side,
            "max_prompt_chars": limits.max_prompt_chars,
        },
    }


@dataclass(frozen=True)
class ServedInfo:
    """A served reward's declarations, checked."""

    name: str
    native_range: tuple[float, float]
    higher_is_better: bool
    deterministic: bool
    needs_metadata: bool
    custom_aggregate: bool
    batch_size: int
    max_images: int
    max_body_bytes: int
    max_header_bytes: int


OLD_MAX_HEADER_BYTES = 16 * 2**20
"""What servers that do not say their header limit accept."""


def parse_info(data: Any, where: str) -> ServedInfo:
    """Check an `/info` answer field by field; anything missing, mistyped or absurd is a one-line
    UserError naming `where` (the server) and the field."""

    def bad(field: str, want: str, value: Any) -> UserError:
        shown = json.dumps(value)[:60] if _jsonable(value) else type(value).__name__
        return UserError(f"remote reward {where}: /info field {field!r} must be {want}, got {shown}")

    if not isinstance(data, dict):
        raise bad("(the answer)", "a JSON object", data)
    if data.get("protocol") != PROTOCOL:
        raise bad("protocol", f"{PROTOCOL} (this client's wire protocol)", data.get("protocol"))

    def flag(field: str) -> bool:
        value = data.get(field)
        if not isinstance(value, bool):
            raise bad(field, "true or false", value)
        return value

    def count(container: dict, field: str, label: str, least: int = 1, most: int = 2**62) -> int:
        value = container.get(field)
        if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= most:
            raise bad(label, f"a whole number in {least}..{most}", value)
        return value

    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise bad("name", "a non-empty string", name)
    span = data.get("native_range")
    if not (isinstance(span, list) and len(span) == 2 and all(_number_or_null(v) for v in span)):
        raise bad("native_range", "[low, high] (numbers, or null for an infinite bound)", span)
    low = -math.inf if span[0] is None else float(span[0])
    high = math.inf if span[1] is None else float(span[1])
    if not low <= high:
        raise bad("native_range", "[low, high] with low <= high", span)
    limits = data.get("limits")
    if not isinstance(limits, dict):
        raise bad("limits", "a JSON object", limits)
    header = limits.get("max_header_bytes", OLD_MAX_HEADER_BYTES)
    return ServedInfo(
        name=name,
        native_range=(low, high),
        higher_is_better=flag("higher_is_better"),
        deterministic=flag("deterministic"),
        needs_metadata=flag("needs_metadata"),
        custom_aggregate=flag("custom_aggregate"),
        batch_size=count(data, "batch_size", "batch_size", most=2**20),
        max_images=count(limits, "max_images", "limits.max_images", most=2**20),
        max_body_bytes=count(limits, "max_body_bytes", "limits.max_body_bytes", least=1024),
        max_header_bytes=count(
            {"max_header_bytes": header}, "max_header_bytes", "limits.max_header_bytes", least=256
        ),
    )


def _number_or_null(value: Any) -> bool:
    if value is None:
        return True
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True
