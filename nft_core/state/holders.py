"""The holders of a run's saved state, each with `state_dict()` / `load_state_dict()`
(`nft_core.protocols.Stateful`).

A state dict is flat: its tensors go into the checkpoint's `resume.safetensors` as `<holder>.<key>`, every
other value (JSON) into `state.json` under the holder's name (`nft_core.state.run_state`). Nothing is
pickled. The live objects keep their own APIs; the adapters here translate them: the policy's weights
(`current`, `old`), the EMA, the optimizer, the loss scaler, the random generators (torch, CUDA, numpy,
Python and the trainer's own), and any object that already has a flat state dict (the lr schedule, the
prompt drawer, the reward normalizers, the counters, the outputs).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from nft_core.distributed import shard_like
from nft_core.ema import ParameterEMA
from nft_core.errors import UserError
from nft_core.state.sharded import is_sharded

__all__ = [
    "EMAState",
    "GradScalerState",
    "OptimizerState",
    "RandomState",
    "Reshardable",
    "WeightsState",
    "python_rng_from_json",
    "python_rng_to_json",
    "seed_everything",
]


@runtime_checkable
class Reshardable(Protocol):
    """A holder whose tensors may be sharded (FSDP2): it names the live tensor each key restores into."""

    def template(self, key: str) -> torch.Tensor | None:
        """The live tensor (a DTensor under FSDP2) that `key` of the state dict fills; None if none."""
        ...


def _saved(value: torch.Tensor) -> torch.Tensor:
    """A tensor as a checkpoint holds it: a CPU copy; a DTensor stays sharded (its shards are written)."""
    return value.detach() if is_sharded(value) else value.detach().to("cpu").clone().contiguous()


class WeightsState:
    """Named tensors of one policy view (`current`: the trained parameters; `old`: the sampling copy)."""

    def __init__(self, view: str, named: Callable[[], Iterable[tuple[str, torch.Tensor]]]) -> None:
        self.view = view
        self._named = named

    def state_dict(self) -> dict[str, Any]:
        return {name: _saved(tensor) for name, tensor in self._named()}

    def template(self, key: str) -> torch.Tensor | None:
        return dict(self._named()).get(key)

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, parameter in self._named():
            saved = state.get(name)
            if saved is None or saved.shape != parameter.shape:
                found = "missing" if saved is None else f"shape {tuple(saved.shape)}"
                raise UserError(
                    f"does not fit this policy ({self.view} weight {name}: {found}, want "
                    f"{tuple(parameter.shape)})"
                )
            parameter.copy_(shard_like(saved, parameter))


class EMAState:
    """The EMA's shadow tensors under the parameters' names, and its decay and update count."""

    SETTINGS = ("decay", "warmup", "num_updates")

    def __init__(self, ema: ParameterEMA) -> None:
        self.ema = ema

    def state_dict(self) -> dict[str, Any]:
        state = self.ema.state_dict()
        shadow = state.pop("shadow")
        return {**{name: _saved(value) for name, value in shadow.items()}, **state}

    def template(self, key: str) -> torch.Tensor | None:
        return self.ema.shadow.get(key)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        shadow = {name: value for name, value in state.items() if name not in self.SETTINGS}
        self.ema.load_state_dict({**{key: state[key] for key in self.SETTINGS}, "shadow": shadow})


class OptimizerState:
    """`optimizer.state_dict()` split into tensors (`<param index>.<key>`) and JSON (`param_groups`,
    `scalars`); the moments of sharded parameters (FSDP2) stay sharded."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer

    def state_dict(self) -> dict[str, Any]:
        state = self.optimizer.state_dict()
        saved: dict[str, Any] = {}
        scalars: dict[str, dict[str, Any]] = {}
        for index, entry in state["state"].items():
            for key, value in entry.items():
                if isinstance(value, torch.Tensor):
                    value = (
                        value.detach()
                    )  # a DTensor (FSDP2) stays sharded: the checkpoint writes its shards
                    saved[f"{index}.{key}"] = value if is_sharded(value) else value.cpu().contiguous()
                else:
                    scalars.setdefault(str(index), {})[key] = value
        groups = [
            {k: list(v) if isinstance(v, tuple) else v for k, v in g.items()} for g in state["param_groups"]
        ]
        return {**saved, "param_groups": groups, "scalars": scalars}

    def template(self, key: str) -> torch.Tensor | None:
        """A moment is shaped and sharded like its parameter (there may be no moment yet to copy)."""
        parameters = [p for group in self.optimizer.param_groups for p in group["params"]]
        index = int(key.split(".", 1)[0])
        return parameters[index] if index < len(parameters) else None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        entries: dict[int, dict[str, Any]] = {}
        for name, value in state.items():
            if isinstance(value, torch.Tensor):
                index, key = name.split(".", 1)
                entries.setdefault(int(index), {})[key] = value
        for index, values in state.get("scalars", {}).items():
            entries.setdefault(int(index), {}).update(values)
        groups = [
            {k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in g.items()}
            for g in state["param_groups"]
        ]
        self.optimizer.load_state_dict({"state": entries, "param_groups": groups})
        for group in self.optimizer.param_groups:  # sharded parameters (FSDP2): their moments sharded alike
            for parameter in group["params"]:
                moments = self.optimizer.state.get(parameter, {})
                for key, value in moments.items():
                    if isinstance(value, torch.Tensor) and value.shape == parameter.shape and value.ndim:
                        moments[key] = shard_like(value, parameter)


class GradScalerState:
    """The fp16 loss scaler's state (empty, and nothing to restore, when it is disabled)."""

    def __init__(self, scaler: torch.amp.GradScaler) -> None:
        self.scaler = scaler

    def state_dict(self) -> dict[str, Any]:
        return dict(self.scaler.state_dict())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.scaler.load_state_dict(state)


def seed_everything(seed: int) -> None:
    """Seed torch's, numpy's and Python's global generators (a plugin may draw from any of them)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def python_rng_to_json(state: tuple) -> list:
    """A `random.Random.getstate()` tuple as a JSON list."""
    version, internal, gauss = state
    return [version, list(internal), gauss]


def python_rng_from_json(state: list) -> tuple:
    """A `random.Random.getstate()` tuple back from its JSON list."""
    version, internal, gauss = state
    return version, tuple(internal), gauss


class RandomState:
    """torch's (CPU and CUDA), numpy's and Python's global generators, and the trainer's own generator."""

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            for index, cuda in enumerate(torch.cuda.get_rng_state_all()):
                state[f"cuda.{index}"] = cuda
        name, keys, position, has_gauss, cached = np.random.get_state()
        state["numpy"] = torch.from_numpy(keys.astype(np.int64))
        state["trainer"] = self.generator.get_state()
        state["numpy_position"] = [name, int(position), int(has_gauss), float(cached)]
        state["python"] = python_rng_to_json(random.getstate())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        torch.set_rng_state(state["torch"])
        cuda = sorted((k for k in state if k.startswith("cuda.")), key=lambda k: int(k.split(".", 1)[1]))
        if cuda and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([state[k] for k in cuda])
        name, position, has_gauss, cached = state["numpy_position"]
        keys = state["numpy"].numpy().astype(np.uint32)
        np.random.set_state((name, keys, position, has_gauss, cached))
        random.setstate(python_rng_from_json(state["python"]))
        self.generator.set_state(state["trainer"])
