"""Scoring hidden behind sampling: each finished sampling micro-batch is scored on a worker thread while
the next one is sampled; the epoch's advantages wait for every part (`OverlappedScoring.result`).

Every micro-batch is scored by itself whether or not the scoring overlaps, so turning the overlap off
(`train.overlap_scoring = false`) changes the timing, never the scores. The parts are scored one at a
time, in order, on one thread (rewards need not be thread-safe); on a CUDA device the worker runs on its
own stream, so a reward's kernels do not queue behind the sampler's.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch

from nft_core.protocols import RemoteScoring
from nft_core.reward_set import RewardSet, RewardSetOutput, concat_raw

__all__ = ["OverlappedScoring", "overlap_wanted"]


def overlap_wanted(setting: bool | str, rewards: RewardSet, device: torch.device | None) -> bool:
    """`train.overlap_scoring`: true or false as set; `auto` overlaps only where a scoring thread does not
    compete with the sampler for the CPU (a CUDA device, or rewards that all score elsewhere). On a CPU a
    worker thread's torch ops share the sampler's intra-op pool: a small linear took 75 -> 200 us."""
    if setting != "auto":
        return bool(setting)
    remote = all(
        isinstance(term.reward, RemoteScoring) and term.reward.scores_elsewhere for term in rewards.terms
    )
    return remote or (device is not None and device.type == "cuda")


class OverlappedScoring:
    """Raw scores of an epoch's images, submitted micro-batch by micro-batch (`RewardSet.raw_scores` each).

    `seconds_scoring` is the time the rewards took in all; `seconds_unhidden` the part of it the epoch
    waited for (all of it without overlap; only what outlasts sampling with it)."""

    def __init__(self, rewards: RewardSet, overlap: bool = True, device: torch.device | None = None) -> None:
        self.rewards = rewards
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nft-scoring") if overlap else None
        use_stream = overlap and device is not None and device.type == "cuda" and torch.cuda.is_available()
        self._stream = torch.cuda.Stream(device=device) if use_stream else None
        self._parts: list[Future | tuple] = []
        self.seconds_scoring = 0.0
        self.seconds_unhidden = 0.0

    def _score(
        self, images: torch.Tensor, prompts: Sequence[str], metadata: Sequence[dict[str, Any]] | None
    ) -> RewardSetOutput:
        started = time.perf_counter()
        stream = torch.cuda.stream(self._stream) if self._stream is not None else contextlib.nullcontext()
        with stream:
            out = self.rewards.raw_scores(images, prompts, metadata)
        self.seconds_scoring += time.perf_counter() - started
        return out

    def submit(
        self, images: torch.Tensor, prompts: Sequence[str], metadata: Sequence[dict[str, Any]] | None
    ) -> None:
        """Hand over one micro-batch: scored on the worker from now on, or (without overlap) kept for
        `result`, which scores the parts in line."""
        if self._pool is None:
            self._parts.append((images, list(prompts), metadata))
        else:
            self._parts.append(self._pool.submit(self._score, images, list(prompts), metadata))

    def result(self) -> RewardSetOutput:
        """The raw scores of everything submitted, in order (waits for the worker; re-raises its errors,
        which are only a reward's wrong output shape: a failing call is retried and recorded inside)."""
        started = time.perf_counter()
        try:
            parts = [
                part.result() if isinstance(part, Future) else self._score(*part) for part in self._parts
            ]
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
            self.seconds_unhidden += time.perf_counter() - started
        return concat_raw(parts)
