"""Prompts that carry a condition image (editing): the `edit:` prompt source, reading each drawn prompt's
source image, and encoding prompt items for the policy.

An editing prompt is a `PromptItem` whose metadata names its source image file (`CONDITION_IMAGE`).
The file is checked when the prompts load and read when the prompt is drawn (a few recent images are
kept), as float `[3,H,W]` in [0, 1] under `SOURCE_IMAGE`: the policy conditions on it
(`ConditionedPolicy.encode_items`) and every reward finds it in its per-sample metadata.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import torch

from nft_core.errors import UserError
from nft_core.io import read_prompt_file
from nft_core.loop.images import IMAGE_SUFFIXES, check_images, read_image
from nft_core.protocols import ConditionedPolicy, Policy
from nft_core.types import CONDITION_IMAGE, SOURCE_IMAGE, Cond, PromptItem

__all__ = ["PROMPTS_FILE", "edit_prompts", "encode_items", "with_sources"]

PROMPTS_FILE = "prompts.txt"
"""The prompt file of an `edit:` folder: one instruction per line, paired with the images in name order."""
KEPT_SOURCES = 256
"""Source images kept in memory (the most recently drawn)."""

_sources: OrderedDict[str, torch.Tensor] = OrderedDict()


def _folder_items(folder: Path) -> list[PromptItem]:
    prompts_file = folder / PROMPTS_FILE
    if not prompts_file.is_file():
        raise UserError(f"{folder}: no {PROMPTS_FILE} (one instruction per line, paired with the images)")
    prompts = read_prompt_file(prompts_file)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if len(files) != len(prompts):
        raise UserError(
            f"{prompts_file}: {len(prompts)} prompts for {len(files)} images ({', '.join(IMAGE_SUFFIXES)}) "
            f"in {folder}; they are paired in file-name order"
        )
    return [
        PromptItem(item.prompt, {CONDITION_IMAGE: str(path)})
        for item, path in zip(prompts, files, strict=True)
    ]


def _jsonl_items(path: Path) -> list[PromptItem]:
    items = []
    for number, item in enumerate(read_prompt_file(path), 1):
        image = item.metadata.get(CONDITION_IMAGE)
        if not isinstance(image, str) or not image:
            raise UserError(f'{path}: item {number}: needs a string "{CONDITION_IMAGE}" (the source image)')
        resolved = Path(image).expanduser()
        resolved = resolved if resolved.is_absolute() else path.parent / resolved
        if not resolved.is_file():
            raise UserError(f"{path}: item {number}: image {image} not found (relative to {path.parent})")
        items.append(PromptItem(item.prompt, {**item.metadata, CONDITION_IMAGE: str(resolved)}))
    return items


def edit_prompts(arg: str) -> list[PromptItem]:
    """The `edit:PATH` prompt source: a JSONL file of `{"prompt": ..., "image": FILE}` lines (a relative
    FILE is in the JSONL's folder; other keys, e.g. `tag`, are kept), or a folder of images with a
    `prompts.txt` paired with them in file-name order. Every image's header is checked here."""
    path = Path(arg).expanduser()
    if path.is_dir():
        items = _folder_items(path)
    elif path.suffix == ".jsonl" and path.is_file():
        items = _jsonl_items(path)
    else:
        raise UserError(f"edit:{arg}: expected a .jsonl file or a folder of images with a {PROMPTS_FILE}")
    check_images([Path(item.metadata[CONDITION_IMAGE]) for item in items])
    return items


def _source(path: str) -> torch.Tensor:
    if path in _sources:
        _sources.move_to_end(path)
        return _sources[path]
    image = _sources[path] = read_image(Path(path))
    while len(_sources) > KEPT_SOURCES:
        _sources.popitem(last=False)
    return image


def with_sources(items: Sequence[PromptItem]) -> list[PromptItem]:
    """The items, those that name a condition image with it read into their metadata's `SOURCE_IMAGE`
    (copies; an item repeated in `items` shares one copy and one image tensor)."""
    copies: dict[int, PromptItem] = {}
    for item in items:
        path = item.metadata.get(CONDITION_IMAGE)
        if id(item) in copies or not isinstance(path, str) or SOURCE_IMAGE in item.metadata:
            continue
        copies[id(item)] = PromptItem(item.prompt, {**item.metadata, SOURCE_IMAGE: _source(path)})
    return [copies.get(id(item), item) for item in items]


def encode_items(policy: Policy, items: Sequence[PromptItem]) -> Cond:
    """The policy's conditioning of the items: the whole items for a `ConditionedPolicy` (an editing
    model reads each source image), the prompts' text for any other."""
    if isinstance(policy, ConditionedPolicy):
        return policy.encode_items(items)
    return policy.encode_prompts([item.prompt for item in items])
