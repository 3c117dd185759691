"""The shapes world: constants, the prompt grammar and its held-out split, and the scene renderer."""

from __future__ import annotations

import hashlib
import itertools
import time
from collections import Counter

import numpy as np
import pytest
import torch

from nft_core.types import PromptItem
from nft_rewards.geneval.metadata import validate_metadata
from nft_rewards.geneval.scoring import COLORS as GENEVAL_COLORS
from nft_rewards.geneval.scoring import RELATIONS as GENEVAL_RELATIONS
from nft_rewards.geneval.scoring import TAGS, relative_position
from nft_shapes import grammar
from nft_shapes.render import render_batch, render_scene
from nft_shapes.world import (
    CLASSES,
    COLORS,
    IMAGE_SIZE,
    MIN_GAP,
    NUMBER_WORDS,
    PALETTE,
    PLURALS,
    RADIUS_RANGE,
    RELATIONS,
)

# ---------------------------------------------------------------------------------------------------------
# world


def test_world_constants():
    assert IMAGE_SIZE == 32
    assert CLASSES == ("circle", "square", "triangle")
    assert list(COLORS) == ["red", "green", "blue", "yellow"]
    assert set(COLORS) <= set(GENEVAL_COLORS)
    assert RELATIONS == GENEVAL_RELATIONS
    assert RADIUS_RANGE == (5.5, 7.0)
    assert PLURALS == {"circle": "circles", "square": "squares", "triangle": "triangles"}
    assert NUMBER_WORDS == {2: "two", 3: "three", 4: "four"}
    assert PALETTE.shape == (4, 3) and PALETTE.dtype == np.float32
    for a, b in itertools.combinations(PALETTE, 2):
        assert np.linalg.norm(a - b) >= 1.0 - 1e-6  # far apart: nearest-colour assignment is unambiguous
    assert PALETTE.max(axis=1).min() == 1.0  # every colour is bright


# ---------------------------------------------------------------------------------------------------------
# grammar


def test_prompt_counts_and_metadata_format():
    items = grammar.all_prompts()
    assert len(items) == 126
    assert all(isinstance(it, PromptItem) for it in items)
    assert Counter(it.metadata["tag"] for it in items) == {
        "single_object": 3,
        "two_object": 6,
        "counting": 9,
        "colors": 12,
        "position": 24,
        "color_attr": 72,
    }
    assert len({it.prompt for it in items}) == 126
    assert grammar.TAGS == TAGS
    for i, it in enumerate(items):
        meta = validate_metadata(it.metadata, f"prompt {i}")
        assert meta["prompt"] == it.prompt
        assert list(meta) == (
            ["tag", "include", "exclude", "prompt"] if "exclude" in meta else ["tag", "include", "prompt"]
        )
        for clause in meta["include"]:
            assert clause["class"] in CLASSES
            assert clause.get("color", "red") in COLORS


def by_prompt():
    return {it.prompt: it.metadata for it in grammar.all_prompts()}


def test_prompt_examples():
    meta = by_prompt()
    assert meta["a circle"] == {
        "tag": "single_object",
        "include": [{"class": "circle", "count": 1}],
        "prompt": "a circle",
    }
    assert meta["a circle and a square"]["include"] == [
        {"class": "circle", "count": 1},
        {"class": "square", "count": 1},
    ]
    assert meta["three triangles"] == {
        "tag": "counting",
        "include": [{"class": "triangle", "count": 3}],
        "exclude": [{"class": "triangle", "count": 4}],
        "prompt": "three triangles",
    }
    assert meta["a red circle"]["include"] == [{"class": "circle", "count": 1, "color": "red"}]
    assert meta["a circle left of a square"]["include"] == [
        {"class": "square", "count": 1},
        {"class": "circle", "count": 1, "position": ["left of", 0]},
    ]
    assert meta["a red circle and a blue square"]["include"] == [
        {"class": "circle", "count": 1, "color": "red"},
        {"class": "square", "count": 1, "color": "blue"},
    ]


def test_distinct_classes_and_colours_where_required():
    for it in grammar.all_prompts():
        include = it.metadata["include"]
        if it.metadata["tag"] in ("two_object", "position", "color_attr"):
            assert include[0]["class"] != include[1]["class"], it.prompt
        if it.metadata["tag"] == "color_attr":
            assert include[0]["color"] != include[1]["color"], it.prompt


def test_heldout_split():
    train, held, every = grammar.train_prompts(), grammar.heldout_prompts(), grammar.all_prompts()
    train_set, held_set = {it.prompt for it in train}, {it.prompt for it in held}
    assert len(train) == 94 and len(held) == 32
    assert not train_set & held_set and train_set | held_set == {it.prompt for it in every}
    assert Counter(it.metadata["tag"] for it in held) == {"position": 8, "color_attr": 24}
    # small tags are not split: all of their prompts are trained on
    for tag in ("single_object", "two_object", "counting", "colors"):
        assert sum(it.metadata["tag"] == tag for it in train) == sum(
            it.metadata["tag"] == tag for it in every
        )
    # pinned: the split never changes silently
    digest = hashlib.sha256("\n".join(sorted(held_set)).encode()).hexdigest()
    assert digest == "9061b836a24009c16b480072932b19d83df1fd0eaa7f239839a531575e3e14a4"
    assert [it.prompt for it in grammar.heldout_prompts()] == [it.prompt for it in held]


def test_heldout_ingredients_all_appear_in_training():
    train = grammar.train_prompts()
    subject_rel, rel_target, pairs, first, second, colour_pairs = set(), set(), set(), set(), set(), set()
    for it in train:
        include = it.metadata["include"]
        if it.metadata["tag"] == "position":
            target, subject = include
            relation = subject["position"][0]
            subject_rel.add((subject["class"], relation))
            rel_target.add((relation, target["class"]))
            pairs.add((subject["class"], target["class"]))
        if it.metadata["tag"] == "color_attr":
            first.add((include[0]["class"], include[0]["color"]))
            second.add((include[1]["class"], include[1]["color"]))
            colour_pairs.add((include[0]["color"], include[1]["color"]))
    assert subject_rel == set(itertools.product(CLASSES, RELATIONS))
    assert rel_target == set(itertools.product(RELATIONS, CLASSES))
    assert pairs == set(itertools.permutations(CLASSES, 2))
    assert first == second == set(itertools.product(CLASSES, COLORS))
    assert colour_pairs == set(itertools.permutations(COLORS, 2))
    # held-out prompts are spread evenly: 2 per relation, 4 per ordered class pair
    held = grammar.heldout_prompts()
    relations = Counter(
        it.metadata["include"][1]["position"][0] for it in held if it.metadata["tag"] == "position"
    )
    assert relations == dict.fromkeys(RELATIONS, 2)
    class_pairs = Counter(
        (it.metadata["include"][0]["class"], it.metadata["include"][1]["class"])
        for it in held
        if it.metadata["tag"] == "color_attr"
    )
    assert class_pairs == dict.fromkeys(itertools.permutations(CLASSES, 2), 4)


def test_eval_items():
    items = grammar.eval_items()
    counts = Counter(it.metadata["tag"] for it in items)
    assert counts == {
        "single_object": 48,
        "two_object": 48,
        "counting": 54,
        "colors": 48,
        "position": 48,
        "color_attr": 48,
    }
    assert [it.metadata["tag"] for it in items] == sorted(
        (it.metadata["tag"] for it in items), key=TAGS.index
    )
    held = {it.prompt for it in grammar.heldout_prompts()}
    for it in items:
        if it.metadata["tag"] in ("position", "color_attr"):
            assert it.prompt in held
    per_prompt = Counter(it.prompt for it in items)
    for tag in TAGS:
        assert len({per_prompt[it.prompt] for it in items if it.metadata["tag"] == tag}) == 1  # equal weight
    assert [it.prompt for it in grammar.eval_items()] == [it.prompt for it in items]  # deterministic
    # round-robin order: the first round lists each prompt of the tag once
    assert [it.prompt for it in items[:3]] == ["a circle", "a square", "a triangle"]
    small = grammar.eval_items(images_per_tag=1)
    assert Counter(it.metadata["tag"] for it in small) == {
        "single_object": 3,
        "two_object": 6,
        "counting": 9,
        "colors": 12,
        "position": 8,
        "color_attr": 24,
    }
    with pytest.raises(ValueError):
        grammar.eval_items(images_per_tag=0)


def test_prompt_lists_are_copies():
    items = grammar.all_prompts()
    items[0].metadata["include"][0]["count"] = 99
    assert grammar.all_prompts()[0].metadata["include"][0]["count"] == 1
    assert grammar.metadata_for("a circle")["include"][0]["count"] == 1
    with pytest.raises(KeyError, match="not a shapes-world prompt"):
        grammar.metadata_for("a hexagon")


def test_tokenize_and_vocab():
    assert grammar.tokenize("A Red circle LEFT of a square.") == [
        "a",
        "red",
        "circle",
        "left",
        "of",
        "a",
        "square",
    ]
    assert len(set(grammar.VOCAB)) == len(grammar.VOCAB)
    used = {word for it in grammar.all_prompts() for word in grammar.tokenize(it.prompt)}
    assert used == set(grammar.VOCAB)


# ---------------------------------------------------------------------------------------------------------
# renderer


def check_scene(meta, image, objects):
    assert image.shape == (3, IMAGE_SIZE, IMAGE_SIZE) and image.dtype == np.float32
    # hard edges: every pixel is black or exactly one palette colour
    pixels = image.reshape(3, -1).T
    allowed = np.concatenate([np.zeros((1, 3), np.float32), PALETTE])
    assert (np.abs(pixels[:, None, :] - allowed[None]).max(-1).min(-1) == 0).all()
    expected = Counter()
    for index, clause in enumerate(meta["include"]):
        expected[index] += clause["count"]
    assert Counter(obj["clause"] for obj in objects) == expected
    for obj in objects:
        clause = meta["include"][obj["clause"]]
        assert obj["class"] == clause["class"]
        assert obj["color"] == clause.get("color", obj["color"]) and obj["color"] in COLORS
        assert RADIUS_RANGE[0] <= obj["radius"] <= RADIUS_RANGE[1]
        x1, y1, x2, y2 = obj["box"]
        assert 0 <= x1 < x2 <= IMAGE_SIZE and 0 <= y1 < y2 <= IMAGE_SIZE
        # the box is tight: its border rows/columns hold the object's colour
        window = image[:, y1:y2, x1:x2]
        drawn = (window == np.asarray(COLORS[obj["color"]], np.float32)[:, None, None]).all(0)
        assert drawn[0].any() and drawn[-1].any() and drawn[:, 0].any() and drawn[:, -1].any()
    for a, b in itertools.combinations(objects, 2):
        (ax1, ay1, ax2, ay2), (bx1, by1, bx2, by2) = a["box"], b["box"]
        assert max(bx1 - ax2, ax1 - bx2, by1 - ay2, ay1 - by2) >= MIN_GAP
    for index, clause in enumerate(meta["include"]):
        if "position" in clause:
            relation, target = clause["position"]
            for obj in objects:
                for other in objects:
                    if obj["clause"] == index and other["clause"] == target:
                        assert relation in relative_position(obj["box"], other["box"])


def test_render_every_prompt_satisfies_its_metadata():
    rng = np.random.default_rng(0)
    for it in grammar.all_prompts():
        for _ in range(4):
            image, objects = render_scene(it.metadata, rng)
            check_scene(it.metadata, image, objects)


def test_render_counting_and_random_colours():
    rng = np.random.default_rng(1)
    colours = Counter()
    for _ in range(50):
        image, objects = render_scene(by_prompt()["four circles"], rng)
        assert len(objects) == 4 and {obj["class"] for obj in objects} == {"circle"}
        colours.update(obj["color"] for obj in objects)
    assert set(colours) == set(COLORS)  # unspecified colours are drawn from the whole palette


def test_render_batch_is_deterministic():
    metas = [it.metadata for it in grammar.all_prompts()]
    a, b = render_batch(metas, seed=7), render_batch(metas, seed=7)
    assert a.shape == (126, 3, IMAGE_SIZE, IMAGE_SIZE) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.equal(a, render_batch(metas, seed=8))
    assert 0.0 <= float(a.min()) and float(a.max()) <= 1.0


def test_render_rejects_unknown_class():
    with pytest.raises(ValueError, match="include\\[0\\].class: 'hexagon'"):
        render_scene(
            {"tag": "single_object", "include": [{"class": "hexagon", "count": 1}]}, np.random.default_rng(0)
        )


def test_render_speed():
    metas = [it.metadata for it in grammar.eval_items()]
    start = time.perf_counter()
    render_batch(metas, seed=0)
    per_image = (time.perf_counter() - start) / len(metas)
    assert per_image < 5e-3, f"rendering took {per_image * 1e3:.2f} ms per image (target ~1 ms)"
