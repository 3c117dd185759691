"""nft-solver-midpoint: discovered after pip install, keeps the solver contract, converges at order 2."""

from __future__ import annotations

import math

import pytest
import torch
from nft_solver_midpoint import MidpointSolver

from nft_core.errors import ConfigError
from nft_core.testing import check_listed, check_solver, gaussian_velocity


def test_installed_plugin_is_discovered_by_nft_plugins():
    check_listed("nft-solver-midpoint", {"solvers": ["midpoint"]}, version="0.1.0")


@pytest.mark.parametrize("options", [{"steps": 4}, {"steps": 7, "shift": 3.0}])
def test_keeps_the_solver_contract(options):
    check_solver(MidpointSolver(**options), stochastic=False)


@pytest.fixture
def registered():
    """The plugin registered in this process (as `nft` does after pip install), removed afterwards."""
    import nft_solver_midpoint

    from nft_core import registry
    from nft_core.plugins import load_plugins

    manager = load_plugins()
    added = not manager.has_plugin("nft-solver-midpoint")
    if added:
        manager.register(nft_solver_midpoint, name="nft-solver-midpoint")
    registry.clear_cache()
    yield
    if added:
        manager.unregister(name="nft-solver-midpoint")
    registry.clear_cache()


def fitted_order(steps: list[int], errors: list[float]) -> float:
    """Least-squares slope of -log(error) against log(steps)."""
    xs = [math.log(n) for n in steps]
    ys = [math.log(e) for e in errors]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    covariance = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    return -covariance / sum((x - mean_x) ** 2 for x in xs)


def test_second_order_on_a_linear_ode():
    # dx/dt = (1 + t) x from t=1 to t=0: x(0) = x(1) exp(-3/2)
    def velocity(x, t, cond):
        return (1 + t).view(-1, 1) * x

    noise = torch.randn(8, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    steps = [8, 16, 32, 64]
    errors = [
        float((MidpointSolver(steps=n).sample(velocity, noise) - noise * math.exp(-1.5)).abs().max())
        for n in steps
    ]
    assert abs(fitted_order(steps, errors) - 2.0) < 0.15, errors


def test_converges_on_a_gaussian_flow():
    # data N(0, s^2): the exact probability-flow ODE maps noise eps at t=1 to s * eps at t=0. Midpoint is
    # observed to converge even faster (order 3) on these flows, so only "at least second order" is asserted.
    scale = 0.5
    noise = torch.randn(64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    steps = [4, 8, 16, 32]
    errors = [
        float((MidpointSolver(steps=n).sample(gaussian_velocity(scale), noise) - scale * noise).abs().max())
        for n in steps
    ]
    assert fitted_order(steps, errors) > 1.9 and errors[-1] < 1e-4, errors


def test_two_velocity_calls_per_step_never_at_t0():
    times = []

    def velocity(x, t, cond):
        times.append(float(t[0]))
        return -x

    MidpointSolver(steps=5).sample(velocity, torch.ones(2, 3))
    assert len(times) == 10 and min(times) > 0


def test_solver_table_is_validated_by_the_plugin_with_its_toml_path(registered):
    from nft_core.config import validate
    from nft_core.registry import create

    data = {"solver": {"name": "midpoint", "steps": 0}, "reward": [{"name": "shapes-geneval"}]}
    with pytest.raises(ConfigError, match=r"solver\.steps: .*greater than or equal to 1"):
        validate(data)
    data["solver"] = {"name": "midpoint", "stepz": 4}
    with pytest.raises(ConfigError, match=r"solver\.stepz: unknown key"):
        validate(data)
    assert isinstance(create("solvers", "midpoint", {"steps": 3}), MidpointSolver)
