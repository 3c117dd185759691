"""Folders of generated images, as `nft sample` writes them and `nft score` / `nft eval` read them.

Two layouts:

* GenEval's (`<root>/<index>/metadata.jsonl` holding one metadata object with its `prompt`, and
  `<root>/<index>/samples/*.png`), for prompts with metadata;
* flat: image files in a folder, paired in file-name order with the lines of a prompt file
  (`nft sample` writes `<root>/prompts.txt`).

Images are read by `nft_core.loop.images` (under the `NFT_MAX_IMAGE_PIXELS` limit, any mode as float
RGB in [0, 1]).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nft_core.errors import UserError
from nft_core.loop.images import IMAGE_SUFFIXES, read_images
from nft_core.loop.prompts import read_prompt_file
from nft_core.types import RewardOutput

__all__ = ["ImageSet", "image_files", "metadata_layout", "score_files"]


@dataclass
class ImageSet:
    """Image files with the prompt (and metadata, when known) of each, in order."""

    files: list[Path]
    prompts: list[str]
    metadata: list[dict[str, Any]] | None = None


def image_files(sources: list[Path]) -> list[Path]:
    """Image files from folders (sorted, non-recursive) and explicit files, in the order given."""
    files: list[Path] = []
    for source in sources:
        if source.is_dir():
            files += sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif source.is_file():
            files.append(source)
        else:
            raise UserError(f"--images: {source} does not exist")
    if not files:
        raise UserError(
            f"--images: no image files ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(map(str, sources))}"
        )
    return files


def metadata_layout(root: Path) -> ImageSet:
    """The images of GenEval's layout under `root`, each with its folder's metadata and prompt.

    Folders are taken in numeric order of their names; a folder without samples adds nothing.
    """
    if not root.is_dir():
        raise UserError(f"--images: {root} is not a folder")
    folders = sorted(
        (p for p in root.iterdir() if p.is_dir() and (p / "metadata.jsonl").is_file()),
        key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name),
    )
    if not folders:
        if any(p.suffix.lower() in IMAGE_SUFFIXES for p in root.iterdir()):  # the flat layout, half there
            raise UserError(
                f"--images: {root} holds images but no prompts.txt to pair them with (the flat layout) "
                "and no <index>/metadata.jsonl folders (the GenEval layout)"
            )
        raise UserError(f"--images: no <index>/metadata.jsonl folders in {root} (the GenEval output layout)")
    found = ImageSet([], [], [])
    for folder in folders:
        items = read_prompt_file(folder / "metadata.jsonl")
        if not items:
            raise UserError(f"{folder / 'metadata.jsonl'} is empty")
        samples = sorted((folder / "samples").glob("*.png")) if (folder / "samples").is_dir() else []
        found.files += samples
        found.prompts += [items[0].prompt] * len(samples)
        found.metadata += [items[0].metadata] * len(samples)
    if not found.files:
        raise UserError(f"--images: no samples/*.png under {root}")
    return found


def _runs(tensors: list[torch.Tensor]) -> Iterator[slice]:
    """Consecutive runs of images of one size."""
    start = 0
    while start < len(tensors):
        end = start + 1
        while end < len(tensors) and tensors[end].shape == tensors[start].shape:
            end += 1
        yield slice(start, end)
        start = end


def score_files(
    reward: Callable[..., RewardOutput],
    images: ImageSet,
    chunk: int = 64,
    progress: bool = False,
) -> RewardOutput:
    """Score the images of a set, read `chunk` files at a time; one reward call per run of one size.

    Returns one output for the whole set (scores, details and, when the reward gives them, notes).
    """
    from tqdm import tqdm

    outputs = []
    bar = tqdm(total=len(images.files), desc="score", disable=not progress, leave=False)
    for start in range(0, len(images.files), chunk):
        tensors = read_images(images.files[start : start + chunk])
        for part in _runs(tensors):
            span = slice(start + part.start, start + part.stop)
            metadata = None if images.metadata is None else images.metadata[span]
            outputs.append(reward(torch.stack(tensors[part]), images.prompts[span], metadata))
        bar.update(len(tensors))
    bar.close()
    notes = [note for out in outputs for note in (out.notes or [])]
    return RewardOutput(
        scores=torch.cat([out.scores.detach().float().cpu() for out in outputs]),
        details={
            key: torch.cat([torch.as_tensor(out.details[key]).float().cpu() for out in outputs])
            for key in outputs[0].details
        },
        notes=notes if len(notes) == len(images.files) else None,
    )
