"""Schedules by optimizer step: the old-policy refresh decay `d(step)` (algorithm.md step 6:
`old <- d old + (1 - d) theta`) and the learning-rate factor `lr_factor`."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

__all__ = ["DECAY_FORMS", "LR_SCHEDULES", "DecaySchedule", "lr_factor", "parse_decay_schedule"]

LR_SCHEDULES = ("constant", "cosine", "linear")

DECAY_FORMS = (
    "none | type0  (d = 0: old = current)",
    "linear-<rate>-<max>  (d = min(rate * step, max); type1 = linear-0.001-0.5)",
    "delayed-<start>-<rate>-<max>  (d = 0 for step < start, else min(rate * (step - start), max); "
    "type2 = delayed-75-0.0075-0.999)",
    "constant-<d>",
)

ALIASES = {
    "none": "constant-0",
    "type0": "constant-0",
    "type1": "linear-0.001-0.5",
    "type2": "delayed-75-0.0075-0.999",
}

_NUM = r"(\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?)"
_PATTERNS = {
    "constant": re.compile(rf"constant-{_NUM}"),
    "linear": re.compile(rf"linear-{_NUM}-{_NUM}"),
    "delayed": re.compile(rf"delayed-{_NUM}-{_NUM}-{_NUM}"),
}


@dataclass(frozen=True)
class DecaySchedule:
    """`d(step) = 0` for `step < start`, else `min(rate * (step - start), maximum)`; constant when rate=0.

    Every form is this one shape: `constant-d` is `start=0, rate=0, constant=d`.
    """

    spec: str
    start: int = 0
    rate: float = 0.0
    maximum: float = 0.0
    constant: float | None = None

    def __call__(self, step: int) -> float:
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        if self.constant is not None:
            return self.constant
        if step < self.start:
            return 0.0
        return min(self.rate * (step - self.start), self.maximum)


def _error(spec: str, why: str = "") -> ValueError:
    forms = "; ".join(DECAY_FORMS)
    reason = f" ({why})" if why else ""
    return ValueError(f"bad old-policy decay schedule {spec!r}{reason}; allowed forms: {forms}")


def _fraction(spec: str, name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise _error(spec, f"{name} must be in [0, 1], got {value}")
    return value


def parse_decay_schedule(spec: str) -> DecaySchedule:
    """Parse a decay spec into a callable `d(step) -> float` (a `DecaySchedule`, which keeps its spec)."""
    if not isinstance(spec, str):
        raise _error(repr(spec), "not a string")
    text = spec.strip().lower()
    text = ALIASES.get(text, text)
    for kind, pattern in _PATTERNS.items():
        match = pattern.fullmatch(text)
        if match is None:
            continue
        numbers = [float(g) for g in match.groups()]
        if kind == "constant":
            return DecaySchedule(spec, constant=_fraction(spec, "d", numbers[0]))
        if kind == "linear":
            rate, maximum = numbers
            return DecaySchedule(spec, rate=rate, maximum=_fraction(spec, "max", maximum))
        start, rate, maximum = numbers
        if start != int(start):
            raise _error(spec, f"start must be a whole step, got {start}")
        return DecaySchedule(spec, start=int(start), rate=rate, maximum=_fraction(spec, "max", maximum))
    raise _error(spec)


def lr_factor(schedule: str, step: int, total_steps: int, final: float = 0.0) -> float:
    """The learning rate of optimizer step `step` (0-based) as a fraction of `train.lr`.

    `constant`: 1 (the reference). `cosine`: `final + (1 - final) (1 + cos(pi s / S)) / 2` and `linear`:
    `1 - (1 - final) s / S`, with `S = total_steps - 1`, so the first step uses the full rate and the last
    `final` of it; past the end the factor stays `final`.
    """
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"unknown lr schedule {schedule!r}; allowed: {', '.join(LR_SCHEDULES)}")
    if schedule == "constant" or total_steps <= 1:
        return 1.0
    progress = min(step / (total_steps - 1), 1.0)
    if schedule == "linear":
        return 1.0 - (1.0 - final) * progress
    return final + (1.0 - final) * (1.0 + math.cos(math.pi * progress)) / 2.0
