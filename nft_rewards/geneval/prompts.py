"""GenEval-format training prompts, generated with GenEval's public recipe: the `geneval` prompt source.

GenEval (Ghosh et al. 2023) builds its prompts from the 80 COCO class names, 10 colours and 4 relations
with one template per task; each prompt carries the metadata its scorer reads (`tag`, `include`,
`exclude`). The reference's training set follows the same recipe. This module enumerates that space
per task and draws a deterministic sample, leaving out any prompt of a given test file:

    geneval:train                       5000 prompts per task (all of the smaller tasks)
    geneval:train-300                   300 per task
    geneval:train,exclude=FILE          without the prompts of FILE (.jsonl metadata or .txt)
    geneval:train-300,exclude=FILE,seed=1

The templates are GenEval's, quirks included ("a photo of two benchs", "an orange apple").
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nft_core.errors import UserError
from nft_core.io import missing_prompt_file, read_prompt_file
from nft_core.types import PromptItem

NUMBERS = ("zero", "one", "two", "three", "four")
COUNTS = (2, 3, 4)
DEFAULT_PER_TAG = 5000


def _vocabulary() -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(classes, colours, relations, tags) from the GenEval scorer, so prompts and scoring never drift."""
    from nft_rewards.geneval.mask2former import GENEVAL_CLASSES
    from nft_rewards.geneval.scoring import COLORS, RELATIONS, TAGS

    return GENEVAL_CLASSES, COLORS, RELATIONS, TAGS


def with_article(word: str) -> str:
    """GenEval's article rule: `an` before a vowel letter, else `a`."""
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def plural(word: str) -> str:
    """GenEval's plural rule: `es` after a final `s`, else `s` (so "benchs", "sheeps")."""
    return f"{word}es" if word.endswith("s") else f"{word}s"


def prompt_for(metadata: dict[str, Any]) -> str:
    """The GenEval prompt of a metadata object (`tag` + `include` clauses)."""
    tag, include = metadata["tag"], metadata["include"]
    first = include[0]
    if tag == "single_object":
        return f"a photo of {with_article(first['class'])}"
    if tag == "two_object":
        return f"a photo of {with_article(first['class'])} and {with_article(include[1]['class'])}"
    if tag == "counting":
        return f"a photo of {NUMBERS[first['count']]} {plural(first['class'])}"
    if tag == "colors":
        return f"a photo of {with_article(first['color'])} {first['class']}"
    if tag == "position":
        moved = include[1]
        relation = moved["position"][0]
        return f"a photo of {with_article(moved['class'])} {relation} {with_article(first['class'])}"
    if tag == "color_attr":
        second = include[1]
        return (
            f"a photo of {with_article(first['color'])} {first['class']} and "
            f"{with_article(second['color'])} {second['class']}"
        )
    raise ValueError(f"unknown GenEval tag {tag!r}")


def _distinct_pair(index: int, size: int) -> tuple[int, int]:
    """The index-th ordered pair (a, b) of distinct elements of range(size)."""
    a, rest = divmod(index, size - 1)
    return a, rest if rest < a else rest + 1


def _spaces() -> dict[str, tuple[int, Callable[[int], dict[str, Any]]]]:
    """Per task: the size of its prompt space and the metadata of its index-th element."""
    classes, colors, relations, _ = _vocabulary()
    n, k = len(classes), len(colors)
    # Colour tasks leave out class 0 ("person"), as GenEval does.
    colorable = classes[1:]

    def single(i: int) -> dict[str, Any]:
        return {"tag": "single_object", "include": [{"class": classes[i], "count": 1}]}

    def two(i: int) -> dict[str, Any]:
        a, b = _distinct_pair(i, n)
        return {
            "tag": "two_object",
            "include": [{"class": classes[a], "count": 1}, {"class": classes[b], "count": 1}],
        }

    def counting(i: int) -> dict[str, Any]:
        c, j = divmod(i, len(COUNTS))
        count = COUNTS[j]
        return {
            "tag": "counting",
            "include": [{"class": classes[c], "count": count}],
            "exclude": [{"class": classes[c], "count": count + 1}],
        }

    def colored(i: int) -> dict[str, Any]:
        c, j = divmod(i, k)
        return {"tag": "colors", "include": [{"class": colorable[c], "count": 1, "color": colors[j]}]}

    def position(i: int) -> dict[str, Any]:
        pair, r = divmod(i, len(relations))
        a, b = _distinct_pair(pair, n)
        return {
            "tag": "position",
            "include": [
                {"class": classes[b], "count": 1},
                {"class": classes[a], "count": 1, "position": [relations[r], 0]},
            ],
        }

    def color_attr(i: int) -> dict[str, Any]:
        pair, shades = divmod(i, k * (k - 1))
        a, b = _distinct_pair(pair, len(colorable))
        ca, cb = _distinct_pair(shades, k)
        return {
            "tag": "color_attr",
            "include": [
                {"class": colorable[a], "count": 1, "color": colors[ca]},
                {"class": colorable[b], "count": 1, "color": colors[cb]},
            ],
        }

    m = len(colorable)
    return {
        "single_object": (n, single),
        "two_object": (n * (n - 1), two),
        "counting": (n * len(COUNTS), counting),
        "colors": (m * k, colored),
        "position": (n * (n - 1) * len(relations), position),
        "color_attr": (m * (m - 1) * k * (k - 1), color_attr),
    }


def _normalize(prompt: str) -> str:
    return " ".join(prompt.lower().split())


def _excluded_prompts(path: str) -> set[str]:
    """The normalized prompts of a GenEval metadata `.jsonl` (its `prompt` fields) or a `.txt` file."""
    if not Path(path).is_file():
        where = missing_prompt_file(Path(path)).removeprefix(f"{path}: prompt file not found")
        raise UserError(
            f"geneval:...,exclude={path}: file not found (a .jsonl of GenEval metadata or a .txt){where}"
        )
    return {_normalize(item.prompt) for item in read_prompt_file(path)}


def generate(
    per_tag: int = DEFAULT_PER_TAG, exclude: set[str] | None = None, seed: int = 0
) -> list[PromptItem]:
    """Up to `per_tag` distinct prompts per task (all of a smaller task), none of them in `exclude`."""
    excluded = exclude or set()
    items: list[PromptItem] = []
    for tag, (size, make) in _spaces().items():
        rng = random.Random(f"geneval:{seed}:{tag}")
        if size <= 4 * per_tag:
            order = list(range(size))
            rng.shuffle(order)
        else:  # a large space: draw distinct indices; a bounded number of tries
            drawn: dict[int, None] = {}
            for _ in range(50 * per_tag):
                drawn.setdefault(rng.randrange(size))
                if len(drawn) >= per_tag + len(excluded):
                    break
            order = list(drawn)
        chosen = 0
        for index in order:
            metadata = make(index)
            metadata["prompt"] = prompt_for(metadata)
            if _normalize(metadata["prompt"]) in excluded:
                continue
            items.append(PromptItem(metadata["prompt"], metadata))
            chosen += 1
            if chosen == per_tag:
                break
    return items


def parse_spec(arg: str) -> dict[str, Any]:
    """`train[-N][,exclude=FILE][,seed=S]` -> keyword arguments of `generate`."""
    head, *pairs = [part.strip() for part in arg.split(",")]
    split, _, count = head.partition("-")
    usage = "expected geneval:train[-N][,exclude=FILE][,seed=S]"
    if split != "train" or (count and not count.isdigit()) or (count and int(count) < 1):
        raise UserError(f"geneval:{arg}: {usage}")
    options: dict[str, Any] = {"per_tag": int(count) if count else DEFAULT_PER_TAG}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in ("exclude", "seed") or not value:
            raise UserError(f"geneval:{arg}: unknown option {pair!r}; {usage}")
        if key == "seed" and not value.lstrip("-").isdigit():
            raise UserError(f"geneval:{arg}: seed must be an integer, got {value!r}")
        options[key] = int(value) if key == "seed" else value
    return options


def geneval_prompts(arg: str) -> list[PromptItem]:
    """The `geneval` prompt source: GenEval-format training prompts (see the module docstring)."""
    options = parse_spec(arg)
    exclude = _excluded_prompts(options.pop("exclude")) if "exclude" in options else None
    return generate(exclude=exclude, **options)


__all__ = ["generate", "geneval_prompts", "parse_spec", "plural", "prompt_for", "with_article"]
