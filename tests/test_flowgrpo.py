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


class LinearPolicy:
    """A policy whose velocity is linear in its inputs, with current / old / reference weights (float64)."""

    latent_shape = (2, 3, 3)

    def __init__(self, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        eye = torch.eye(2, dtype=torch.float64)
        self.weights = {
            view: (torch.randn(2, 2, generator=generator, dtype=torch.float64) * 0.3 + eye,
                   torch.randn(4, 2, generator=generator, dtype=torch.float64))
            for view in ("current", "old", "reference")
        }  # fmt: skip
        for tensor in self.weights["current"]:
            tensor.requires_grad_(True)

    def velocity(self, view, x, t, cond):
        mix, text = self.weights[view]
        channels = torch.einsum("oc,nchw->nohw", mix, x) * (1 + t.view(-1, 1, 1, 1))
        return channels + (cond["embedding"] @ text).view(-1, 2, 1, 1)

    def null_cond(self, batch_size):
        return {"embedding": torch.zeros(batch_size, 4, dtype=torch.float64)}


def reference_training_step(policy, latents, next_latents, sigmas, j, embeds, neg_embeds, old_log_prob,
                            advantages, guidance, noise_level, clip_range, beta, adv_clip_max):  # fmt: skip
    """yifan123/flow_grpo at ac4c86e, written out: `compute_log_prob` (scripts/train_sd3.py lines 180-215,
    CFG with the unconditional half detached, line 190), `sde_step_with_logprob`
    (flow_grpo/diffusers_patch/sd3_sde_with_logprob.py lines 34-70) and the loss (train_sd3.py lines
    872-899: the reference with the adapter off under no_grad, the clipped surrogate, KL = mean over C,H,W
    of (mean - mean_ref)^2 / (2 std_dev_t^2), loss = policy_loss + beta * kl_loss)."""

    def compute_log_prob(view, detach):
        sigma_b = sigmas[j].expand(len(latents))
        both = policy.velocity(view, torch.cat([latents] * 2), torch.cat([sigma_b] * 2),
                               {"embedding": torch.cat([neg_embeds, embeds])})  # fmt: skip
        noise_pred_uncond, noise_pred_text = both.chunk(2)
        if detach:
            noise_pred_uncond = noise_pred_uncond.detach()
        noise_pred = noise_pred_uncond + guidance * (noise_pred_text - noise_pred_uncond)
        sigma, sigma_prev, sigma_max = sigmas[j], sigmas[j + 1], sigmas[1]
        dt = sigma_prev - sigma
        std_dev_t = torch.sqrt(sigma / (1 - torch.where(sigma == 1, sigma_max, sigma))) * noise_level
        prev_sample_mean = latents * (1 + std_dev_t**2 / (2 * sigma) * dt) + noise_pred * (
            1 + std_dev_t**2 * (1 - sigma) / (2 * sigma)) * dt  # fmt: skip
        log_prob = (
            -((next_latents.detach() - prev_sample_mean) ** 2)
            / (2 * ((std_dev_t * torch.sqrt(-1 * dt)) ** 2))
            - torch.log(std_dev_t * torch.sqrt(-1 * dt))
            - torch.log(torch.sqrt(2 * torch.as_tensor(math.pi, dtype=torch.float64)))
        )
        return log_prob.mean(dim=tuple(range(1, log_prob.ndim))), prev_sample_mean, std_dev_t

    log_prob, prev_sample_mean, std_dev_t = compute_log_prob("current", detach=True)
    with torch.no_grad():
        _, prev_sample_mean_ref, _ = compute_log_prob("reference", detach=False)
    advantages = torch.clamp(advantages, -adv_clip_max, adv_clip_max)
    ratio = torch.exp(log_prob - old_log_prob)
    unclipped_loss = -advantages * ratio
    clipped_loss = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    policy_loss = torch.mean(torch.maximum(unclipped_loss, clipped_loss))
    kl_loss = ((prev_sample_mean - prev_sample_mean_ref) ** 2).mean(dim=(1, 2, 3), keepdim=True) / (
        2 * std_dev_t**2
    )
    return policy_loss + beta * torch.mean(kl_loss)


def test_the_training_step_equals_the_reference_transcription_with_cfg_in_float64():
    policy = LinearPolicy()
    generator = torch.Generator().manual_seed(5)
    n = 4
    sigmas = torch.tensor([1.0, 0.9601, 0.9133, 0.8577, 0.2780, 0.0089, 0.0], dtype=torch.float64)
    latents = torch.randn(n, *policy.latent_shape, generator=generator, dtype=torch.float64)
    next_latents = latents + 0.1 * torch.randn(latents.shape, generator=generator, dtype=torch.float64)
    embeds = torch.randn(n, 4, generator=generator, dtype=torch.float64)
    advantages = torch.tensor([1.5, -0.7, 3.0, -2.2], dtype=torch.float64)
    old_log_prob = torch.randn(n, generator=generator, dtype=torch.float64) * 1e-5
    objective = FlowGRPOObjective()  # the published defaults: CFG 4.5, KL 0.04, clip 1e-4, noise 0.7
    for j in (0, 3, 4):
        # a log-prob near the current one, so that some ratios sit inside the clip and some outside
        with torch.no_grad():
            ours_at_old, _ = objective.trajectory_loss(
                policy, latents, next_latents, old_log_prob, torch.full((n,), j), sigmas,
                {"embedding": embeds}, advantages / objective.adv_clip / 2 + 0.5)  # fmt: skip
        parameters = policy.weights["current"]
        for p in parameters:
            p.grad = None
        expected = reference_training_step(
            policy, latents, next_latents, sigmas, j, embeds, policy.null_cond(n)["embedding"], old_log_prob,
            advantages, 4.5, 0.7, 1e-4, 0.04, 5.0)  # fmt: skip
        expected.backward()
        expected_grads = [p.grad.clone() for p in parameters]
        for p in parameters:
            p.grad = None
        ours, _ = objective.trajectory_loss(
            policy, latents, next_latents, old_log_prob, torch.full((n,), j), sigmas, {"embedding": embeds},
            advantages / objective.adv_clip / 2 + 0.5)  # fmt: skip
        ours.backward()
        assert abs(float(ours.detach()) - float(expected.detach())) < 1e-12
        for mine, theirs in zip((p.grad for p in parameters), expected_grads, strict=True):
            torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-12)


def test_the_detached_unconditional_half_trains_only_the_conditional_prediction():
    from nft_core.sampling import policy_velocity

    policy = LinearPolicy()
    x = torch.randn(2, *policy.latent_shape, dtype=torch.float64)
    t = torch.tensor([0.5, 0.7], dtype=torch.float64)
    cond = {"embedding": torch.ones(2, 4, dtype=torch.float64)}
    mix, text = policy.weights["current"]
    # u = M x (1 + t) (the null embedding is 0) and c = u + E text: u + g (c - u) moves with M at a rate of
    # 1 when both halves carry gradients, and g when the unconditional half is detached
    through_x = torch.autograd.grad(policy.velocity("current", x, t, policy.null_cond(2)).sum(), mix)[0]
    through_text = torch.autograd.grad(policy.velocity("current", x, t, cond).sum(), text)[0]
    for detach, rate in ((False, 1.0), (True, 4.5)):
        mix.grad, text.grad = None, None
        policy_velocity(policy, "current", 4.5, detach_uncond=detach)(x, t, cond).sum().backward()
        torch.testing.assert_close(mix.grad, rate * through_x, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(text.grad, 4.5 * through_text, rtol=1e-12, atol=1e-12)


def test_the_path_plan_trains_the_first_steps_in_order_and_each_step_a_share_of_the_samples():
    from nft_core.plan import path_plan

    grid = torch.tensor([1.0, 0.9, 0.7, 0.4, 0.1, 0.0], dtype=torch.float64)
    kept = torch.tensor([0, 1, 2, 4, 5, 6])  # sample 3 had a zero advantage
    steps = path_plan(kept, grid, torch.zeros(8, dtype=torch.long), 4, micro_batch=2, optimizer_steps=2,
                      generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert len(steps) == 2
    for step in steps:
        samples = sorted({int(i) for batch in step for i in batch.index})
        assert len(samples) == 3 and 3 not in samples
        assert [batch.visit for batch in step] == [0, 0, 1, 1, 2, 2, 3, 3]  # the first 4 steps, in order
        for batch in step:
            assert torch.equal(batch.times, grid[batch.visit].expand(len(batch.index)))
            assert batch.step_samples == 3 * 4
    covered = sorted(int(i) for step in steps for batch in step if batch.visit == 0 for i in batch.index)
    assert covered == kept.tolist()
    windowed = path_plan(torch.arange(2), grid, torch.tensor([1, 2]), 2, 2, 1)
    assert [batch.times.tolist() for batch in windowed[0]] in (
        [[0.9, 0.7], [0.7, 0.4]],
        [[0.7, 0.9], [0.4, 0.7]],
    )


def test_the_cps_step_is_the_references_and_the_fast_window_samples_an_sde_only_inside_it():
    from nft_core.sde import cps_log_prob, cps_transition

    x, v = torch.randn(2, 1, 2, 2, dtype=torch.float64), torch.randn(2, 1, 2, 2, dtype=torch.float64)
    sigma, sigma_prev, a = 0.7, 0.5, 0.8
    mean, std = cps_transition(x, v, sigma, sigma_prev, a)
    std_ref = sigma_prev * math.sin(a * math.pi / 2)
    expected = (x - sigma * v) * (1 - sigma_prev) + (x + v * (1 - sigma)) * math.sqrt(
        sigma_prev**2 - std_ref**2
    )
    torch.testing.assert_close(mean, expected, rtol=0, atol=1e-15)
    assert float(std) == pytest.approx(std_ref)
    x_next = mean + 0.3
    torch.testing.assert_close(cps_log_prob(x_next, mean), torch.full((2,), -0.09, dtype=torch.float64))

    objective = FlowGRPOObjective(sde_window=2, sde_window_range=(0, 3), sde_type="cps", noise_level=0.8,
                                  guidance=1.0)  # fmt: skip
    assert objective.trained_steps(6, 5) == 2

    def velocity_of(view, x, t, cond):
        return -x

    policy = type("P", (), {"velocity": staticmethod(velocity_of)})()
    times = torch.linspace(1, 0, 7, dtype=torch.float64)
    x1, noise = torch.randn(3, 1, 2, 2, dtype=torch.float64), torch.randn(3, 6, 1, 2, 2, dtype=torch.float64)
    path = objective.sample(policy, x1, {}, times, noise, torch.Generator().manual_seed(3))
    start = int(path.first_step[0])
    assert 0 <= start <= 1 and (path.first_step == start).all()
    outside = [k for k in range(6) if not start <= k < start + 2]
    assert not path.log_probs[:, outside].any() and path.log_probs[:, start : start + 2].all()


def test_zero_advantage_samples_leave_the_update():
    objective = FlowGRPOObjective()
    assert objective.trained_samples(torch.tensor([0.5, 0.2, 0.5, 0.9])).tolist() == [
        False,
        True,
        False,
        True,
    ]
    assert FlowGRPOObjective(drop_zero_advantage=False).trained_samples(torch.tensor([0.5])).tolist() == [
        True
    ]


def test_flowgrpo_fast_trains_only_its_window_through_the_trainer(fast_config, tmp_path):
    window = ["objective.sde_window=1", "objective.sde_window_range=[0, 2]", 'objective.sde_type="cps"']
    window += ["train.optimizer_steps_per_epoch=1"]
    trainer = Trainer(load_config(fast_config, [*FLOWGRPO, *window]), tmp_path / "run", echo=lambda *_: None)
    assert trainer.geometry.trained_times == 1
    samples = trainer.collect()
    path = samples.trajectory
    assert path is not None and set(path.first_step.tolist()) <= {0, 1}
    optimality = torch.tensor([0.2, 0.8, 0.5, 0.9])  # sample 2: a zero advantage, left out
    plan = trainer.updater.plan(samples, optimality)
    visited = [
        (int(i), float(t))
        for step in plan
        for batch in step
        for i, t in zip(batch.index, batch.times, strict=True)
    ]
    assert sorted(i for i, _ in visited) == [0, 1, 3]
    assert all(t == float(path.times[int(path.first_step[i])]) for i, t in visited)
