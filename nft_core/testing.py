"""Conformance kit: checks that a reward, a solver or a policy keeps the `nft` contract, for plugin tests::

    from nft_core.testing import check_policy, check_reward, check_solver

    def test_my_reward_keeps_the_contract():
        check_reward(MyReward())

    def test_my_solver_keeps_the_contract():
        check_solver(MySolver(steps=8))

    def test_my_policy_keeps_the_contract(tmp_path):
        check_policy(MyPolicy(...), tmp_path)

    def test_installed_plugin_is_listed_by_nft_plugins():
        check_listed("nft-my-reward", {"rewards": ["my-reward"]})

Every failed check raises `ConformanceError` (an `AssertionError`, so pytest shows it as a failed
assertion) whose message names the object and says what is wrong. The contract is docs/plugins.md's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from nft_core.protocols import VIEWS, ConditionedPolicy
from nft_core.types import SOURCE_IMAGE, Aggregate, PromptItem

__all__ = [
    "ConformanceError",
    "check_listed",
    "check_policy",
    "check_reward",
    "check_solver",
    "gaussian_velocity",
    "point_mass_velocity",
]

DEFAULT_PROMPTS = (
    "a photo of a red circle",
    "two blue squares",
    "a green triangle above a yellow circle",
    "a photo of a cat on a sofa",
)


class ConformanceError(AssertionError):
    """A reward or solver breaks the plugin contract; the message says which rule and how."""


def _fail(label: str, problem: str) -> None:
    raise ConformanceError(f"{label}: {problem}")


def _ensure(condition: bool, label: str, problem: str) -> None:
    if not condition:
        _fail(label, problem)


def _max_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().double().cpu() - b.detach().double().cpu()).abs().max()) if a.numel() else 0.0


# ---- rewards ---------------------------------------------------------------------------------------


def _default_images(count: int = 4, size: int = 32) -> torch.Tensor:
    """Smooth random images in [0, 1] (a coarse random field, upsampled), reproducible."""
    generator = torch.Generator().manual_seed(0)
    coarse = torch.rand((count, 3, 4, 4), generator=generator)
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


def _select(values: Sequence[Any] | None, index: Sequence[int]) -> list[Any] | None:
    return None if values is None else [values[i] for i in index]


def _check_reward_attributes(reward: Any, label: str) -> None:
    _ensure(
        isinstance(getattr(reward, "name", None), str) and bool(reward.name),
        label,
        "needs a non-empty string attribute `name`",
    )
    _ensure(
        isinstance(getattr(reward, "higher_is_better", None), bool),
        label,
        "needs a bool attribute `higher_is_better` (the direction the trainer optimizes)",
    )
    native_range = getattr(reward, "native_range", None)
    valid = (
        isinstance(native_range, (tuple, list))
        and len(native_range) == 2
        and all(isinstance(v, (int, float)) and not math.isnan(v) for v in native_range)
    )
    _ensure(valid, label, f"needs `native_range = (low, high)` of two numbers, got {native_range!r}")
    _ensure(
        native_range[0] < native_range[1],
        label,
        f"native_range {tuple(native_range)} is empty: low must be below high (use +-inf if unbounded)",
    )
    _ensure(
        isinstance(getattr(reward, "deterministic", None), bool),
        label,
        "needs a bool attribute `deterministic` (False if the same inputs may score differently)",
    )
    _ensure(
        callable(getattr(reward, "aggregate", None)),
        label,
        "needs `aggregate(output, prompts, metadata) -> Aggregate` (return Aggregate.mean(output) "
        "unless the reward summarises an evaluation set otherwise)",
    )


def _check_aggregate(reward: Any, output: Any, prompts: list[str], metadata: Any, label: str) -> None:
    try:
        summary = reward.aggregate(output, prompts, metadata)
    except Exception as error:
        _fail(label, f"aggregate() raised {type(error).__name__}: {error}")
    _ensure(
        isinstance(summary, Aggregate),
        label,
        f"aggregate() must return an nft_core.types.Aggregate, got {type(summary).__name__}",
    )
    _ensure(
        isinstance(summary.score, float) and math.isfinite(summary.score),
        label,
        f"aggregate() must give a finite float score, got {summary.score!r}",
    )


def _check_reward_output(output: Any, n: int, label: str, what: str) -> torch.Tensor:
    """Shape, dtype and finiteness of one call's output; returns its scores."""
    scores = getattr(output, "scores", None)
    _ensure(
        isinstance(scores, torch.Tensor),
        label,
        f"{what}: must return a RewardOutput with a tensor `scores`, got {type(output).__name__}",
    )
    _ensure(
        tuple(scores.shape) == (n,),
        label,
        f"{what}: scores must have shape [{n}] (one per image), got {tuple(scores.shape)}",
    )
    _ensure(scores.is_floating_point(), label, f"{what}: scores must be floating point, got {scores.dtype}")
    _ensure(
        not scores.requires_grad,
        label,
        f"{what}: scores require grad; score under torch.no_grad() (a kept graph leaks memory)",
    )
    _ensure(
        bool(torch.isfinite(scores).all()),
        label,
        f"{what}: scores must be finite, got {scores.tolist()}",
    )
    details = getattr(output, "details", None) or {}
    _ensure(isinstance(details, dict), label, f"{what}: details must be a dict, got {type(details).__name__}")
    for key, value in details.items():
        shape = tuple(torch.as_tensor(value).shape)
        _ensure(shape == (n,), label, f"{what}: details[{key!r}] must have shape [{n}], got {shape}")
    return scores.detach().float().cpu()


def _scores(
    reward: Any,
    label: str,
    what: str,
    images: torch.Tensor,
    prompts: list[str],
    metadata: list[dict[str, Any]] | None,
) -> tuple[Any, torch.Tensor]:
    """Call the reward; an exception or a malformed output is a ConformanceError naming the call."""
    try:
        output = reward(images, prompts, metadata)
    except Exception as error:
        _fail(label, f"{what}: raised {type(error).__name__}: {error}")
    return output, _check_reward_output(output, len(prompts), label, what)


def check_reward(
    reward: Any,
    images: torch.Tensor | None = None,
    prompts: Sequence[str] | None = None,
    metadata: Sequence[dict[str, Any]] | None = None,
    *,
    deterministic: bool | None = None,
    devices: Sequence[str | torch.device] = ("cpu",),
    atol: float = 1e-5,
    half_atol: float = 1e-3,
) -> Any:
    """Check a reward against the contract; return its output on the (float32) inputs.

    Checked: `name`, `higher_is_better` and a non-empty `native_range`; scores `[N]`, floating, finite,
    detached, inside `native_range`; details `[N]`; float32 and float16 images are accepted and score
    alike (within `half_atol`); the input images are not modified; a count mismatch between images and
    prompts raises. If the reward is deterministic (`deterministic`, default: the reward's
    `deterministic` attribute, else True): a repeated call gives the same scores, the scores of a batch
    equal the scores of its items one at a time, and a permuted batch gets the permuted scores (images
    stay paired with their prompts and metadata). `.to(device)` for each of `devices` returns an object
    that scores the same batch alike (within `half_atol`); the reward may be left on the last device.

    `images` (float `[N,3,H,W]` in [0, 1], N >= 2), `prompts` and `metadata` default to four smooth
    random 32x32 images and generic prompts; pass your own where the reward needs real content or
    metadata. Images are first rounded to float16-representable values so both dtypes see one image.
    """
    label = f"reward {getattr(reward, 'name', type(reward).__name__)!r}"
    _check_reward_attributes(reward, label)
    if deterministic is None:
        deterministic = reward.deterministic
    if images is None:
        images = _default_images()
    if images.ndim != 4 or images.shape[1] != 3 or images.shape[0] < 2 or not images.is_floating_point():
        raise ValueError(f"check_reward needs float images [N>=2,3,H,W], got {tuple(images.shape)}")
    n = images.shape[0]
    prompts = list(prompts) if prompts is not None else [DEFAULT_PROMPTS[i % 4] for i in range(n)]
    metadata = list(metadata) if metadata is not None else None
    if len(prompts) != n or (metadata is not None and len(metadata) != n):
        raise ValueError(f"check_reward got {n} images but {len(prompts)} prompts / metadata entries")
    images = images.detach().clamp(0, 1).to(torch.float16).to(torch.float32).contiguous()
    pristine = images.clone()

    output, scores = _scores(reward, label, "a float32 batch", images, prompts, metadata)
    _ensure(torch.equal(images, pristine), label, "modified the input images in place")
    _check_aggregate(reward, output, prompts, metadata, label)
    low, high = (float(v) for v in reward.native_range)
    tolerance = 1e-6 * max(
        1.0, abs(low) if math.isfinite(low) else 1.0, abs(high) if math.isfinite(high) else 1.0
    )
    outside = [(i, s) for i, s in enumerate(scores.tolist()) if not low - tolerance <= s <= high + tolerance]
    _ensure(
        not outside,
        label,
        f"scores outside the declared native_range {tuple(reward.native_range)}: "
        + ", ".join(f"item {i}: {s:.6g}" for i, s in outside[:4]),
    )

    if deterministic:
        _, again = _scores(reward, label, "a repeated call", images, prompts, metadata)
        difference = _max_difference(again, scores)
        _ensure(
            difference <= atol,
            label,
            f"the same batch scored differently on a second call (max difference {difference:.3g}); "
            "pass deterministic=False if the reward is stochastic by design",
        )
    _, half_scores = _scores(reward, label, "a float16 batch", images.to(torch.float16), prompts, metadata)
    if deterministic:
        difference = _max_difference(half_scores, scores)
        _ensure(
            difference <= half_atol,
            label,
            f"float16 images scored differently from the same images in float32 (max difference "
            f"{difference:.3g} > {half_atol}); compute in float32 or quantize inputs the same way",
        )
        _check_batching(reward, images, prompts, metadata, scores, label, atol)
    _check_mismatch_raises(reward, images, prompts, metadata, label)

    for device in devices:
        moved = reward.to(device)
        _ensure(
            moved is not None and callable(moved),
            label,
            f".to({str(device)!r}) must return the reward (like torch.nn.Module.to), got {moved!r}",
        )
        _, moved_scores = _scores(moved, label, f"after .to({str(device)!r})", images, prompts, metadata)
        if deterministic:
            difference = _max_difference(moved_scores, scores)
            _ensure(
                difference <= half_atol,
                label,
                f"after .to({str(device)!r}) the scores changed by {difference:.3g} (> {half_atol})",
            )
        reward = moved
    return output


def _check_batching(
    reward: Any,
    images: torch.Tensor,
    prompts: list[str],
    metadata: list[dict[str, Any]] | None,
    scores: torch.Tensor,
    label: str,
    atol: float,
) -> None:
    """Batching invariance and pairing of a deterministic reward."""
    n = len(prompts)
    for i in range(n):
        _, alone = _scores(
            reward, label, f"item {i} alone", images[i : i + 1], [prompts[i]], _select(metadata, [i])
        )
        _ensure(
            abs(float(alone[0]) - float(scores[i])) <= atol,
            label,
            f"batching changes scores: item {i} scores {float(alone[0]):.6g} alone but "
            f"{float(scores[i]):.6g} in a batch of {n} (statistics or padding leak between images)",
        )
    order = list(reversed(range(n)))
    _, permuted = _scores(
        reward, label, "a permuted batch", images[order], _select(prompts, order), _select(metadata, order)
    )
    difference = _max_difference(permuted, scores[order])
    _ensure(
        difference <= atol,
        label,
        f"reversing the batch did not reverse the scores (max difference {difference:.3g}): "
        "images must stay paired one-to-one with their prompts and metadata",
    )


def _check_mismatch_raises(
    reward: Any,
    images: torch.Tensor,
    prompts: list[str],
    metadata: list[dict[str, Any]] | None,
    label: str,
) -> None:
    n = len(prompts)
    try:
        reward(images, prompts[:-1], metadata[:-1] if metadata is not None else None)
    except Exception:
        return
    _fail(
        label,
        f"accepted {n} images with {n - 1} prompts; images and prompts are paired one-to-one, "
        "so a count mismatch must raise (never broadcast or score a cross product)",
    )


# ---- solvers ---------------------------------------------------------------------------------------


def check_listed(plugin: str, registers: dict[str, list[str]], version: str | None = None) -> dict[str, Any]:
    """The installed plugin (entry-point name `plugin`) is what `nft plugins` lists, in a fresh process
    that loads it alone (`NFT_LOAD_PLUGINS`): its distribution of the same name with a version (`version`
    if given), and exactly the names `registers` by kind. Returns its entry."""
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "NFT_LOAD_PLUGINS": plugin}
    command = [sys.executable, "-m", "nft_core.cli", "plugins"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    _ensure(result.returncode == 0, plugin, f"`nft plugins` failed: {result.stderr.strip()[-500:]}")
    listing = json.loads(result.stdout)
    entry = next((p for p in listing["plugins"] if p["name"] == plugin), None)
    _ensure(entry is not None, plugin, f"not installed: pip install -e . ({listing['errors']})")
    assert entry is not None
    _ensure(entry["distribution"] == plugin, plugin, f"comes from distribution {entry['distribution']!r}")
    _ensure(
        bool(entry["version"]) and version in (None, entry["version"]),
        plugin,
        f"version {entry['version']!r}",
    )
    _ensure(entry["registers"] == registers, plugin, f"registers {entry['registers']}, want {registers}")
    return entry


def point_mass_velocity(x0: torch.Tensor, noise: torch.Tensor) -> Callable[..., torch.Tensor]:
    """The exact velocity when the data is the single point `x0`: `v(x, t) = (x - x0) / t`.

    It is affine in `x`; its trajectories are the straight lines `x_t = (1 - t) x0 + t eps`, so every
    consistent solver, ODE or SDE, must return `x0` exactly (up to rounding). At `t = 0` the limit
    along the trajectory from `noise`, `noise - x0`, is returned.
    """

    def velocity(x: torch.Tensor, t: torch.Tensor, cond: Any = None) -> torch.Tensor:
        target = x0.to(x.dtype)
        shape = (-1,) + (1,) * (x.ndim - 1)
        t_column = t.to(x.dtype).reshape(shape)
        safe = torch.where(t_column > 1e-6, t_column, torch.ones_like(t_column))
        return torch.where(t_column > 1e-6, (x - target) / safe, (noise - x0).to(x.dtype))

    return velocity


def gaussian_velocity(scale: float) -> Callable[..., torch.Tensor]:
    """The exact velocity when data is `N(0, s^2)` per element: `v = (t - (1-t) s^2) x / ((1-t)^2 s^2 + t^2)`.

    The exact ODE maps noise `eps` at t=1 to `scale * eps` at t=0; solvers converge to it at their order.
    """
    variance = scale * scale

    def velocity(x: torch.Tensor, t: torch.Tensor, cond: Any = None) -> torch.Tensor:
        t_column = t.to(torch.float64).reshape((-1,) + (1,) * (x.ndim - 1))
        denominator = (1 - t_column) ** 2 * variance + t_column**2
        return ((t_column - (1 - t_column) * variance) / denominator * x.to(torch.float64)).to(x.dtype)

    return velocity


class _Recorder:
    """Wraps a velocity function, checks every call's arguments and records the times asked for."""

    def __init__(self, velocity: Callable[..., torch.Tensor], noise: torch.Tensor, cond: Any, label: str):
        self.velocity = velocity
        self.noise = noise
        self.cond = cond
        self.label = label
        self.times: list[float] = []

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
        label, n = self.label, self.noise.shape[0]
        _ensure(
            isinstance(x, torch.Tensor) and tuple(x.shape) == tuple(self.noise.shape),
            label,
            f"velocity got x of shape {tuple(getattr(x, 'shape', ()))}, "
            f"want the noise's {tuple(self.noise.shape)}",
        )
        _ensure(
            x.dtype == self.noise.dtype,
            label,
            f"velocity got x in {x.dtype}; pass it in the noise's dtype {self.noise.dtype} (the model's)",
        )
        _ensure(
            isinstance(t, torch.Tensor) and tuple(t.shape) == (n,) and t.is_floating_point(),
            label,
            f"velocity got t = {t!r}; want a float tensor of shape [{n}] (one time per sample)",
        )
        values = t.detach().double().cpu()
        _ensure(
            bool(((values >= 0) & (values <= 1)).all()),
            label,
            f"velocity asked at times outside [0, 1]: {values.tolist()}",
        )
        _ensure(cond is self.cond, label, "velocity must receive the `cond` given to sample(), unchanged")
        self.times.extend(values.tolist())
        return self.velocity(x, t, cond)


def _run(
    solver: Any,
    velocity: Callable[..., torch.Tensor],
    noise: torch.Tensor,
    label: str,
    what: str,
    grid: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, _Recorder]:
    cond = {"tokens": torch.zeros(noise.shape[0], 1)}
    recorder = _Recorder(velocity, noise, cond, label)
    pristine = noise.clone()
    try:
        out = solver.sample(recorder, noise, grid=grid, cond=cond, generator=generator)
    except ConformanceError:
        raise
    except Exception as error:
        _fail(label, f"{what}: sample() raised {type(error).__name__}: {error}")
    _ensure(
        isinstance(out, torch.Tensor),
        label,
        f"{what}: sample() must return a tensor, got {type(out).__name__}",
    )
    _ensure(
        tuple(out.shape) == tuple(noise.shape),
        label,
        f"{what}: sample() returned shape {tuple(out.shape)}, want the noise's {tuple(noise.shape)}",
    )
    _ensure(
        out.dtype == noise.dtype,
        label,
        f"{what}: sample() returned {out.dtype}, want the noise's {noise.dtype}",
    )
    _ensure(out.device == noise.device, label, f"{what}: sample() returned a tensor on {out.device}")
    _ensure(bool(torch.isfinite(out).all()), label, f"{what}: sample() returned non-finite values")
    _ensure(torch.equal(noise, pristine), label, f"{what}: sample() modified the noise in place")
    _ensure(bool(recorder.times), label, f"{what}: sample() never called the velocity function")
    return out, recorder


def _check_grid(solver: Any, label: str) -> torch.Tensor:
    grid = solver.default_grid()
    _ensure(
        isinstance(grid, torch.Tensor) and grid.ndim == 1 and grid.numel() >= 2 and grid.is_floating_point(),
        label,
        f"default_grid() must return a 1-D float tensor of at least 2 times, got {grid!r}",
    )
    times = grid.detach().double().cpu()
    _ensure(
        bool((times[1:] < times[:-1]).all()),
        label,
        f"default_grid() must strictly decrease: {times.tolist()}",
    )
    _ensure(
        0.98 <= float(times[0]) <= 1.0,
        label,
        f"default_grid() must start at t=1 (pure noise; at most 2% below), got {float(times[0])}",
    )
    _ensure(
        float(times[-1]) == 0.0, label, f"default_grid() must end at t=0 (clean data), got {float(times[-1])}"
    )
    return grid


def check_solver(
    solver: Any,
    *,
    shape: tuple[int, ...] = (3, 2, 4, 4),
    stochastic: bool | None = None,
    custom_grid: bool = True,
    atol: float = 1e-4,
) -> None:
    """Check a solver (sampler) against the contract.

    Checked: a string `name`; `default_grid()` strictly decreasing from 1 to 0; `sample(velocity, noise,
    grid=None, cond=None, generator=None)` returns the noise's shape, dtype and device, finite, without
    touching the noise, for float32 and float16 noise; every velocity call gets `x` in the noise's
    shape and dtype, `t` of shape `[N]` in [0, 1] and the caller's `cond`; on the point-mass field
    (`point_mass_velocity`, the data is one known `x0`) the result is `x0` (to `atol`, float32); a
    seeded generator reproduces the sample and the global RNG is left alone; a grid that does not
    decrease to 0 is refused. The declared `stochastic` (or the argument) must match: another seed
    changes the sample exactly when it is True. A deterministic solver must also give each batch row
    the result it gets alone, and the same result for `grid=default_grid()` as for `grid=None`. With
    `custom_grid` (default), a given grid must be used and the point-mass result stays exact.
    """
    label = f"solver {getattr(solver, 'name', type(solver).__name__)!r}"
    _ensure(
        isinstance(getattr(solver, "name", None), str) and bool(solver.name), label, "needs a string `name`"
    )
    _ensure(
        isinstance(getattr(solver, "stochastic", None), bool),
        label,
        "needs a bool attribute `stochastic` (True if the sample depends on the generator)",
    )
    grid = _check_grid(solver, label)
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(shape, generator=generator)
    x0 = torch.rand(shape, generator=generator) * 2 - 1
    scale = 1.0 + float(x0.abs().max())

    out, _ = _run(solver, point_mass_velocity(x0, noise), noise, label, "point-mass field, float32")
    error = _max_difference(out, x0)
    _ensure(
        error <= atol * scale,
        label,
        f"on the point-mass field (data = one known x0; v = (x - x0)/t) the result misses x0 by {error:.3g}; "
        "every consistent solver returns x0 exactly there (check the update's signs and time steps)",
    )
    half_noise = noise.to(torch.float16)
    half_out, _ = _run(
        solver, point_mass_velocity(x0, half_noise), half_noise, label, "point-mass field, float16"
    )
    error = _max_difference(half_out, x0)
    _ensure(
        error <= 2e-2 * scale, label, f"with float16 noise the point-mass result misses x0 by {error:.3g}"
    )

    field = gaussian_velocity(0.5)
    state = torch.get_rng_state()
    first, _ = _run(solver, field, noise, label, "Gaussian field", generator=torch.Generator().manual_seed(1))
    _ensure(
        torch.equal(state, torch.get_rng_state()),
        label,
        "drew from torch's global RNG although a generator was given; draw noise from `generator`",
    )
    second, _ = _run(
        solver, field, noise, label, "Gaussian field", generator=torch.Generator().manual_seed(1)
    )
    _ensure(
        torch.equal(first, second),
        label,
        "the same seeded generator gave different samples "
        f"(max difference {_max_difference(first, second):.3g})",
    )
    other, _ = _run(solver, field, noise, label, "Gaussian field", generator=torch.Generator().manual_seed(2))
    changes = not torch.equal(first, other)
    declared = solver.stochastic if stochastic is None else stochastic
    if declared is False:
        _ensure(not changes, label, "is declared deterministic but another generator seed changed the sample")
    if declared is True:
        _ensure(changes, label, "is declared stochastic but another generator seed left the sample unchanged")
    if not changes:
        _check_deterministic_solver(solver, field, noise, grid, first, label)
    _check_bad_grid_refused(solver, noise, label)
    if custom_grid:
        _check_custom_grid(solver, x0, noise, grid, first if not changes else None, label, atol * scale)


def _check_deterministic_solver(
    solver: Any,
    field: Callable[..., torch.Tensor],
    noise: torch.Tensor,
    grid: torch.Tensor,
    batch_result: torch.Tensor,
    label: str,
) -> None:
    plain, _ = _run(solver, field, noise, label, "Gaussian field, no generator")
    _ensure(
        torch.equal(plain, batch_result), label, "a deterministic solver's result depends on the generator"
    )
    explicit, _ = _run(solver, field, noise, label, "Gaussian field, grid=default_grid()", grid=grid)
    difference = _max_difference(explicit, batch_result)
    _ensure(
        difference <= 1e-6,
        label,
        f"grid=default_grid() and grid=None gave different samples (max difference {difference:.3g})",
    )
    for i in range(noise.shape[0]):
        alone, _ = _run(solver, field, noise[i : i + 1], label, f"row {i} alone")
        difference = _max_difference(alone[0], batch_result[i])
        _ensure(
            difference <= 1e-5,
            label,
            f"batching changes samples: row {i} alone differs from that row in a batch by {difference:.3g}",
        )


def _check_bad_grid_refused(solver: Any, noise: torch.Tensor, label: str) -> None:
    field = gaussian_velocity(0.5)
    try:
        solver.sample(field, noise, grid=torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64))
    except Exception:
        return
    _fail(label, "accepted the increasing grid [0, 0.5, 1]; a grid must decrease from 1 to 0, refuse others")


def _check_custom_grid(
    solver: Any,
    x0: torch.Tensor,
    noise: torch.Tensor,
    default_grid: torch.Tensor,
    default_result: torch.Tensor | None,
    label: str,
    tolerance: float,
) -> None:
    custom = torch.tensor([1.0, 0.8, 0.55, 0.3, 0.1, 0.0], dtype=torch.float64)
    if custom.shape == default_grid.shape and torch.allclose(custom, default_grid.double().cpu()):
        custom = torch.tensor([1.0, 0.7, 0.35, 0.0], dtype=torch.float64)
    what = f"the valid grid {custom.tolist()} (pass custom_grid=False if the solver takes no grid)"
    out, _ = _run(solver, point_mass_velocity(x0, noise), noise, label, what, grid=custom)
    error = _max_difference(out, x0)
    _ensure(
        error <= tolerance,
        label,
        f"with the grid {custom.tolist()} the point-mass result misses x0 by {error:.3g}",
    )
    if default_result is not None:
        changed, _ = _run(solver, gaussian_velocity(0.5), noise, label, "custom grid", grid=custom)
        _ensure(
            _max_difference(changed, default_result) > 1e-6,
            label,
            f"the grid {custom.tolist()} gave the default grid's sample: the grid argument is ignored",
        )


# ---- policies --------------------------------------------------------------------------------------

POLICY_PROMPTS = ("a red circle", "two squares")


def _policy_inputs(policy: Any, label: str) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    shape = getattr(policy, "latent_shape", None)
    _ensure(
        isinstance(shape, tuple) and bool(shape) and all(isinstance(d, int) and d > 0 for d in shape),
        label,
        f"needs `latent_shape`, a tuple of positive ints (one latent without the batch), got {shape!r}",
    )
    conditioned = isinstance(policy, ConditionedPolicy)  # an editing policy: prompts with source images
    encoder = "encode_items" if conditioned else "encode_prompts"
    try:
        if conditioned:
            sources = _default_images(len(POLICY_PROMPTS))
            cond = policy.encode_items(
                [PromptItem(p, {SOURCE_IMAGE: s}) for p, s in zip(POLICY_PROMPTS, sources, strict=True)]
            )
        else:
            cond = policy.encode_prompts(list(POLICY_PROMPTS))
    except Exception as error:
        _fail(label, f"{encoder} raised {type(error).__name__}: {error}")
    _check_cond(cond, len(POLICY_PROMPTS), label, encoder)
    null = policy.null_cond_for(cond) if conditioned else policy.null_cond(len(POLICY_PROMPTS))
    _check_cond(null, len(POLICY_PROMPTS), label, "null_cond_for" if conditioned else "null_cond")
    _ensure(set(null) == set(cond), label, f"null_cond keys {sorted(null)} differ from {sorted(cond)}")
    device = next(iter(cond.values())).device
    generator = torch.Generator().manual_seed(0)
    x = torch.randn((len(POLICY_PROMPTS), *shape), generator=generator).to(device)
    t = torch.tensor([0.3, 0.8], device=device)
    return x, t, cond


def _check_cond(cond: Any, n: int, label: str, what: str) -> None:
    _ensure(
        isinstance(cond, dict) and bool(cond), label, f"{what} must return a dict of tensors, got {cond!r}"
    )
    for key, value in cond.items():
        _ensure(
            isinstance(value, torch.Tensor) and value.ndim >= 1 and value.shape[0] == n,
            label,
            f"{what}[{key!r}] must be a batch-first tensor with {n} rows, "
            f"got {getattr(value, 'shape', value)}",
        )


def _velocities(
    policy: Any, x: torch.Tensor, t: torch.Tensor, cond: Any, label: str
) -> dict[str, torch.Tensor]:
    out = {}
    with torch.no_grad():
        for view in VIEWS:
            try:
                v = policy.velocity(view, x, t, cond)
            except Exception as error:
                _fail(label, f"velocity({view!r}) raised {type(error).__name__}: {error}")
            _ensure(
                isinstance(v, torch.Tensor) and v.shape == x.shape and v.dtype == x.dtype,
                label,
                f"velocity({view!r}) must return x's shape {tuple(x.shape)} and dtype {x.dtype}, got "
                f"{getattr(v, 'shape', v)} {getattr(v, 'dtype', '')}",
            )
            _ensure(bool(torch.isfinite(v).all()), label, f"velocity({view!r}) returned non-finite values")
            out[view] = v.detach().clone()
    return out


def _perturb(policy: Any, scale: float, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, parameter in policy.trainable_parameters():
            noise = torch.randn(parameter.shape, generator=generator).to(parameter.device, parameter.dtype)
            parameter.add_(noise * scale * (1.0 + parameter.detach().abs().mean()))


def _check_old_parameters(
    policy: Any, x: torch.Tensor, t: torch.Tensor, cond: Any, label: str, old_view: torch.Tensor, atol: float
) -> None:
    """After `refresh_old(0.0)`: `old_parameters()` mirrors `trainable_parameters()` name for name and
    value for value, and is the old view's live storage (writing it moves `velocity('old')`)."""
    trained = dict(policy.trainable_parameters())
    try:
        old = dict(policy.old_parameters())
    except Exception as error:
        _fail(label, f"old_parameters() raised {type(error).__name__}: {error}")
    _ensure(
        old.keys() == trained.keys(),
        label,
        "old_parameters() names differ from trainable_parameters(): "
        f"{sorted(old.keys() ^ trained.keys())[:3]}",
    )
    for name, tensor in old.items():
        _ensure(
            tuple(tensor.shape) == tuple(trained[name].shape)
            and _max_difference(tensor, trained[name]) <= atol,
            label,
            f"after refresh_old(0.0), old_parameters()[{name!r}] is not the trained tensor's value",
        )
    saved = {name: tensor.detach().clone() for name, tensor in old.items()}
    with torch.no_grad():
        for tensor in old.values():
            tensor.add_(0.05 * (1.0 + tensor.abs().mean()))
    moved = _velocities(policy, x, t, cond, label)["old"]
    _ensure(
        _max_difference(moved, old_view) > atol,
        label,
        "writing old_parameters() did not change velocity('old'): they must be the old view's own tensors",
    )
    with torch.no_grad():
        for name, tensor in old.items():
            tensor.copy_(saved[name])


def check_policy(policy: Any, directory: str | Path, *, atol: float = 1e-5, scale: float = 0.05) -> None:
    """Check a freshly built policy against the contract; it is trained a little and modified.

    Checked: `name` and `latent_shape`; `encode_prompts` / `null_cond` give batch-first tensor dicts
    with the same keys (a `ConditionedPolicy`: `encode_items` of prompts with source images and
    `null_cond_for`); `velocity(view, x, t, cond)` for every view of `VIEWS` returns x's shape and
    dtype, finite, and the same on a repeated call; an unknown view raises; before training the three
    views agree (within `atol`: `old` starts as `current`, and the reference is the base model);
    `trainable_parameters()` is non-empty, requires grad, and a loss on `current` gives them gradients
    while `old` and `reference` carry none; `train(True)` / `train(False)` return the policy; moving
    the trainable parameters moves `current` only; `refresh_old(1.0)` keeps `old`, `refresh_old(0.0)`
    makes it `current`; `old_parameters()` then mirrors the trainable ones and is the old view's
    storage; the reference never moves; `save_trainable` into `directory` then
    `load_trainable` after further changes restores `current` and `old` to the saved weights;
    `decode` gives images `[N,3,H,W]` (or a video policy's frames `[N,F,3,H,W]`) in [0, 1]; `.to(device)`
    returns the policy.
    """
    label = f"policy {getattr(policy, 'name', type(policy).__name__)!r}"
    _ensure(
        isinstance(getattr(policy, "name", None), str) and bool(policy.name), label, "needs a string `name`"
    )
    _ensure(
        policy.train(False) is policy, label, "train(False) must return the policy (like nn.Module.train)"
    )
    x, t, cond = _policy_inputs(policy, label)

    def agree(a: torch.Tensor, b: torch.Tensor, problem: str) -> None:
        """`a` and `b` within `atol`, else `problem` with its `{difference}` filled in."""
        difference = _max_difference(a, b)
        _ensure(difference <= atol, label, problem.format(difference=f"{difference:.3g}"))

    start = _velocities(policy, x, t, cond, label)
    again = _velocities(policy, x, t, cond, label)
    for view in VIEWS:
        agree(start[view], again[view], f"velocity({view!r}) changed on a repeated call by {{difference}}")
    for view in ("old", "reference"):
        agree(
            start[view],
            start["current"],
            f"before training, velocity({view!r}) differs from 'current' by {{difference}}; a new policy's "
            "old view starts as its current one and the reference is the base model",
        )
    try:
        policy.velocity("nonsense", x, t, cond)
    except Exception:
        pass
    else:
        _fail(label, "velocity('nonsense') did not raise; an unknown view must be an error")

    parameters = [p for _, p in policy.trainable_parameters()]
    _ensure(bool(parameters), label, "trainable_parameters() is empty")
    _ensure(all(p.requires_grad for p in parameters), label, "a trainable parameter does not require grad")
    _ensure(policy.train(True) is policy, label, "train(True) must return the policy")
    v = policy.velocity("current", x, t, cond)
    _ensure(v.requires_grad, label, "velocity('current') carries no graph to the trainable parameters")
    (v.float() - x.float()).square().mean().backward()  # a target away from v: gradients even at v = 0
    _ensure(
        any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in parameters),
        label,
        "a loss on velocity('current') gave the trainable parameters no gradient",
    )
    for view in ("old", "reference"):
        _ensure(
            not policy.velocity(view, x, t, cond).requires_grad,
            label,
            f"velocity({view!r}) requires grad; only the current view is trained",
        )
    for parameter in parameters:
        parameter.grad = None
    policy.train(False)

    _perturb(policy, scale, seed=1)
    moved = _velocities(policy, x, t, cond, label)
    _ensure(
        _max_difference(moved["current"], start["current"]) > atol,
        label,
        "changing trainable_parameters() did not change velocity('current')",
    )
    for view in ("old", "reference"):
        agree(
            moved[view],
            start[view],
            f"changing the trainable parameters moved velocity({view!r}) by {{difference}}",
        )
    policy.refresh_old(1.0)
    kept = _velocities(policy, x, t, cond, label)
    agree(
        kept["old"], start["old"], "refresh_old(1.0) changed the old view by {difference} (decay 1 keeps it)"
    )
    policy.refresh_old(0.0)
    synced = _velocities(policy, x, t, cond, label)
    agree(synced["old"], synced["current"], "after refresh_old(0.0) old differs from current by {difference}")
    agree(synced["reference"], start["reference"], "refresh_old moved the reference view by {difference}")
    _check_old_parameters(policy, x, t, cond, label, synced["old"], atol)

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    policy.save_trainable(str(directory))
    _ensure(any(directory.iterdir()), label, f"save_trainable wrote nothing into {directory}")
    _perturb(policy, scale, seed=2)
    policy.refresh_old(0.5)
    policy.load_trainable(str(directory))
    loaded = _velocities(policy, x, t, cond, label)
    for view in ("current", "old"):
        agree(
            loaded[view],
            synced["current"],
            f"after load_trainable, velocity({view!r}) differs from the saved weights' by {{difference}}",
        )
    agree(loaded["reference"], start["reference"], "load_trainable moved the reference view by {difference}")

    with torch.no_grad():
        images = policy.decode(x)
    shape = tuple(getattr(images, "shape", ()))
    _ensure(
        isinstance(images, torch.Tensor)
        and ((len(shape) == 4 and shape[:2] == (x.shape[0], 3)) or (len(shape) == 5 and shape[2] == 3))
        and shape[0] == x.shape[0],
        label,
        f"decode must return images [N,3,H,W] (a video policy: frames [N,F,3,H,W]), got {shape or images}",
    )
    _ensure(
        images.is_floating_point() and float(images.min()) >= 0 and float(images.max()) <= 1,
        label,
        "decode must return float images in [0, 1]",
    )
    _ensure(policy.to(x.device) is policy, label, ".to(device) must return the policy")
