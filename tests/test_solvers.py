"""nft_solvers: grids, the public API, options, the Solver contract and the plugin hook."""

from __future__ import annotations

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

import pluggy
import pytest
import torch

import nft_solvers
from nft_core.errors import ConfigError, UserError
from nft_core.protocols import Solver
from nft_solvers.grids import grid_times, shift_time, shifted_grid, uniform_grid

NATIVE = ["euler", "heun", "dpm2", "flow-sde"]


def linear_velocity(x, t, cond=None):
    """The exact velocity for data x0 = 0 (a point mass): v = x / t."""
    return x / t.view(-1, *([1] * (x.ndim - 1)))


# --- grids ----------------------------------------------------------------------------------


def test_uniform_grid():
    grid = uniform_grid(4)
    assert grid.dtype == torch.float64
    assert grid.tolist() == [1.0, 0.75, 0.5, 0.25, 0.0]


def test_shifted_grid_formula():
    for shift in (0.5, 1.0, 3.0, 7.5):
        grid = shifted_grid(10, shift)
        t = uniform_grid(10)
        torch.testing.assert_close(grid, shift * t / (1 + (shift - 1) * t))
        assert grid[0].item() == 1.0 and grid[-1].item() == 0.0
        assert (grid[1:] < grid[:-1]).all()
    assert shifted_grid(10, 1.0).tolist() == uniform_grid(10).tolist()
    # SD3 shift 3: t = 0.5 -> 0.75 (more steps at high noise)
    assert shift_time(0.5, 3.0) == pytest.approx(0.75)
    assert (shifted_grid(10, 3.0)[1:-1] > uniform_grid(10)[1:-1]).all()


def test_grid_dtype_and_device():
    grid = shifted_grid(5, 3.0, dtype=torch.float32, device="cpu")
    assert grid.dtype == torch.float32 and grid.device.type == "cpu"
    with pytest.raises(ValueError):
        uniform_grid(0)
    with pytest.raises(ValueError):
        shift_time(0.5, 0.0)


@pytest.mark.parametrize(
    "bad",
    [
        [1.0],
        [1.0, 0.5],  # does not end at 0
        [1.0, 0.5, 0.5, 0.0],  # not strictly decreasing
        [0.0, 0.5, 1.0],  # increasing
        [1.5, 0.5, 0.0],  # starts above 1
        [1.0, float("nan"), 0.0],
    ],
)
def test_bad_grids_are_user_errors(bad):
    with pytest.raises(UserError):
        grid_times(torch.tensor(bad))


def test_grid_may_start_below_one():
    assert grid_times(torch.tensor([0.999, 0.5, 0.0], dtype=torch.float64)) == [0.999, 0.5, 0.0]


# --- API and options ------------------------------------------------------------------------


def test_available_and_load():
    assert nft_solvers.available() == ["euler", "heun", "dpm2", "flow-sde", "diffusers"]
    for name in NATIVE:
        solver = nft_solvers.load(name, steps=3, shift=2.0)
        assert isinstance(solver, Solver)
        assert solver.name == name
        grid = solver.default_grid()
        assert grid.shape == (4,) and grid[0] == 1.0 and grid[-1] == 0.0
        torch.testing.assert_close(grid, shifted_grid(3, 2.0))


def test_default_steps():
    assert nft_solvers.load("euler").steps == 40
    assert nft_solvers.load("dpm2").steps == 10
    assert nft_solvers.load("heun").steps == 20
    assert nft_solvers.load("flow-sde").options.noise_level == 0.7
    assert all(nft_solvers.load(name).shift == 1.0 for name in NATIVE)


def test_unknown_solver_lists_the_available_ones():
    with pytest.raises(UserError, match="available: euler, heun, dpm2"):
        nft_solvers.load("rk45")


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"steps": 0}, "steps"),
        ({"shift": 0.0}, "shift"),
        ({"shift": -1.0}, "shift"),
        ({"step": 10}, "step: unknown key"),
        ({"noise_level": 0.5}, "noise_level: unknown key"),  # only flow-sde has it
    ],
)
def test_bad_options_are_config_errors(options, match):
    with pytest.raises(ConfigError, match=match):
        nft_solvers.load("dpm2", **options)


def test_options_from_a_toml_sampler_table():
    table = tomllib.loads('[sampler]\nname = "dpm2"\nsteps = 10\nshift = 3.0\n')["sampler"]
    name = table.pop("name")
    options = nft_solvers.options_model(name).model_validate(table)
    assert options.steps == 10 and options.shift == 3.0
    solver = nft_solvers.load(name, **table)
    torch.testing.assert_close(solver.default_grid(), shifted_grid(10, 3.0))
    sde = tomllib.loads('name = "flow-sde"\nsteps = 12\nnoise_level = 0.5\n')
    assert nft_solvers.load(sde.pop("name"), **sde).options.noise_level == 0.5


# --- the Solver contract -------------------------------------------------------------------


@pytest.mark.parametrize("name", NATIVE)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_contract_shape_dtype_time_argument(name, dtype):
    noise = torch.randn(3, 2, 4, 5, generator=torch.Generator().manual_seed(0)).to(dtype)
    seen = []

    def velocity(x, t, cond):
        assert x.shape == noise.shape and x.dtype == dtype
        assert t.shape == (3,) and t.dtype == dtype and t.device == noise.device
        assert (t == t[0]).all() and 0 < t[0] <= 1
        assert cond == {"prompt": "a"}
        seen.append(float(t[0]))
        return linear_velocity(x, t)

    solver = nft_solvers.load(name, steps=4)
    out = solver.sample(velocity, noise, cond={"prompt": "a"}, generator=torch.Generator().manual_seed(0))
    assert out.shape == noise.shape and out.dtype == dtype
    assert seen[0] == 1.0
    assert seen == sorted(seen, reverse=True)
    # x0 = 0 for this velocity; deterministic solvers hit it (flow-sde adds noise on the way)
    if name != "flow-sde":
        assert out.float().abs().max() < 1e-2


@pytest.mark.parametrize("name", NATIVE)
def test_a_given_grid_overrides_steps(name):
    grid = torch.tensor([1.0, 0.7, 0.4, 0.1, 0.0])
    times = []

    def velocity(x, t, cond):
        times.append(round(float(t[0]), 6))
        return linear_velocity(x, t)

    nft_solvers.load(name, steps=50).sample(velocity, torch.randn(2, 3), grid=grid)
    assert sorted(set(times), reverse=True) == [1.0, 0.7, 0.4, 0.1]


@pytest.mark.parametrize("name", NATIVE)
def test_solvers_are_pure(name):
    """Same inputs, same output; no state carried between calls; the noise is not modified."""
    noise = torch.randn(4, 3, generator=torch.Generator().manual_seed(1))
    kept = noise.clone()
    solver = nft_solvers.load(name, steps=5)

    def velocity(x, t, cond):
        return x * 0.5 + t.view(-1, 1)

    first = solver.sample(velocity, noise, generator=torch.Generator().manual_seed(2))
    solver.sample(lambda x, t, c: -x, noise, generator=torch.Generator().manual_seed(9))
    second = solver.sample(velocity, noise, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    torch.testing.assert_close(noise, kept, rtol=0, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("name", NATIVE)
def test_cuda(name):
    noise = torch.randn(2, 3, device="cuda")
    out = nft_solvers.load(name, steps=4).sample(
        linear_velocity, noise, generator=torch.Generator("cuda").manual_seed(0)
    )
    assert out.device.type == "cuda" and out.dtype == noise.dtype


# --- plugin hook ----------------------------------------------------------------------------


def test_plugin_registers_the_builtin_table():
    from nft_core import hookspecs
    from nft_solvers import plugin

    manager = pluggy.PluginManager("nft")
    manager.add_hookspecs(hookspecs)
    manager.register(plugin)
    registered = {}

    def register(name, factory, options=None, description=""):
        registered[name] = (factory, options)

    manager.hook.register_solvers(register=register)
    assert list(registered) == nft_solvers.available()
    for name, (factory, options) in registered.items():
        assert options is nft_solvers.options_model(name)
        if name != "diffusers":  # needs diffusers; tested in test_solvers_diffusers.py
            solver = factory(**options.model_validate({"steps": 3}).model_dump())
            assert solver.name == name and solver.steps == 3


@pytest.mark.parametrize(("steps", "shift"), [(10, 3.0), (40, 3.0), (6, 1.0), (28, 3.0)])
def test_the_diffusers_grid_is_the_flow_match_euler_schedulers(steps, shift):
    from diffusers import FlowMatchEulerDiscreteScheduler

    from nft_solvers import load

    scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    scheduler.set_timesteps(steps)
    grid = load("euler", steps=steps, shift=shift, grid="diffusers").default_grid()
    torch.testing.assert_close(grid.float(), scheduler.sigmas, rtol=0, atol=1e-7)
    if (steps, shift) == (10, 3.0):  # SD3's 10-step grid ends ..., 0.278, 0.009, 0 (not ..., 0.43, 0.25, 0)
        assert [round(float(t), 4) for t in grid[-3:]] == [0.278, 0.0089, 0.0]
