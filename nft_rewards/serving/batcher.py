"""One worker thread that owns the reward: it scores queued requests, merging compatible ones into one call.

Requests that arrive while the reward is busy wait in a queue; when the worker is free it takes the
oldest one and every compatible request behind it (same image size, metadata present or not) up to the
reward's batch size, and scores them in one call. A request that arrives at an idle server is scored
alone, exactly as the reward scores it in-process. When a merged call raises, each of its requests is
retried alone, so one bad request never fails the others.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch

from nft_core.types import RewardOutput
from nft_rewards.serving.wire import ScoreRequest

__all__ = ["Batcher"]


@dataclass
class _Job:
    request: ScoreRequest
    future: Future = field(default_factory=Future)

    @property
    def size(self) -> int:
        return self.request.images.shape[0]

    def key(self) -> tuple:
        images = self.request.images
        return tuple(images.shape[2:]), images.dtype, self.request.metadata is None


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
    """Scores `ScoreRequest`s with `reward` on one thread; `submit` returns a future of the RewardOutput."""

    def __init__(self, reward, batch_size: int) -> None:
        self.reward = reward
        self.batch_size = max(1, int(batch_size))
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._held: deque[_Job] = deque()  # taken from the queue but incompatible with the last batch
        self.calls = 0
        self.merged_calls = 0
        self._thread = threading.Thread(target=self._work, name="nft-reward-batcher", daemon=True)
        self._thread.start()

    def submit(self, request: ScoreRequest) -> Future:
        """Queue one request; the future holds its `RewardOutput` or the exception its scoring raised."""
        job = _Job(request)
        self._queue.put(job)
        return job.future

    def close(self) -> None:
        """Stop the worker after the queued requests."""
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _next(self, block: bool) -> _Job | None:
        if self._held:
            return self._held.popleft()
        try:
            return self._queue.get(block=block)
        except queue.Empty:
            return None

    def _work(self) -> None:
        while True:
            first = self._next(block=True)
            if first is None:
                return
            group, total, skipped = [first], first.size, []
            while total < self.batch_size:
                job = self._next(block=False)
                if job is None:
                    break
                if job.key() == first.key() and total + job.size <= self.batch_size:
                    group.append(job)
                    total += job.size
                else:
                    skipped.append(job)
            self._held.extendleft(reversed(skipped))  # they go first next time, in arrival order
            self._score(group)

    def _score(self, group: list[_Job]) -> None:
        if len(group) == 1:
            self._score_alone(group[0])
            return
        images = torch.cat([job.request.images for job in group])
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
            for job in group:  # one bad request must not fail the others
                self._score_alone(job)
            return
        for job, output in zip(group, outputs, strict=True):
            job.future.set_result(output)

    def _score_alone(self, job: _Job) -> None:
        request = job.request
        try:
            self.calls += 1
            job.future.set_result(self.reward(request.images, request.prompts, request.metadata))
        except Exception as error:  # the request's answer, never the worker's end
            job.future.set_exception(error)
