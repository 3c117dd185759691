"""The rule-based shapes detector: ground-truth accuracy (the acceptance bar), junk rejection, adapters."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from nft_rewards.geneval.scoring import COUNTING_THRESHOLD, THRESHOLD, evaluate_image, filter_detections
from nft_shapes import grammar
from nft_shapes.detector import (
    MIN_AREA,
    ShapeDetection,
    as_image_batch,
    detect,
    detect_batch,
    to_geneval,
)
from nft_shapes.render import rasterize, render_scene
from nft_shapes.world import COLORS, IMAGE_SIZE

S = IMAGE_SIZE


def scenes(n: int, seed: int):
    """n ground-truth scenes: a tag uniformly, then one of its prompts uniformly."""
    rng = np.random.default_rng(seed)
    items = grammar.all_prompts()
    by_tag = {tag: [it for it in items if it.metadata["tag"] == tag] for tag in grammar.TAGS}
    out = []
    for _ in range(n):
        tag = grammar.TAGS[int(rng.integers(len(grammar.TAGS)))]
        item = by_tag[tag][int(rng.integers(len(by_tag[tag])))]
        image, objects = render_scene(item.metadata, rng)
        out.append((item.metadata, image, objects))
    return out


def test_ground_truth_accuracy():
    data = scenes(1000, seed=0)
    images = np.stack([image for _, image, _ in data])
    start = time.perf_counter()
    detections = []
    for i in range(0, len(images), 64):
        detections += detect_batch(images[i : i + 64])
    ms = (time.perf_counter() - start) / len(images) * 1e3
    strict = official = exact = 0
    per_tag: dict[str, list[bool]] = {}
    for (meta, _, objects), found in zip(data, detections, strict=True):
        outcome = evaluate_image(meta, *to_geneval(found))
        strict += outcome.strict_correct
        official += outcome.correct
        per_tag.setdefault(meta["tag"], []).append(outcome.strict_correct)
        truth = sorted((o["class"], o["color"], tuple(o["box"])) for o in objects)
        exact += truth == sorted((d.class_name, d.color, d.box) for d in found)
    rates = (
        f"strict {strict / 1000:.4f}, official {official / 1000:.4f}, "
        f"exact class/colour/box {exact / 1000:.4f}, "
        f"per tag strict { {t: round(float(np.mean(v)), 4) for t, v in per_tag.items()} }, "
        f"detection {ms:.3f} ms/image"
    )
    print(rates)
    assert strict >= 995 and official >= 995, rates
    assert exact >= 995, rates


def test_ground_truth_scores_pass_the_counting_threshold():
    rng = np.random.default_rng(3)
    lowest = 1.0
    for name in ("four circles", "four squares", "four triangles"):
        meta = grammar.metadata_for(name)
        for _ in range(100):
            found = detect(render_scene(meta, rng)[0])
            lowest = min([lowest] + [d.score for d in found])
            assert len(found) == 4
    assert lowest > COUNTING_THRESHOLD, f"lowest ground-truth score {lowest:.4f}"


def test_noise_images_have_no_objects():
    rng = np.random.default_rng(0)
    for _ in range(20):
        for noise in (
            rng.random((3, S, S), dtype=np.float32),  # colour noise
            np.repeat(rng.random((1, S, S), dtype=np.float32), 3, axis=0),  # grey noise
            (rng.random((3, S, S)) > 0.5).astype(np.float32),  # saturated binary noise
        ):
            found = detect(noise)
            grouped, _ = to_geneval(found)
            assert filter_detections(grouped, "single_object") == {}, [(d.class_name, d.score) for d in found]
    assert detect(np.zeros((3, S, S), np.float32)) == []
    assert detect(np.ones((3, S, S), np.float32)) == []  # white is not a palette colour


def test_small_junk_is_ignored():
    image = np.zeros((3, S, S), np.float32)
    colours = list(COLORS.values())
    for k, (row, col) in enumerate((r, c) for r in range(1, S - 4, 6) for c in range(1, S - 4, 6)):
        image[:, row : row + 4, col : col + 4] = np.asarray(colours[k % 4])[:, None, None]
    assert detect(image) == []
    # a blob just at the minimum area is kept, one pixel less is not
    image = np.zeros((3, S, S), np.float32)
    image[0, 5:9, 5:11] = 1.0  # 4 x 6 = 24 px
    assert [d.area for d in detect(image)] == [MIN_AREA]
    image[0, 8, 10] = 0.0
    assert detect(image) == []


def canvas(mask: np.ndarray, colour=(1.0, 0.0, 0.0)) -> np.ndarray:
    image = np.zeros((3, S, S), np.float32)
    image[:, mask] = np.asarray(colour, np.float32)[:, None]
    return image


def shape_mask(shape: str, cx: float, cy: float, r: float) -> np.ndarray:
    ys, xs = np.mgrid[0:S, 0:S] + 0.5
    return rasterize(shape, cx, cy, r, xs, ys)


def sloppy_masks():
    ys, xs = np.mgrid[0:S, 0:S] + 0.5
    circle = shape_mask("circle", 16, 16, 5)
    bumps = circle.copy()
    bumps[10:13, 19:22] = True
    bumps[19:22, 9:12] = True
    half = circle.copy()
    half[16:, :] = False
    square = shape_mask("square", 16, 16, 5)
    square[11:15, 11:15] = False
    triangle = shape_mask("triangle", 16, 16, 5.5)
    triangle[:15, :] = False
    ellipse = ((xs - 16) / 7) ** 2 + ((ys - 16) / 4) ** 2 <= 1
    speckled = circle & (np.random.default_rng(0).random((S, S)) > 0.15)
    merged = circle | shape_mask("square", 21, 16, 4)
    return {
        "blobby circle": bumps,
        "half circle": half,
        "square missing a corner": square,
        "triangle missing its top": triangle,
        "ellipse": ellipse,
        "speckled circle": speckled,
        "circle merged with a square": merged,
    }


@pytest.mark.parametrize("name", list(sloppy_masks()))
def test_sloppy_shapes_get_low_confidence(name):
    found = detect(canvas(sloppy_masks()[name]))
    assert len(found) == 1
    assert found[0].score < COUNTING_THRESHOLD, f"{name}: {found[0].class_name} {found[0].score:.3f}"


def test_sloppy_shapes_fail_counting():
    image = canvas(sloppy_masks()["blobby circle"]) + canvas(shape_mask("circle", 5.5, 5.5, 4.5))
    meta = grammar.metadata_for("two circles")
    outcome = evaluate_image(meta, *to_geneval(detect(image)))
    assert not outcome.correct and not outcome.strict_correct


def test_thin_line_is_not_a_square():
    mask = np.zeros((S, S), bool)
    mask[5, 2:30] = True
    assert all(d.score <= THRESHOLD for d in detect(canvas(mask)))


def test_detection_fields_and_box_convention():
    image = canvas(shape_mask("square", 7, 9, 4), colour=COLORS["blue"])  # pixels 3..10 x 5..12
    (found,) = detect(image)
    assert isinstance(found, ShapeDetection)
    assert (found.class_name, found.color, found.box, found.area) == ("square", "blue", (3, 5, 11, 13), 64)
    assert found.score == 1.0 and found.ious["square"] == 1.0
    assert found.mask.shape == (S, S) and found.mask.dtype == bool and found.mask.sum() == 64
    assert found.mask[5:13, 3:11].all()


def test_layouts_dtypes_and_batches_agree():
    meta = grammar.metadata_for("a red circle and a blue square")
    image, _ = render_scene(meta, np.random.default_rng(5))
    reference = [(d.class_name, d.color, d.box, d.score) for d in detect(image)]
    assert len(reference) == 2
    variants = [
        image.transpose(1, 2, 0),
        torch.from_numpy(image),
        torch.from_numpy(image).half(),
        image.astype(np.float64),
    ]
    for variant in variants:
        assert [(d.class_name, d.color, d.box, d.score) for d in detect(variant)] == reference
    batch = detect_batch(torch.from_numpy(np.stack([image, np.zeros_like(image), image])))
    assert [len(b) for b in batch] == [2, 0, 2]
    assert [(d.class_name, d.color, d.box, d.score) for d in batch[2]] == reference
    with pytest.raises(ValueError, match="one image"):
        detect(np.stack([image, image]))
    with pytest.raises(ValueError, match="colour channels"):
        as_image_batch(np.zeros((2, 4, 8, 8)))


def test_quantization_and_nan():
    image = canvas(shape_mask("square", 16, 16, 4))
    image[1, 0, 0] = np.nan
    noisy = np.clip(image + np.random.default_rng(0).normal(0, 0.1, image.shape), 0, 1).astype(np.float32)
    assert [d.class_name for d in detect(noisy)] == ["square"]
    assert [d.class_name for d in detect(image)] == ["square"]


def test_to_geneval_adapter():
    image = np.zeros((3, S, S), np.float32)
    for shape, cx, colour in (("circle", 6, "red"), ("circle", 18, "green"), ("triangle", 27, "yellow")):
        image += canvas(shape_mask(shape, cx, 8, 4.5), colour=COLORS[colour])
    grouped, classify = to_geneval(detect(image))
    assert sorted(grouped) == ["circle", "triangle"]
    assert len(grouped["circle"]) == 2 and len(grouped["triangle"]) == 1
    assert sorted(classify("circle", grouped["circle"])) == ["green", "red"]
    assert classify("triangle", grouped["triangle"]) == ["yellow"]
    box = grouped["triangle"][0].box
    assert all(isinstance(v, float) for v in box)


def test_detection_speed():
    images = np.stack([image for _, image, _ in scenes(256, seed=1)])
    start = time.perf_counter()
    for i in range(0, len(images), 64):
        detect_batch(images[i : i + 64])
    per_image = (time.perf_counter() - start) / len(images)
    assert per_image < 5e-3, f"detection took {per_image * 1e3:.2f} ms per image"
