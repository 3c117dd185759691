"""Plain values that flow between the stages of one epoch (prompts -> samples -> scores -> advantages)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch

Cond = dict[str, torch.Tensor]
"""Policy-specific prompt conditioning: a dict of batch-first tensors (index it with `index_cond`)."""

Precision = Literal["fp32", "bf16", "fp16"]
"""The one precision vocabulary of every policy and of `train.precision`."""

PRECISION_DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}


def index_cond(cond: Cond, index: torch.Tensor | slice | list[int]) -> Cond:
    """Select rows of every tensor in a conditioning dict (a tensor index goes to each tensor's device)."""
    if isinstance(index, torch.Tensor):
        return {key: value[index.to(value.device)] for key, value in cond.items()}
    return {key: value[index] for key, value in cond.items()}


def cat_conds(conds: list[Cond]) -> Cond:
    """Concatenate conditioning dicts along the batch dimension."""
    return {key: torch.cat([c[key] for c in conds]) for key in conds[0]}


@dataclass(frozen=True)
class Trajectory:
    """The sampling paths a trajectory objective (FlowGRPO) trains on: the states at every grid time
    `[N, S + 1, *shape]` (first the noise, last the sample), each step's log-prob under the sampling
    policy `[N, S]`, the grid `[S + 1]`, and the first step of each path that is trained `[N]` (0 but for
    FlowGRPO-Fast's window of SDE steps)."""

    states: torch.Tensor
    log_probs: torch.Tensor
    times: torch.Tensor
    first_step: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.first_step is None:
            object.__setattr__(self, "first_step", torch.zeros(self.states.shape[0], dtype=torch.long))

    def rows(self, index: torch.Tensor) -> Trajectory:
        """The paths of the samples `index`."""
        assert self.first_step is not None
        return Trajectory(
            self.states[index.to(self.states.device)],
            self.log_probs[index.to(self.log_probs.device)],
            self.times,
            self.first_step[index.to(self.first_step.device)],
        )

    @property
    def stored_bytes_per_sample(self) -> int:
        """Bytes kept per sample for the update: every state and log-prob."""
        per = self.states[0].numel() * self.states.element_size()
        return per + self.log_probs[0].numel() * self.log_probs.element_size()


CONDITION_IMAGE = "image"
"""The metadata key of an editing prompt's condition image: its file (the `edit:` prompt source)."""
SOURCE_IMAGE = "source_image"
"""The metadata key of that image, read: float `[3,H,W]` in [0, 1] (what the policy conditions on and
the rewards compare the result with)."""


@dataclass
class PromptItem:
    """One prompt with its optional per-sample metadata (GenEval metadata for GenEval-style sets; an
    editing prompt's condition image under `CONDITION_IMAGE`, read into `SOURCE_IMAGE`)."""

    prompt: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class Samples:
    """What collection keeps of an epoch's generations: clean latents, their prompts, conditioning and
    prompt groups (all of the epoch's samples), and the decoded images of this rank's share.

    `ids` are the samples' indices in the epoch (they key each sample's training noise); `images` holds
    the rows `local` of the epoch (all of them on a single process).
    """

    latents: torch.Tensor
    images: torch.Tensor
    prompts: list[str]
    metadata: list[dict[str, Any]]
    cond: Cond
    group_ids: torch.Tensor
    ids: torch.Tensor | None = None
    local: slice | None = None
    trajectory: Trajectory | None = None
    """The SDE paths, for an objective that `collects = "trajectory"` (FlowGRPO); else None."""

    def __post_init__(self) -> None:
        if self.ids is None:
            self.ids = torch.arange(len(self.prompts))
        if self.local is None:
            self.local = slice(0, len(self.prompts))

    def __len__(self) -> int:
        return len(self.prompts)

    def subset(self, keep: torch.Tensor) -> Samples:
        """The samples where the boolean mask `keep` `[N]` is true, in order (e.g. the validly scored),
        without images (the update does not look at them)."""
        index = keep.nonzero(as_tuple=True)[0]
        rows = index.tolist()
        assert self.ids is not None
        return Samples(
            self.latents[index.to(self.latents.device)],
            self.images[:0],
            [self.prompts[i] for i in rows],
            [self.metadata[i] for i in rows],
            index_cond(self.cond, index),
            self.group_ids[index.to(self.group_ids.device)],
            self.ids[index],
            slice(0, 0),
            None if self.trajectory is None else self.trajectory.rows(index),
        )

    @property
    def stored_bytes_per_sample(self) -> int:
        """Bytes the update keeps per training sample: the clean latent, or the whole path (trajectory
        objectives); the conditioning is the same for both and not counted."""
        if self.trajectory is not None:
            return self.trajectory.stored_bytes_per_sample
        return self.latents[0].numel() * self.latents.element_size()


@dataclass
class RewardOutput:
    """Per-sample scores `[N]`, named per-sample details (each a tensor `[N]`) and optional notes.

    `notes`, when given, is one string per sample that explains its score to a person (GenEval: the
    first check it failed); `nft eval` writes it beside the scores.
    """

    scores: torch.Tensor
    details: dict[str, torch.Tensor] = field(default_factory=dict)
    notes: list[str] | None = None


@dataclass
class Aggregate:
    """How a reward summarises its per-image results over an evaluation set.

    `score` is the headline number; `per_tag` an optional breakdown by the metadata `tag` (logged as
    `eval/<reward>/tag/<tag>`); `tables` JSON-ready results written into `summary.json` beside the
    score; `report` the lines `nft eval` prints (empty: the score alone).
    """

    score: float
    per_tag: dict[str, float] = field(default_factory=dict)
    tables: dict[str, Any] = field(default_factory=dict)
    report: str = ""

    @classmethod
    def mean(cls, output: RewardOutput) -> Aggregate:
        """The plain mean of the scores: the aggregation of any reward that declares no other."""
        return cls(score=float(output.scores.float().mean()))


@dataclass
class EvalResult:
    """Per reward: its summary entry (`score`, `mean`, detail means, its tables), its per-tag breakdown,
    and the images and per-image values it came from."""

    scores: dict[str, dict[str, Any]] = field(default_factory=dict)
    per_tag: dict[str, dict[str, float]] = field(default_factory=dict)
    images: torch.Tensor | None = None
    per_image: dict[str, torch.Tensor] = field(default_factory=dict)
    finite: bool = True
    """Whether every sampled latent was finite (a diverged model samples NaN)."""
