"""Old-policy refresh decay schedules at several steps."""

from __future__ import annotations

import pytest

from nft_core.schedules import parse_decay_schedule


@pytest.mark.parametrize("spec", ["none", "type0", "constant-0", " NONE "])
def test_zero_decay(spec):
    schedule = parse_decay_schedule(spec)
    assert [schedule(s) for s in (0, 1, 100, 10_000)] == [0.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize("spec", ["type1", "linear-0.001-0.5", "linear-1e-3-0.5"])
def test_type1_linear(spec):
    d = parse_decay_schedule(spec)
    assert d(0) == 0.0
    assert d(1) == pytest.approx(0.001)
    assert d(100) == pytest.approx(0.1)
    assert d(499) == pytest.approx(0.499)
    assert d(500) == pytest.approx(0.5)
    assert d(5000) == 0.5


@pytest.mark.parametrize("spec", ["type2", "delayed-75-0.0075-0.999"])
def test_type2_delayed(spec):
    d = parse_decay_schedule(spec)
    assert d(0) == 0.0
    assert d(74) == 0.0
    assert d(75) == 0.0
    assert d(76) == pytest.approx(0.0075)
    assert d(175) == pytest.approx(0.75)
    assert d(208) == pytest.approx(0.9975)
    assert d(209) == 0.999  # 0.0075 * 134 = 1.005 > 0.999
    assert d(100_000) == 0.999


def test_constant_and_other_linear():
    assert parse_decay_schedule("constant-0.3")(0) == 0.3
    assert parse_decay_schedule("constant-0.3")(999) == 0.3
    d = parse_decay_schedule("linear-0.25-1")
    assert [d(s) for s in (0, 1, 2, 3, 4, 5)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]


def test_schedule_keeps_its_spec():
    assert parse_decay_schedule("type2").spec == "type2"


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "type3",
        "linear-0.001",
        "linear-a-0.5",
        "linear-0.1-1.5",
        "constant-2",
        "delayed-7.5-0.1-0.5",
        "exp-0.9",
        "linear--0.1-0.5",
    ],
)
def test_bad_specs_list_the_allowed_forms(spec):
    with pytest.raises(ValueError) as info:
        parse_decay_schedule(spec)
    message = str(info.value)
    for form in ("none", "type0", "linear-<rate>-<max>", "delayed-<start>-<rate>-<max>", "constant-<d>"):
        assert form in message


def test_negative_step_is_an_error():
    with pytest.raises(ValueError):
        parse_decay_schedule("type1")(-1)


def test_lr_factor_closed_forms():
    import math

    from nft_core.schedules import lr_factor

    assert [lr_factor("constant", s, 10) for s in (0, 5, 9, 20)] == [1.0] * 4
    assert lr_factor("cosine", 0, 11) == 1.0 and lr_factor("cosine", 10, 11, final=0.1) == pytest.approx(0.1)
    assert lr_factor("cosine", 5, 11) == pytest.approx(0.5)
    expected = 0.2 + 0.8 * (1 + math.cos(math.pi * 0.2)) / 2
    assert lr_factor("cosine", 2, 11, final=0.2) == pytest.approx(expected)
    assert lr_factor("linear", 3, 5, final=0.5) == pytest.approx(1 - 0.5 * 0.75)
    assert lr_factor("linear", 99, 5) == 0.0  # past the end: stays at final
    assert lr_factor("cosine", 0, 1) == 1.0  # a one-step run uses the full rate
    with pytest.raises(ValueError, match="unknown lr schedule 'step'; allowed: constant, cosine, linear"):
        lr_factor("step", 0, 10)
