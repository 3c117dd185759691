"""The reward-serving wire format, protocol version 1 (docs/serving.md): safetensors bodies, never pickle.

A request to `POST /score` is one safetensors file (bytes) holding the tensor `images` `[N,3,H,W]`
(uint8 in 0..255, or float32 / float16 / bfloat16 in [0,1]) and, in the file's string metadata under the
key `nft`, a JSON header `{"protocol": 1, "prompts": [...N strings], "metadata": null | [...N objects],
"shape": [N,3,H,W], "dtype": "uint8" | "float32" | ...}`. The answer is a safetensors file with the
float32 tensors `scores` `[N]` and `detail/<key>` `[N]`, and the header `{"protocol": 1, "notes": null |
[...N strings]}`. `POST /aggregate` sends `scores`, `detail/<key>` and the header `{"prompts",
"metadata", "notes"}` and gets the reward's `Aggregate` as JSON. Errors are one JSON line
`{"error": "..."}` with a 4xx (the request) or 5xx (the reward) status.

Both sides use these functions, so a served reward sees exactly the tensors the client had: float images
travel bit for bit; uint8 is exact for rewards that quantize with the references' rule anyway. A decoded
request keeps its images in their wire dtype (uint8 is 4x smaller than float32 while it waits in a queue);
`reward_images` converts a batch right before the reward sees it.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from nft_core.types import Aggregate, RewardOutput

__all__ = [
    "CONTENT_TYPE",
    "PROTOCOL",
    "TOKEN_ENV",
    "WIRE_DTYPES",
    "Limits",
    "ScoreRequest",
    "WireError",
    "aggregate_from_json",
    "aggregate_to_json",
    "decode_aggregate_request",
    "decode_output",
    "decode_request",
    "encode_aggregate_request",
    "encode_output",
    "encode_request",
    "error_body",
    "header_length",
    "reward_images",
]

PROTOCOL = 1
"""The wire protocol version; a server answers another version's request with 400."""

CONTENT_TYPE = "application/vnd.nft.safetensors"

TOKEN_ENV = "NFT_REWARD_TOKEN"
"""The environment variable a server and the `remote` reward read their shared token from."""

WIRE_DTYPES: dict[str, torch.dtype] = {
    "uint8": torch.uint8,
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}
_NAMES = {dtype: name for name, dtype in WIRE_DTYPES.items()}
_SAFETENSORS_DTYPES = {"U8": torch.uint8, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
_HEADER_KEY = "nft"
MAX_JSON_DEPTH = 32
"""JSON headers nest at most this deep (GenEval's metadata needs 4); deeper is a 400, never a crash."""


class WireError(Exception):
    """A request or answer that breaks the format: `status` is the HTTP status a server answers with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Limits:
    """What a server accepts; anything beyond is a 4xx before the reward sees it."""

    max_body_bytes: int = 256 * 2**20
    max_images: int = 1024
    max_side: int = 4096
    max_prompt_chars: int = 4096
    max_header_bytes: int = 8 * 2**20


@dataclass
class ScoreRequest:
    """A decoded `/score` request: images in their wire dtype (uint8 in 0..255 or float in [0,1]; see
    `reward_images`) and their prompts and metadata."""

    images: torch.Tensor
    prompts: list[str]
    metadata: list[dict[str, Any]] | None


def reward_images(images: torch.Tensor) -> torch.Tensor:
    """Images as a reward takes them: uint8 becomes float32 `x / 255`; float images are left as they are."""
    if images.dtype == torch.uint8:
        return images.float().div_(255)
    return images


def header_length(prefix: bytes | bytearray | memoryview) -> int:
    """The length of a safetensors file's JSON header, from its first 8 bytes."""
    return struct.unpack("<Q", bytes(prefix[:8]))[0]


def _depth(value: Any) -> int:
    """How deep a parsed JSON value nests, level by level (a deep value must not exhaust the stack)."""
    depth, level = 0, [value] if isinstance(value, dict | list) else []
    while level and depth <= MAX_JSON_DEPTH:
        depth += 1
        children = [child for item in level for child in (item.values() if isinstance(item, dict) else item)]
        level = [child for child in children if isinstance(child, dict | list)]
    return depth


def _json(text: bytes | str, what: str) -> Any:
    """Parse a JSON text of the wire; malformed, too deeply nested or otherwise broken is a 400."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise WireError(f"{what} nests deeper than {MAX_JSON_DEPTH} levels") from None
    except (UnicodeDecodeError, ValueError) as error:
        raise WireError(f"{what} is not valid JSON: {error}") from None
    if _depth(value) > MAX_JSON_DEPTH:
        raise WireError(f"{what} nests deeper than {MAX_JSON_DEPTH} levels")
    return value


def error_body(message: str) -> bytes:
    """The one-line JSON error body."""
    return (json.dumps({"error": " ".join(str(message).split())}) + "\n").encode()


def encode_request(
    images: torch.Tensor,
    prompts: Sequence[str],
    metadata: Sequence[dict[str, Any]] | None = None,
    dtype: str = "auto",
) -> bytes:
    """A `/score` body. `dtype` "auto" sends float images in their own dtype (bit-exact); "uint8" sends
    `clamp(round(255 x))`, exact for rewards that quantize that way and 4x smaller than float32."""
    images = images.detach().cpu()
    if dtype == "uint8":
        images = (images.float() * 255).round().clamp(0, 255).to(torch.uint8)
    elif dtype != "auto":
        if dtype not in WIRE_DTYPES:
            raise ValueError(f"wire dtype {dtype!r}; allowed: auto, {', '.join(WIRE_DTYPES)}")
        images = images.to(WIRE_DTYPES[dtype])
    if images.dtype not in _NAMES:
        images = images.float()
    header = {
        "protocol": PROTOCOL,
        "prompts": list(prompts),
        "metadata": None if metadata is None else list(metadata),
        "shape": list(images.shape),
        "dtype": _NAMES[images.dtype],
    }
    return save_tensors({"images": images.contiguous()}, metadata={_HEADER_KEY: json.dumps(header)})


WireBody = bytes | bytearray | memoryview
"""A wire body: bytes, or a writable buffer (the server's) that decoded images are read from in place."""


def _header(body: WireBody, limits: Limits) -> tuple[dict[str, Any], dict[str, Any], int]:
    """The safetensors header (a JSON object), the `nft` JSON header inside it and where the tensor data
    starts, checked for being well formed and of this protocol (requests and answers alike)."""
    if len(body) > limits.max_body_bytes:
        raise WireError(f"body of {len(body)} bytes exceeds the limit of {limits.max_body_bytes}", 413)
    if len(body) < 8:
        raise WireError("body is not a safetensors file (shorter than its 8-byte header length)")
    size = header_length(body)
    if size > min(limits.max_header_bytes, len(body) - 8):
        raise WireError("body is not a safetensors file (bad header length)")
    outer = _json(bytes(body[8 : 8 + size]), "body is not a safetensors file: its header")
    if not isinstance(outer, dict):
        raise WireError("body is not a safetensors file (its header is not a JSON object)")
    metadata = outer.get("__metadata__")
    if metadata is not None and not isinstance(metadata, dict):
        raise WireError("body is not a safetensors file (its __metadata__ is not a JSON object)")
    raw_header = (metadata or {}).get(_HEADER_KEY)
    if not isinstance(raw_header, str):
        raise WireError(f"safetensors metadata lacks the {_HEADER_KEY!r} JSON header (protocol {PROTOCOL})")
    header = _json(raw_header, f"the {_HEADER_KEY!r} header")
    if not isinstance(header, dict):
        raise WireError(f"the {_HEADER_KEY!r} header must be a JSON object")
    if "protocol" not in header:
        raise WireError(f"header field 'protocol' must be {PROTOCOL}")
    if header["protocol"] != PROTOCOL:
        raise WireError(f"protocol {header['protocol']!r} is not supported; this server speaks {PROTOCOL}")
    return outer, header, 8 + size


def _read(body: bytes, limits: Limits) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and the `nft` JSON header of a safetensors body (answers, `/aggregate` requests)."""
    _, header, _ = _header(body, limits)
    try:
        tensors = load_tensors(bytes(body))
    except (SafetensorError, ValueError, RuntimeError, TypeError) as error:
        raise WireError(f"body is not a valid safetensors file: {error}") from None
    return tensors, header


def _images(body: WireBody, outer: dict[str, Any], start: int) -> torch.Tensor:
    """The one tensor `images` of a `/score` body, checked as strictly as safetensors checks a file. Read
    in place from a writable body (no copy: the tensor keeps the body's memory); copied from bytes."""
    entries = {key: value for key, value in outer.items() if key != "__metadata__"}
    if set(entries) != {"images"}:
        raise WireError(f"body must hold exactly one tensor 'images'; got {sorted(entries)}")
    entry = entries["images"]
    if not isinstance(entry, dict):
        raise WireError("body is not a safetensors file (its 'images' entry is not a JSON object)")
    dtype = _SAFETENSORS_DTYPES.get(entry.get("dtype"))
    if dtype is None:
        allowed = ", ".join(WIRE_DTYPES)
        raise WireError(f"images dtype {str(entry.get('dtype'))[:20]!r} is not allowed; allowed: {allowed}")
    shape, offsets = entry.get("shape"), entry.get("data_offsets")
    if not (isinstance(shape, list) and all(type(side) is int and side >= 0 for side in shape)):
        raise WireError("body is not a safetensors file (the 'images' shape is not a list of sizes)")
    size = math.prod(shape) * torch.empty(0, dtype=dtype).element_size()
    if offsets != [0, size] or start + size != len(body):
        raise WireError("body is not a valid safetensors file (the 'images' data offsets do not fit)")
    if not size:
        return torch.empty(shape, dtype=dtype)
    writable = isinstance(body, bytearray) or (isinstance(body, memoryview) and not body.readonly)
    if writable and start % 8 == 0:  # safetensors writers align the data to 8 bytes
        return torch.frombuffer(body, dtype=dtype, count=math.prod(shape), offset=start).reshape(shape)
    return torch.frombuffer(bytearray(memoryview(body)[start:]), dtype=dtype).reshape(shape)


def _strings(header: dict[str, Any], key: str, n: int, limit: int) -> list[str]:
    values = header.get(key)
    if not isinstance(values, list) or not all(isinstance(value, str) for value in values):
        raise WireError(f"header field {key!r} must be a list of {n} strings")
    if len(values) != n:
        raise WireError(f"{n} images but {len(values)} {key} (they are paired one-to-one)")
    long = next((i for i, value in enumerate(values) if len(value) > limit), None)
    if long is not None:
        raise WireError(f"{key}[{long}] has {len(values[long])} characters; the limit is {limit}")
    return values


def _metadata(header: dict[str, Any], n: int) -> list[dict[str, Any]] | None:
    metadata = header.get("metadata")
    if metadata is None:
        return None
    if not isinstance(metadata, list) or not all(isinstance(item, dict) for item in metadata):
        raise WireError("header field 'metadata' must be null or a list of JSON objects")
    if len(metadata) != n:
        raise WireError(f"{n} images but {len(metadata)} metadata entries (they are paired one-to-one)")
    return metadata


def decode_request(body: WireBody, limits: Limits = Limits()) -> ScoreRequest:
    """Validate a `/score` body strictly (format, protocol, shape, dtype, counts, finite values in range,
    prompt lengths, limits) and return the images in their wire dtype; any fault is a `WireError`. The
    images of a writable body (bytearray, memoryview) are read in place: one copy less per request."""
    outer, header, start = _header(body, limits)
    images = _images(body, outer, start)
    if header.get("dtype") != _NAMES[images.dtype]:
        raise WireError(
            f"header dtype {header.get('dtype')!r} differs from the tensor's {_NAMES[images.dtype]}"
        )
    if header.get("shape") != list(images.shape):
        raise WireError(
            f"header shape {header.get('shape')!r} differs from the tensor's {list(images.shape)}"
        )
    if images.ndim != 4 or images.shape[1] != 3:
        raise WireError(f"images must have shape [N,3,H,W]; got {list(images.shape)}")
    n, _, height, width = images.shape
    if n > limits.max_images:
        raise WireError(f"{n} images exceed the limit of {limits.max_images} per request", 413)
    if max(height, width) > limits.max_side or min(height, width) < 1:
        raise WireError(f"image size {height}x{width} is outside 1..{limits.max_side} pixels per side")
    prompts = _strings(header, "prompts", n, limits.max_prompt_chars)
    metadata = _metadata(header, n)
    if images.dtype != torch.uint8 and images.numel():
        extremes = torch.aminmax(images)  # no copy of the images (NaN and inf show in the extremes)
        low, high = float(extremes.min), float(extremes.max)
        if not (math.isfinite(low) and math.isfinite(high)):
            raise WireError("images contain NaN or infinite values")
        if low < -1e-3 or high > 1 + 1e-3:
            raise WireError(f"float image values must lie in [0,1]; got min {low:.4g} max {high:.4g}")
    return ScoreRequest(images, prompts, metadata)


def _scalar_tensors(output: RewardOutput) -> dict[str, torch.Tensor]:
    tensors = {"scores": torch.as_tensor(output.scores).detach().cpu().float().contiguous()}
    for key, value in (output.details or {}).items():
        tensors[f"detail/{key}"] = torch.as_tensor(value).detach().cpu().float().contiguous()
    return tensors


def encode_output(output: RewardOutput) -> bytes:
    """A `/score` answer: scores, details and notes of one request."""
    header = {"protocol": PROTOCOL, "notes": output.notes}
    return save_tensors(_scalar_tensors(output), metadata={_HEADER_KEY: json.dumps(header)})


def decode_output(body: bytes, n: int, limits: Limits = Limits()) -> RewardOutput:
    """A `/score` answer back into the `RewardOutput` the served reward returned (a `WireError` if it is
    not one for `n` images)."""
    tensors, header = _read(body, limits)
    if "scores" not in tensors:
        raise WireError("answer lacks the 'scores' tensor", 502)
    output = RewardOutput(
        scores=tensors["scores"],
        details={key[len("detail/") :]: value for key, value in tensors.items() if key.startswith("detail/")},
        notes=header.get("notes"),
    )
    for key, value in {"scores": output.scores, **output.details}.items():
        if tuple(value.shape) != (n,):
            raise WireError(f"answer {key!r} has shape {list(value.shape)}, want [{n}]", 502)
    notes = output.notes
    if notes is not None and not (
        isinstance(notes, list) and len(notes) == n and all(isinstance(note, str) for note in notes)
    ):
        raise WireError(f"answer notes must be null or a list of {n} strings", 502)
    return output


def encode_aggregate_request(
    output: RewardOutput, prompts: Sequence[str], metadata: Sequence[dict[str, Any]] | None
) -> bytes:
    """An `/aggregate` body: an evaluation set's outputs with their prompts and metadata."""
    header = {
        "protocol": PROTOCOL,
        "prompts": list(prompts),
        "metadata": None if metadata is None else list(metadata),
        "notes": output.notes,
    }
    return save_tensors(_scalar_tensors(output), metadata={_HEADER_KEY: json.dumps(header)})


def decode_aggregate_request(
    body: bytes, limits: Limits = Limits()
) -> tuple[RewardOutput, list[str], list[dict[str, Any]] | None]:
    """Validate an `/aggregate` body: `scores` `[N]` (and details) with N prompts and metadata."""
    tensors, header = _read(body, limits)
    scores = tensors.get("scores")
    if scores is None or scores.ndim != 1:
        raise WireError("body must hold a one-dimensional 'scores' tensor")
    n = scores.shape[0]
    if n > 64 * limits.max_images:
        raise WireError(f"{n} scores exceed the limit of {64 * limits.max_images}", 413)
    details = {}
    for key, value in tensors.items():
        if key == "scores":
            continue
        if not key.startswith("detail/") or tuple(value.shape) != (n,):
            raise WireError(f"tensor {key!r} must be 'detail/<key>' of shape [{n}]")
        details[key[len("detail/") :]] = value.float()
    notes = header.get("notes")
    if notes is not None:
        notes = _strings(header, "notes", n, limits.max_prompt_chars)
    output = RewardOutput(scores=scores.float(), details=details, notes=notes)
    return output, _strings(header, "prompts", n, limits.max_prompt_chars), _metadata(header, n)


def _finite_or_none(value: Any) -> Any:
    """JSON has no NaN: non-finite floats travel as null inside nested tables."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite_or_none(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_none(item) for item in value]
    return value


def aggregate_to_json(aggregate: Aggregate) -> dict[str, Any]:
    """An `Aggregate` as the JSON object `/aggregate` answers."""
    return {
        "score": _finite_or_none(float(aggregate.score)),
        "per_tag": _finite_or_none(dict(aggregate.per_tag)),
        "tables": _finite_or_none(aggregate.tables),
        "report": aggregate.report,
    }


def aggregate_from_json(data: dict[str, Any]) -> Aggregate:
    """The `Aggregate` an `/aggregate` answer describes (null numbers back to NaN)."""

    def number(value: Any) -> float:
        return math.nan if value is None else float(value)

    return Aggregate(
        score=number(data.get("score")),
        per_tag={key: number(value) for key, value in (data.get("per_tag") or {}).items()},
        tables=data.get("tables") or {},
        report=data.get("report") or "",
    )
