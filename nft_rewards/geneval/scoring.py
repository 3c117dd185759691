"""GenEval scoring on detections: filtering, relative position, the three per-image outcomes, aggregation.

Detector-independent: a detector (Mask2Former for real GenEval, the rule-based one of the shapes world)
produces raw per-class `Detection`s, a colour classifier names the colour of detected objects, and this
module turns them into GenEval's verdicts exactly as the reference code does (docs/rewards.md §9.3-9.8;
official GenEval `evaluation/evaluate_images.py::evaluate`, reward-server / DiffusionNFT
`flow_grpo/gen_eval.py::evaluate_reward`), quirks included:

* (a) `correct`, official GenEval: top-`count` detections per clause (extra instances are fine), exclude
  clauses fail the image when the class has `>= count` detections (so counting needs exactly `count`).
* (b) `strict_correct`: exactly `count` detections of every include class, all of the required colour,
  positions for all pairs; exclude clauses are ignored.
* (c) `score`, the partial credit that is the RL training reward: mean of per-clause terms. It can be
  negative (over-detection), a violated relation contributes the two terms 0 and 1, a clause whose colour
  check failed adds no position term, exclude clauses contribute nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "COLORS",
    "COUNTING_THRESHOLD",
    "MAX_OBJECTS",
    "NMS_THRESHOLD",
    "PARTIAL_SCORE_RANGE",
    "POSITION_THRESHOLD",
    "RELATIONS",
    "TAGS",
    "THRESHOLD",
    "ColorClassifier",
    "Detection",
    "Detections",
    "GenEvalOutcome",
    "box_iou",
    "evaluate_image",
    "filter_detections",
    "official_score",
    "relative_position",
]

TAGS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
"""The six GenEval tasks, in the official order."""

COLORS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white")
"""GenEval's colour names; the order matters for argmax ties of a colour classifier."""

RELATIONS = ("left of", "right of", "above", "below")

THRESHOLD = 0.3
"""A detection is kept when its score is strictly greater than this (all tags but counting)."""
COUNTING_THRESHOLD = 0.9
"""The threshold for `counting` prompts."""
MAX_OBJECTS = 16
"""At most this many detections per class survive filtering."""
NMS_THRESHOLD = 1.0
"""1.0 disables suppression (the reference's NMS test only applies below 1)."""
POSITION_THRESHOLD = 0.1
"""Offsets are shrunk by this fraction of the summed box sizes before the relation test."""

PARTIAL_SCORE_RANGE = (1.0 - (MAX_OBJECTS - 1), 1.0)
"""Bounds of the partial-credit score (c): every term is >= `1 - (16 - 1) / 1 = -14` (a count-1 clause with
16 detections, the cap) and <= 1, so their mean is too; a single-object prompt with 16 detections reaches
the minimum, an exact match the maximum."""


@dataclass
class Detection:
    """One detected instance: box `(x1, y1, x2, y2)` in pixels, confidence, optional boolean mask `[H, W]`."""

    box: tuple[float, float, float, float]
    score: float
    mask: np.ndarray | None = None


Detections = dict[str, list[Detection]]
"""Class name -> detections of that class (raw from a detector, or as filtered by `filter_detections`)."""

ColorClassifier = Callable[[str, list[Detection]], list[str]]
"""`classify(class_name, detections) -> one colour name per detection`; called only for colour clauses."""


@dataclass
class GenEvalOutcome:
    """The three GenEval verdicts of one image (docs/rewards.md §9.6).

    `correct` is official GenEval (a), `strict_correct` is (b), `score` the partial credit (c).
    `reason` is the first failure of the strict check (strict implies official, so it also explains an
    official failure); empty when the image is strictly correct.
    """

    tag: str
    correct: bool
    strict_correct: bool
    score: float
    reason: str


def box_iou(box_a: Sequence[float], box_b: Sequence[float]) -> float:
    """IoU of two boxes with the reference's +1-pixel area convention (used only by the NMS rule)."""

    def area(box: Sequence[float]) -> float:
        return max(box[2] - box[0] + 1, 0) * max(box[3] - box[1] + 1, 0)

    inter = area(
        [max(box_a[0], box_b[0]), max(box_a[1], box_b[1]), min(box_a[2], box_b[2]), min(box_a[3], box_b[3])]
    )
    union = area(box_a) + area(box_b) - inter
    return inter / union if union else 0.0


def filter_detections(detections: Detections, tag: str) -> Detections:
    """Per class: sort by score (descending), keep scores `> threshold` (0.9 for counting), at most 16, NMS.

    Scores are compared in float32, as the reference compares mmdet's float32 score column. The order of
    equal scores follows the reference's `np.argsort(scores)[::-1]`. With `NMS_THRESHOLD = 1` nothing is
    suppressed. Classes without survivors are dropped.
    """
    threshold = COUNTING_THRESHOLD if tag == "counting" else THRESHOLD
    kept: Detections = {}
    for name, candidates in detections.items():
        if not candidates:
            continue
        scores = np.array([float(d.score) for d in candidates], dtype=np.float32)
        order = np.argsort(scores)[::-1]
        order = order[scores[order] > np.float32(threshold)]
        remaining = order[:MAX_OBJECTS].tolist()
        survivors: list[Detection] = []
        while remaining:
            best = remaining.pop(0)
            survivors.append(candidates[best])
            remaining = [
                i
                for i in remaining
                if NMS_THRESHOLD == 1 or box_iou(candidates[best].box, candidates[i].box) < NMS_THRESHOLD
            ]
        if survivors:
            kept[name] = survivors
    return kept


def relative_position(box_a: Sequence[float], box_b: Sequence[float]) -> set[str]:
    """The relations of box A relative to box B (docs/rewards.md §9.5), computed in float32 like mmdet boxes.

    `o = centre_A - centre_B`; per axis `o' = sign(o) max(|o| - 0.1 (size_A + size_B), 0)`; no relation
    when both `|o'| < 1e-3`; otherwise `(dx, dy) = o' / ||o||` (the norm of the *unshrunk* offset, a
    reference quirk) and the set holds `left of` (dx < -0.5), `right of` (dx > 0.5), `above` (dy < -0.5),
    `below` (dy > 0.5); image y grows downward.
    """
    boxes = np.array([list(box_a)[:4], list(box_b)[:4]], dtype=np.float32).reshape(2, 2, 2)
    center_a, center_b = boxes.mean(axis=-2)
    dim_a, dim_b = np.abs(np.diff(boxes, axis=-2))[..., 0, :]
    offset = center_a - center_b
    revised = np.maximum(np.abs(offset) - np.float32(POSITION_THRESHOLD) * (dim_a + dim_b), 0) * np.sign(
        offset
    )
    if np.all(np.abs(revised) < 1e-3):
        return set()
    dx, dy = revised / np.linalg.norm(offset)
    relations = set()
    if dx < -0.5:
        relations.add("left of")
    if dx > 0.5:
        relations.add("right of")
    if dy < -0.5:
        relations.add("above")
    if dy > 0.5:
        relations.add("below")
    return relations


def _describe(relations: set[str]) -> str:
    return " and ".join(sorted(relations)) if relations else "no relation to the"


def _colour_summary(colors: list[str]) -> str:
    return ", ".join(f"{colors.count(c)} {c}" for c in dict.fromkeys(colors))


def _official(
    metadata: dict[str, Any], objects: Detections, classify: ColorClassifier
) -> tuple[bool, list[str]]:
    """(a) official GenEval `evaluate`: top-`count` per clause, exclude clauses checked."""
    correct = True
    reasons: list[str] = []
    groups: list[list[Detection] | None] = []
    for req in metadata.get("include", []):
        name, count = req["class"], req["count"]
        matched = True
        found = objects.get(name, [])[:count]
        if len(found) < count:
            correct = matched = False
            reasons.append(f"expected {name}>={count}, found {len(found)}")
        else:
            if "color" in req:
                colors = classify(name, found)
                if colors.count(req["color"]) < count:
                    correct = matched = False
                    reasons.append(
                        f"expected {req['color']} {name}>={count}, found {colors.count(req['color'])} "
                        f"{req['color']}; and {_colour_summary(colors)}"
                    )
            if "position" in req and matched:
                relation, target = req["position"]
                if groups[target] is None:
                    correct = matched = False
                    reasons.append(f"no target for {name} to be {relation}")
                else:
                    for obj in found:
                        for target_obj in groups[target]:
                            found_relations = relative_position(obj.box, target_obj.box)
                            if relation not in found_relations:
                                correct = matched = False
                                found_text = _describe(found_relations)
                                reasons.append(
                                    f"expected {name} {relation} target, found {found_text} target"
                                )
                                break
                        if not matched:
                            break
        groups.append(found if matched else None)
    for req in metadata.get("exclude", []):
        name = req["class"]
        if len(objects.get(name, [])) >= req["count"]:
            correct = False
            reasons.append(f"expected {name}<{req['count']}, found {len(objects[name])}")
    return correct, reasons


def _strict_and_partial(
    metadata: dict[str, Any], objects: Detections, classify: ColorClassifier
) -> tuple[bool, float, list[str]]:
    """(b) strict correctness and (c) partial credit: reference `evaluate_reward`, exclude ignored."""
    correct = True
    reasons: list[str] = []
    terms: list[float] = []
    groups: list[list[Detection] | None] = []
    for req in metadata.get("include", []):
        name, count = req["class"], req["count"]
        matched = True
        found = objects.get(name, [])
        terms.append(1 - abs(count - len(found)) / count)
        if len(found) != count:
            correct = matched = False
            reasons.append(f"expected {name}=={count}, found {len(found)}")
            if "color" in req or "position" in req:
                terms.append(0.0)
        else:
            if "color" in req:
                colors = classify(name, found)
                hits = colors.count(req["color"])
                terms.append(1 - abs(count - hits) / count)
                if hits != count:
                    correct = matched = False
                    reasons.append(
                        f"expected {req['color']} {name}=={count}, found {hits} {req['color']}; "
                        f"and {_colour_summary(colors)}"
                    )
            if "position" in req and matched:
                relation, target = req["position"]
                if groups[target] is None:
                    correct = matched = False
                    reasons.append(f"no target for {name} to be {relation}")
                    terms.append(0.0)
                else:
                    for obj in found:
                        for target_obj in groups[target]:
                            found_relations = relative_position(obj.box, target_obj.box)
                            if relation not in found_relations:
                                correct = matched = False
                                found_text = _describe(found_relations)
                                reasons.append(
                                    f"expected {name} {relation} target, found {found_text} target"
                                )
                                terms.append(0.0)
                                break
                        if not matched:
                            break
                    terms.append(1.0)  # reference quirk: added whether or not the relation held
        groups.append(found if matched else None)
    score = sum(terms) / len(terms) if terms else 0.0
    return correct, float(score), reasons


def evaluate_image(
    metadata: dict[str, Any],
    detections: Detections,
    classify_colors: ColorClassifier,
    *,
    filtered: bool = False,
) -> GenEvalOutcome:
    """GenEval's three outcomes for one image from its raw detections (docs/rewards.md §9.6).

    `metadata` is one GenEval metadata object (see `nft_rewards.geneval.metadata.validate_metadata`).
    `detections` are filtered here with `filter_detections(detections, metadata["tag"])` unless
    `filtered=True` says they already were (filtering twice could reorder equal scores). The colour
    classifier is called at most once per (class, count): the official check classifies the top-`count`
    detections, the strict one all of them only when there are exactly `count`, the same list.
    """
    tag = metadata["tag"]
    objects = detections if filtered else filter_detections(detections, tag)
    cache: dict[tuple[str, int], list[str]] = {}

    def classify(name: str, found: list[Detection]) -> list[str]:
        key = (name, len(found))
        if key not in cache:
            colors = list(classify_colors(name, list(found)))
            if len(colors) != len(found):
                raise ValueError(
                    f"colour classifier returned {len(colors)} colours for {len(found)} {name} detections"
                )
            cache[key] = colors
        return cache[key]

    correct, _ = _official(metadata, objects, classify)
    strict, score, reasons = _strict_and_partial(metadata, objects, classify)
    return GenEvalOutcome(
        tag=tag,
        correct=bool(correct),
        strict_correct=bool(strict),
        score=score,
        reason=reasons[0] if reasons else "",
    )


def official_score(tags: Sequence[str], correct: Sequence[bool | float]) -> dict[str, Any]:
    """Official GenEval aggregation (docs/rewards.md §9.8) of per-image correctness.

    Returns `overall` (unweighted mean of the per-tag means over the tags present), `per_tag`
    (tag -> mean, in GenEval's order), `counts` (tag -> number of images), `image_accuracy` (plain
    image-weighted mean, what NFT's eval logs as `accuracy`) and `missing_tags`. The official GenEval
    overall is defined over all six tags: with tags missing, `overall` is a mean over fewer tasks and is
    not comparable to published numbers (check `missing_tags` is empty).
    """
    if len(tags) != len(correct):
        raise ValueError(f"{len(tags)} tags but {len(correct)} correctness values")
    if not tags:
        raise ValueError("official_score needs at least one image")
    unknown = sorted({t for t in tags if t not in TAGS})
    if unknown:
        raise ValueError(f"unknown GenEval tag(s) {unknown}; expected one of {list(TAGS)}")
    values: dict[str, list[float]] = {}
    for tag, value in zip(tags, correct, strict=True):
        values.setdefault(tag, []).append(float(value))
    per_tag = {tag: sum(values[tag]) / len(values[tag]) for tag in TAGS if tag in values}
    return {
        "overall": sum(per_tag.values()) / len(per_tag),
        "per_tag": per_tag,
        "counts": {tag: len(values[tag]) for tag in per_tag},
        "image_accuracy": sum(float(v) for v in correct) / len(correct),
        "missing_tags": [tag for tag in TAGS if tag not in values],
    }
