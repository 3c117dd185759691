"""FlowGRPO: the SDE step's log-prob, the on-policy ratio, the clipped surrogate, noise level 0, and a
short run through the trainer on the tiny shapes model."""

from __future__ import annotations

import math

import pytest
import torch

from nft_core.config import load_config
from nft_core.errors import ConfigError
from nft_core.flowgrpo import FlowGRPOObjective, clipped_policy_loss, sde_trajectory
from nft_core.loop.trainer import Trainer
from nft_core.sde import flowgrpo_std, gaussian_log_prob, sde_transition
from nft_solvers.euler import EulerSolver


def test_the_step_log_prob_is_the_gaussian_density_averaged_over_dimensions():
    torch.manual_seed(0)
    x, v, x_next = torch.randn(3, 2, 4, 4, dtype=torch.float64).unbind(0)
    x, v, x_next = x[None].repeat(2, 1, 1, 1), v[None].repeat(2, 1, 1, 1), x_next[None].repeat(2, 1, 1, 1)
    t, t_next, a = 0.6, 0.45, 0.7
    mean, std, std_t = sde_transition(x, v, t, t_next, a, second_time=0.9)
    assert float(std_t) == pytest.approx(flowgrpo_std(t, a, 0.9))
    assert float(std) == pytest.approx(a * math.sqrt(t / (1 - t)) * math.sqrt(t - t_next))
    direct = torch.distributions.Normal(mean, std).log_prob(x_next).mean(dim=(1, 2, 3))
    torch.testing.assert_close(gaussian_log_prob(x_next, mean, std), direct, rtol=0, atol=1e-12)
    # the mean by hand: x (1 + s^2 dt / 2t) + v (1 + s^2 (1 - t) / 2t) dt
    s2, dt = (a * a * t / (1 - t)), t_next - t
    torch.testing.assert_close(mean, x * (1 + s2 * dt / (2 * t)) + v * (1 + s2 * (1 - t) / (2 * t)) * dt)


def test_at_t_one_the_std_takes_the_second_grid_time():
    x = torch.zeros(1, 1, 2, 2)
    _, _, std_t = sde_transition(x, x, 1.0, 0.8, 0.7, second_time=0.8)
    assert float(std_t) == pytest.approx(0.7 * math.sqrt(1 / (1 - 0.8)))


def test_the_clipped_surrogate_and_its_gradient_by_hand():
    log_prob = torch.tensor([0.0, 0.5, -0.5, 0.5], dtype=torch.float64, requires_grad=True)
    advantages = torch.tensor([1.0, -1.0, 2.0, 1.0], dtype=torch.float64)
    loss, stats = clipped_policy_loss(log_prob, torch.zeros(4, dtype=torch.float64), advantages, 0.2)
    r = [1.0, math.exp(0.5), math.exp(-0.5), math.exp(0.5)]
    # per sample max(-A r, -A clip(r)): 1) -1 (inside); 2) max(r, 1.2) = r; 3) max(-2r, -1.6) = -2r;
    # 4) max(-r, -1.2) = -1.2 (clipped: no gradient)
    expected = (-1.0 + r[1] - 2 * r[2] - 1.2) / 4
    assert float(loss.detach()) == pytest.approx(expected, abs=1e-12)
    loss.backward()
    by_hand = torch.tensor([-r[0], r[1], -2 * r[2], 0.0], dtype=torch.float64) / 4
    torch.testing.assert_close(log_prob.grad, by_hand, rtol=0, atol=1e-12)
    assert float(stats["clip_fraction"]) == pytest.approx(0.75)


def test_noise_level_zero_is_the_deterministic_euler_sampler():
    def velocity(x, t, cond):
        return x * (0.5 + t.reshape(-1, 1, 1, 1)) - 0.3

    x1 = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    times = torch.linspace(1, 0, 6, dtype=torch.float64)
    path = sde_trajectory(velocity, x1, {}, times, 0.0, torch.randn(3, 5, 1, 4, 4))
    euler = EulerSolver(steps=5).sample(velocity, x1, grid=times, cond={})
    torch.testing.assert_close(path.states[:, -1], euler, rtol=0, atol=1e-6)
    assert path.states.shape == (3, 6, 1, 4, 4) and not path.log_probs.any()


def test_the_on_policy_ratio_is_exactly_one(tiny_checkpoint):
    from nft_shapes.policy import ShapesTinyPolicy

    policy = ShapesTinyPolicy(checkpoint=str(tiny_checkpoint))
    objective = FlowGRPOObjective(guidance=1.0, kl_weight=0.01)
    cond = policy.encode_prompts(["a red circle", "two blue squares"])
    times = torch.linspace(1, 0, 5)
    x1 = torch.randn(2, *policy.latent_shape, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(2, 4, *policy.latent_shape, generator=torch.Generator().manual_seed(1))
    path = objective.sample(policy, x1, cond, times, noise)
    assert path.log_probs.shape == (2, 4) and torch.isfinite(path.log_probs).all()
    for k in range(4):  # old == current: the ratio of every step is exactly 1, and the KL is 0
        steps = torch.full((2,), k)
        loss, stats = objective.trajectory_loss(
            policy,
            path.states[:, k],
            path.states[:, k + 1],
            path.log_probs[:, k],
            steps,
            times,
            cond,
            torch.tensor([0.9, 0.1]),
        )
        assert stats["ratio"] == 1.0 and stats["clip_fraction"] == 0.0 and stats["loss_kl"] == 0.0
        loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for _, p in policy.trainable_parameters())


FLOWGRPO = [
    'objective.name="flowgrpo"',
    'objective.old_decay="none"',
    "objective.guidance=1.0",
    "objective.clip_range=0.2",
    'reward[0].name="jpeg-compressibility"',  # the tiny random model scores 0 on shapes-geneval
    "eval.baseline_guidance=[]",
    "log.grid_every=0",
]


def test_flowgrpo_trains_through_the_trainer_and_keeps_whole_paths(fast_config, tmp_path):
    config = load_config(fast_config, FLOWGRPO)
    trainer = Trainer(config, tmp_path / "run", echo=lambda *_: None)
    before = {name: p.detach().clone() for name, p in trainer.policy.trainable_parameters()}
    samples = trainer.collect()
    steps = len(trainer.train_times)
    assert samples.trajectory is not None and samples.trajectory.states.shape[1] == steps + 1
    torch.testing.assert_close(samples.trajectory.states[:, -1], samples.latents)
    # NFT keeps one latent per sample; FlowGRPO every state (and a log-prob per step)
    assert samples.stored_bytes_per_sample > (steps + 1) * samples.latents[0].numel() * 4
    summary = trainer.run()
    assert summary["status"] == "finished"
    moved = max(float((p.detach() - before[n]).abs().max()) for n, p in trainer.policy.trainable_parameters())
    assert moved > 0
    records = [r for r in trainer.outputs.records if r["kind"] == "train"]
    assert records and all({"ratio", "clip_fraction", "approx_kl", "loss_kl"} <= r.keys() for r in records)


def test_flowgrpo_with_a_lagging_old_policy_is_a_config_error(fast_config, tmp_path):
    config = load_config(fast_config, ['objective.name="flowgrpo"'])
    with pytest.raises(ConfigError, match="objective.old_decay: `flowgrpo` is on-policy"):
        Trainer(config, tmp_path / "run", echo=lambda *_: None)
    config = load_config(fast_config, [*FLOWGRPO[:2], "objective.times=[0.5]"])
    with pytest.raises(ConfigError, match='objective.times: `flowgrpo` .* must be "collection"'):
        Trainer(config, tmp_path / "run", echo=lambda *_: None)
