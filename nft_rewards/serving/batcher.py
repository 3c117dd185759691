"""One supervised worker thread that owns the reward: it scores queued requests, merging compatible ones.

Requests that arrive while the reward is busy wait in a queue; when the worker is free it takes the
oldest one and every compatible request behind it (same image size and dtype, metadata present or not)
up to the reward's batch size and one largest body of bytes, and scores them in one call. A request that
arrives at an idle server is scored alone, exactly as the reward scores it in-process. When a merged call
raises, each of its requests is retried alone, so one bad request never fails the others. Images wait in
their wire dtype; the worker converts each batch right before the reward sees it.

The worker survives its own faults: an exception outside a reward call (say a MemoryError while merging)
fails the requests it holds (a 500 each) and the worker goes on. When it cannot go on (a fault while
failing them, `MAX_CONSECUTIVE_FAULTS` faults in a row, or anything that ends the thread), it fails every
queued request, reports itself dead and calls `on_death`, so the server exits for a supervisor to restart.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch

from nft_core.types import RewardOutput
from nft_rewards.serving.wire import ScoreRequest, reward_images

__all__ = ["MAX_CONSECUTIVE_FAULTS", "Batcher", "WorkerDead", "WorkerFault", "merge_images"]

MAX_CONSECUTIVE_FAULTS = 8
"""Worker faults in a row (with no batch scored between them) after which the worker gives up."""


class WorkerFault(RuntimeError):
    """The worker failed outside the reward while it held a request: that request's 500."""


class WorkerDead(RuntimeError):
    """The worker has stopped (it died, or the server is shutting down): a 503."""


def merge_images(images: list[torch.Tensor]) -> torch.Tensor:
    """The images of the requests of one merged call, in order (the one copy a merge makes)."""
    return torch.cat(images)


@dataclass
class _Job:
    request: ScoreRequest
    future: Future = field(default_factory=Future)

    @property
    def size(self) -> int:
        return self.request.images.shape[0]

    @property
    def nbytes(self) -> int:
        images = self.request.images
        return images.numel() * images.element_size()

    def key(self) -> tuple:
        images = self.request.images
        return tuple(images.shape[2:]), images.dtype, self.request.metadata is None

    def fail(self, error: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(error)


def _split(output: RewardOutput, sizes: list[int]) -> list[RewardOutput]:
    """The outputs of each request of a merged call, in order."""
    parts, start = [], 0
    for size in sizes:
        part = slice(start, start + size)
        parts.append(
            RewardOutput(
                scores=output.scores[part],
                details={key: value[part] for key, value in (output.details or {}).items()},
                notes=None if output.notes is None else list(output.notes[part]),
            )
        )
        start += size
    return parts


class Batcher:
    """Scores `ScoreRequest`s with `reward` on one supervised thread; `submit` returns a future of the
    `RewardOutput` (or of the exception its scoring raised)."""

    def __init__(
        self,
        reward,
        batch_size: int,
        max_merge_bytes: int | None = None,
        on_death: Callable[[str], None] | None = None,
    ) -> None:
        self.reward = reward
        self.batch_size = max(1, int(batch_size))
        self.max_merge_bytes = max_merge_bytes
        self.on_death = on_death
        self.calls = 0
        self.merged_calls = 0
        self.faults = 0
        self.death: str | None = None
        self._queue: deque[_Job] = deque()
        self._held: list[_Job] = []  # taken from the queue, not answered yet
        self._closing = False
        self._busy_since: float | None = None
        self._consecutive_faults = 0
        self._condition = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="nft-reward-batcher", daemon=True)
        self._thread.start()

    @property
    def closing(self) -> bool:
        """Whether `close` was called (the worker then stops on purpose)."""
        return self._closing

    @property
    def alive(self) -> bool:
        """Whether the worker runs (and has not given up)."""
        return self._thread.is_alive() and self.death is None

    def health(self) -> dict:
        """The worker's state for `/health`."""
        with self._condition:
            queued = list(self._queue)
        busy = self._busy_since
        return {
            "worker_alive": self.alive,
            "worker_faults": self.faults,
            "busy_seconds": None if busy is None else round(time.monotonic() - busy, 3),
            "queued_requests": len(queued),
            "queued_images": sum(job.size for job in queued),
            "calls": self.calls,
            "merged_calls": self.merged_calls,
        }

    def submit(self, request: ScoreRequest) -> Future:
        """Queue one request; cancelling the future before the worker takes it drops the request."""
        job = _Job(request)
        with self._condition:
            if self._closing or not self.alive:
                raise WorkerDead(self.death or "the server is shutting down")
            self._queue.append(job)
            self._condition.notify()
        return job.future

    def close(self, timeout: float = 2.0) -> None:
        """Stop the worker: queued requests fail (503), a call in progress may finish within `timeout`."""
        with self._condition:
            self._closing = True
            queued, self._queue = list(self._queue), deque()
            self._condition.notify_all()
        for job in queued:
            job.fail(WorkerDead("the server is shutting down"))
        self._thread.join(timeout=timeout)

    def _take(self, held: list[_Job]) -> bool:
        """Move the next batch into `held` (oldest first, then compatible ones); False when closing."""
        with self._condition:
            while True:
                while not self._queue and not self._closing:
                    self._condition.wait()
                if self._closing:
                    return False
                first = self._queue.popleft()
                if first.future.set_running_or_notify_cancel():  # False: its client went away
                    break
            held.append(first)
            total, size, kept = first.size, first.nbytes, deque()
            try:
                while self._queue and total < self.batch_size:
                    job = self._queue.popleft()
                    fits = total + job.size <= self.batch_size and (
                        self.max_merge_bytes is None or size + job.nbytes <= self.max_merge_bytes
                    )
                    if job.key() != first.key() or not fits:
                        kept.append(job)
                    elif job.future.set_running_or_notify_cancel():
                        held.append(job)
                        total, size = total + job.size, size + job.nbytes
            finally:
                self._queue.extendleft(reversed(kept))  # they go first next time, in arrival order
            return True

    def _run(self) -> None:
        try:
            while True:
                self._held = []
                try:
                    if not self._take(self._held):
                        return
                    self._busy_since = time.monotonic()
                    self._score(self._held)
                    self._consecutive_faults = 0
                except Exception as error:  # outside a reward call: fail what it holds, go on
                    self._fault(error)
                finally:
                    self._busy_since = None
        except BaseException as error:  # it cannot go on: the server must exit
            self._die(error)

    def _fault(self, error: Exception) -> None:
        self.faults += 1
        self._consecutive_faults += 1
        line = f"scoring worker fault: {type(error).__name__}: {error}"
        print(f"warning: {' '.join(line.split())}", file=sys.stderr, flush=True)
        for job in self._held:
            job.fail(WorkerFault(line))
        self._held = []
        if self._consecutive_faults >= MAX_CONSECUTIVE_FAULTS:
            raise WorkerDead(f"{MAX_CONSECUTIVE_FAULTS} worker faults in a row, the last: {line}")

    def _die(self, error: BaseException) -> None:
        self.death = f"the scoring worker died: {type(error).__name__}: {' '.join(str(error).split())}"
        with self._condition:
            jobs, self._queue = [*self._held, *self._queue], deque()
        for job in jobs:
            job.fail(WorkerDead(self.death))
        if self.on_death is not None:
            self.on_death(self.death)

    def _score(self, group: list[_Job]) -> None:
        if len(group) == 1:
            self._score_alone(group[0])
            return
        images = reward_images(merge_images([job.request.images for job in group]))
        prompts = [prompt for job in group for prompt in job.request.prompts]
        metadata = (
            None
            if group[0].request.metadata is None
            else [item for job in group for item in job.request.metadata or []]
        )
        try:
            self.calls += 1
            self.merged_calls += 1
            outputs = _split(self.reward(images, prompts, metadata), [job.size for job in group])
        except Exception:
            outputs = None
        images = None  # freed before the requests are retried alone
        if outputs is None:
            for job in group:  # one bad request must not fail the others
                self._score_alone(job)
            return
        for job, output in zip(group, outputs, strict=True):
            job.future.set_result(output)

    def _score_alone(self, job: _Job) -> None:
        request = job.request
        try:
            self.calls += 1
            output = self.reward(reward_images(request.images), request.prompts, request.metadata)
        except Exception as error:  # the request's answer, never the worker's end
            job.future.set_exception(error)
            return
        job.future.set_result(output)
