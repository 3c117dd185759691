"""Data parallelism under `torchrun`: the process group from the environment, shares and collectives.

`torchrun --nproc_per_node N $(which nft) run CONFIG` sets `RANK`, `WORLD_SIZE`, `LOCAL_RANK` and the
rendezvous variables; `Distributed.from_environment` then initialises `torch.distributed` (nccl on
CUDA, gloo on the CPU) with a bounded collective timeout, so a rank that hangs ends the job with an
error instead of a silent wait. Without those variables it is a single process and every collective
here is the identity. Nothing here is a communication layer of its own: each method is one or two
`torch.distributed` calls.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from nft_core.distributed.liveness import Heartbeat, failure_line, lost_ranks, post_entered
from nft_core.errors import JobError

__all__ = ["Distributed", "from_a_collective", "full_tensor", "shard_like"]


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor behind a sharded DTensor (a collective: every rank must call it), else itself."""
    gather = getattr(tensor, "full_tensor", None)
    return gather() if gather is not None else tensor


def shard_like(value: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """`value` (a whole tensor) laid out as `reference`: sharded the same way if it is a DTensor. A value
    that is a DTensor already (read from a sharded checkpoint into `reference`'s layout) is itself."""
    mesh = getattr(reference, "device_mesh", None)
    if mesh is None or getattr(value, "device_mesh", None) is not None:
        return value
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(value.to(reference.to_local().device), mesh, reference.placements)


def from_a_collective(error: BaseException) -> bool:
    """Whether `error` is a communication failure (a peer died or timed out), not a bug of the run."""
    if isinstance(error, getattr(torch.distributed, "DistError", ())):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and any(
        mark in text for mark in ("gloo", "Timed out", "Connection closed by peer", "NCCL")
    )


@dataclass(frozen=True)
class Distributed:
    """This process's place in the job: `rank` of `world_size` (1: not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    timeout_seconds: float = 0.0
    seconds: dict[str, float] = field(default_factory=lambda: {"collectives": 0.0}, compare=False)
    """Wall seconds this rank spent in collectives (waiting for the others included)."""
    entered: list[int] = field(default_factory=lambda: [0], compare=False)
    """How many collectives this rank has entered (posted to the rendezvous store, see `_timed`)."""
    heartbeat: list[Heartbeat] = field(default_factory=list, compare=False)

    @contextmanager
    def _timed(self, operation: str) -> Iterator[None]:
        """Time one collective; when it fails (a peer died, or hangs past the timeout) raise a `JobError`
        naming the ranks that were lost (`nft_core.distributed.liveness`)."""
        self.entered[0] += 1
        post_entered(self.rank, self.entered[0])
        began = time.perf_counter()
        try:
            yield
        except RuntimeError as error:  # gloo and nccl raise RuntimeError (DistBackendError) subclasses
            raise self.lost(operation, error) from error
        finally:
            self.seconds["collectives"] += time.perf_counter() - began

    def lost(self, operation: str, error: BaseException) -> JobError:
        """The one-line `JobError` for a failed collective (this wrapper's, FSDP2's or the checkpoint's):
        which ranks never reached it or stopped answering, when the rendezvous store can tell."""
        where = f"rank {self.rank} of {self.world_size}: collective #{self.entered[0]} ({operation})"
        lost = lost_ranks(self.rank, self.entered[0], self.world_size)
        if not lost:
            return JobError(f"{where} failed: {failure_line(error)}")
        names = "; ".join(f"rank {rank} {why}" for rank, why in sorted(lost.items()))
        waited = f"waited up to {self.timeout_seconds:.0f} s, train.collective_timeout"
        return JobError(f"{where} failed: {names} ({waited}): {failure_line(error)}")

    @classmethod
    def from_environment(cls, device: str, timeout_seconds: float) -> Distributed:
        """The process group torchrun describes in the environment (initialised once), else one process."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            return cls()
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        if not dist.is_initialized():
            dist.init_process_group(backend, timeout=timedelta(seconds=timeout_seconds))
        found = cls(dist.get_rank(), dist.get_world_size(), local_rank, backend, timeout_seconds)
        found.heartbeat.append(Heartbeat(found.rank).start())
        return found

    @property
    def enabled(self) -> bool:
        """Whether there is more than one rank."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes the run directory and prints."""
        return self.rank == 0

    def device(self, requested: torch.device) -> torch.device:
        """`cuda` becomes this rank's GPU (`cuda:LOCAL_RANK`); other devices stay as they are."""
        if self.enabled and requested.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return requested

    def share(self, count: int) -> range:
        """This rank's contiguous share of `count` items (shares differ in size by at most one)."""
        base, extra = divmod(count, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return range(start, start + base + (1 if self.rank < extra else 0))

    def _wire(self, tensor: torch.Tensor) -> torch.Tensor:
        """The tensor on the device the backend communicates from (gloo: CPU; nccl: this GPU)."""
        target = torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")
        return tensor.detach().to(target).contiguous()

    def gather(self, local: torch.Tensor) -> torch.Tensor:
        """Every rank's `local` rows, concatenated in rank order, on every rank (shares may differ)."""
        if not self.enabled:
            return local
        sizes = self.gather_objects(int(local.shape[0]))
        wire = self._wire(local)
        padded = torch.zeros((max(sizes), *wire.shape[1:]), dtype=wire.dtype, device=wire.device)
        padded[: wire.shape[0]] = wire
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        with self._timed("all_gather"):
            dist.all_gather(parts, padded)
        return torch.cat([part[:size] for part, size in zip(parts, sizes, strict=True)]).to(local.device)

    def gather_objects(self, value: Any) -> list[Any]:
        """Every rank's picklable `value`, in rank order (small things: counts, strings, flags)."""
        if not self.enabled:
            return [value]
        found: list[Any] = [None] * self.world_size
        with self._timed("all_gather_object"):
            dist.all_gather_object(found, value)
        return found

    def any(self, flag: bool) -> bool:
        """Whether any rank's `flag` is true (e.g. a stop signal that reached one rank)."""
        return any(self.gather_objects(bool(flag)))

    def sum_(self, tensors: list[torch.Tensor]) -> None:
        """Sum each tensor over the ranks, in place (one all-reduce per dtype, over a flat buffer)."""
        if not self.enabled or not tensors:
            return
        by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
        for tensor in tensors:
            by_dtype.setdefault(tensor.dtype, []).append(tensor)
        for group in by_dtype.values():
            flat = torch.cat([self._wire(t).reshape(-1) for t in group])
            with self._timed("all_reduce"):
                dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            offset = 0
            for tensor in group:
                count = tensor.numel()
                tensor.copy_(flat[offset : offset + count].view_as(tensor))
                offset += count

    def barrier(self) -> None:
        """Wait for every rank (e.g. until rank 0 has written a checkpoint)."""
        if self.enabled:
            with self._timed("barrier"):
                dist.barrier()

    def close(self) -> None:
        """Destroy the process group this process initialised, once every rank is done with it (gloo
        aborts a rank whose peer tears the connections down while it still uses them)."""
        if self.enabled and dist.is_initialized():
            dist.barrier()
            for beat in self.heartbeat:
                beat.stop()
            dist.destroy_process_group()
