"""The constants of the shapes world: image size, object classes, palette, sizes and words.

32x32 RGB images on black; flat-coloured circles, squares and upward triangles; four saturated colours far
apart in RGB (a subset of GenEval's ten colour names, so GenEval metadata applies unchanged).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "CLASSES",
    "COLORS",
    "IMAGE_SIZE",
    "MIN_GAP",
    "NUMBER_WORDS",
    "PALETTE",
    "PLURALS",
    "RADIUS_RANGE",
    "RELATIONS",
]

IMAGE_SIZE = 32
"""Height and width of every image, in pixels."""

CLASSES = ("circle", "square", "triangle")

COLORS: dict[str, tuple[float, float, float]] = {
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.35, 1.0),  # a touch of green so it is bright enough to stand out from black
    "yellow": (1.0, 1.0, 0.0),
}
"""Palette: colour name -> RGB in [0, 1]. Pairwise distances are >= 1 (red-yellow, green-yellow)."""

PALETTE = np.array(list(COLORS.values()), dtype=np.float32)
"""`[len(COLORS), 3]` float32, rows in the order of `COLORS`."""

RADIUS_RANGE = (5.5, 7.0)
"""An object's "radius" (half its box side) is drawn uniformly from this range, in pixels. Large enough
that a circle and a square differ at the coarse scale where a flow model lays out the scene: with radii
4-5.5 no pretraining learned "left of" (not even the axis); with these, pretraining on position scenes
learns the axis and starts on the order (docs/shapes-world.md; the order is still mostly unlearned). Four
objects still fit in 32 x 32."""

MIN_GAP = 2
"""At least this many background pixels separate the pixel boxes of any two objects (along x or y)."""

PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles"}

NUMBER_WORDS = {2: "two", 3: "three", 4: "four"}
"""The counts of the counting prompts and their words."""

RELATIONS = ("left of", "right of", "above", "below")
"""GenEval's four relations, in its order."""
