"""GenEval: detector-independent scoring (`scoring`) and metadata parsing (`metadata`).

Only numpy, torch and the standard library are imported here; detector and colour-classifier backends
live in their own modules and are imported on demand.
"""

from nft_rewards.geneval.metadata import load_metadata, parse_metadata_line, validate_metadata
from nft_rewards.geneval.scoring import (
    COLORS,
    COUNTING_THRESHOLD,
    MAX_OBJECTS,
    NMS_THRESHOLD,
    PARTIAL_SCORE_RANGE,
    POSITION_THRESHOLD,
    RELATIONS,
    TAGS,
    THRESHOLD,
    ColorClassifier,
    Detection,
    Detections,
    GenEvalOutcome,
    evaluate_image,
    filter_detections,
    official_score,
    relative_position,
)

__all__ = [
    "COLORS",
    "COUNTING_THRESHOLD",
    "MAX_OBJECTS",
    "NMS_THRESHOLD",
    "PARTIAL_SCORE_RANGE",
    "POSITION_THRESHOLD",
    "RELATIONS",
    "TAGS",
    "THRESHOLD",
    "ColorClassifier",
    "Detection",
    "Detections",
    "GenEvalOutcome",
    "evaluate_image",
    "filter_detections",
    "load_metadata",
    "official_score",
    "parse_metadata_line",
    "relative_position",
    "validate_metadata",
]
