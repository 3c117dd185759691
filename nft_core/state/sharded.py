"""Sharded resume state under FSDP2, written and read with `torch.distributed.checkpoint` (DCP).

Every rank writes the shards it holds (trained and old weights, EMA, Adam moments) into its own
safetensors file, with the shard's offsets in the file's metadata (DCP's Hugging Face storage layout:
no pickle, no whole tensor on any rank). Loading reshards: a run on any number of ranks reads the parts
of each tensor its own shards cover, and one process without a process group reads whole tensors.
"""

from __future__ import annotations

import errno
import warnings
from pathlib import Path

import torch

__all__ = ["SHARDS_FOLDER", "is_sharded", "load_sharded", "load_whole", "save_sharded", "sharded_layout"]

SHARDS_FOLDER = "resume-shards"
"""The folder of a checkpoint that holds the sharded part of its resume state."""


def is_sharded(tensor: torch.Tensor) -> bool:
    """Whether `tensor` is a DTensor (a shard of a tensor laid out over a device mesh)."""
    return getattr(tensor, "device_mesh", None) is not None


def save_sharded(tensors: dict[str, torch.Tensor], folder: Path) -> None:
    """Write `tensors` (DTensors; a collective: every rank calls it with the same names) into `folder`.

    A failure on any rank is raised on every rank as an OSError (ENOSPC when a disk was full)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException

    folder.mkdir(parents=True, exist_ok=True)
    writer = dcp.HuggingFaceStorageWriter(str(folder), save_distributed=True)
    try:
        dcp.save({name: value.detach() for name, value in tensors.items()}, storage_writer=writer)
    except CheckpointException as failure:
        errors = [error for error, _ in failure.failures.values()] if failure.failures else []
        full = any(isinstance(e, OSError) and e.errno == errno.ENOSPC for e in errors)
        raise OSError(errno.ENOSPC if full else errno.EIO, f"sharded state: {errors or failure}") from None


def sharded_layout(folder: Path) -> dict[str, tuple[torch.Size, torch.dtype]]:
    """The whole shape and dtype of each tensor saved in `folder` (read from the files' headers)."""
    from torch.distributed.checkpoint import HuggingFaceStorageReader

    metadata = HuggingFaceStorageReader(str(folder)).read_metadata()
    return {
        name: (entry.size, entry.properties.dtype) for name, entry in metadata.state_dict_metadata.items()
    }


def load_sharded(templates: dict[str, torch.Tensor], folder: Path) -> None:
    """Fill `templates` in place from `folder`: DTensors get the parts their shards cover, plain
    tensors the whole tensor (a collective when a process group is initialised)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageReader

    alone = not (torch.distributed.is_available() and torch.distributed.is_initialized())
    with warnings.catch_warnings():  # DCP warns that one process reads alone, even when told so
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load(templates, storage_reader=HuggingFaceStorageReader(str(folder)), no_dist=alone)


def load_whole(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor saved in `folder`, whole, on the CPU (e.g. for tools and tests, outside a run)."""
    layout = sharded_layout(folder)
    tensors = {name: torch.empty(shape, dtype=dtype) for name, (shape, dtype) in layout.items()}
    load_sharded(tensors, folder)
    return tensors
