"""Folders of generated images, as `nft sample` writes them and `nft score` / `nft eval` read them.

Two layouts:

* GenEval's (`<root>/<index>/metadata.jsonl` holding one metadata object with its `prompt`, and
  `<root>/<index>/samples/*.png`), for prompts with metadata;
* flat: image files in a folder, paired in file-name order with the lines of a prompt file
  (`nft sample` writes `<root>/prompts.txt`).

Images are read under a pixel limit, `NFT_MAX_IMAGE_PIXELS` (default 4096 x 4096 x 4): a file whose
header claims more is refused before it is decoded. Every mode becomes float RGB in [0, 1]: 8-bit modes
by 255, 16-bit greys (`I;16`, and `I` within 0..65535) by 65535, floats (`F`) as they are when within
[0, 1]; transparency is composited onto white. Anything else is refused with the reason.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nft_core.errors import UserError
from nft_core.loop.prompts import read_prompt_file
from nft_core.types import RewardOutput

__all__ = [
    "IMAGE_SUFFIXES",
    "MAX_PIXELS_ENV",
    "ImageSet",
    "check_images",
    "image_array",
    "image_files",
    "max_image_pixels",
    "metadata_layout",
    "read_image",
    "read_images",
    "score_files",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
MAX_PIXELS_ENV = "NFT_MAX_IMAGE_PIXELS"
"""The environment variable that sets the largest image (width x height) `nft score` / `nft eval` read."""
DEFAULT_MAX_PIXELS = 4096 * 4096 * 4


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


def max_image_pixels() -> int:
    """The pixel limit: `NFT_MAX_IMAGE_PIXELS` when set (a whole number >= 1), else 4096 x 4096 x 4."""
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise UserError(f"{MAX_PIXELS_ENV}={raw!r}: expected a whole number of pixels >= 1")
    return value


@contextmanager
def _pil_limit(pixels: int | None) -> Iterator[None]:
    """PIL's own decompression-bomb limit set to `pixels` (None: off) inside the block."""
    from PIL import Image

    before = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = pixels
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = before


def image_array(image: Any, path: Path) -> Any:
    """A PIL image as a float32 numpy array `[H, W, 3]` in [0, 1]; a UserError naming `path` for a mode
    that has no such reading."""
    import numpy as np

    mode = image.mode
    if mode.startswith("I;16") or mode == "I":
        grey = np.asarray(image).astype(np.int64)
        if grey.size and (grey.min() < 0 or grey.max() > 65535):
            raise UserError(
                f"{path}: 32-bit integer pixels from {grey.min()} to {grey.max()}: no known white level "
                "(16-bit images, 0 to 65535, are read); save it as 8- or 16-bit"
            )
        return np.repeat((grey.astype(np.float32) / 65535.0)[..., None], 3, axis=2)
    if mode == "F":
        grey = np.asarray(image, dtype=np.float32)
        if grey.size and not (np.isfinite(grey).all() and grey.min() >= 0 and grey.max() <= 1):
            raise UserError(
                f"{path}: floating-point pixels outside [0, 1] (from {grey.min()} to {grey.max()}): no "
                "known white level; save it as 8- or 16-bit"
            )
        return np.repeat(grey[..., None], 3, axis=2)
    try:
        if image.has_transparency_data:  # RGBA, LA, PA, La, RGBa, or a palette's transparent index
            rgba = np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0
            alpha = rgba[..., 3:]
            return rgba[..., :3] * alpha + (1.0 - alpha)  # transparency composited onto white
        return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    except ValueError as error:  # a mode PIL cannot convert (e.g. LAB)
        raise UserError(f"{path}: image mode {mode} cannot be read as RGB ({error})") from None


def _check_size(image: Any, path: Path, limit: int) -> None:
    width, height = image.size
    if width * height > limit:
        raise UserError(
            f"{path}: the image claims {width}x{height} pixels ({width * height:,}), over the limit of "
            f"{limit:,}; set {MAX_PIXELS_ENV} to read larger images"
        )


def check_images(files: list[Path]) -> None:
    """Open every file's header (nothing is decoded): a UserError naming the first that is not an image
    or claims more pixels than the limit, before any reward model loads."""
    from PIL import Image

    limit = max_image_pixels()
    for path in files:
        try:
            with _pil_limit(None), Image.open(path) as image:
                _check_size(image, path, limit)
        except (OSError, SyntaxError, ValueError, EOFError) as error:
            raise UserError(f"cannot read image {path}: {error}") from None


def read_image(path: Path, limit: int | None = None) -> torch.Tensor:
    """One image file as a float tensor `[3, H, W]` in [0, 1] (RGB), read under the pixel limit."""
    import numpy as np
    from PIL import Image

    limit = max_image_pixels() if limit is None else limit
    try:
        with _pil_limit(None), Image.open(path) as image:  # the header only: the size is checked first
            _check_size(image, path, limit)
            image.load()
            array = image_array(image, path)
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as error:
        raise UserError(f"cannot read image {path}: {error}") from None
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)


def read_images(files: list[Path]) -> list[torch.Tensor]:
    """Each file as a float tensor `[3, H, W]` in [0, 1] (RGB); see `read_image`."""
    limit = max_image_pixels()
    return [read_image(path, limit) for path in files]


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
