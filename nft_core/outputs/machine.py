"""What a timing or a bitwise result belongs to: the CPU (model, torch kernel set, bf16 units), threads, GPU.

Float results are bitwise only on one CPU type at one thread count, and a time per epoch means nothing
without the machine, so run summaries and benchmarks record `machine_facts()` next to their numbers.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import torch

__all__ = ["cpu_flags", "cpu_model", "machine_facts"]

BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def _cpuinfo_field(name: str) -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(name):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cpu_model() -> str:
    """The CPU's model name (`/proc/cpuinfo`), else what `platform` knows."""
    return _cpuinfo_field("model name") or platform.processor() or platform.machine() or "unknown"


def cpu_flags() -> set[str]:
    """The CPU's feature flags (`/proc/cpuinfo`; empty where there is none)."""
    return set(_cpuinfo_field("flags").split())


def machine_facts(device: torch.device | str = "cpu") -> dict[str, Any]:
    """CPU model, torch's CPU kernel set, bf16 units yes/no, threads, torch version (and the GPU, if any)."""
    facts: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_bf16_units": bool(cpu_flags() & set(BF16_FLAGS)),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        facts["gpu"] = torch.cuda.get_device_name(device)
    return facts
