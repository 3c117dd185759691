"""GenEval metadata: one JSON object per line (`tag`, `prompt`, `include`, optional `exclude`).

Validation gives a ValueError that starts with where the object came from (`file:line`, or
`metadata[3]` for in-memory batches) and names the offending field, e.g.
`prompts.jsonl:12: include[1].position: relation must be one of ['left of', ...], got 'near'`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nft_rewards.geneval.scoring import COLORS, RELATIONS, TAGS

__all__ = ["load_metadata", "parse_metadata_line", "validate_metadata"]

_INCLUDE_KEYS = {"class", "count", "color", "position"}
_EXCLUDE_KEYS = {"class", "count"}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _clause(clause: Any, field: str, where: str, allowed: set[str], index: int) -> None:
    if not isinstance(clause, dict):
        raise ValueError(f"{where}: {field}: expected an object, got {type(clause).__name__}")
    unknown = sorted(set(clause) - allowed)
    if unknown:
        raise ValueError(f"{where}: {field}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    name = clause.get("class")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}: {field}.class: expected a non-empty string, got {name!r}")
    count = clause.get("count")
    if not _is_int(count) or count < 1:
        raise ValueError(f"{where}: {field}.count: expected an integer >= 1, got {count!r}")
    if "color" in clause and clause["color"] not in COLORS:
        raise ValueError(f"{where}: {field}.color: must be one of {list(COLORS)}, got {clause['color']!r}")
    if "position" in clause:
        position = clause["position"]
        if not isinstance(position, (list, tuple)) or len(position) != 2:
            raise ValueError(f"{where}: {field}.position: expected [relation, index], got {position!r}")
        relation, target = position
        if relation not in RELATIONS:
            raise ValueError(
                f"{where}: {field}.position: relation must be one of {list(RELATIONS)}, got {relation!r}"
            )
        if not _is_int(target) or not 0 <= target < index:
            raise ValueError(
                f"{where}: {field}.position: target index must be an integer naming an earlier include "
                f"clause (0..{index - 1}), got {target!r}"
            )


def validate_metadata(metadata: Any, where: str) -> dict[str, Any]:
    """Check a metadata object; return it unchanged or raise a ValueError naming `where` and the field.

    Required: `tag` (one of the six), `include` (non-empty list of clauses `{class, count >= 1, [color],
    [position: [relation, earlier index]]}`). Optional: `prompt` (string), `exclude` (list of `{class,
    count}`). Other top-level keys are allowed and ignored; unknown clause keys are errors.
    """
    if not isinstance(metadata, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(metadata).__name__}")
    if "tag" not in metadata:
        raise ValueError(f"{where}: tag: missing (one of {list(TAGS)})")
    if metadata["tag"] not in TAGS:
        raise ValueError(f"{where}: tag: must be one of {list(TAGS)}, got {metadata['tag']!r}")
    if "prompt" in metadata and not isinstance(metadata["prompt"], str):
        raise ValueError(f"{where}: prompt: expected a string, got {type(metadata['prompt']).__name__}")
    if "include" not in metadata:
        raise ValueError(f"{where}: include: missing (a list of clauses)")
    include = metadata["include"]
    if not isinstance(include, list) or not include:
        raise ValueError(f"{where}: include: expected a non-empty list of clauses, got {include!r}")
    for i, clause in enumerate(include):
        _clause(clause, f"include[{i}]", where, _INCLUDE_KEYS, i)
    exclude = metadata.get("exclude", [])
    if not isinstance(exclude, list):
        raise ValueError(f"{where}: exclude: expected a list of clauses, got {exclude!r}")
    for i, clause in enumerate(exclude):
        _clause(clause, f"exclude[{i}]", where, _EXCLUDE_KEYS, i)
    return metadata


def parse_metadata_line(text: str, where: str) -> dict[str, Any]:
    """Parse and validate one JSON line; errors start with `where` (e.g. `file.jsonl:12`)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{where}: invalid JSON: {error.msg} (column {error.colno})") from None
    return validate_metadata(data, where)


def load_metadata(path: str | Path) -> list[dict[str, Any]]:
    """All metadata objects of a JSONL file, in order; blank lines are skipped."""
    path = Path(path)
    items = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                items.append(parse_metadata_line(line, f"{path}:{number}"))
    return items
