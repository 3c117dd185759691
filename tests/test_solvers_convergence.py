"""Solvers on an analytic flow: Gaussian data, where the exact velocity and ODE solution are closed-form.

Data `x0 ~ N(mu, diag(s^2))`, noise `eps ~ N(0, I)`, `x_t = (1 - t) x0 + t eps`. Then `x_t` is
Gaussian with mean `m_t = (1 - t) mu` and per-dimension std `sigma_t = sqrt((1 - t)^2 s^2 + t^2)`,
and the flow-matching velocity `E[eps - x0 | x_t = x]` is affine:

    v(x, t) = -mu + (t - (1 - t) s^2) / sigma_t^2 * (x - m_t)   (= dm/dt + (dsigma/dt / sigma) (x - m_t))

Its probability-flow ODE keeps `(x_t - m_t) / sigma_t` constant, so it maps the noise `eps` at t=1
to `mu + s * eps` at t=0. The global error against that exact map, as a function of the number of
velocity calls, gives each solver's convergence order.
"""

from __future__ import annotations

import math
from itertools import pairwise

import pytest
import torch

import nft_solvers

DIM = 6
MU = torch.linspace(-1.0, 2.0, DIM, dtype=torch.float64)
SCALE = torch.linspace(0.4, 2.0, DIM, dtype=torch.float64)


def gaussian_velocity(x: torch.Tensor, t: torch.Tensor, cond=None) -> torch.Tensor:
    assert t.shape == (x.shape[0],) and t.dtype == x.dtype
    t = t.view(-1, *([1] * (x.ndim - 1)))
    mu, scale = MU.to(x), SCALE.to(x)
    variance = (1 - t) ** 2 * scale**2 + t**2
    return -mu + (t - (1 - t) * scale**2) / variance * (x - (1 - t) * mu)


class CountingVelocity:
    def __init__(self):
        self.calls = 0

    def __call__(self, x, t, cond=None):
        self.calls += 1
        return gaussian_velocity(x, t, cond)


def noise(n: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, DIM, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def exact_sample(eps: torch.Tensor) -> torch.Tensor:
    return MU + SCALE * eps


def rms_error(solver, eps: torch.Tensor) -> tuple[int, float]:
    velocity = CountingVelocity()
    out = solver.sample(velocity, eps)
    return velocity.calls, ((out - exact_sample(eps)) ** 2).mean().sqrt().item()


def fitted_order(calls: list[int], errors: list[float]) -> float:
    """Least-squares slope of -log(error) against log(number of velocity calls)."""
    x = torch.tensor(calls, dtype=torch.float64).log()
    y = torch.tensor(errors, dtype=torch.float64).log()
    x_centered = x - x.mean()
    return -float((x_centered * (y - y.mean())).sum() / (x_centered**2).sum())


def measure(name: str, steps: list[int], **options) -> tuple[list[int], list[float]]:
    eps = noise()
    results = [rms_error(nft_solvers.load(name, steps=n, **options), eps) for n in steps]
    return [calls for calls, _ in results], [error for _, error in results]


def test_analytic_velocity_is_the_conditional_expectation():
    """Monte-Carlo check of the closed form: E[eps - x0 | x_t] by regression on samples."""
    generator = torch.Generator().manual_seed(1)
    n, t = 200_000, 0.4
    x0 = MU + SCALE * torch.randn(n, DIM, dtype=torch.float64, generator=generator)
    eps = torch.randn(n, DIM, dtype=torch.float64, generator=generator)
    x_t = (1 - t) * x0 + t * eps
    target = eps - x0
    # per dimension the conditional expectation is affine in x_t: fit slope and intercept
    x_c = x_t - x_t.mean(0)
    slope = (x_c * (target - target.mean(0))).mean(0) / (x_c**2).mean(0)
    intercept = target.mean(0) - slope * x_t.mean(0)
    probe = torch.zeros(1, DIM, dtype=torch.float64)
    closed = gaussian_velocity(probe, torch.full((1,), t, dtype=torch.float64))[0]
    assert torch.allclose(intercept, closed, atol=0.02)
    closed_slope = gaussian_velocity(probe + 1, torch.full((1,), t, dtype=torch.float64))[0] - closed
    assert torch.allclose(slope, closed_slope, atol=0.02)


@pytest.mark.parametrize(
    ("name", "order", "steps"),
    [
        ("euler", 1.0, [16, 32, 64, 128]),
        ("heun", 2.0, [16, 32, 64, 128]),
        # DPM-Solver++(2M) on a uniform-in-t grid: the last steps stay O(1) long in
        # lambda = log((1 - t)/t), so the error is O(log(steps) / steps^2): the slope is ~1.75 here
        # and creeps up to 2 (1.84 at 1280 steps). Same numbers as diffusers' scheduler.
        ("dpm2", 2.0, [32, 64, 128, 256]),
        ("flow-sde", 1.0, [16, 32, 64, 128]),  # noise_level 0 below: Euler
    ],
)
def test_convergence_order_uniform_grid(name, order, steps):
    options = {"noise_level": 0.0} if name == "flow-sde" else {}
    calls, errors = measure(name, steps, **options)
    assert all(later < earlier for earlier, later in pairwise(errors))
    assert abs(fitted_order(calls, errors) - order) < 0.3, (calls, errors)


@pytest.mark.parametrize(("name", "order"), [("euler", 1.0), ("heun", 2.0)])
def test_convergence_order_shifted_grid(name, order):
    calls, errors = measure(name, [16, 32, 64, 128], shift=3.0)
    assert abs(fitted_order(calls, errors) - order) < 0.3, (calls, errors)


def test_dpm2_shifted_grid_converges_towards_second_order():
    # pre-asymptotic dip on the shift-3 grid (slope ~1.3-1.5 around 64 steps), then ~1.75
    calls, errors = measure("dpm2", [256, 512, 1024], shift=3.0)
    assert abs(fitted_order(calls, errors) - 2.0) < 0.35, (calls, errors)


def test_call_counts():
    eps = noise(4)
    assert rms_error(nft_solvers.load("euler", steps=7), eps)[0] == 7
    assert rms_error(nft_solvers.load("dpm2", steps=7), eps)[0] == 7
    assert rms_error(nft_solvers.load("heun", steps=7), eps)[0] == 13  # Euler last step
    assert rms_error(nft_solvers.load("flow-sde", steps=7), eps)[0] == 7


def test_second_order_solvers_beat_euler_at_few_steps():
    eps = noise()
    _, euler_40 = rms_error(nft_solvers.load("euler", steps=40), eps)
    _, dpm2_10 = rms_error(nft_solvers.load("dpm2", steps=10), eps)
    _, heun_10 = rms_error(nft_solvers.load("heun", steps=10), eps)
    assert dpm2_10 < euler_40
    assert heun_10 < euler_40


def test_one_step_solvers_return_the_data_prediction():
    """One step from t=1 to 0 is x0_hat = x - v(x, 1) for euler, dpm2 and heun alike."""
    eps = noise(8)
    x0_hat = eps - gaussian_velocity(eps, torch.ones(8, dtype=torch.float64))
    for name in ("euler", "dpm2", "heun", "flow-sde"):
        out = nft_solvers.load(name, steps=1).sample(gaussian_velocity, eps)
        torch.testing.assert_close(out, x0_hat, rtol=0, atol=1e-12)


def test_dpm2_first_steps_are_euler_steps():
    """With a grid starting at t=1, the first two dpm2 steps are first order (lambda(1) = -inf)."""
    eps = noise(8)
    grid = torch.tensor([1.0, 0.8, 0.55, 0.0], dtype=torch.float64)
    two_steps = torch.tensor([1.0, 0.8, 0.55], dtype=torch.float64)

    def euler_to(grid_part):
        x = eps
        for t, t_next in pairwise(grid_part.tolist()):
            x = x + (t_next - t) * gaussian_velocity(x, torch.full((8,), t, dtype=torch.float64))
        return x

    x_mid = euler_to(two_steps)
    x0_hat = x_mid - 0.55 * gaussian_velocity(x_mid, torch.full((8,), 0.55, dtype=torch.float64))
    out = nft_solvers.load("dpm2").sample(gaussian_velocity, eps, grid=grid)
    torch.testing.assert_close(out, x0_hat, rtol=0, atol=1e-12)


def test_dpm2_second_order_step_by_hand():
    """A grid starting below 1: the second step uses the DPM-Solver++(2M) correction."""
    eps = noise(8)
    t0, t1, t2 = 0.9, 0.6, 0.3

    def lam(t):
        return math.log((1 - t) / t)

    def v(x, t):
        return gaussian_velocity(x, torch.full((8,), t, dtype=torch.float64))

    d0 = eps - t0 * v(eps, t0)
    x1 = (t1 / t0) * eps + (1 - t1) * (1 - math.exp(lam(t0) - lam(t1))) * d0
    d1 = x1 - t1 * v(x1, t1)
    h, h_prev = lam(t2) - lam(t1), lam(t1) - lam(t0)
    data = d1 + 0.5 * (h / h_prev) * (d1 - d0)
    x2 = (t2 / t1) * x1 - (1 - t2) * (math.exp(-h) - 1) * data
    expected = x2 - t2 * v(x2, t2)
    grid = torch.tensor([t0, t1, t2, 0.0], dtype=torch.float64)
    out = nft_solvers.load("dpm2").sample(gaussian_velocity, eps, grid=grid)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


# --- flow-sde -------------------------------------------------------------------------------


def test_flow_sde_without_noise_is_euler():
    eps = noise()
    euler = nft_solvers.load("euler", steps=20).sample(gaussian_velocity, eps)
    sde = nft_solvers.load("flow-sde", steps=20, noise_level=0.0).sample(gaussian_velocity, eps)
    torch.testing.assert_close(sde, euler, rtol=0, atol=0)


def test_flow_sde_approaches_euler_as_noise_vanishes():
    eps = noise()
    euler = nft_solvers.load("euler", steps=20).sample(gaussian_velocity, eps)
    gaps = []
    for level in (1e-1, 1e-2, 1e-3):
        solver = nft_solvers.load("flow-sde", steps=20, noise_level=level)
        out = solver.sample(gaussian_velocity, eps, generator=torch.Generator().manual_seed(0))
        gaps.append((out - euler).abs().max().item())
    # the sample moves away from the ODE solution linearly in the noise level
    assert 5 < gaps[0] / gaps[1] < 20 and 5 < gaps[1] / gaps[2] < 20, gaps
    assert gaps[2] < 2e-2


def test_flow_sde_is_reproducible_with_a_seeded_generator():
    eps = noise()
    solver = nft_solvers.load("flow-sde", steps=10)
    first = solver.sample(gaussian_velocity, eps, generator=torch.Generator().manual_seed(7))
    again = solver.sample(gaussian_velocity, eps, generator=torch.Generator().manual_seed(7))
    other = solver.sample(gaussian_velocity, eps, generator=torch.Generator().manual_seed(8))
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert (first - other).abs().max() > 1e-3


@pytest.mark.parametrize("deterministic_last_step", [True, False])
def test_flow_sde_samples_the_data_distribution(deterministic_last_step):
    """The SDE keeps the flow's marginals: sample mean and std per dimension match N(mu, s^2)."""
    n = 20_000
    eps = torch.randn(n, DIM, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    solver = nft_solvers.load(
        "flow-sde", steps=40, noise_level=0.7, deterministic_last_step=deterministic_last_step
    )
    out = solver.sample(gaussian_velocity, eps, generator=torch.Generator().manual_seed(4))
    assert torch.allclose(out.mean(0), MU, atol=0.08), out.mean(0)
    assert torch.allclose(out.std(0), SCALE, rtol=0.08), out.std(0)
    # and it is not the deterministic map
    assert (out - exact_sample(eps)).abs().mean() > 0.05


def test_flow_sde_first_step_uses_next_time_at_t_equal_one():
    from nft_core.sde import flowgrpo_std

    assert flowgrpo_std(1.0, 0.7, 0.9) == pytest.approx(0.7 * math.sqrt(1 / 0.1))
    assert flowgrpo_std(0.5, 0.7, 0.4) == pytest.approx(0.7)
