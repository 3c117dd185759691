"""The small interfaces every reward, solver, policy, objective, monitor and tracker implements
(docs/plugins.md, docs/trackers.md).

`nft_core.testing` holds each to its contract (`check_reward`, `check_solver`, `check_policy`);
`nft_rewards.base.BaseReward` and `nft_solvers.base.GridSolver` implement the bookkeeping once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from nft_core.types import Aggregate, Cond, PromptItem, RewardOutput

VelocityFn = Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor]
"""`velocity(x_t, t, cond) -> v` with `x_t = (1 - t) x0 + t eps` and `v = eps - x0`; `t` has shape `[N]`."""

VIEWS = ("current", "old", "reference")
"""A policy's three views: `current` (theta, trained), `old` (samples the data), `reference` (the base)."""


@runtime_checkable
class Reward(Protocol):
    """Scores images against their prompts. Declares its native range, direction and aggregation.

    Images are `[N,3,H,W]` in [0, 1]; a video policy's are `[N,F,3,H,W]`, which the `frames` reward scores
    frame by frame with an image reward. An editing prompt's source image is its metadata's
    `source_image` (`nft_core.types.SOURCE_IMAGE`)."""

    name: str
    native_range: tuple[float, float]
    higher_is_better: bool
    deterministic: bool
    """Whether the same inputs always give the same scores (a sampling VLM judge: False)."""

    def __call__(
        self,
        images: torch.Tensor,
        prompts: Sequence[str],
        metadata: Sequence[dict[str, Any]] | None = None,
    ) -> RewardOutput: ...

    def aggregate(
        self,
        output: RewardOutput,
        prompts: Sequence[str],
        metadata: Sequence[dict[str, Any]] | None = None,
    ) -> Aggregate:
        """The summary of an evaluation set's outputs (`Aggregate.mean(output)` unless it has its own)."""
        ...

    def to(self, device: torch.device | str) -> Reward: ...


@runtime_checkable
class RemoteScoring(Protocol):
    """A reward whose work runs outside this process (a reward server): its calls wait on the network
    instead of computing, so scoring them on a worker thread hides them without slowing the sampler."""

    scores_elsewhere: bool


@runtime_checkable
class Solver(Protocol):
    """A black-box solver: integrates the probability-flow ODE (or an SDE) from t=1 to t=0."""

    name: str
    stochastic: bool
    """Whether the result depends on the generator (an SDE); deterministic solvers map noise to data."""

    def default_grid(self) -> torch.Tensor:
        """The decreasing time grid from 1 to 0 this solver uses when none is given."""
        ...

    def sample(
        self,
        velocity: VelocityFn,
        noise: torch.Tensor,
        grid: torch.Tensor | None = None,
        cond: Any = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor: ...


@runtime_checkable
class Policy(Protocol):
    """Owns the trainable network and its three views (`VIEWS`): `current` (theta), `old`, `reference`."""

    name: str
    latent_shape: tuple[int, ...]

    def encode_prompts(self, prompts: Sequence[str]) -> Cond:
        """Batch-first conditioning tensors on the policy's device, one row per prompt."""
        ...

    def null_cond(self, batch_size: int) -> Cond:
        """The unconditional (empty prompt) conditioning, for classifier-free guidance."""
        ...

    def velocity(self, view: str, x_t: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor:
        """The velocity `eps - x0` of one view at `(x_t, t)`; `t` has shape `[N]`."""
        ...

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents to images `[N,3,H,W]` in `[0,1]` (a video policy: frames `[N,F,3,H,W]`)."""
        ...

    def trainable_parameters(self) -> Iterable[tuple[str, torch.nn.Parameter]]:
        """The named parameters of the `current` view that the optimizer updates."""
        ...

    def old_parameters(self) -> Iterable[tuple[str, torch.Tensor]]:
        """The `old` view's tensors that `refresh_old` moves, under the names of `trainable_parameters()`
        (same shapes; the live storage, so a resumed run can write them back)."""
        ...

    def refresh_old(self, decay: float) -> None:
        """`theta_old <- decay * theta_old + (1 - decay) * theta`."""
        ...

    def train(self, mode: bool = True) -> Policy:
        """Training mode of the `current` network (`old` and `reference` stay in eval mode)."""
        ...

    def to(self, device: torch.device | str) -> Policy: ...

    def save_trainable(self, directory: str) -> None:
        """Write the `current` view's trainable state into `directory`."""
        ...

    def load_trainable(self, directory: str) -> None:
        """Load `save_trainable`'s output into `current` and `old`; `reference` stays the base model."""
        ...


@runtime_checkable
class ConditionedPolicy(Protocol):
    """A policy conditioned on more than the prompt's text (an editing model: the source image of each
    `PromptItem`, its metadata's `source_image`); the collector and the evaluation encode whole items."""

    def encode_items(self, items: Sequence[PromptItem]) -> Cond:
        """Batch-first conditioning of the items (their text and condition), one row per item."""
        ...

    def null_cond_for(self, cond: Cond) -> Cond:
        """The unconditional input of classifier-free guidance for the rows of `cond` (the empty prompt
        with each row's own condition)."""
        ...


@runtime_checkable
class ShardablePolicy(Protocol):
    """A policy whose networks FSDP2 can shard (`train.parallel = "fsdp2"`)."""

    def fully_shard(self, mesh: Any) -> None:
        """Shard the current, old and reference networks over the device mesh `mesh`."""
        ...


@runtime_checkable
class ExportablePolicy(Protocol):
    """A policy that writes a checkpoint's weights for use without this project (`nft export`)."""

    def export(self, checkpoint: str, out: str, merge: bool = False) -> list[str]:
        """Write the checkpoint folder's weights into the new folder `out`; returns the files written."""
        ...


@runtime_checkable
class Stateful(Protocol):
    """Something a checkpoint saves and a resumed run restores (a stateful normalizer, an optimizer's
    adapter, the run's counters: `nft_core.state`)."""

    def state_dict(self) -> dict[str, Any]:
        """A flat dict: tensors, and JSON values (numbers, strings, lists, dicts)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned (the tensors may come back on the CPU)."""
        ...


@runtime_checkable
class RolloutNetworks(Protocol):
    """A policy that names the networks its rollouts run (the `old` view's), for levers that transform
    them (a compiler)."""

    def rollout_networks(self) -> list[torch.nn.Module]:
        """The modules that sampling with the `old` view runs (shared with training under LoRA)."""
        ...


@runtime_checkable
class Lever(Protocol):
    """A rollout acceleration (`[rollout] levers`): changes how collection samples, never what the
    update computes. `lossless`: the samples are the plain rollout's up to float rounding (a compiler,
    an attention kernel); lossy ones (a feature cache, fewer bits) change them, which an objective that
    trains on the rollout's exact log-probs (FlowGRPO) cannot accept (docs/rollout.md)."""

    name: str
    lossless: bool

    def rollout(self, policy: Policy) -> Any:
        """A context manager entered around each sampling micro-batch of collection (set up lazily on
        the first entry: compile, cache hooks)."""
        ...


@runtime_checkable
class ExactRollout(Protocol):
    """An objective whose loss uses the rollout's own log-probs (FlowGRPO's ratio), so its samples must be
    the policy's exact ones: lossy levers and a rollout precision other than training's are refused."""

    needs_exact_rollout: bool


@runtime_checkable
class Objective(Protocol):
    """A training loss over collected samples: `nft` is the product, others are baselines."""

    name: str
    adv_clip: float
    """The advantage bound A_max: advantages are clipped to it and mapped to `r` with it."""

    def loss(
        self,
        policy: Policy,
        x0: torch.Tensor,
        cond: Cond,
        t: torch.Tensor,
        optimality: torch.Tensor,
        noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss of a micro-batch of clean samples at times `t` `[N]` with optimality `r` `[N]`.

        `noise` is the forward process's `eps`, shaped like `x0`: the trainer draws it per sample from a
        stream keyed by the sample and the visit, so the update does not depend on how the samples are
        cut into micro-batches or split across ranks. None: drawn from torch's global generator."""
        ...


@runtime_checkable
class Monitor(Protocol):
    """Statistics of an epoch's samples that are watched, never trained on: e.g. the diversity inside
    each prompt's group, which a reward that is being hacked drives down. `[log] monitors` names them;
    each key `k` it returns is logged as `monitor/<name>/<k>`."""

    name: str

    def __call__(
        self,
        images: torch.Tensor,
        prompts: Sequence[str],
        group_ids: torch.Tensor,
        metadata: Sequence[dict[str, Any]] | None = None,
    ) -> dict[str, float]:
        """Images `[N,3,H,W]` (or videos `[N,F,3,H,W]`) in `[0,1]`, their prompts and prompt-group ids
        `[N]` -> named floats (NaN when there is nothing to measure, e.g. no group with two images)."""
        ...


@runtime_checkable
class Tracker(Protocol):
    """An experiment tracker (TensorBoard, W&B, ...) that gets what a run writes, on rank 0 only.

    `[log] trackers` names them. The trainer calls `start` once, before anything else, then
    `log_scalars` with the numbers of every `metrics.jsonl` record (its keys, step = the record's epoch;
    an evaluation shares its epoch's step), `log_image` with every sample grid it writes, and `finish`
    last, also when the run fails. A tracker that raises in `start` is left out of the run with a
    warning; one that raises later is disabled with a warning; the run goes on either way. The
    constructor (`factory(**options)`) validates the options and should not touch files or the network."""

    name: str

    def start(self, run_dir: Path, config: dict[str, Any], run_name: str, first_step: int = 0) -> None:
        """Open the tracker's run: `run_dir` is the run directory, `config` the resolved config (TOML
        types) and `run_name` the run directory's name. `first_step` is the first step this process
        logs: 0 for a new run; for a resumed one, the epoch after its checkpoint (steps at or after it
        that an earlier process logged are being redone)."""
        ...

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
        """Named numbers at `step` (keys as in metrics.jsonl: `reward/total_mean`, `eval/<reward>/score`;
        NaN where a record held a non-finite value)."""
        ...

    def log_image(self, step: int, tag: str, image: str | Path | np.ndarray) -> None:
        """An image at `step` under `tag` (`samples/epoch`, `samples/eval_before`): a PNG file's path or
        an `[H, W, 3]` uint8 array."""
        ...

    def finish(self, status: str) -> None:
        """Flush and close the tracker's run; `status` is the run's (`finished`, `interrupted`, `failed`)."""
        ...


@runtime_checkable
class VideoTracker(Protocol):
    """A tracker that shows an animated sample grid (a video policy's) as a video; the others get its
    first frame through `log_image`."""

    def log_video(self, step: int, tag: str, video: str | Path, fps: float) -> None:
        """An animated GIF grid at `step` under `tag`, played at `fps` frames per second."""
        ...


@runtime_checkable
class TrajectoryObjective(Protocol):
    """An objective that trains on sampling paths (FlowGRPO) instead of clean samples: it declares
    `collects = "trajectory"`, samples them itself, and its loss takes steps of those paths.

    The collector is chosen once from this declaration (`nft_core.loop.collect.collector_for`): other
    objectives (NFT, RFT) get only the clean samples (`Objective.loss`); trajectory ones get
    `Samples.trajectory` and the training time `t_k` of the plan becomes the path's step `k` (from `t_k`
    to `t_{k+1}` of the collection grid). `on_policy = True` says the ratio is against the sampling
    policy, so the old policy must be the current one when samples are collected
    (`objective.old_decay = "none"`)."""

    name: str
    adv_clip: float
    collects: str
    on_policy: bool

    def sample(
        self,
        policy: Policy,
        x1: torch.Tensor,
        cond: Cond,
        times: torch.Tensor,
        step_noise: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> Any:
        """The `Trajectory` of the old view from noise `x1` over `times`, step noises `[N, S, *shape]`;
        `generator` draws what the objective chooses once per sampling batch (FlowGRPO-Fast's window)."""
        ...

    def trained_steps(self, grid_steps: int, requested: int) -> int:
        """How many steps of each path the update trains (of `grid_steps`; `requested` by the config)."""
        ...

    def trained_samples(self, optimality: torch.Tensor) -> torch.Tensor:
        """`[N]` bool: the samples the update trains on, given their optimality (e.g. a non-zero
        advantage)."""
        ...

    def trajectory_loss(
        self,
        policy: Policy,
        states: torch.Tensor,
        next_states: torch.Tensor,
        old_log_prob: torch.Tensor,
        steps: torch.Tensor,
        times: torch.Tensor,
        cond: Cond,
        optimality: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss of a micro-batch of path steps (`steps` `[N]` index `times`)."""
        ...
