"""Draw scenes that satisfy GenEval metadata exactly: flat colours on black, hard edges, no overlap.

A pixel belongs to an object when its centre `(col + 0.5, row + 0.5)` lies inside the ideal shape:
a disc of radius r, an axis-aligned square of half-side r, or an upward isosceles triangle filling the
2r x 2r box (apex at the top centre, base along the bottom). Objects are at least `MIN_GAP` background
pixels apart (their pixel boxes are separated along x or y), so the detector's connected components are
exactly the drawn objects and its boxes exactly the drawn pixel boxes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from nft_rewards.geneval.scoring import relative_position
from nft_shapes.world import CLASSES, COLORS, IMAGE_SIZE, MIN_GAP, RADIUS_RANGE

__all__ = ["rasterize", "render_batch", "render_scene"]

_PLACEMENT_TRIES = 64  # per object, before the whole scene is restarted
_SCENE_TRIES = 2000  # scene restarts before giving up (never reached for <= 4 objects)


def rasterize(shape: str, cx, cy, r, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Boolean mask of the pixels whose centres `(x, y)` lie inside the ideal shape (broadcasts)."""
    if shape == "circle":
        return (x - cx) ** 2 + (y - cy) ** 2 <= r * r
    if shape == "square":
        return (np.abs(x - cx) <= r) & (np.abs(y - cy) <= r)
    if shape == "triangle":
        depth = y - (cy - r)  # distance below the apex
        return (depth >= 0) & (y <= cy + r) & (np.abs(x - cx) <= depth / 2)
    raise ValueError(f"unknown shape {shape!r}; expected one of {list(CLASSES)}")


def _draw(
    shape: str, cx: float, cy: float, r: float, size: int
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The object's mask inside its window and the window/box `(x1, y1, x2, y2)` (exclusive) in the image."""
    x0, y0 = max(int(np.floor(cx - r)) - 1, 0), max(int(np.floor(cy - r)) - 1, 0)
    x1, y1 = min(int(np.ceil(cx + r)) + 1, size), min(int(np.ceil(cy + r)) + 1, size)
    ys = np.arange(y0, y1, dtype=np.float64)[:, None] + 0.5
    xs = np.arange(x0, x1, dtype=np.float64)[None, :] + 0.5
    mask = rasterize(shape, cx, cy, r, xs, ys)
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    box = (x0 + int(cols[0]), y0 + int(rows[0]), x0 + int(cols[-1]) + 1, y0 + int(rows[-1]) + 1)
    mask = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    return mask, box


def _separated(a: tuple[int, int, int, int], b: tuple[int, int, int, int], gap: int) -> bool:
    return max(b[0] - a[2], a[0] - b[2], b[1] - a[3], a[1] - b[3]) >= gap


def _objects_of(metadata: dict[str, Any], rng: np.random.Generator) -> list[dict[str, Any]]:
    """One spec per object: class, colour (random palette colour unless the clause fixes it), clause index."""
    names = list(COLORS)
    specs = []
    for index, clause in enumerate(metadata["include"]):
        if clause["class"] not in CLASSES:
            raise ValueError(f"include[{index}].class: {clause['class']!r} is not one of {list(CLASSES)}")
        if "color" in clause and clause["color"] not in COLORS:
            raise ValueError(f"include[{index}].color: {clause['color']!r} is not one of {names}")
        for _ in range(clause["count"]):
            color = clause["color"] if "color" in clause else names[int(rng.integers(len(names)))]
            specs.append({"class": clause["class"], "color": color, "clause": index})
    return specs


def _positions_hold(metadata: dict[str, Any], objects: list[dict[str, Any]]) -> bool:
    for index, clause in enumerate(metadata["include"]):
        if "position" not in clause:
            continue
        relation, target = clause["position"]
        for obj in objects:
            if obj["clause"] != index:
                continue
            for other in objects:
                if other["clause"] == target and relation not in relative_position(obj["box"], other["box"]):
                    return False
    return True


def render_scene(
    metadata: dict[str, Any], rng: np.random.Generator, size: int = IMAGE_SIZE
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """A float32 image `[3, size, size]` in [0, 1] satisfying `metadata`, and its objects.

    Exactly `count` objects per include clause (so exclude clauses hold too), radii uniform in
    `RADIUS_RANGE`, positions uniform with the object inside the image and `MIN_GAP` pixels from the
    others, placements resampled until every position clause holds under GenEval's `relative_position`
    on the pixel boxes. Each object: `class`, `color`, `box` (x1, y1, x2, y2; x2/y2 exclusive), `center`,
    `radius`, `clause` (its include index).
    """
    specs = _objects_of(metadata, rng)
    lo, hi = RADIUS_RANGE
    for spec in specs:
        spec["radius"] = float(rng.uniform(lo, hi))
    for _ in range(_SCENE_TRIES):
        placed: list[dict[str, Any]] = []
        for spec in specs:
            r = spec["radius"]
            for _ in range(_PLACEMENT_TRIES):
                cx, cy = rng.uniform(r, size - r, size=2)
                mask, box = _draw(spec["class"], float(cx), float(cy), r, size)
                if all(_separated(box, other["box"], MIN_GAP) for other in placed):
                    placed.append(dict(spec, center=(float(cx), float(cy)), box=box, mask=mask))
                    break
            else:
                break
        if len(placed) == len(specs) and _positions_hold(metadata, placed):
            break
    else:
        raise RuntimeError(f"could not place the objects of {metadata.get('prompt', metadata)!r}")
    image = np.zeros((3, size, size), dtype=np.float32)
    objects = []
    for obj in placed:
        x1, y1, x2, y2 = obj.pop("box")
        mask = obj.pop("mask")
        color = np.asarray(COLORS[obj["color"]], dtype=np.float32)
        window = image[:, y1:y2, x1:x2]
        window[:, mask] = color[:, None]
        obj["box"] = (x1, y1, x2, y2)
        objects.append(obj)
    return image, objects


def render_batch(metadatas: list[dict[str, Any]], seed: int, size: int = IMAGE_SIZE) -> torch.Tensor:
    """Render one scene per metadata with `np.random.default_rng(seed)`: float32 `[N, 3, size, size]`."""
    rng = np.random.default_rng(seed)
    images = np.zeros((len(metadatas), 3, size, size), dtype=np.float32)
    for i, metadata in enumerate(metadatas):
        images[i] = render_scene(metadata, rng, size)[0]
    return torch.from_numpy(images)
