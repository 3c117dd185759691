"""Weighted multi-reward composition: each reward's raw scores -> its normalizer -> weighted sum.

Direction: a reward whose `higher_is_better` is False is negated before its normalizer, so a higher
`total` is always better. `raw` keeps the scores exactly as the reward returned them (native units and
direction, for logging); `normalized` is what enters the sum.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from nft_core.advantages import prompt_group_ids
from nft_core.protocols import Reward, Stateful

__all__ = ["RewardSet", "RewardSetOutput", "RewardTerm", "combine", "concat_raw"]


@dataclass
class RewardTerm:
    """One reward of a set with its weight in the sum and its normalizer `f(x, group_ids)`."""

    name: str
    reward: Reward
    weight: float
    normalizer: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    required: bool = True
    """False: when its call fails (twice) the term leaves that batch's total instead of its samples."""


@dataclass
class RewardSetOutput:
    """Per-reward raw and normalized scores `[N]` (CPU float32), their weighted sum, timings, and which
    samples are valid (NaN in `normalized` and `total` where not)."""

    raw: dict[str, torch.Tensor]
    normalized: dict[str, torch.Tensor]
    total: torch.Tensor
    details: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    valid: torch.Tensor | None = None
    """`[N]` bool: the samples every reward scored with a finite number (the others leave training)."""
    invalid: dict[str, int] = field(default_factory=dict)
    """Per reward: how many samples it gave no finite score (NaN, inf, or a failed call)."""
    failed_calls: dict[str, int] = field(default_factory=dict)
    """Per reward whose call raised: how many times it raised (2: the retry failed too)."""
    errors: dict[str, str] = field(default_factory=dict)
    """Per reward whose call raised: the last error, one line."""
    left_out: list[str] = field(default_factory=list)
    """Optional rewards (`required = False`) whose call failed twice: not in `total` or `valid`."""

    def __post_init__(self) -> None:
        if self.valid is None:
            self.valid = torch.isfinite(self.total) if self.total.numel() else torch.ones(0, dtype=torch.bool)


def combine(normalized: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """`sum_k weights[k] * normalized[k]` in float32; the two dicts must have the same names."""
    if normalized.keys() != weights.keys():
        raise ValueError(f"reward names differ: scores {sorted(normalized)} vs weights {sorted(weights)}")
    if not normalized:
        raise ValueError("combine needs at least one reward")
    shapes = {tuple(value.shape) for value in normalized.values()}
    if len(shapes) != 1:
        raise ValueError(f"reward scores have different shapes: {sorted(shapes)}")
    total: torch.Tensor | None = None
    for name, value in normalized.items():
        term = float(weights[name]) * value.to(torch.float32)
        total = term if total is None else total + term
    assert total is not None
    return total


def _cpu_float(x: Any) -> torch.Tensor:
    return torch.as_tensor(x).detach().to(device="cpu", dtype=torch.float32)


class RewardSet:
    """An ordered set of weighted, normalized rewards."""

    def __init__(self, terms: Sequence[RewardTerm]) -> None:
        terms = list(terms)
        if not terms:
            raise ValueError("a RewardSet needs at least one reward")
        names = [term.name for term in terms]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"reward names must be unique in a set; repeated: {', '.join(duplicates)}")
        for term in terms:
            if not math.isfinite(term.weight):
                raise ValueError(f"reward {term.name!r}: weight must be finite, got {term.weight}")
        self.terms = terms

    def __repr__(self) -> str:
        inner = ", ".join(f"{term.name}x{term.weight}" for term in self.terms)
        return f"RewardSet({inner})"

    def __len__(self) -> int:
        return len(self.terms)

    @property
    def names(self) -> list[str]:
        return [term.name for term in self.terms]

    @property
    def weights(self) -> dict[str, float]:
        return {term.name: float(term.weight) for term in self.terms}

    def to(self, device: torch.device | str) -> RewardSet:
        for term in self.terms:
            moved = term.reward.to(device)
            if moved is not None:
                term.reward = moved
        return self

    def score(
        self,
        images: torch.Tensor,
        prompts: Sequence[str],
        metadata: Sequence[dict[str, Any]] | None = None,
        group_ids: torch.Tensor | None = None,
    ) -> RewardSetOutput:
        """Score a batch with every reward, normalize each (after orienting it), and sum with the weights.

        `group_ids` default to the prompt groups of `prompts`. A sample is valid when every reward gave
        it a finite score; a reward call that raises is retried once, and if it raises again none of the
        batch is valid for it. Normalizers see only the valid samples (their statistics stay clean);
        `normalized` and `total` are NaN elsewhere. A reward that returns a wrong shape raises a
        ValueError naming it (that is a bug in the reward, not bad luck with a sample).
        """
        groups = prompt_group_ids(prompts) if group_ids is None else _cpu_long(group_ids)
        return self.normalize(self.raw_scores(images, prompts, metadata), groups)

    def raw_scores(
        self,
        images: torch.Tensor,
        prompts: Sequence[str],
        metadata: Sequence[dict[str, Any]] | None = None,
    ) -> RewardSetOutput:
        """The first half of `score`: every reward's raw scores and details (NaN where a call failed
        twice), timings and failures; `normalized` and `total` stay empty. Data-parallel ranks gather
        these, so that `normalize` sees every prompt group whole."""
        n = len(prompts)
        if images.shape[0] != n:
            raise ValueError(f"{images.shape[0]} images but {n} prompts (they are paired one-to-one)")
        if metadata is not None and len(metadata) != n:
            raise ValueError(f"{len(metadata)} metadata entries but {n} prompts")
        out = RewardSetOutput(
            raw={}, normalized={}, total=torch.empty(0), valid=torch.ones(n, dtype=torch.bool)
        )
        for term in self.terms:
            start = time.perf_counter()
            output = self._call(term, images, prompts, metadata, out)
            if output is None:
                scores, term_details = torch.full((n,), math.nan), {}
            else:
                scores = _cpu_float(output.scores)  # the copy to CPU waits for the device: honest timing
                term_details = {key: _cpu_float(value) for key, value in (output.details or {}).items()}
            out.seconds[term.name] = time.perf_counter() - start
            if scores.shape != (n,):
                raise ValueError(
                    f"reward {term.name!r} returned scores of shape {tuple(scores.shape)}, want [{n}]"
                )
            out.raw[term.name] = scores
            out.details[term.name] = term_details
        return out

    def normalize(self, out: RewardSetOutput, group_ids: torch.Tensor) -> RewardSetOutput:
        """The second half of `score`: validity, each reward's normalizer over the valid samples, and the
        weighted sum (`out` is completed in place and returned)."""
        n = len(group_ids)
        groups = _cpu_long(group_ids)
        out.valid = torch.ones(n, dtype=torch.bool)
        out.left_out = [
            term.name for term in self.terms if not term.required and out.failed_calls.get(term.name, 0) > 1
        ]
        counted = [term for term in self.terms if term.name not in out.left_out]
        for term in self.terms:
            finite = torch.isfinite(out.raw[term.name])
            out.invalid[term.name] = int((~finite).sum())
            if term in counted:
                out.valid &= finite
        if not counted:
            out.valid[:] = False
        keep = out.valid.nonzero(as_tuple=True)[0]
        everything = len(keep) == n
        for term in self.terms:
            scores = out.raw[term.name]
            if term not in counted:
                out.normalized[term.name] = torch.full((n,), math.nan)
                continue
            oriented = scores if term.reward.higher_is_better else -scores
            norm = torch.full((n,), math.nan)
            if len(keep):
                part = _cpu_float(
                    term.normalizer(*((oriented, groups) if everything else (oriented[keep], groups[keep])))
                )
                if part.shape != (len(keep),):
                    raise ValueError(
                        f"normalizer of {term.name!r} returned shape {tuple(part.shape)}, want [{len(keep)}]"
                    )
                norm = part if everything else norm.index_put((keep,), part)
            out.normalized[term.name] = norm
        if counted:
            names = [term.name for term in counted]
            out.total = combine({k: out.normalized[k] for k in names}, {k: self.weights[k] for k in names})
        else:
            out.total = torch.full((n,), math.nan)
        return out

    @staticmethod
    def _call(
        term: RewardTerm,
        images: torch.Tensor,
        prompts: Sequence[str],
        metadata: Sequence[dict[str, Any]] | None,
        out: RewardSetOutput,
    ) -> Any:
        """The reward's output, retried once after an exception; None (and the error kept) after two."""
        for attempt in range(2):
            try:
                return term.reward(images, prompts, metadata)
            except Exception as error:  # a reward that fails must not end a run that may be days long
                out.failed_calls[term.name] = attempt + 1
                out.errors[term.name] = f"{type(error).__name__}: {error}"
        return None

    def state_dict(self) -> dict[str, Any]:
        """States of the stateful normalizers (running z-score), by reward name, for checkpoints."""
        return {
            term.name: term.normalizer.state_dict()
            for term in self.terms
            if isinstance(term.normalizer, Stateful)
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict`'s normalizer states."""
        for term in self.terms:
            if term.name in state and isinstance(term.normalizer, Stateful):
                term.normalizer.load_state_dict(state[term.name])


def concat_raw(parts: Sequence[RewardSetOutput]) -> RewardSetOutput:
    """The `raw_scores` of consecutive slices of a batch as one `raw_scores` of the whole batch: scores and
    details concatenated, seconds summed, the worst failure count and the last error of each reward."""
    if not parts:
        raise ValueError("concat_raw needs at least one part")
    names = list(parts[0].raw)

    def detail(part: RewardSetOutput, name: str, key: str) -> torch.Tensor:
        found = part.details.get(name, {}).get(key)  # absent where that part's call failed
        return torch.full((len(part.raw[name]),), math.nan) if found is None else found

    details = {}
    for name in names:
        keys = dict.fromkeys(key for part in parts for key in part.details.get(name, {}))
        details[name] = {key: torch.cat([detail(part, name, key) for part in parts]) for key in keys}
    raw = {name: torch.cat([part.raw[name] for part in parts]) for name in names}
    n = len(raw[names[0]]) if names else 0
    out = RewardSetOutput(
        raw=raw, normalized={}, total=torch.empty(0), details=details, valid=torch.ones(n, dtype=torch.bool)
    )
    for part in parts:
        for name, seconds in part.seconds.items():
            out.seconds[name] = out.seconds.get(name, 0.0) + seconds
        for name, calls in part.failed_calls.items():
            out.failed_calls[name] = max(out.failed_calls.get(name, 0), calls)
        out.errors.update(part.errors)
    return out


def _cpu_long(x: Any) -> torch.Tensor:
    return torch.as_tensor(x).detach().to(device="cpu", dtype=torch.long)
