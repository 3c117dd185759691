"""The `geneval` reward: Mask2Former post-processing, CLIP colour classifier, wiring to the scorer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _rewards_tiny import one_torch_thread, save_tiny_mask2former, save_tiny_open_clip  # noqa: F401 (autouse fixture)
from PIL import Image

from nft_core.errors import UserError
from nft_core.protocols import Reward
from nft_rewards.geneval.colors import GREY, TEMPLATES, ClipColorClassifier, grey_composite_crop
from nft_rewards.geneval.mask2former import (
    GENEVAL_CLASSES,
    Mask2FormerDetector,
    mask_boxes,
    resize_keep_ratio,
)
from nft_rewards.geneval.reward import GenEvalOptions, GenEvalReward
from nft_rewards.geneval.scoring import COLORS, Detection

POSITION = {
    "tag": "position", "prompt": "a photo of a cow right of a laptop",
    "include": [{"class": "laptop", "count": 1}, {"class": "cow", "count": 1, "position": ["right of", 0]}],
}  # fmt: skip
COLOR_ATTR = {
    "tag": "color_attr", "prompt": "a photo of a pink handbag and a black scissors",
    "include": [
        {"class": "handbag", "count": 1, "color": "pink"}, {"class": "scissors", "count": 1, "color": "black"}
    ],
}  # fmt: skip


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("geneval")
    detector = save_tiny_mask2former(root / "mask2former")
    config, weights = save_tiny_open_clip(root / "colors", "tiny-colors")
    return {"detector": detector, "color_config": config, "color_weights": weights}


def options(tiny, **extra):
    return GenEvalOptions(
        detector_model=str(tiny["detector"]),
        color_model="tiny-colors",
        color_weights=str(tiny["color_weights"]),
        color_model_config_file=str(tiny["color_config"]),
        short_side=64,
        long_side=128,
        **extra,
    )


def test_sizes_and_boxes():
    assert resize_keep_ratio(512, 512) == (800, 800)
    assert resize_keep_ratio(480, 640) == (800, 1067)
    assert resize_keep_ratio(100, 1000) == (133, 1333)
    masks = torch.zeros(3, 10, 12, dtype=torch.bool)
    masks[0, 2:5, 3:7] = True
    masks[1, 9, 11] = True
    boxes = mask_boxes(masks)
    assert boxes.tolist() == [[3, 2, 7, 5], [11, 9, 12, 10], [0, 0, 0, 0]]  # (x_min, y_min, x_max+1, y_max+1)
    assert len(GENEVAL_CLASSES) == 80 and GENEVAL_CLASSES[64] == "computer mouse"


def test_mask2former_postprocessing_matches_mmdet_rules(tiny):
    detector = Mask2FormerDetector(str(tiny["detector"]), short_side=64, long_side=128)
    images = (torch.rand(2, 3, 40, 48, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    found = detector.detect(images)
    pixels, (h, w) = detector.preprocess(images)
    assert (h, w) == (64, 77) and pixels.shape[-2:] == (64, 96)  # padded to a multiple of 32
    with torch.no_grad():
        outputs = detector.model(pixel_values=pixels)
    for index in range(2):
        scores = outputs.class_queries_logits[index].softmax(-1)[:, :-1]
        top, flat = scores.flatten().topk(100)
        expected = []
        for score, position in zip(top.tolist(), flat.tolist(), strict=True):
            query, label = divmod(position, 80)
            logits = outputs.masks_queries_logits[index, query][None, None]
            logits = torch.nn.functional.interpolate(
                logits, size=(64, 96), mode="bilinear", align_corners=False
            )
            logits = torch.nn.functional.interpolate(logits[..., :h, :w], size=(40, 48), mode="bilinear")[
                0, 0
            ]
            binary = logits > 0
            mask_score = float((logits.sigmoid() * binary).sum() / (binary.sum() + 1e-6))
            expected.append(
                (GENEVAL_CLASSES[label], round(score * mask_score, 5), mask_boxes(binary[None])[0].tolist())
            )
        got = [(name, round(d.score, 5), list(d.box)) for name, ds in found[index].items() for d in ds]
        assert sorted(got) == sorted(expected)
        assert all(
            d.mask.shape == (40, 48) and d.mask.dtype == bool for ds in found[index].values() for d in ds
        )
    swapped = Mask2FormerDetector(str(tiny["detector"]), short_side=64, long_side=128, bgr_quirk=True)
    torch.testing.assert_close(swapped.preprocess(images.flip(1))[0], pixels)
    only_high = detector.detect(images, min_score=0.01)
    assert all(d.score > 0.01 for ds in only_high[0].values() for d in ds)


def test_grey_composite_crop():
    image = Image.fromarray(np.full((20, 30, 3), 200, dtype=np.uint8))
    mask = np.zeros((20, 30), dtype=bool)
    mask[5:10, 5:10] = True
    crop = np.asarray(grey_composite_crop(image, Detection((4.4, 4.6, 12.6, 11.0), 0.9, mask)))
    assert crop.shape == (6, 9, 3)  # PIL rounds the box to (4, 5, 13, 11)
    assert (crop[0:5, 1:6] == 200).all()  # the masked object, image rows 5-9 / columns 5-9
    assert (crop[5] == 0x99).all() and (crop[:, 0] == 0x99).all() and (crop[:, 6:] == 0x99).all()
    assert GREY == "#999999"
    whole = np.asarray(grey_composite_crop(image, Detection((0, 0, 30, 20), 0.9, None)))
    assert (whole == 200).all()


def test_colour_classifier_is_zero_shot_clip(tiny):
    import open_clip

    classifier = ClipColorClassifier(
        "tiny-colors", str(tiny["color_weights"]), model_config_file=str(tiny["color_config"]), batch_size=2
    )
    weights = classifier.class_weights("cup")
    assert weights.shape == (16, 10) and torch.allclose(weights.norm(dim=0), torch.ones(10))
    model, tokenizer = classifier.model, open_clip.get_tokenizer("tiny-colors")
    with torch.no_grad():
        red = torch.nn.functional.normalize(
            model.encode_text(tokenizer([t.format(c="red", cls="cup") for t in TEMPLATES])), dim=-1
        ).mean(0)
    torch.testing.assert_close(weights[:, 0], red / red.norm())
    assert [t.format(c="orange", cls="cup") for t in TEMPLATES] == [
        "a photo of a orange cup", "a photo of a orange-colored cup", "a photo of a orange object"
    ]  # fmt: skip
    rng = np.random.default_rng(0)
    array = rng.integers(0, 255, size=(40, 48, 3), dtype=np.uint8)
    masks = [rng.random((40, 48)) > 0.5 for _ in range(3)]
    detections = [Detection((2.0, 3.0, 30.0, 35.0), 0.9, m) for m in masks]
    names = classifier.for_image(array)("cup", detections)
    image = Image.fromarray(array)
    with torch.no_grad():
        crops = torch.stack([classifier.preprocess(grey_composite_crop(image, d)) for d in detections])
        logits = 100 * torch.nn.functional.normalize(model.encode_image(crops), dim=-1) @ weights
    assert names == [COLORS[i] for i in logits.argmax(1).tolist()]


def test_reward_end_to_end_on_tiny_models(tiny):
    reward = GenEvalReward(options(tiny, batch_size=2))
    assert isinstance(reward, Reward) and reward.name == "geneval" and reward.native_range == (-14.0, 1.0)
    images = torch.rand(3, 3, 40, 48, generator=torch.Generator().manual_seed(1))
    metadata = [POSITION, COLOR_ATTR, {"tag": "counting", "include": [{"class": "cup", "count": 2}],
                                       "exclude": [{"class": "cup", "count": 3}]}]  # fmt: skip
    out = reward(images, [m.get("prompt", "") for m in metadata], metadata)
    assert set(out.details) == {"partial", "strict", "correct"}
    assert torch.equal(out.scores, out.details["partial"])
    assert torch.all(out.scores >= -14) and torch.all(out.scores <= 1)
    single = torch.cat([reward(images[i : i + 1], ["p"], metadata[i : i + 1]).scores for i in range(3)])
    torch.testing.assert_close(out.scores, single)
    with pytest.raises(UserError, match="metadata"):
        reward(images, ["a", "b", "c"])
    with pytest.raises(UserError, match="tag"):
        reward(images[:1], ["a"], [{"tag": "nope", "include": []}])
    strict = GenEvalReward(options(tiny, outcome="strict"))
    assert strict.native_range == (0.0, 1.0)
    assert torch.equal(strict(images, ["a", "b", "c"], metadata).scores, out.details["strict"])


def test_reward_wires_detections_to_the_scorer(tiny):
    reward = GenEvalReward(options(tiny, outcome="official"))

    class Detector(torch.nn.Module):
        def detect(self, images, min_score=0.0):
            assert images.dtype == torch.uint8 and min_score == 0.3
            return [
                {"laptop": [Detection((0, 0, 10, 10), 0.9)], "cow": [Detection((30, 0, 40, 10), 0.8)]},
                {"laptop": [Detection((30, 0, 40, 10), 0.9)], "cow": [Detection((0, 0, 10, 10), 0.8)]},
                {"handbag": [Detection((0, 0, 10, 10), 0.9)], "scissors": [Detection((20, 0, 30, 10), 0.9)]},
            ]

    class Colors(torch.nn.Module):
        def for_image(self, array):
            return lambda name, found: ["pink" if name == "handbag" else "white" for _ in found]

    reward.detector, reward.colors = Detector(), Colors()
    out = reward(torch.zeros(3, 3, 16, 48), ["p"] * 3, [POSITION, POSITION, COLOR_ATTR])
    assert out.details["partial"].tolist() == [1.0, 0.75, 0.75]  # docs/rewards.md §9.6 worked examples
    assert out.details["correct"].tolist() == [1.0, 0.0, 0.0] and torch.equal(
        out.scores, out.details["correct"]
    )


def test_shapes_detector_backend_matches_the_shapes_reward():
    from nft_shapes import grammar
    from nft_shapes.render import render_batch
    from nft_shapes.reward import shapes_geneval

    items = grammar.eval_items(2)
    images = render_batch([it.metadata for it in items], 0)
    prompts, metadata = [it.prompt for it in items], [it.metadata for it in items]
    ours = GenEvalReward(GenEvalOptions(detector="shapes"))(images, prompts, metadata)
    theirs = shapes_geneval()(images, prompts, metadata)
    assert torch.equal(ours.scores, theirs.scores) and ours.details["correct"].mean() == 1.0
