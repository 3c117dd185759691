"""Reading one image file, as every command and the loop do: under a pixel limit, any mode as float RGB.

The limit is `NFT_MAX_IMAGE_PIXELS` (default 4096 x 4096 x 4): a file whose header claims more is
refused before it is decoded. Every mode becomes float RGB in [0, 1]: 8-bit modes by 255, 16-bit greys
(`I;16`, and `I` within 0..65535) by 65535, floats (`F`) as they are when within [0, 1]; transparency is
composited onto white. Anything else is refused with the reason.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from nft_core.errors import UserError

__all__ = [
    "IMAGE_SUFFIXES",
    "MAX_PIXELS_ENV",
    "check_images",
    "image_array",
    "max_image_pixels",
    "read_image",
    "read_images",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
MAX_PIXELS_ENV = "NFT_MAX_IMAGE_PIXELS"
"""The environment variable that sets the largest image (width x height) that is read."""
DEFAULT_MAX_PIXELS = 4096 * 4096 * 4


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
