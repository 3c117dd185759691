"""The `diffusers` adapter: diffusers' flow schedulers as black-box solvers, checked against ours."""

from __future__ import annotations

import pytest
import torch

import nft_solvers
from nft_core.errors import UserError
from nft_core.protocols import Solver
from nft_solvers.grids import shifted_grid

pytest.importorskip("diffusers")

DIM = 6
MU = torch.linspace(-1.0, 2.0, DIM, dtype=torch.float64)
SCALE = torch.linspace(0.4, 2.0, DIM, dtype=torch.float64)


def gaussian_velocity(x, t, cond=None):
    """Exact flow velocity for data N(MU, SCALE^2) (see test_solvers_convergence.py)."""
    t = t.view(-1, *([1] * (x.ndim - 1)))
    variance = (1 - t) ** 2 * SCALE**2 + t**2
    return -MU + (t - (1 - t) * SCALE**2) / variance * (x - (1 - t) * MU)


def noise(n=16, seed=0):
    return torch.randn(n, DIM, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("shift", [1.0, 3.0])
@pytest.mark.parametrize("steps", [4, 10, 25])
def test_flow_match_euler_matches_native_euler(steps, shift):
    eps = noise()
    adapter = nft_solvers.load(
        "diffusers", scheduler="FlowMatchEulerDiscreteScheduler", steps=steps, shift=shift
    )
    assert isinstance(adapter, Solver)
    torch.testing.assert_close(adapter.default_grid(), shifted_grid(steps, shift))
    ours = nft_solvers.load("euler", steps=steps, shift=shift).sample(gaussian_velocity, eps)
    theirs = adapter.sample(gaussian_velocity, eps)
    assert theirs.dtype == torch.float64
    assert (theirs - ours).abs().max() < 1e-5  # diffusers keeps sigmas and the step in float32


def test_flow_match_euler_takes_a_custom_grid():
    eps = noise()
    grid = torch.tensor([1.0, 0.93, 0.8, 0.5, 0.21, 0.05, 0.0], dtype=torch.float64)
    adapter = nft_solvers.load("diffusers", steps=50)
    ours = nft_solvers.load("euler").sample(gaussian_velocity, eps, grid=grid)
    assert (adapter.sample(gaussian_velocity, eps, grid=grid) - ours).abs().max() < 1e-5


@pytest.mark.parametrize("shift", [1.0, 3.0])
@pytest.mark.parametrize("steps", [5, 10, 20])
def test_dpm_solver_multistep_matches_native_dpm2_on_its_grid(steps, shift):
    """diffusers' flow schedule starts at t = 1 - 1/1000; on that grid dpm2 is the same algorithm."""
    eps = noise()
    adapter = nft_solvers.load("diffusers", scheduler="DPMSolverMultistepScheduler", steps=steps, shift=shift)
    grid = adapter.default_grid()
    assert grid.shape == (steps + 1,) and grid[-1] == 0.0
    assert grid[0] == pytest.approx(shift * 0.999 / (1 + (shift - 1) * 0.999), abs=1e-6)
    theirs = adapter.sample(gaussian_velocity, eps)
    ours = nft_solvers.load("dpm2").sample(gaussian_velocity, eps, grid=grid)
    assert (theirs - ours).abs().max() < 1e-5
    # passing its own grid back is allowed; any other grid is not
    torch.testing.assert_close(adapter.sample(gaussian_velocity, eps, grid=grid), theirs)
    with pytest.raises(UserError, match="takes no custom grid"):
        adapter.sample(gaussian_velocity, eps, grid=shifted_grid(steps, shift))


def test_flow_match_heun_matches_native_heun_on_its_grid():
    eps = noise()
    adapter = nft_solvers.load("diffusers", scheduler="FlowMatchHeunDiscreteScheduler", steps=8, shift=3.0)
    grid = adapter.default_grid()
    calls = []

    def velocity(x, t, cond):
        calls.append(float(t[0]))
        return gaussian_velocity(x, t)

    theirs = adapter.sample(velocity, eps)
    assert len(calls) == 2 * 8 - 1
    ours = nft_solvers.load("heun").sample(gaussian_velocity, eps, grid=grid)
    assert (theirs - ours).abs().max() < 1e-5


def test_unipc_uses_our_grid_and_is_second_order():
    eps = noise()
    exact = MU + SCALE * eps
    errors = []
    for steps in (16, 32, 64):
        adapter = nft_solvers.load("diffusers", scheduler="UniPCMultistepScheduler", steps=steps)
        errors.append(((adapter.sample(gaussian_velocity, eps) - exact) ** 2).mean().sqrt().item())
    assert errors[0] / errors[1] > 3.0 and errors[1] / errors[2] > 3.0, errors


def test_velocity_gets_the_sigma_not_the_rounded_timestep():
    """UniPC/DPM round timesteps to integers; the velocity must see the exact sigma = t."""
    times = []

    def velocity(x, t, cond):
        times.append(float(t[0]))
        return gaussian_velocity(x, t)

    grid = torch.tensor([1.0, 0.6543, 0.3217, 0.0], dtype=torch.float64)
    nft_solvers.load("diffusers", scheduler="UniPCMultistepScheduler").sample(velocity, noise(), grid=grid)
    assert times == pytest.approx([1.0 - 1e-6, 0.6543, 0.3217], abs=1e-6)


def test_float32_images_shape():
    x = torch.randn(2, 4, 8, 8)
    out = nft_solvers.load("diffusers", scheduler="DPMSolverMultistepScheduler", steps=4).sample(
        lambda x, t, cond: x / t.view(-1, 1, 1, 1), x
    )
    assert out.shape == x.shape and out.dtype == torch.float32
    assert out.abs().max() < 0.01  # the data is the point 0 (up to t_max = 0.999)


def test_unknown_scheduler_is_a_user_error_with_names():
    with pytest.raises(UserError, match="FlowMatchEulerDiscreteScheduler"):
        nft_solvers.load("diffusers", scheduler="NoSuchScheduler")
    with pytest.raises(UserError, match="no flow-matching mode"):
        nft_solvers.load("diffusers", scheduler="DDIMScheduler")


def test_scheduler_shift_in_config_is_refused_when_we_pass_the_grid():
    with pytest.raises(UserError, match="shift"):
        nft_solvers.load("diffusers", config={"shift": 3.0})


def test_config_reaches_the_scheduler():
    adapter = nft_solvers.load(
        "diffusers", scheduler="DPMSolverMultistepScheduler", steps=6, config={"solver_order": 1}
    )
    assert adapter.scheduler_config["solver_order"] == 1
    assert adapter.scheduler_config["use_flow_sigmas"] is True
    # first order DPM-Solver++ is Euler: same as native euler on the scheduler's grid
    eps = noise()
    grid = adapter.default_grid()
    ours = nft_solvers.load("euler").sample(gaussian_velocity, eps, grid=grid)
    assert (adapter.sample(gaussian_velocity, eps) - ours).abs().max() < 1e-5
    with pytest.raises(UserError, match="solver.config"):
        nft_solvers.load("diffusers", config={"no_such_argument": 1})
