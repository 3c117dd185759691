"""Exponential moving average of the trainable parameters, for evaluation and checkpoints.

Separate from the old policy: the EMA is `ema <- decay * ema + (1 - decay) * theta` after every
optimizer step (reference decay 0.9) and is only ever swapped in to evaluate or save.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from nft_core.distributed import shard_like

__all__ = ["ParameterEMA"]

NamedParameters = Iterable[tuple[str, torch.nn.Parameter]]


class ParameterEMA:
    """fp32 shadow copies of named parameters.

    With `warmup=True` the effective decay of the n-th update (0-based) is `min(decay, (1 + n) / (10 + n))`,
    the warm-up of the reference implementation's EMA wrapper (it matters for the first ~80 steps at
    decay 0.9); with `warmup=False` (default) it is `decay` from the first update.
    """

    def __init__(self, named_parameters: NamedParameters, decay: float = 0.9, warmup: bool = False) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.num_updates = 0
        self.shadow: dict[str, torch.Tensor] = {
            name: param.detach().to(torch.float32).clone() for name, param in named_parameters
        }
        if not self.shadow:
            raise ValueError("ParameterEMA got no parameters")

    def __repr__(self) -> str:
        return (
            f"ParameterEMA({len(self.shadow)} tensors, decay={self.decay}, warmup={self.warmup}, "
            f"updates={self.num_updates})"
        )

    def current_decay(self) -> float:
        """The decay the next `update` will use."""
        if self.warmup:
            n = self.num_updates
            return min(self.decay, (1 + n) / (10 + n))
        return self.decay

    def _match(self, named_parameters: NamedParameters) -> list[tuple[torch.Tensor, torch.nn.Parameter]]:
        params = dict(named_parameters)
        if params.keys() != self.shadow.keys():
            missing = sorted(self.shadow.keys() - params.keys())[:5]
            extra = sorted(params.keys() - self.shadow.keys())[:5]
            raise KeyError(f"EMA parameter names do not match: missing {missing}, unexpected {extra}")
        pairs = []
        for name, shadow in self.shadow.items():
            param = params[name]
            if param.shape != shadow.shape:
                raise ValueError(
                    f"EMA shape mismatch for {name}: {tuple(shadow.shape)} vs {tuple(param.shape)}"
                )
            pairs.append((shadow, param))
        return pairs

    @torch.no_grad()
    def update(self, named_parameters: NamedParameters) -> None:
        """`ema <- d * ema + (1 - d) * theta` for every tensor, `d = current_decay()`."""
        d = self.current_decay()
        for shadow, param in self._match(named_parameters):
            value = param.detach().to(device=shadow.device, dtype=torch.float32)
            shadow.mul_(d).add_(value, alpha=1.0 - d)
        self.num_updates += 1

    @contextmanager
    def swapped_in(self, named_parameters: NamedParameters) -> Iterator[None]:
        """Evaluate with the EMA weights inside the block; the live weights are restored exactly after."""
        pairs = self._match(named_parameters)
        with torch.no_grad():
            backup = [param.detach().clone() for _, param in pairs]
            for shadow, param in pairs:
                param.copy_(shadow.to(device=param.device, dtype=param.dtype))
        try:
            yield
        finally:
            with torch.no_grad():
                for (_, param), saved in zip(pairs, backup, strict=True):
                    param.copy_(saved)

    def to(self, device: torch.device | str) -> ParameterEMA:
        self.shadow = {name: value.to(device) for name, value in self.shadow.items()}
        return self

    def state_dict(self) -> dict[str, Any]:
        return {
            "decay": self.decay,
            "warmup": self.warmup,
            "num_updates": self.num_updates,
            "shadow": {name: value.detach().clone() for name, value in self.shadow.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        shadow = state["shadow"]
        if shadow.keys() != self.shadow.keys():
            missing = sorted(self.shadow.keys() - shadow.keys())[:5]
            extra = sorted(shadow.keys() - self.shadow.keys())[:5]
            raise KeyError(f"EMA state names do not match: missing {missing}, unexpected {extra}")
        for name, value in shadow.items():
            if value.shape != self.shadow[name].shape:
                raise ValueError(f"EMA state shape mismatch for {name}")
            current = self.shadow[name]
            if hasattr(current, "device_mesh"):  # sharded parameters (FSDP2): the shadow sharded alike
                self.shadow[name] = shard_like(value.detach().to(torch.float32), current)
                continue
            self.shadow[name] = value.detach().to(device=current.device, dtype=torch.float32).clone()
        self.decay = float(state.get("decay", self.decay))
        self.warmup = bool(state.get("warmup", self.warmup))
        self.num_updates = int(state.get("num_updates", 0))
