"""Parameter EMA: closed form after k updates, exact swap/restore, state round trip."""

from __future__ import annotations

import pytest
import torch

from nft_core.ema import ParameterEMA


def _module(dtype=torch.float32):
    torch.manual_seed(0)
    return torch.nn.Linear(3, 2).to(dtype)


def test_closed_form_after_k_updates_with_fixed_parameters():
    model = _module()
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    ema = ParameterEMA(model.named_parameters(), decay=0.9)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(2.0)
    k = 7
    for _ in range(k):
        ema.update(model.named_parameters())
    for name, shadow in ema.shadow.items():
        expected = 0.9**k * start[name] + (1 - 0.9**k) * 2.0
        torch.testing.assert_close(shadow, expected, rtol=1e-6, atol=1e-6)
    assert ema.num_updates == k


def test_closed_form_with_changing_parameters():
    # ema_k = d^k e0 + sum_{i=1..k} (1 - d) d^(k-i) p_i
    p = torch.nn.Parameter(torch.tensor([1.0, -1.0], dtype=torch.float64))
    ema = ParameterEMA([("p", p)], decay=0.8)
    values = [3.0, -2.0, 0.5, 10.0]
    for value in values:
        with torch.no_grad():
            p.fill_(value)
        ema.update([("p", p)])
    k = len(values)
    expected = [
        0.8**k * e0 + sum((1 - 0.8) * 0.8 ** (k - i) * v for i, v in enumerate(values, start=1))
        for e0 in (1.0, -1.0)
    ]
    torch.testing.assert_close(ema.shadow["p"], torch.tensor(expected, dtype=torch.float32))
    assert ema.shadow["p"].dtype == torch.float32


def test_warmup_matches_the_reference_wrapper():
    p = torch.nn.Parameter(torch.zeros(1))
    ema = ParameterEMA([("p", p)], decay=0.9, warmup=True)
    expected = 0.0
    with torch.no_grad():
        p.fill_(1.0)
    for n in range(100):
        d = min(0.9, (1 + n) / (10 + n))
        assert ema.current_decay() == pytest.approx(d)
        ema.update([("p", p)])
        expected = d * expected + (1 - d) * 1.0
    assert ema.shadow["p"].item() == pytest.approx(expected, rel=1e-6)
    assert ParameterEMA([("p", p)], decay=0.9).current_decay() == 0.9


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_swapped_in_uses_ema_and_restores_exactly(dtype):
    model = _module(dtype)
    ema = ParameterEMA(model.named_parameters(), decay=0.5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.37)
    live = {n: p.detach().clone() for n, p in model.named_parameters()}
    with ema.swapped_in(model.named_parameters()):
        for name, p in model.named_parameters():
            assert torch.equal(p, ema.shadow[name].to(dtype))
    for name, p in model.named_parameters():
        assert torch.equal(p, live[name])


def test_swapped_in_restores_on_exception():
    model = _module()
    ema = ParameterEMA(model.named_parameters())
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    live = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(RuntimeError, match="boom"), ema.swapped_in(model.named_parameters()):
        raise RuntimeError("boom")
    assert all(torch.equal(p, live[n]) for n, p in model.named_parameters())


def test_state_dict_round_trip_and_name_checks():
    model = _module()
    ema = ParameterEMA(model.named_parameters(), decay=0.7)
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model.named_parameters())
    state = ema.state_dict()
    other = ParameterEMA(_module().named_parameters(), decay=0.1)
    other.load_state_dict(state)
    assert other.decay == 0.7 and other.num_updates == 1
    assert all(torch.equal(other.shadow[n], ema.shadow[n]) for n in ema.shadow)
    state["shadow"]["weight"].add_(5.0)  # the state is a copy
    assert not torch.equal(ema.shadow["weight"], state["shadow"]["weight"])
    with pytest.raises(KeyError):
        ema.update([("weight", model.weight)])
    with pytest.raises(KeyError):
        other.load_state_dict({"shadow": {"weight": torch.zeros(2, 3)}})
