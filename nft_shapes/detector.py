"""The rule-based detector of the shapes world: colour segmentation, connected components, shape fit.

1. Pixels are quantized like every GenEval input (`round(255 x)`), then a pixel is foreground when its
   largest channel exceeds `FOREGROUND_THRESHOLD` and it lies within `MAX_COLOR_DISTANCE` (RGB, in [0, 1]
   units) of a palette colour; it is labelled with the nearest palette colour. Pixels far from every
   palette colour (white, grey, muddy mixtures) are background.
2. Connected components (8-connectivity) of same-colour pixels, by min-label propagation with pointer
   jumping in numpy, batched over images. Components smaller than `MIN_AREA` pixels are dropped (a
   minimum of 10 let 4x4 junk count as squares and pure noise score 0.30; the smallest real object,
   a radius-5.5 triangle, has at least 55 pixels).
3. Each component is compared with the ideal circle, square and triangle fitted to it (same area and
   centroid, rasterized exactly as the renderer draws, on a grid covering the blob's bounding box and the
   fitted shape). The class is the shape with the best IoU and the score **is** that IoU, so sloppy,
   half-drawn or elongated blobs get low confidence and fail GenEval's 0.9 counting threshold (or its 0.3
   threshold if bad enough): a deliberate guard against reward hacking. Fitting to the blob's box alone
   (without the centroid and area) gave rendered circles IoUs down to 0.71 from sub-pixel placement;
   the moment fit gives >= 0.93 on rendered circles and 1.0 on rendered squares and triangles.
4. The colour is the palette colour nearest the component's mean pixel.

Boxes are `(x1, y1, x2, y2)` pixel extents with x2/y2 exclusive, like Mask2Former boxes from masks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nft_rewards.geneval.detectors import DetectorBackend
from nft_rewards.geneval.scoring import ColorClassifier, Detection, Detections
from nft_shapes.render import rasterize
from nft_shapes.world import CLASSES, COLORS, PALETTE

__all__ = [
    "FOREGROUND_THRESHOLD",
    "GENEVAL_BACKEND",
    "MAX_COLOR_DISTANCE",
    "MIN_AREA",
    "ShapeDetection",
    "ShapesGenEvalDetector",
    "as_image_batch",
    "detect",
    "detect_batch",
    "to_geneval",
]

FOREGROUND_THRESHOLD = 0.5
"""A pixel is foreground only if its largest channel is above this."""
MAX_COLOR_DISTANCE = 0.5
"""...and it is at most this far (Euclidean RGB) from a palette colour: half the closest palette pair."""
MIN_AREA = 24
"""Components with fewer pixels are ignored."""

_COLOR_NAMES = tuple(COLORS)
_NEIGHBOURS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


@dataclass
class ShapeDetection:
    """One detected object: class, colour, box (x2/y2 exclusive), full-image mask `[H, W]`, score = IoU."""

    class_name: str
    color: str
    box: tuple[int, int, int, int]
    mask: np.ndarray = field(repr=False)
    score: float
    area: int
    ious: dict[str, float] = field(default_factory=dict)


def as_image_batch(images: Any) -> np.ndarray:
    """Images `[N,3,H,W]`, `[N,H,W,3]`, `[3,H,W]` or `[H,W,3]` (numpy or torch, any float dtype, [0, 1])
    to float32 `[N,H,W,3]` quantized like GenEval's uint8 inputs (`round(255 x)` clamped, NaN -> 0)."""
    if hasattr(images, "detach"):  # torch tensor, without importing torch here
        images = images.detach().to("cpu").float().numpy()
    array = np.asarray(images, dtype=np.float32)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4:
        raise ValueError(f"expected images [N,3,H,W] or [N,H,W,3] (or one image), got shape {array.shape}")
    if array.shape[1] == 3 and array.shape[-1] != 3:
        array = array.transpose(0, 2, 3, 1)
    elif array.shape[-1] != 3:
        raise ValueError(f"expected 3 colour channels first or last, got shape {array.shape}")
    array = np.nan_to_num(array, nan=0.0, posinf=1.0, neginf=0.0)
    return np.clip(np.rint(array * 255.0), 0, 255).astype(np.float32) / 255.0


def _colour_labels(pixels: np.ndarray) -> np.ndarray:
    """`[N,H,W]` int: index of the nearest palette colour, or -1 for background."""
    distances = np.sqrt(((pixels[..., None, :] - PALETTE) ** 2).sum(-1))  # [N,H,W,P]
    nearest = distances.argmin(-1)
    near_enough = np.take_along_axis(distances, nearest[..., None], -1)[..., 0] <= MAX_COLOR_DISTANCE
    foreground = (pixels.max(-1) > FOREGROUND_THRESHOLD) & near_enough
    return np.where(foreground, nearest, -1)


def _components(colour: np.ndarray) -> np.ndarray:
    """8-connected components of equal non-negative `colour` values, labelled by the smallest flat index of
    their pixels (`-1` for background); images of a batch never connect."""
    n, h, w = colour.shape
    size = n * h * w
    big = np.int64(size)
    labels = np.where(colour >= 0, np.arange(size, dtype=np.int64).reshape(n, h, w), big)
    padded_colour = np.pad(colour, ((0, 0), (1, 1), (1, 1)), constant_values=-1)
    same = [
        (padded_colour[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] == colour) & (colour >= 0)
        for dy, dx in _NEIGHBOURS
    ]
    foreground = colour >= 0
    while True:
        padded = np.pad(labels, ((0, 0), (1, 1), (1, 1)), constant_values=big)
        new = labels.copy()
        for (dy, dx), ok in zip(_NEIGHBOURS, same, strict=True):
            neighbour = padded[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
            np.minimum(new, np.where(ok, neighbour, big), out=new)
        flat = new.reshape(-1)
        for _ in range(4):  # pointer jumping: follow each label to its own label
            flat[foreground.reshape(-1)] = flat[flat[foreground.reshape(-1)]]
        if np.array_equal(new, labels):
            break
        labels = new
    return np.where(foreground, labels, -1)


def _fit_ious(rows: np.ndarray, cols: np.ndarray) -> dict[str, float]:
    """IoU of the blob (pixel rows/cols) with each ideal shape of equal area and centroid."""
    area = rows.size
    my, mx = rows.mean() + 0.5, cols.mean() + 0.5
    r_circle, r_square, r_triangle = np.sqrt(area / np.pi), np.sqrt(area) / 2, np.sqrt(area / 2)
    fits = {
        "circle": (mx, my, r_circle),
        "square": (mx, my, r_square),
        "triangle": (mx, my - r_triangle / 3, r_triangle),  # a triangle's centroid is r/3 below its centre
    }
    # one grid covering the blob and every fitted shape (the largest reach is the triangle's)
    reach = max(r_circle, r_square, r_triangle) + r_triangle / 3 + 1
    x0 = min(int(cols.min()), int(np.floor(mx - reach)))
    y0 = min(int(rows.min()), int(np.floor(my - reach)))
    x1 = max(int(cols.max()) + 1, int(np.ceil(mx + reach)))
    y1 = max(int(rows.max()) + 1, int(np.ceil(my + reach)))
    ys = np.arange(y0, y1, dtype=np.float64)[:, None] + 0.5
    xs = np.arange(x0, x1, dtype=np.float64)[None, :] + 0.5
    blob = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    blob[rows - y0, cols - x0] = True
    ious = {}
    for shape in CLASSES:
        cx, cy, r = fits[shape]
        ideal = rasterize(shape, cx, cy, r, xs, ys)
        inter = np.count_nonzero(ideal & blob)
        union = np.count_nonzero(ideal | blob)
        ious[shape] = inter / union if union else 0.0
    return ious


def detect_batch(images: Any) -> list[list[ShapeDetection]]:
    """Detections of every image of a batch (see `as_image_batch` for the accepted layouts)."""
    pixels = as_image_batch(images)
    n, h, w, _ = pixels.shape
    colour = _colour_labels(pixels)
    labels = _components(colour).reshape(-1)
    results: list[list[ShapeDetection]] = [[] for _ in range(n)]
    foreground = np.flatnonzero(labels >= 0)
    if foreground.size == 0:
        return results
    order = foreground[np.argsort(labels[foreground], kind="stable")]
    roots, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
    flat_pixels = pixels.reshape(-1, 3)
    for root, start, count in zip(roots, starts, counts, strict=True):
        if count < MIN_AREA:
            continue
        members = order[start : start + count]
        image_index = int(root) // (h * w)
        within = members - image_index * h * w
        rows, cols = within // w, within % w
        ious = _fit_ious(rows, cols)
        best = max(CLASSES, key=lambda shape: ious[shape])  # ties: first in CLASSES
        mean = flat_pixels[members].mean(0)
        color = _COLOR_NAMES[int(((PALETTE - mean) ** 2).sum(-1).argmin())]
        mask = np.zeros((h, w), dtype=bool)
        mask[rows, cols] = True
        box = (int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1)
        results[image_index].append(
            ShapeDetection(
                class_name=best, color=color, box=box, mask=mask, score=ious[best], area=int(count), ious=ious
            )
        )
    return results


def detect(image: Any) -> list[ShapeDetection]:
    """Detections of one image `[3,H,W]` or `[H,W,3]`, float in [0, 1]."""
    pixels = as_image_batch(image)
    if pixels.shape[0] != 1:
        raise ValueError(f"detect takes one image; use detect_batch for {pixels.shape[0]}")
    return detect_batch(pixels)[0]


def to_geneval(detections: list[ShapeDetection]) -> tuple[Detections, ColorClassifier]:
    """Adapt one image's detections to the GenEval scorer: per-class raw `Detection`s and a colour classifier
    that returns the detector's colour of each detection it is given."""
    grouped: Detections = {}
    colours: dict[int, tuple[Detection, str]] = {}  # holding the Detection keeps its id unique
    for d in detections:
        item = Detection(box=tuple(float(v) for v in d.box), score=float(d.score), mask=d.mask)
        grouped.setdefault(d.class_name, []).append(item)
        colours[id(item)] = (item, d.color)

    def classify(class_name: str, found: list[Detection]) -> list[str]:
        return [colours[id(item)][1] for item in found]

    return grouped, classify


class ShapesGenEvalDetector:
    """The shapes detector as a GenEval backend: per image its detections and their colours."""

    def detect(self, images: Any) -> list[tuple[Detections, ColorClassifier]]:
        """Images `[N,3,H,W]` float in [0, 1] -> per image (GenEval detections, colour classifier)."""
        return [to_geneval(found) for found in detect_batch(images)]


GENEVAL_BACKEND = DetectorBackend(
    build=lambda options: ShapesGenEvalDetector(),
    own_colors=True,
    description="the shapes world's rule-based detector and palette colours",
)
"""The `shapes` detector of the `geneval` reward (entry point `nft_rewards.geneval_detectors`)."""
