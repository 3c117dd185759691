"""The small interfaces every policy, sampler, reward and objective implements."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

import torch

from nft_core.types import Cond, RewardOutput

VelocityFn = Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor]
"""`velocity(x_t, t, cond) -> v` with `x_t = (1 - t) x0 + t eps` and `v = eps - x0`; `t` has shape `[N]`."""

POLICY_VIEWS = ("current", "old", "reference")


@runtime_checkable
class Reward(Protocol):
    """Scores images against their prompts. Declares its native range and direction."""

    name: str
    native_range: tuple[float, float]
    higher_is_better: bool

    def __call__(
        self,
        images: torch.Tensor,
        prompts: Sequence[str],
        metadata: Sequence[dict[str, Any]] | None = None,
    ) -> RewardOutput: ...

    def to(self, device: torch.device | str) -> Reward: ...


@runtime_checkable
class Sampler(Protocol):
    """A black-box solver: integrates the probability-flow (or an SDE) from t=1 to t=0."""

    name: str

    def default_grid(self) -> torch.Tensor:
        """The decreasing time grid from 1 to 0 this sampler uses when none is given."""
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
    """Owns the trainable network and its three views: `current` (theta), `old`, `reference`."""

    name: str
    latent_shape: tuple[int, ...]

    def encode_prompts(self, prompts: Sequence[str]) -> Cond: ...

    def null_cond(self, batch_size: int) -> Cond:
        """The unconditional (empty prompt) conditioning, for classifier-free guidance."""
        ...

    def velocity(self, view: str, x_t: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor: ...

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents to images `[N,3,H,W]` in `[0,1]`."""
        ...

    def trainable_parameters(self) -> Iterable[tuple[str, torch.nn.Parameter]]: ...

    def refresh_old(self, decay: float) -> None:
        """`theta_old <- decay * theta_old + (1 - decay) * theta`."""
        ...

    def to(self, device: torch.device | str) -> Policy: ...

    def save_trainable(self, directory: str) -> None: ...

    def load_trainable(self, directory: str) -> None: ...


@runtime_checkable
class Objective(Protocol):
    """A training loss over collected samples: `nft` is the product, others are baselines."""

    name: str

    def loss(
        self,
        policy: Policy,
        x0: torch.Tensor,
        cond: Cond,
        t: torch.Tensor,
        optimality: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]: ...
