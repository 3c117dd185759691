"""Images as trackers take them: an `[H, W, 3]` uint8 array, from a PNG file or an array."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["image_array"]


def image_array(image: str | Path | np.ndarray) -> np.ndarray:
    """`image` (a file's path, or an `[H, W, 3]` / `[H, W, 4]` uint8 array) as an `[H, W, 3]` uint8
    array; anything else is a ValueError."""
    if isinstance(image, (str, Path)):
        with Image.open(image) as opened:
            return np.asarray(opened.convert("RGB"))
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ValueError(f"an image must be [H, W, 3] uint8; got {array.dtype} {list(array.shape)}")
    return array[:, :, :3]
