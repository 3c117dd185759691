"""GenEval scoring: filtering, relative position, the three outcomes (the worked examples of rewards.md)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from nft_rewards.geneval.scoring import (
    COLORS,
    COUNTING_THRESHOLD,
    MAX_OBJECTS,
    NMS_THRESHOLD,
    PARTIAL_SCORE_RANGE,
    POSITION_THRESHOLD,
    TAGS,
    THRESHOLD,
    Detection,
    evaluate_image,
    filter_detections,
    official_score,
    relative_position,
)


def det(x: float, y: float = 0.0, size: float = 10.0, score: float = 0.95, color: str = "red") -> Detection:
    """A square box of side `size` at (x, y); the colour rides along for the fake classifier."""
    detection = Detection(box=(x, y, x + size, y + size), score=score)
    detection.color = color  # read by `classifier` below, ignored by the scorer
    return detection


def classifier(name, detections):
    return [d.color for d in detections]


def no_colours(name, detections):
    raise AssertionError("the colour classifier must not be called for this prompt")


def row(n: int, score: float = 0.95, color: str = "red") -> list[Detection]:
    """n non-overlapping detections in a row (distinct scores so the order is defined)."""
    return [det(12.0 * i, score=score - 0.001 * i, color=color) for i in range(n)]


# ---------------------------------------------------------------------------------------------------------
# constants


def test_constants():
    assert TAGS == ("single_object", "two_object", "counting", "colors", "position", "color_attr")
    assert COLORS == ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white")
    assert (THRESHOLD, COUNTING_THRESHOLD, MAX_OBJECTS, NMS_THRESHOLD, POSITION_THRESHOLD) == (
        0.3,
        0.9,
        16,
        1.0,
        0.1,
    )
    assert PARTIAL_SCORE_RANGE == (-14.0, 1.0)


# ---------------------------------------------------------------------------------------------------------
# worked examples of §9.6

COW_RIGHT_OF_LAPTOP = {
    "tag": "position",
    "include": [{"class": "laptop", "count": 1}, {"class": "cow", "count": 1, "position": ["right of", 0]}],
    "prompt": "a photo of a cow right of a laptop",
}


@pytest.mark.parametrize(
    ("detections", "score", "correct"),
    [
        ({"laptop": [det(0)], "cow": [det(30)]}, 1.0, True),  # relation ok: [1, 1, 1]
        ({"laptop": [det(30)], "cow": [det(0)]}, 0.75, False),  # relation wrong: [1, 1, 0, 1]
        ({"cow": [det(30)]}, 1 / 3, False),  # laptop missing: [0] + [1, 0]
        ({"laptop": [det(0)]}, 1 / 3, False),  # cow missing: [1] + [0, 0]
    ],
)
def test_position_worked_examples(detections, score, correct):
    outcome = evaluate_image(COW_RIGHT_OF_LAPTOP, detections, no_colours)
    assert outcome.score == pytest.approx(score, abs=1e-12)
    assert outcome.strict_correct is correct
    assert outcome.correct is correct
    assert outcome.tag == "position"


def test_position_reasons():
    wrong = evaluate_image(COW_RIGHT_OF_LAPTOP, {"laptop": [det(30)], "cow": [det(0)]}, no_colours)
    assert wrong.reason == "expected cow right of target, found left of target"
    missing = evaluate_image(COW_RIGHT_OF_LAPTOP, {"cow": [det(30)]}, no_colours)
    assert missing.reason == "expected laptop==1, found 0"
    ok = evaluate_image(COW_RIGHT_OF_LAPTOP, {"laptop": [det(0)], "cow": [det(30)]}, no_colours)
    assert ok.reason == ""


HANDBAG_SCISSORS = {
    "tag": "color_attr",
    "include": [
        {"class": "handbag", "count": 1, "color": "pink"},
        {"class": "scissors", "count": 1, "color": "black"},
    ],
    "prompt": "a photo of a pink handbag and a black scissors",
}


def test_color_attr_worked_examples():
    wrong_colour = {"handbag": [det(0, color="pink")], "scissors": [det(30, color="white")]}
    outcome = evaluate_image(HANDBAG_SCISSORS, wrong_colour, classifier)
    assert outcome.score == pytest.approx(0.75)  # [1, 1, 1, 0]
    assert not outcome.correct and not outcome.strict_correct
    assert outcome.reason.startswith("expected black scissors==1, found 0 black")

    two_handbags = {
        "handbag": [det(0, color="pink"), det(12, score=0.9, color="pink")],
        "scissors": [det(30, color="black")],
    }
    outcome = evaluate_image(HANDBAG_SCISSORS, two_handbags, classifier)
    assert outcome.score == pytest.approx(0.5)  # [0, 0] + [1, 1]
    assert outcome.correct and not outcome.strict_correct  # official looks at the top-1 handbag only


COUNT_TWO = {
    "tag": "counting",
    "include": [{"class": "cat", "count": 2}],
    "exclude": [{"class": "cat", "count": 3}],
    "prompt": "a photo of two cats",
}


@pytest.mark.parametrize(("n", "score"), [(0, 0.0), (1, 0.5), (2, 1.0), (3, 0.5), (4, 0.0), (5, -0.5)])
def test_counting_worked_examples(n, score):
    outcome = evaluate_image(COUNT_TWO, {"cat": row(n)}, no_colours)
    assert outcome.score == pytest.approx(score)
    assert outcome.correct is (n == 2)
    assert outcome.strict_correct is (n == 2)


SINGLE = {"tag": "single_object", "include": [{"class": "cow", "count": 1}], "prompt": "a photo of a cow"}


@pytest.mark.parametrize(("n", "score"), [(0, 0.0), (1, 1.0), (2, 0.0), (3, -1.0)])
def test_single_object_worked_examples(n, score):
    outcome = evaluate_image(SINGLE, {"cow": row(n)}, no_colours)
    assert outcome.score == pytest.approx(score)
    assert outcome.correct is (n >= 1)  # official accepts extra instances
    assert outcome.strict_correct is (n == 1)


def test_partial_score_minimum_is_reached_with_the_cap():
    outcome = evaluate_image(SINGLE, {"cow": row(20)}, no_colours)
    assert outcome.score == PARTIAL_SCORE_RANGE[0] == -14.0


# ---------------------------------------------------------------------------------------------------------
# official vs strict, every tag


def test_official_vs_strict_two_object():
    meta = {
        "tag": "two_object",
        "include": [{"class": "cow", "count": 1}, {"class": "dog", "count": 1}],
        "prompt": "a photo of a cow and a dog",
    }
    exact = evaluate_image(meta, {"cow": row(1), "dog": row(1)}, no_colours)
    assert (exact.correct, exact.strict_correct, exact.score) == (True, True, 1.0)
    extra = evaluate_image(meta, {"cow": row(2), "dog": row(1)}, no_colours)
    assert (extra.correct, extra.strict_correct, extra.score) == (True, False, 0.5)
    missing = evaluate_image(meta, {"cow": row(1)}, no_colours)
    assert (missing.correct, missing.strict_correct, missing.score) == (False, False, 0.5)
    assert missing.reason == "expected dog==1, found 0"


def test_official_needs_exclude_for_counting():
    outcome = evaluate_image(COUNT_TWO, {"cat": row(3)}, no_colours)
    assert (outcome.correct, outcome.strict_correct) == (False, False)
    without_exclude = {key: value for key, value in COUNT_TWO.items() if key != "exclude"}
    outcome = evaluate_image(without_exclude, {"cat": row(3)}, no_colours)
    assert (outcome.correct, outcome.strict_correct) == (True, False)  # official = top-2 only
    # exclude clauses never enter strict correctness or the partial score
    assert outcome.score == evaluate_image(COUNT_TWO, {"cat": row(3)}, no_colours).score == 0.5


def test_official_vs_strict_colors():
    meta = {"tag": "colors", "include": [{"class": "car", "count": 1, "color": "red"}], "prompt": "a red car"}
    top_red = {"car": [det(0, score=0.9, color="red"), det(20, score=0.8, color="blue")]}
    outcome = evaluate_image(meta, top_red, classifier)
    assert (outcome.correct, outcome.strict_correct, outcome.score) == (True, False, 0.0)  # [0, 0]
    top_blue = {"car": [det(0, score=0.8, color="red"), det(20, score=0.9, color="blue")]}
    outcome = evaluate_image(meta, top_blue, classifier)
    assert (outcome.correct, outcome.strict_correct) == (False, False)
    single_blue = evaluate_image(meta, {"car": [det(0, color="blue")]}, classifier)
    assert (single_blue.correct, single_blue.strict_correct, single_blue.score) == (False, False, 0.5)


def test_official_vs_strict_position():
    # two cows: the higher-scoring one is right of the laptop, the other left of it
    detections = {"laptop": [det(30)], "cow": [det(60, score=0.9), det(0, score=0.8)]}
    outcome = evaluate_image(COW_RIGHT_OF_LAPTOP, detections, no_colours)
    assert (outcome.correct, outcome.strict_correct) == (True, False)
    assert outcome.score == pytest.approx(1 / 3)  # laptop [1] + cow [1 - 1/1 = 0, 0]
    swapped = {"laptop": [det(30)], "cow": [det(60, score=0.8), det(0, score=0.9)]}
    assert not evaluate_image(COW_RIGHT_OF_LAPTOP, swapped, no_colours).correct


def test_position_checks_every_pair():
    meta = {
        "tag": "position",
        "include": [
            {"class": "laptop", "count": 2},
            {"class": "cow", "count": 1, "position": ["right of", 0]},
        ],
    }
    ok = {"laptop": [det(0), det(0, y=30)], "cow": [det(40, y=15)]}
    assert evaluate_image(meta, ok, no_colours).strict_correct
    one_violated = {"laptop": [det(0), det(50, y=30)], "cow": [det(40, y=15)]}
    outcome = evaluate_image(meta, one_violated, no_colours)
    assert not outcome.strict_correct and not outcome.correct
    assert outcome.score == pytest.approx(0.75)  # [1] + [1, 0, 1]


def test_official_vs_strict_color_attr_and_failed_colour_skips_position():
    meta = {
        "tag": "color_attr",
        "include": [
            {"class": "cow", "count": 1, "color": "red"},
            {"class": "dog", "count": 1, "color": "blue", "position": ["right of", 0]},
        ],
    }
    # colour wrong on the dog: its position term is skipped -> [1, 1] + [1, 0]
    outcome = evaluate_image(
        meta, {"cow": [det(0, color="red")], "dog": [det(30, color="green")]}, classifier
    )
    assert outcome.score == pytest.approx(0.75)
    # colour right and relation right -> [1, 1] + [1, 1, 1]
    outcome = evaluate_image(meta, {"cow": [det(0, color="red")], "dog": [det(30, color="blue")]}, classifier)
    assert outcome.score == 1.0 and outcome.strict_correct and outcome.correct
    # colour right, relation wrong -> [1, 1] + [1, 1, 0, 1]
    outcome = evaluate_image(meta, {"cow": [det(30, color="red")], "dog": [det(0, color="blue")]}, classifier)
    assert outcome.score == pytest.approx(5 / 6)
    # wrong count with colour and position -> a single 0 term: [1, 1] + [0, 0]
    outcome = evaluate_image(meta, {"cow": [det(0, color="red")]}, classifier)
    assert outcome.score == pytest.approx(0.5)


def test_color_classifier_called_once_per_clause():
    calls = []

    def counting_classifier(name, detections):
        calls.append((name, len(detections)))
        return [d.color for d in detections]

    evaluate_image(
        HANDBAG_SCISSORS, {"handbag": [det(0, color="pink")], "scissors": [det(30)]}, counting_classifier
    )
    assert calls == [("handbag", 1), ("scissors", 1)]


# ---------------------------------------------------------------------------------------------------------
# filtering


def test_threshold_is_strict():
    detections = {"cow": [det(0, score=0.3), det(20, score=0.3001), det(40, score=0.2)]}
    kept = filter_detections(detections, "single_object")
    assert [d.score for d in kept["cow"]] == [0.3001]
    assert filter_detections({"cow": [det(0, score=0.3)]}, "two_object") == {}


def test_counting_threshold():
    detections = {"cat": [det(0, score=0.9), det(20, score=0.95), det(40, score=0.5), det(60, score=0.91)]}
    assert [d.score for d in filter_detections(detections, "counting")["cat"]] == [0.95, 0.91]
    assert [d.score for d in filter_detections(detections, "colors")["cat"]] == [0.95, 0.91, 0.9, 0.5]
    # the counting threshold changes the verdict: only two confident cats
    outcome = evaluate_image(COUNT_TWO, detections, no_colours)
    assert outcome.strict_correct and outcome.correct


def test_max_objects_keeps_the_best_sixteen():
    detections = {"cow": [det(0, score=0.31 + 0.01 * i) for i in range(20)]}
    kept = filter_detections(detections, "single_object")["cow"]
    assert len(kept) == MAX_OBJECTS
    assert [round(d.score, 2) for d in kept] == [round(0.31 + 0.01 * i, 2) for i in range(19, 3, -1)]


def test_nms_threshold_one_keeps_duplicates():
    duplicates = {"cow": [det(0, score=0.8), det(0, score=0.7)]}  # identical boxes, IoU 1
    assert len(filter_detections(duplicates, "single_object")["cow"]) == 2


def test_filtering_happens_inside_evaluate_image():
    low = {"cow": [det(0, score=0.95), det(20, score=0.25)]}
    assert evaluate_image(SINGLE, low, no_colours).strict_correct
    prefiltered = {"cow": [det(0, score=0.95), det(20, score=0.25)]}
    assert not evaluate_image(SINGLE, prefiltered, no_colours, filtered=True).strict_correct


# ---------------------------------------------------------------------------------------------------------
# relative position


@pytest.mark.parametrize(
    ("box_a", "relations"),
    [
        ((20, 0, 30, 10), {"right of"}),
        ((-20, 0, -10, 10), {"left of"}),
        ((0, -20, 10, -10), {"above"}),
        ((0, 20, 10, 30), {"below"}),
        ((20, 20, 30, 30), {"right of", "below"}),
        ((-20, -20, -10, -10), {"left of", "above"}),
    ],
)
def test_relative_position_each_relation(box_a, relations):
    assert relative_position(box_a, (0, 0, 10, 10)) == relations


def test_relative_position_shrink_and_unshrunk_norm():
    # offset (6, 5); shrink 0.1 * (10 + 10) = 2 per axis -> (4, 3); divided by ||(6, 5)|| = 7.81
    a, b = (6, 5, 16, 15), (0, 0, 10, 10)
    # dx = 0.512 -> right of; dy = 0.384 -> not below. Without the shrink dy = 0.64 (below); dividing by
    # the shrunk norm 5 would give dy = 0.6 (below): only the reference rule gives {"right of"}.
    assert relative_position(a, b) == {"right of"}
    # a small offset is entirely absorbed by the shrink: no relation at all
    assert relative_position((1.5, 1.5, 11.5, 11.5), b) == set()
    assert relative_position(b, b) == set()
    # just beyond the shrink along x only: offset 2.5 > 2 -> (0.5, 0) / 2.5 = 0.2 -> no relation either
    assert relative_position((2.5, 0, 12.5, 10), b) == set()
    # the shrink uses both boxes' sizes: a wide box B needs a larger offset
    # offset 10, shrink 0.1 * (10 + 40) = 5 -> 5 / 10 = 0.5, not > 0.5
    assert relative_position((25, 0, 35, 10), (0, 0, 40, 10)) == set()
    assert relative_position((26, 0, 36, 10), (0, 0, 40, 10)) == {"right of"}


def test_relative_position_accepts_longer_rows():
    assert relative_position((20, 0, 30, 10, 0.9), (0, 0, 10, 10, 0.8)) == {"right of"}


# ---------------------------------------------------------------------------------------------------------
# official aggregation


def test_official_score_against_hand_computation():
    tags = ["single_object", "single_object", "two_object", "counting", "counting", "counting", "colors"]
    correct = [True, False, True, True, True, False, 0.0]
    result = official_score(tags, correct)
    assert result["per_tag"] == {"single_object": 0.5, "two_object": 1.0, "counting": 2 / 3, "colors": 0.0}
    assert result["counts"] == {"single_object": 2, "two_object": 1, "counting": 3, "colors": 1}
    assert result["overall"] == pytest.approx((0.5 + 1.0 + 2 / 3 + 0.0) / 4)
    assert result["image_accuracy"] == pytest.approx(4 / 7)
    assert result["missing_tags"] == ["position", "color_attr"]
    assert list(result["per_tag"]) == ["single_object", "two_object", "counting", "colors"]


def test_official_score_all_six_tags_is_mean_of_task_means():
    tags, correct = [], []
    for i, tag in enumerate(TAGS):
        tags += [tag] * (i + 1)
        correct += [1.0] + [0.0] * i  # task mean 1 / (i + 1)
    result = official_score(tags, correct)
    assert result["missing_tags"] == []
    assert result["overall"] == pytest.approx(sum(1 / (i + 1) for i in range(6)) / 6)
    assert result["image_accuracy"] == pytest.approx(6 / 21)


def test_official_score_errors():
    with pytest.raises(ValueError, match="unknown GenEval tag"):
        official_score(["bogus"], [True])
    with pytest.raises(ValueError, match="2 tags but 1"):
        official_score(["colors", "colors"], [True])
    with pytest.raises(ValueError, match="at least one"):
        official_score([], [])


def test_import_uses_only_numpy_torch_and_stdlib():
    code = (
        "import sys; before = set(sys.modules); import nft_rewards.geneval; "
        "new = {m.split('.')[0] for m in set(sys.modules) - before}; "
        "print(sorted(new - set(sys.stdlib_module_names) - {'numpy', 'torch', 'nft_rewards'}))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout
