"""The NFT loss pinned to hand computations and to its two identities; the objectives on a fake policy."""

from __future__ import annotations

import copy
import math

import pydantic
import pytest
import torch

from nft_core.flow import draw_noise, forward_noising
from nft_core.objective import NFTObjective, NFTOptions, RFTObjective, RFTOptions, nft_loss


def _leaf(values, dtype=torch.float64) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype, requires_grad=True)


# ---------------------------------------------------------------- nft_loss: literal numbers


def test_single_element_literal_numbers():
    # x0=0, x_t=1, t=0.5, v_old=2, v=3, beta=0.5, r=0.25, adv_clip=5
    # v_pos = 2 + 0.5*1 = 2.5 -> x0_pos = 1 - 1.25 = -0.25, w_pos = 0.25, L_pos = 0.0625/0.25 = 0.25
    # v_neg = 2 - 0.5*1 = 1.5 -> x0_neg = 1 - 0.75 = 0.25,  w_neg = 0.25, L_neg = 0.25
    # L = 5 * (0.25 * 0.25 / 0.5 + 0.75 * 0.25 / 0.5) = 2.5
    # dL/dv = 5 * 2 * t * (-r e_pos / w_pos + (1-r) e_neg / w_neg) = 5 * (0.25 + 0.75) = 5
    v = _leaf([[3.0]])
    loss, stats = nft_loss(
        v,
        torch.tensor([[2.0]], dtype=torch.float64),
        torch.tensor([[0.0]], dtype=torch.float64),
        torch.tensor([[1.0]], dtype=torch.float64),
        torch.tensor([0.5], dtype=torch.float64),
        torch.tensor([0.25], dtype=torch.float64),
        beta=0.5,
        adv_clip=5.0,
    )
    loss.backward()
    assert loss.item() == pytest.approx(2.5, abs=1e-12)
    assert v.grad.item() == pytest.approx(5.0, abs=1e-12)
    assert stats["loss_pos"].item() == pytest.approx(0.25)
    assert stats["loss_neg"].item() == pytest.approx(0.25)
    assert stats["w_pos"].item() == pytest.approx(0.25)
    assert stats["w_neg"].item() == pytest.approx(0.25)
    assert stats["loss_kl"].item() == 0.0


def _expected_nft(v, v_old, x0, x_t, t, r, beta, adv_clip, floor=1e-5):
    """Loss and dL/dv from explicit per-element formulas on nested python lists ([N][D])."""
    n, d = len(v), len(v[0])
    total = 0.0
    grad = [[0.0] * d for _ in range(n)]
    for i in range(n):
        v_pos = [beta * v[i][j] + (1 - beta) * v_old[i][j] for j in range(d)]
        v_neg = [(1 + beta) * v_old[i][j] - beta * v[i][j] for j in range(d)]
        e_pos = [x_t[i][j] - t[i] * v_pos[j] - x0[i][j] for j in range(d)]
        e_neg = [x_t[i][j] - t[i] * v_neg[j] - x0[i][j] for j in range(d)]
        w_pos = max(sum(abs(e) for e in e_pos) / d, floor)
        w_neg = max(sum(abs(e) for e in e_neg) / d, floor)
        l_pos = sum(e * e for e in e_pos) / d / w_pos
        l_neg = sum(e * e for e in e_neg) / d / w_neg
        total += r[i] * l_pos / beta + (1 - r[i]) * l_neg / beta
        for j in range(d):
            # d e_pos / dv = -t beta, d e_neg / dv = +t beta; the weights are constants
            g = (
                r[i] / beta * 2 * e_pos[j] * (-t[i] * beta) / w_pos
                + (1 - r[i]) / beta * 2 * e_neg[j] * (t[i] * beta) / w_neg
            )
            grad[i][j] = adv_clip * g / (n * d)
    return adv_clip * total / n, grad


@pytest.mark.parametrize("beta", [1.0, 0.1, 0.7])
def test_loss_and_gradient_match_explicit_formulas(beta):
    v = [[0.3, -1.2, 0.5], [2.0, 0.1, -0.4]]
    v_old = [[0.1, -1.0, 0.9], [1.5, 0.3, -0.2]]
    x0 = [[0.2, 0.4, -0.6], [-1.0, 0.8, 0.0]]
    x_t = [[0.5, -0.3, 0.1], [0.7, 0.2, -0.9]]
    t = [0.25, 0.8]
    r = [0.9, 0.2]
    expected_loss, expected_grad = _expected_nft(v, v_old, x0, x_t, t, r, beta, adv_clip=5.0)
    vt = _leaf(v)
    f64 = dict(dtype=torch.float64)
    loss, _ = nft_loss(
        vt,
        torch.tensor(v_old, **f64),
        torch.tensor(x0, **f64),
        torch.tensor(x_t, **f64),
        torch.tensor(t, **f64),
        torch.tensor(r, **f64),
        beta=beta,
        adv_clip=5.0,
    )
    loss.backward()
    assert loss.item() == pytest.approx(expected_loss, rel=1e-12)
    torch.testing.assert_close(vt.grad, torch.tensor(expected_grad, **f64), rtol=1e-12, atol=1e-12)


def test_time_broadcasts_over_all_non_batch_dims():
    torch.manual_seed(0)
    shape = (3, 2, 2, 2)
    v, v_old, x0, x_t = (torch.randn(shape, dtype=torch.float64) for _ in range(4))
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    r = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    flat = [a.reshape(3, -1).tolist() for a in (v, v_old, x0, x_t)]
    expected, _ = _expected_nft(*flat, t.tolist(), r.tolist(), beta=1.0, adv_clip=5.0)
    loss, _ = nft_loss(v, v_old, x0, x_t, t, r, beta=1.0, adv_clip=5.0)
    assert loss.item() == pytest.approx(expected, rel=1e-12)


def test_weight_floor_clamps_the_adaptive_weight():
    # e_pos = x_t - t v - x0 = 1e-8 everywhere -> w_pos = max(1e-8, 1e-5) = 1e-5, L_pos = 1e-16 / 1e-5
    x0 = torch.zeros(1, 2, dtype=torch.float64)
    x_t = torch.full((1, 2), 1.0 + 1e-8, dtype=torch.float64)
    v = torch.full((1, 2), 2.0, dtype=torch.float64)
    loss, stats = nft_loss(
        v, v, x0, x_t, torch.tensor([0.5], dtype=torch.float64), torch.ones(1, dtype=torch.float64), 1.0, 1.0
    )
    assert stats["w_pos"].item() == pytest.approx(1e-5)
    assert loss.item() == pytest.approx((1e-8) ** 2 / 1e-5, rel=1e-6)


def test_reference_form_of_the_implicit_policies_gives_the_same_loss():
    torch.manual_seed(1)
    v, v_old, x0, eps = (torch.randn(4, 3, 5) for _ in range(4))
    t = torch.rand(4)
    x_t = forward_noising(x0, t, eps)
    r = torch.rand(4)
    beta, adv_clip = 0.3, 5.0
    loss, _ = nft_loss(v, v_old, x0, x_t, t, r, beta=beta, adv_clip=adv_clip)
    tb = t.view(-1, 1, 1)
    x0_pos = x_t - tb * (beta * v + (1 - beta) * v_old)
    x0_neg = x_t - tb * ((1 + beta) * v_old - beta * v)
    w_pos = (x0_pos - x0).abs().mean(dim=(1, 2), keepdim=True).clamp_min(1e-5)
    w_neg = (x0_neg - x0).abs().mean(dim=(1, 2), keepdim=True).clamp_min(1e-5)
    l_pos = ((x0_pos - x0) ** 2 / w_pos).mean(dim=(1, 2))
    l_neg = ((x0_neg - x0) ** 2 / w_neg).mean(dim=(1, 2))
    reference = ((r * l_pos / beta + (1 - r) * l_neg / beta) * adv_clip).mean()
    torch.testing.assert_close(loss, reference, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- the two identities


@pytest.mark.parametrize("beta", [1.0, 0.1, 0.37, 2.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_identity_neutral_optimality_at_theta_old_has_exactly_zero_gradient(beta, dtype):
    torch.manual_seed(2)
    v_old = torch.randn(5, 4, 3).to(dtype)
    v = v_old.clone().requires_grad_(True)
    x0, x_t = torch.randn(5, 4, 3).to(dtype), torch.randn(5, 4, 3).to(dtype)
    t = torch.rand(5).to(dtype)
    r = torch.full((5,), 0.5, dtype=dtype)
    loss, _ = nft_loss(v, v_old, x0, x_t, t, r, beta=beta, adv_clip=5.0)
    loss.backward()
    assert torch.equal(v.grad, torch.zeros_like(v))


def test_identity_fully_positive_with_beta_one_is_weighted_flow_matching():
    torch.manual_seed(3)
    v = torch.randn(4, 6, dtype=torch.float64)
    v_old = torch.randn(4, 6, dtype=torch.float64)
    x0, eps = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64)
    t = torch.tensor([0.1, 0.4, 0.6, 0.95], dtype=torch.float64)
    x_t = forward_noising(x0, t, eps)
    loss, _ = nft_loss(v, v_old, x0, x_t, t, torch.ones(4, dtype=torch.float64), beta=1.0, adv_clip=5.0)
    x0_hat = x_t - t[:, None] * v
    w = (x0_hat - x0).abs().mean(dim=1).clamp_min(1e-5)
    fm = ((x0_hat - x0) ** 2).mean(dim=1) / w
    assert loss.item() == pytest.approx(5.0 * fm.mean().item(), rel=1e-12)
    # and v_old plays no role at all
    loss_other, _ = nft_loss(v, v_old + 3.0, x0, x_t, t, torch.ones(4, dtype=torch.float64), 1.0, 5.0)
    assert loss_other.item() == pytest.approx(loss.item(), rel=1e-12)


def test_fully_negative_with_beta_one_regresses_the_reflected_policy():
    torch.manual_seed(4)
    v, v_old, x0, x_t = (torch.randn(3, 5, dtype=torch.float64) for _ in range(4))
    t = torch.rand(3, dtype=torch.float64)
    loss, _ = nft_loss(v, v_old, x0, x_t, t, torch.zeros(3, dtype=torch.float64), beta=1.0, adv_clip=2.0)
    e = x_t - t[:, None] * (2 * v_old - v) - x0
    expected = 2.0 * ((e**2).mean(dim=1) / e.abs().mean(dim=1)).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-12)


# ---------------------------------------------------------------- KL term, dtypes, validation


def test_kl_term_value_and_gradient():
    torch.manual_seed(5)
    v = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    v_old, v_ref, x0, x_t = (torch.randn(2, 3, dtype=torch.float64) for _ in range(4))
    t = torch.tensor([0.3, 0.7], dtype=torch.float64)
    r = torch.tensor([0.6, 0.1], dtype=torch.float64)
    base, base_stats = nft_loss(v, v_old, x0, x_t, t, r, 1.0, 5.0)
    (grad_base,) = torch.autograd.grad(base, v)
    total, stats = nft_loss(v, v_old, x0, x_t, t, r, 1.0, 5.0, v_ref=v_ref, kl_weight=0.3)
    (grad_total,) = torch.autograd.grad(total, v)
    kl = (
        sum(
            (a - b) ** 2 for a, b in zip(v.detach().flatten().tolist(), v_ref.flatten().tolist(), strict=True)
        )
        / 6
    )
    assert stats["loss_kl"].item() == pytest.approx(kl, rel=1e-12)
    assert total.item() == pytest.approx(base.item() + 0.3 * kl, rel=1e-12)
    assert stats["loss_nft"].item() == pytest.approx(base_stats["loss_nft"].item(), rel=1e-12)
    torch.testing.assert_close(grad_total - grad_base, 0.3 * 2 * (v.detach() - v_ref) / 6)


def test_kl_logged_but_not_added_when_weight_is_zero():
    v, v_old, v_ref, x0, x_t = (torch.randn(2, 3) for _ in range(5))
    t, r = torch.rand(2), torch.rand(2)
    total, stats = nft_loss(v, v_old, x0, x_t, t, r, 1.0, 5.0, v_ref=v_ref, kl_weight=0.0)
    assert stats["loss_kl"].item() > 0
    assert total.item() == pytest.approx(stats["loss_nft"].item())


def test_stats_are_detached_and_named():
    v = torch.randn(2, 3, requires_grad=True)
    _, stats = nft_loss(
        v, torch.randn(2, 3), torch.randn(2, 3), torch.randn(2, 3), torch.rand(2), torch.rand(2), 1, 5
    )
    assert set(stats) >= {"loss", "loss_nft", "loss_pos", "loss_neg", "loss_kl", "w_pos", "w_neg"}
    assert all(not s.requires_grad and s.ndim == 0 for s in stats.values())


def test_half_precision_inputs_give_fp32_loss_and_gradient_to_the_input():
    v = torch.randn(2, 4).to(torch.bfloat16).requires_grad_(True)
    others = [torch.randn(2, 4).to(torch.bfloat16) for _ in range(3)]
    loss, _ = nft_loss(v, *others, torch.rand(2), torch.rand(2), 1.0, 5.0)
    assert loss.dtype == torch.float32
    loss.backward()
    assert v.grad is not None and v.grad.dtype == torch.bfloat16


def test_shape_and_beta_errors():
    a = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="beta"):
        nft_loss(a, a, a, a, torch.zeros(2), torch.zeros(2), beta=0.0, adv_clip=5.0)
    with pytest.raises(ValueError, match="t must have shape"):
        nft_loss(a, a, a, a, torch.zeros(3), torch.zeros(2), beta=1.0, adv_clip=5.0)
    with pytest.raises(ValueError, match="optimality"):
        nft_loss(a, a, a, a, torch.zeros(2), torch.zeros(2, 1), beta=1.0, adv_clip=5.0)
    with pytest.raises(ValueError, match="v_ref"):
        nft_loss(a, a, a, a, torch.zeros(2), torch.zeros(2), beta=1.0, adv_clip=5.0, kl_weight=0.1)
    with pytest.raises(ValueError, match="share one shape"):
        nft_loss(a, torch.zeros(2, 4), a, a, torch.zeros(2), torch.zeros(2), beta=1.0, adv_clip=5.0)


# ---------------------------------------------------------------- objectives on a fake policy


class FakePolicy:
    """A tiny linear velocity model with the three views as separate modules."""

    name = "fake"
    latent_shape = (2, 3)

    def __init__(self) -> None:
        torch.manual_seed(10)
        self.current = torch.nn.Linear(7, 6)
        self.old = copy.deepcopy(self.current)
        with torch.no_grad():  # theta_old != theta so the loss has a signal
            for p in self.old.parameters():
                p.add_(0.05 * torch.randn_like(p))
        self.reference = copy.deepcopy(self.current)
        for module in (self.old, self.reference):
            module.requires_grad_(False)
        self.calls: list[tuple[str, bool]] = []

    def velocity(self, view, x_t, t, cond):
        self.calls.append((view, torch.is_grad_enabled()))
        net = getattr(self, view)
        inp = torch.cat([x_t.flatten(1), t[:, None].to(x_t.dtype)], dim=1)
        return net(inp).view_as(x_t) + cond["emb"]

    def trainable_parameters(self):
        return list(self.current.named_parameters())


def _batch(n=4):
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(n, 2, 3, generator=g)
    cond = {"emb": torch.randn(n, 2, 3, generator=g)}
    t = torch.rand(n, generator=g)
    r = torch.tensor([0.9, 0.1, 0.5, 0.7])[:n]
    return x0, cond, t, r


def test_nft_objective_backward_touches_only_current():
    policy = FakePolicy()
    old_before = [p.clone() for p in policy.old.parameters()]
    objective = NFTObjective(beta=1.0, kl_weight=0.0, adv_clip=5.0)
    x0, cond, t, r = _batch()
    noise = draw_noise(x0, torch.Generator().manual_seed(1))
    loss, stats = objective.loss(policy, x0, cond, t, r, noise=noise)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.current.parameters())
    assert all(p.grad is None for p in policy.old.parameters())
    assert all(torch.equal(a, b) for a, b in zip(old_before, policy.old.parameters(), strict=True))
    assert [view for view, _ in policy.calls] == ["old", "current"]  # no reference query without KL
    assert dict(policy.calls) == {"old": False, "current": True}
    assert all(isinstance(value, float) for value in stats.values())
    assert math.isfinite(stats["loss"]) and stats["loss_kl"] == 0.0


def test_nft_objective_matches_nft_loss_with_the_same_noise():
    policy = FakePolicy()
    objective = NFTObjective(beta=0.1, kl_weight=1e-2, adv_clip=5.0)
    x0, cond, t, r = _batch()
    noise = draw_noise(x0, torch.Generator().manual_seed(7))
    loss, stats = objective.loss(policy, x0, cond, t, r, noise=noise)
    assert [view for view, _ in policy.calls] == ["old", "current", "reference"]
    assert dict(policy.calls)["reference"] is False
    eps = draw_noise(x0, torch.Generator().manual_seed(7))
    x_t = (1 - t.view(-1, 1, 1)) * x0 + t.view(-1, 1, 1) * eps
    with torch.no_grad():
        v = policy.velocity("current", x_t, t, cond)
        v_old = policy.velocity("old", x_t, t, cond)
        v_ref = policy.velocity("reference", x_t, t, cond)
    expected, _ = nft_loss(v, v_old, x0, x_t, t, r, 0.1, 5.0, v_ref=v_ref, kl_weight=1e-2)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert stats["loss"] == pytest.approx(expected.item(), rel=1e-6)
    # same noise -> same loss
    again, _ = objective.loss(policy, x0, cond, t, r, noise=draw_noise(x0, torch.Generator().manual_seed(7)))
    assert again.item() == loss.item()


def test_nft_options_bounds_and_unknown_keys():
    assert NFTOptions().model_dump() == {
        "beta": 1.0,
        "kl_weight": 0.0,
        "adv_clip": 5.0,
        "weight_floor": 1e-5,
        "kl_adaptive": False,  # the guards, off unless asked for
        "norm_guard": 0.0,
        "norm_margin": 0.0,
    }
    for bad in ({"beta": 0.0}, {"kl_weight": -1e-4}, {"adv_clip": 0.0}, {"betta": 1.0}):
        with pytest.raises(pydantic.ValidationError):
            NFTOptions(**bad)
    with pytest.raises(ValueError):
        NFTObjective(beta=-1.0)
    objective = NFTObjective(**NFTOptions(beta=0.1, kl_weight=1e-4).model_dump())
    assert (objective.name, objective.beta, objective.kl_weight) == ("nft", 0.1, 1e-4)


def test_rft_objective_is_flow_matching_on_positive_samples_only():
    policy = FakePolicy()
    objective = RFTObjective()
    x0, cond, t, r = _batch()  # r = [0.9, 0.1, 0.5, 0.7] -> samples 0 and 3 (0.5 is not > 0.5)
    noise = draw_noise(x0, torch.Generator().manual_seed(3))
    loss, stats = objective.loss(policy, x0, cond, t, r, noise=noise)
    eps = draw_noise(x0, torch.Generator().manual_seed(3))
    keep = torch.tensor([0, 3])
    x_t = forward_noising(x0[keep], t[keep], eps[keep])
    with torch.no_grad():
        v = policy.velocity("current", x_t, t[keep], {"emb": cond["emb"][keep]})
    expected = ((v - (eps[keep] - x0[keep])) ** 2).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert stats["kept_fraction"] == 0.5
    assert "old" not in [view for view, _ in policy.calls]
    loss.backward()
    assert all(p.grad is not None for p in policy.current.parameters())


def test_rft_objective_with_no_positive_sample_is_a_connected_zero():
    policy = FakePolicy()
    x0, cond, t, _ = _batch()
    loss, stats = RFTObjective().loss(policy, x0, cond, t, torch.full((4,), 0.2))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert all(torch.equal(p.grad, torch.zeros_like(p)) for p in policy.current.parameters())
    assert stats["kept_fraction"] == 0.0
    assert policy.calls == []


def test_rft_options():
    assert RFTOptions().model_dump() == {"threshold": 0.5, "kl_weight": 0.0, "adv_clip": 5.0}
    with pytest.raises(pydantic.ValidationError):
        RFTOptions(beta=1.0)
    assert RFTObjective.name == "rft"
