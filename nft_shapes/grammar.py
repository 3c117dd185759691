"""The prompt grammar of the shapes world, with GenEval metadata, and its fixed held-out split.

126 prompts over GenEval's six tags, each with metadata in the official `evaluation_metadata.jsonl` format
(same keys, same clause layout), so the GenEval scorer applies unchanged:

| tag           | example                            | prompts |
| ------------- | ---------------------------------- | ------- |
| single_object | a circle                           | 3       |
| two_object    | a circle and a square              | 6 (ordered pairs of distinct classes) |
| counting      | three triangles                    | 9 (counts 2-4; exclude = count + 1) |
| colors        | a red circle                       | 12      |
| position      | a circle left of a square          | 24 (include = [B, A with position [rel, 0]]) |
| color_attr    | a red circle and a blue square     | 72 (distinct classes, distinct colours) |

Held-out split: a third of the position prompts (8) and of the color_attr prompts (24) are never trained
on. They are chosen deterministically (greedy over a SHA-256 order of the prompt texts, no RNG) so that
every ingredient still appears in training: for position, every (subject class, relation), (relation,
target class) and ordered (subject, target) pair; for color_attr, every (class, colour) pair in each of
the two clause slots and every ordered colour pair; held-out prompts are spread evenly over relations
(2 each) and ordered class pairs (4 each). The four small tags (at most 12 prompts each) are not split:
their prompts appear both in training and in evaluation, so their eval scores measure fit, not
generalisation.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import re
from collections import Counter
from collections.abc import Callable, Hashable
from functools import lru_cache
from typing import Any

from nft_core.types import PromptItem
from nft_shapes.world import CLASSES, COLORS, NUMBER_WORDS, PLURALS, RELATIONS

__all__ = [
    "HELDOUT_TAGS",
    "TAGS",
    "VOCAB",
    "all_prompts",
    "eval_items",
    "heldout_prompts",
    "metadata_for",
    "tokenize",
    "train_prompts",
]

TAGS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
"""GenEval's six tags, in the official order (same as `nft_rewards.geneval.scoring.TAGS`)."""

HELDOUT_TAGS = ("position", "color_attr")
"""The tags whose prompts are split; a third of each is held out."""


def _item(tag: str, prompt: str, include: list[dict[str, Any]], exclude: list[dict[str, Any]] | None = None):
    metadata: dict[str, Any] = {"tag": tag, "include": include}
    if exclude is not None:
        metadata["exclude"] = exclude
    metadata["prompt"] = prompt
    return PromptItem(prompt=prompt, metadata=metadata)


@lru_cache(maxsize=1)
def _all() -> tuple[PromptItem, ...]:
    items: list[PromptItem] = []
    for name in CLASSES:
        items.append(_item("single_object", f"a {name}", [{"class": name, "count": 1}]))
    for a, b in itertools.permutations(CLASSES, 2):
        items.append(
            _item("two_object", f"a {a} and a {b}", [{"class": a, "count": 1}, {"class": b, "count": 1}])
        )
    for name in CLASSES:
        for count, word in NUMBER_WORDS.items():
            items.append(
                _item(
                    "counting",
                    f"{word} {PLURALS[name]}",
                    [{"class": name, "count": count}],
                    [{"class": name, "count": count + 1}],
                )
            )
    for name in CLASSES:
        for color in COLORS:
            items.append(_item("colors", f"a {color} {name}", [{"class": name, "count": 1, "color": color}]))
    for a, b in itertools.permutations(CLASSES, 2):
        for relation in RELATIONS:
            items.append(
                _item(
                    "position",
                    f"a {a} {relation} a {b}",
                    [{"class": b, "count": 1}, {"class": a, "count": 1, "position": [relation, 0]}],
                )
            )
    for a, b in itertools.permutations(CLASSES, 2):
        for color_a, color_b in itertools.permutations(COLORS, 2):
            items.append(
                _item(
                    "color_attr",
                    f"a {color_a} {a} and a {color_b} {b}",
                    [{"class": a, "count": 1, "color": color_a}, {"class": b, "count": 1, "color": color_b}],
                )
            )
    return tuple(items)


def _position_parts(item: PromptItem) -> tuple[str, str, str]:
    target, subject = item.metadata["include"]
    return subject["class"], subject["position"][0], target["class"]


def _position_ingredients(item: PromptItem) -> list[Hashable]:
    a, relation, b = _position_parts(item)
    return [("subject", a, relation), ("target", relation, b), ("pair", a, b)]


def _color_attr_ingredients(item: PromptItem) -> list[Hashable]:
    first, second = item.metadata["include"]
    return [
        ("first", first["class"], first["color"]),
        ("second", second["class"], second["color"]),
        ("colours", first["color"], second["color"]),
    ]


def _color_attr_group(item: PromptItem) -> Hashable:
    first, second = item.metadata["include"]
    return first["class"], second["class"]


def _choose_heldout(
    items: list[PromptItem],
    ingredients: Callable[[PromptItem], list[Hashable]],
    group: Callable[[PromptItem], Hashable],
) -> list[str]:
    """Greedy: walk the prompts in SHA-256 order and hold one out if its group quota allows and every one
    of its ingredients keeps a training prompt. A third is held out, the same number in each group."""
    groups = Counter(group(item) for item in items)
    quota = {key: n // 3 for key, n in groups.items()}
    target = len(items) // 3
    if sum(quota.values()) != target:
        raise AssertionError("held-out quotas do not add up to a third")
    remaining = Counter(ing for item in items for ing in ingredients(item))
    held: list[str] = []
    taken: Counter = Counter()
    for item in sorted(items, key=lambda it: hashlib.sha256(f"heldout:{it.prompt}".encode()).hexdigest()):
        key = group(item)
        if taken[key] >= quota[key]:
            continue
        needs = ingredients(item)
        if any(remaining[ing] <= 1 for ing in needs):
            continue
        for ing in needs:
            remaining[ing] -= 1
        taken[key] += 1
        held.append(item.prompt)
    if len(held) != target:
        raise AssertionError(f"could only hold out {len(held)} of {target} prompts with full coverage")
    return held


@lru_cache(maxsize=1)
def _heldout_set() -> frozenset[str]:
    items = _all()
    position = [it for it in items if it.metadata["tag"] == "position"]
    color_attr = [it for it in items if it.metadata["tag"] == "color_attr"]
    held = _choose_heldout(position, _position_ingredients, lambda it: _position_parts(it)[1])
    held += _choose_heldout(color_attr, _color_attr_ingredients, _color_attr_group)
    return frozenset(held)


def _copies(items) -> list[PromptItem]:
    return [PromptItem(prompt=it.prompt, metadata=copy.deepcopy(it.metadata)) for it in items]


def all_prompts() -> list[PromptItem]:
    """All 126 prompts with their metadata, in a fixed order (by tag, then by construction)."""
    return _copies(_all())


def train_prompts() -> list[PromptItem]:
    """The training prompts: everything except the held-out position and color_attr prompts (94)."""
    held = _heldout_set()
    return _copies(it for it in _all() if it.prompt not in held)


def heldout_prompts() -> list[PromptItem]:
    """The held-out prompts (8 position, 24 color_attr), never trained on."""
    held = _heldout_set()
    return _copies(it for it in _all() if it.prompt in held)


def eval_items(images_per_tag: int = 48) -> list[PromptItem]:
    """The evaluation set: per tag (in GenEval order) its eval prompts, repeated round-robin in whole rounds
    until there are at least `images_per_tag` items, so every prompt of a tag gets the same weight.

    Eval prompts are the held-out ones for position and color_attr and all prompts of the other tags. With
    the default 48: 48 / 48 / 54 / 48 / 48 / 48 items (counting has 9 prompts, so 6 rounds).
    """
    if images_per_tag < 1:
        raise ValueError(f"images_per_tag must be >= 1, got {images_per_tag}")
    held = _heldout_set()
    out: list[PromptItem] = []
    for tag in TAGS:
        prompts = [
            it
            for it in _all()
            if it.metadata["tag"] == tag and (tag not in HELDOUT_TAGS or it.prompt in held)
        ]
        rounds = -(-images_per_tag // len(prompts))
        for _ in range(rounds):
            out.extend(_copies(prompts))
    return out


def metadata_for(prompt: str) -> dict[str, Any]:
    """The GenEval metadata of one grammar prompt (a copy); KeyError naming the prompt if it is not one."""
    for item in _all():
        if item.prompt == prompt:
            return copy.deepcopy(item.metadata)
    raise KeyError(f"{prompt!r} is not a shapes-world prompt")


def tokenize(prompt: str) -> list[str]:
    """Lower-case words of a prompt ("A red circle" -> ["a", "red", "circle"]); punctuation is dropped."""
    return re.findall(r"[a-z]+", prompt.lower())


def _vocab() -> tuple[str, ...]:
    words: list[str] = ["a", "and"]
    words += list(NUMBER_WORDS.values())
    words += list(COLORS)
    words += list(CLASSES)
    words += list(PLURALS.values())
    for relation in RELATIONS:
        words += relation.split()
    return tuple(dict.fromkeys(words))


VOCAB = _vocab()
"""Every word of the grammar, in a fixed order (no padding or unknown token: the text encoder adds those)."""
