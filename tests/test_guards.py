"""Guards and alarms as pure functions, pinned to closed forms: NormGuard's hinge, CRD's reward-adaptive KL,
the step guard's undo, and each alarm on records built to trigger it (and not on healthy ones)."""

from __future__ import annotations

import math

import pytest
import torch

from nft_core.loop.guard import StepGuard
from nft_core.objective import nft_loss, reward_adaptive_kl, velocity_norm_hinge
from nft_core.outputs.alarms import AlarmSettings, check_alarms


def test_norm_hinge_is_zero_within_the_margin_and_the_squared_relative_excess_beyond():
    v_ref = torch.tensor([[3.0, 4.0], [0.0, 2.0]])  # norms 5 and 2
    v = torch.tensor([[6.0, 8.0], [0.0, 1.0]])  # norms 10 (2x) and 1 (smaller: no penalty)
    assert float(velocity_norm_hinge(v, v_ref)) == pytest.approx(((10 - 5) / 5) ** 2 / 2)
    assert float(velocity_norm_hinge(v, v_ref, margin=1.0)) == 0.0  # 10 <= 2 x 5
    assert float(velocity_norm_hinge(v_ref, v_ref)) == 0.0
    grown = torch.tensor([[3.3, 4.4]], requires_grad=True)  # norm 5.5 = 1.1 x 5
    penalty = velocity_norm_hinge(grown, v_ref[:1], margin=0.05)
    assert float(penalty) == pytest.approx(((5.5 - 1.05 * 5) / 5) ** 2)
    penalty.backward()  # d/dv of ((|v| - c)/|v_ref|)^2 = 2 (|v| - c) / |v_ref|^2 * v / |v|
    expected = 2 * (5.5 - 5.25) / 25 * torch.tensor([3.3, 4.4]) / 5.5
    torch.testing.assert_close(grown.grad[0], expected)


def test_reward_adaptive_kl_weighs_each_sample_from_1e_4_to_kl_weight_by_its_optimality():
    v = torch.tensor([[1.0, 1.0], [2.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    v_ref = torch.zeros_like(v)
    r = torch.tensor([0.0, 1.0, 0.5], dtype=torch.float64)
    per_sample = torch.tensor([1.0, 2.0, 0.0], dtype=torch.float64)  # mean (v - v_ref)^2 per sample
    m = 1e-4 / 0.1
    weights = 0.1 * (m + r * (1 - m))  # 1e-4 at r = 0, 0.1 at r = 1
    assert float(weights[0]) == pytest.approx(1e-4) and float(weights[1]) == pytest.approx(0.1)
    expected = float((weights * per_sample).mean())
    assert float(reward_adaptive_kl(v, v_ref, r, 0.1)) == pytest.approx(expected, rel=1e-12)
    # below 1e-4 the floor is the weight itself: every sample weighs kl_weight
    assert float(reward_adaptive_kl(v, v_ref, r, 5e-5)) == pytest.approx(5e-5 * float(per_sample.mean()))


def test_nft_loss_with_guards_is_the_plain_loss_plus_the_guard_terms():
    generator = torch.Generator().manual_seed(0)
    shape = (4, 3, 2, 2)
    v, v_old, v_ref, x0, eps = (
        torch.randn(shape, generator=generator, dtype=torch.float64) for _ in range(5)
    )
    t, r = (
        torch.rand(4, generator=generator, dtype=torch.float64),
        torch.rand(4, generator=generator).double(),
    )
    x_t = (1 - t.view(-1, 1, 1, 1)) * x0 + t.view(-1, 1, 1, 1) * eps
    common = dict(v=v, v_old=v_old, x0=x0, x_t=x_t, t=t, optimality=r, beta=1.0, adv_clip=5.0, v_ref=v_ref)
    plain, stats = nft_loss(**common, kl_weight=0.0)
    guarded, guarded_stats = nft_loss(**common, kl_weight=0.0, norm_guard=3.0, norm_margin=0.1)
    assert float(guarded) == pytest.approx(float(plain) + 3.0 * float(velocity_norm_hinge(v, v_ref, 0.1)))
    assert "loss_norm_guard" in guarded_stats and "loss_norm_guard" not in stats
    adaptive, _ = nft_loss(**common, kl_weight=0.2, kl_adaptive=True)
    expected = float(stats["loss_nft"]) + float(reward_adaptive_kl(v, v_ref, r, 0.2))
    assert float(adaptive) == pytest.approx(expected, rel=1e-12)


def test_the_guard_options_are_checked():
    from nft_core.errors import ConfigError
    from nft_core.objective import NFTOptions
    from nft_core.options import validate_options

    with pytest.raises(ConfigError, match="kl_adaptive weighs the KL anchor: set kl_weight > 0"):
        validate_options(NFTOptions, {"kl_adaptive": True}, "objective")
    with pytest.raises(ConfigError, match="objective.norm_guard"):
        validate_options(NFTOptions, {"norm_guard": -1.0}, "objective")


def test_the_step_guard_undoes_a_step_and_goes_back_before_it():
    weight = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    old, ema = torch.tensor([0.5, 0.5]), torch.tensor([0.9, 0.9])
    optimizer = torch.optim.Adam([weight], lr=0.1)
    guard = StepGuard([weight], optimizer, [old], [ema])
    assert not guard.saved and guard.finite()
    weight.grad = torch.tensor([1.0, 1.0])
    guard.save()
    optimizer.step()
    first = (weight.detach().clone(), {k: v.clone() for k, v in optimizer.state[weight].items()})
    guard.save()
    weight.grad = torch.tensor([1.0, 1.0])
    optimizer.step()
    with torch.no_grad():
        weight[0] = math.inf  # the step overflowed
    assert not guard.finite()
    guard.undo_step()
    assert guard.finite() and torch.equal(weight.detach(), first[0])
    assert all(torch.equal(optimizer.state[weight][k], v) for k, v in first[1].items())
    old.fill_(7.0)
    ema.fill_(8.0)
    guard.go_back()  # everything as it was before the last step taken
    assert torch.equal(old, torch.tensor([0.5, 0.5])) and torch.equal(ema, torch.tensor([0.9, 0.9]))


SETTINGS = AlarmSettings(
    images=16, optimizer_steps=2, trained_rewards=("geneval",), monitor_rewards=("held",)
)


def train(epoch: int, **values) -> dict:
    return {"kind": "train", "epoch": epoch, "v_old_gap": 1e-3, "velocity_norm_ratio": 1.0, **values}


def evaluation(epoch: int, trained: float, held: float) -> dict:
    return {"kind": "eval", "label": f"epoch {epoch}", "epoch": epoch, "eval/geneval/score": trained,
            "eval/held/score": held}  # fmt: skip


def test_healthy_records_sound_no_alarm():
    records = [train(e, **{"monitor/pixel-diversity/distance": 0.3 - 0.01 * e}) for e in range(10)]
    records += [evaluation(4, 0.6, 0.5), evaluation(9, 0.7, 0.52)]
    assert check_alarms(records, SETTINGS) == {}


@pytest.mark.parametrize(
    ("name", "records"),
    [
        ("stalled_gap", [train(0), *[train(e, v_old_gap=0.0) for e in range(1, 4)]]),
        ("velocity_inflation", [train(0), train(1, velocity_norm_ratio=1.3)]),
        ("reward_hacking", [train(0), evaluation(4, 0.5, 0.6), evaluation(9, 0.8, 0.52)]),
        (
            "diversity_collapse",
            [
                train(e, **{"monitor/shapes-diversity/colour_entropy": 1.8 if e < 3 else 0.4})
                for e in range(6)
            ],
        ),
        ("excluded_samples", [train(0, **{"samples/excluded": 5})]),
        ("excluded_samples", [train(0, skipped_steps=1, undone_steps=0)]),
    ],
)
def test_each_alarm_fires_on_records_built_to_trigger_it(name, records):
    assert set(check_alarms(records, SETTINGS)) == {name}


def test_velocity_inflation_reads_the_newest_probe_between_probes():
    def unprobed(epoch: int) -> dict:
        return {key: value for key, value in train(epoch).items() if key != "velocity_norm_ratio"}

    inflated = [train(0), train(5, velocity_norm_ratio=1.3), unprobed(6), unprobed(7)]
    assert set(check_alarms(inflated, SETTINGS)) == {"velocity_inflation"}
    healed = [train(0, velocity_norm_ratio=1.3), train(5, velocity_norm_ratio=1.1), unprobed(6)]
    assert check_alarms(healed, SETTINGS) == {}
    assert check_alarms([unprobed(0), unprobed(1)], SETTINGS) == {}


def test_alarms_hold_their_fire_at_the_edges_of_their_thresholds():
    assert check_alarms([train(e, v_old_gap=0.0) for e in range(2)], SETTINGS) == {}  # 2 < gap_epochs
    assert check_alarms([train(0, velocity_norm_ratio=1.2)], SETTINGS) == {}  # not above 1.2
    dropped = [evaluation(4, 0.5, 0.6), evaluation(9, 0.45, 0.5)]  # the trained reward fell too: not hacking
    assert check_alarms([train(0), *dropped], SETTINGS) == {}
    assert check_alarms([train(0, **{"samples/excluded": 4})], SETTINGS) == {}  # 4 / 16 = the threshold


def test_reward_hacking_weighs_the_trained_rewards_and_counts_the_base_but_not_its_cfg_baseline():
    settings = AlarmSettings(
        trained_rewards=("task", "area"), trained_weights=(1.0, 2.0), monitor_rewards=("held",)
    )

    def scored(label, epoch, task, area, held):
        return {"kind": "eval", "label": label, "epoch": epoch, "eval/task/score": task,
                "eval/area/score": area, "eval/held/score": held}  # fmt: skip

    base = scored("before", 0, 0.5, 0.1, 0.6)
    # the task fell (0.5 -> 0.45) but the weighted total rose (0.7 -> 0.85) while the monitor fell 0.1
    hacked = scored("epoch 4", 4, 0.45, 0.2, 0.5)
    assert "'task+area' rose from 0.700 to 0.850" in check_alarms([base, hacked], settings)["reward_hacking"]
    assert check_alarms([base, scored("epoch 4", 4, 0.45, 0.1, 0.5)], settings) == {}  # total fell
    cfg_baseline = scored("before, CFG 3", 0, 0.5, 0.1, 0.9)  # scored with CFG: not the base's level
    assert check_alarms([cfg_baseline, base, scored("epoch 4", 4, 0.5, 0.1, 0.58)], settings) == {}
