"""`train.precision`: which dtype the policy's forward passes run in, and `auto`'s choice per machine.

`bf16` is only worth it where the hardware computes it natively: there it is 1.1-1.3x faster than
fp32 on a CPU (AVX512-BF16 / AMX; docs/core.md) and the usual choice on a GPU; where it is emulated
(a CPU with AVX2 only) an epoch of the embedded default took ~9x longer than in fp32. `auto` therefore
picks bf16 on a CUDA device that supports it and on a CPU whose oneDNN reports native bf16 while ATen
dispatches its AVX-512 kernels, and fp32 everywhere else. `fp16` needs a loss scaler, which the
trainer adds.
"""

from __future__ import annotations

import contextlib

import torch

from nft_core.errors import ConfigError
from nft_core.types import PRECISION_DTYPES

__all__ = ["REQUESTS", "autocast", "native_bf16", "resolve_precision"]

REQUESTS = ("auto", "fp32", "bf16", "fp16")


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bfloat16 natively (not emulated through fp32)."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    try:  # private but stable probes; an older torch without them gets fp32
        onednn = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
    return onednn and torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def resolve_precision(requested: str, device: torch.device | str) -> str:
    """`fp32`, `bf16` or `fp16` for a requested precision (`auto` decided by `native_bf16`)."""
    if requested not in REQUESTS:
        raise ConfigError(f"train.precision: {requested!r} is not one of {', '.join(REQUESTS)}")
    if requested != "auto":
        return requested
    return "bf16" if native_bf16(torch.device(device)) else "fp32"


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast to the precision's dtype on `device` (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=PRECISION_DTYPES[precision])
