"""GenEval detector backends: what turns images into per-class detections for GenEval's scorer.

A backend is a `DetectorBackend`: `build(options) -> detector` and whether the detector names each
object's colour itself (`own_colors`). A detector of a backend without own colours has
`detect(images_uint8 [N,3,H,W], min_score) -> list[Detections]`, and GenEval's CLIP colour classifier
names the colours; one with own colours has `detect(images [N,3,H,W] float in [0, 1]) ->
list[(Detections, ColorClassifier)]` (a rule-based world's detector knows its palette).

Built in: `mask2former` (transformers, the default) and `mmdet` (the official detector). Other packages
add backends through the entry-point group `nft_rewards.geneval_detectors`, each entry point naming a
`DetectorBackend` object; the shapes world's `shapes` backend is one (pyproject.toml). Looking names up
reads only the installed packages' metadata; a backend's module is imported when it is built.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from nft_core.errors import UserError
from nft_core.lookup import unknown_name

__all__ = ["BUILTIN_DETECTORS", "ENTRY_POINT_GROUP", "DetectorBackend", "backend", "detector_names"]

ENTRY_POINT_GROUP = "nft_rewards.geneval_detectors"


@dataclass(frozen=True)
class DetectorBackend:
    """A way to detect objects for GenEval: `build(options)` makes the detector (see the module docs)."""

    build: Callable[[Any], Any]
    own_colors: bool = False
    description: str = ""


def _mask2former(options: Any) -> Any:
    from nft_rewards.base import torch_dtype
    from nft_rewards.geneval.mask2former import Mask2FormerDetector

    return Mask2FormerDetector(
        options.detector_model,
        weights_dir=options.weights_dir,
        dtype=torch_dtype(options.dtype),
        short_side=options.short_side,
        long_side=options.long_side,
        bgr_quirk=options.bgr_quirk,
    )


def _mmdet(options: Any) -> Any:
    from nft_rewards.geneval.mmdet_backend import MmdetDetector

    if not (options.mmdet_config and options.mmdet_checkpoint):
        raise UserError("geneval: detector='mmdet' needs mmdet_config and mmdet_checkpoint (files)")
    return MmdetDetector(options.mmdet_config, options.mmdet_checkpoint, bgr_quirk=options.bgr_quirk)


BUILTIN_DETECTORS: dict[str, DetectorBackend] = {
    "mask2former": DetectorBackend(_mask2former, description="Mask2Former Swin-S COCO (transformers)"),
    "mmdet": DetectorBackend(_mmdet, description="GenEval's own mmdet Mask2Former (exact)"),
}


@lru_cache(maxsize=1)
def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    found = {}
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(entry_point.name, entry_point)
    return found


def detector_names() -> list[str]:
    """The built-in backends, then the installed ones (by entry-point name)."""
    return [*BUILTIN_DETECTORS, *(name for name in sorted(_entry_points()) if name not in BUILTIN_DETECTORS)]


def backend(name: str) -> DetectorBackend:
    """The backend called `name`; an unknown one is a `UserError` listing the available ones."""
    if name in BUILTIN_DETECTORS:
        return BUILTIN_DETECTORS[name]
    entry_point = _entry_points().get(name)
    if entry_point is None:
        raise UserError(unknown_name("detector", name, detector_names(), "geneval"))
    try:
        found = entry_point.load()
    except Exception as error:  # a broken package must not read as a missing one
        raise UserError(
            f"geneval: detector {name!r} ({entry_point.value}) failed to load:"
            f" {type(error).__name__}: {error}"
        ) from None
    if not isinstance(found, DetectorBackend):
        raise UserError(f"geneval: detector {name!r} ({entry_point.value}) is not a DetectorBackend")
    return found
