"""`shapes-geneval`: ground truth scores 1, wrong renders fail, the bound of the partial score, errors."""

from __future__ import annotations

import copy

import numpy as np
import pydantic
import pytest
import torch

from nft_core.errors import UserError
from nft_core.protocols import Reward
from nft_shapes import grammar
from nft_shapes.render import render_batch
from nft_shapes.reward import ShapesGenEvalOptions, shapes_geneval
from nft_shapes.world import COLORS, IMAGE_SIZE


def batch(items, seed=0):
    return (
        render_batch([it.metadata for it in items], seed),
        [it.prompt for it in items],
        [it.metadata for it in items],
    )


def test_declarations():
    reward = shapes_geneval()
    assert isinstance(reward, Reward)
    assert reward.name == "shapes-geneval" and reward.higher_is_better
    assert reward.native_range == (-14.0, 1.0)
    assert shapes_geneval(outcome="strict").native_range == (0.0, 1.0)
    assert shapes_geneval(outcome="official").native_range == (0.0, 1.0)
    assert reward.to("cpu") is reward


def test_options_validation():
    assert ShapesGenEvalOptions().outcome == "partial" and ShapesGenEvalOptions().batch_size == 64
    with pytest.raises(pydantic.ValidationError):
        ShapesGenEvalOptions(outcom="strict")
    with pytest.raises(pydantic.ValidationError):
        shapes_geneval(outcome="lenient")
    with pytest.raises(pydantic.ValidationError):
        shapes_geneval(batch_size=0)


@pytest.mark.parametrize("outcome", ["partial", "strict", "official"])
def test_ground_truth_scores_one(outcome):
    images, prompts, metadata = batch(grammar.all_prompts())
    out = shapes_geneval(outcome=outcome, batch_size=50)(images, prompts, metadata)
    assert out.scores.shape == (126,) and out.scores.dtype == torch.float32
    assert set(out.details) == {"partial", "strict", "correct"}
    for name, value in out.details.items():
        assert value.shape == (126,) and value.dtype == torch.float32
        assert torch.all(value == 1.0), name
    assert torch.all(out.scores == 1.0)


def test_any_float_dtype_and_range_of_inputs():
    images, prompts, metadata = batch(grammar.eval_items(images_per_tag=6), seed=3)
    reward = shapes_geneval()
    reference = reward(images, prompts, metadata).scores
    assert torch.all(reference == 1.0)
    for variant in (images.half(), images.double(), images.bfloat16()):
        assert torch.equal(reward(variant, prompts, metadata).scores, reference)


def recoloured(meta):
    """The same prompt with every specified colour replaced by another palette colour."""
    meta = copy.deepcopy(meta)
    names = list(COLORS)
    for clause in meta["include"]:
        if "color" in clause:
            clause["color"] = names[(names.index(clause["color"]) + 1) % len(names)]
    return meta


def test_wrong_colour_renders_fail():
    items = [it for it in grammar.all_prompts() if it.metadata["tag"] in ("colors", "color_attr")]
    images = render_batch([recoloured(it.metadata) for it in items], seed=1)
    out = shapes_geneval()(images, [it.prompt for it in items], [it.metadata for it in items])
    assert torch.all(out.details["strict"] == 0.0) and torch.all(out.details["correct"] == 0.0)
    assert torch.all(out.scores < 1.0)
    colors = torch.tensor([it.metadata["tag"] == "colors" for it in items])
    assert torch.all(out.scores[colors] == 0.5)  # [count 1, colour 0]
    # color_attr with both colours wrong: [1, 0, 1, 0]
    assert torch.all(out.scores[~colors] == 0.5)


def test_wrong_count_and_empty_images():
    meta = grammar.metadata_for("three squares")
    images = render_batch([grammar.metadata_for("four squares"), grammar.metadata_for("two squares")], seed=2)
    images = torch.cat([images, torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE)])
    out = shapes_geneval()(images, ["three squares"] * 3, [meta] * 3)
    assert out.details["partial"].tolist() == pytest.approx([2 / 3, 2 / 3, 0.0])
    assert out.details["strict"].tolist() == [0.0, 0.0, 0.0]
    assert out.details["correct"].tolist() == [0.0, 0.0, 0.0]


def test_partial_score_reaches_its_declared_minimum():
    """16 small clean squares for "a square": 1 - (16 - 1) / 1 = -14, the declared lower bound."""
    image = torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE)
    for row in range(4):
        for col in range(5):  # 20 squares drawn, 16 kept by GenEval's cap
            image[0, 0, 1 + 7 * row : 6 + 7 * row, 1 + 6 * col : 6 + 6 * col] = 1.0  # 5x5, 1 px apart
    reward = shapes_geneval()
    out = reward(image, ["a square"], [grammar.metadata_for("a square")])
    assert out.scores.item() == reward.native_range[0] == -14.0


def test_metadata_errors():
    """The errors of the one GenEval reward: one line each, naming the preset and what is wrong."""
    images, prompts, metadata = batch(grammar.all_prompts()[:4])
    reward = shapes_geneval()
    with pytest.raises(UserError, match="shapes-geneval: needs one metadata dict per image; got none"):
        reward(images, prompts)
    with pytest.raises(UserError, match="shapes-geneval: 4 images but 3 metadata entries"):
        reward(images, prompts, metadata[:3])
    with pytest.raises(UserError, match="shapes-geneval: 4 images but 3 prompts"):
        reward(images, prompts[:3], metadata[:3])
    broken = copy.deepcopy(metadata)
    del broken[2]["include"]
    with pytest.raises(
        UserError, match=r"shapes-geneval: metadata for prompt 'a triangle': include: missing"
    ):
        reward(images, prompts, broken)
    broken = copy.deepcopy(metadata)
    del broken[1]["tag"]
    with pytest.raises(UserError, match=r"metadata for prompt 'a square': tag: missing"):
        reward(images, prompts, broken)


def test_deterministic():
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.random((16, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32))
    items = grammar.eval_items(images_per_tag=1)[:16]
    reward = shapes_geneval()
    a = reward(images, [it.prompt for it in items], [it.metadata for it in items])
    b = reward(images, [it.prompt for it in items], [it.metadata for it in items])
    assert torch.equal(a.scores, b.scores)
    assert torch.all(a.details["strict"] == 0.0)  # noise is never a correct image


def test_colour_area_is_the_share_of_painted_pixels_whatever_the_prompt():
    from nft_core import registry
    from nft_shapes.colour_area import ColourArea, ColourAreaOptions

    reward = registry.create("rewards", "shapes-colour-area")
    assert isinstance(reward, Reward) and reward.native_range == (0.0, 1.0)
    images = torch.zeros(3, 3, IMAGE_SIZE, IMAGE_SIZE)
    images[1, 0, :8] = 1.0  # a red band: 8 of 32 rows
    images[2, :, :, :16] = torch.tensor(COLORS["blue"]).view(3, 1, 1)  # blue on half the canvas
    images[2, :, :4, :16] = torch.tensor(COLORS["blue"]).view(3, 1, 1) * 0.5  # too dark: unpainted
    scores = reward(images, ["a red circle", "two squares", "a photo"]).scores
    assert scores.tolist() == pytest.approx([0.0, 0.25, 0.5 - 4 * 16 / IMAGE_SIZE**2])
    red = ColourArea(ColourAreaOptions(colour="red"))(images, ["x"] * 3).scores
    assert red.tolist() == pytest.approx([0.0, 0.25, 0.0])
    scene = render_batch([grammar.metadata_for("a red circle")], seed=0)
    painted = float((scene.amax(dim=1) > 0).float().mean())
    assert float(reward(scene, ["a red circle"]).scores[0]) == pytest.approx(painted)  # exact on renders
    with pytest.raises(UserError, match="colour"):
        registry.create("rewards", "shapes-colour-area", {"colour": "purple"})
