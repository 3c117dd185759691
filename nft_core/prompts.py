"""Prompt sources: `name:arg` from a registered source, or a plain `.txt` / GenEval `.jsonl` file."""

from __future__ import annotations

import json
from pathlib import Path

from nft_core.errors import ConfigError, UserError
from nft_core.types import PromptItem


def read_prompt_file(path: str | Path) -> list[PromptItem]:
    """`.txt`: one prompt per non-empty line. `.jsonl`: GenEval metadata lines with `prompt`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: prompt file not found")
    lines = path.read_text(encoding="utf-8").splitlines()
    if path.suffix == ".jsonl":
        items = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise UserError(f"{path}:{number}: invalid JSON ({error.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
                raise UserError(f"{path}:{number}: each line must be an object with a string `prompt`")
            items.append(PromptItem(record["prompt"], record))
        return items
    return [PromptItem(line.strip()) for line in lines if line.strip()]


def load_prompts(spec: str, field: str = "data.prompts") -> list[PromptItem]:
    """Resolve a prompt spec: a registered source (`shapes:train`) or a file path."""
    from nft_core import registry

    name, _, arg = spec.partition(":")
    sources = registry.registrations("prompt_sources")
    if arg and name in sources and not Path(spec).exists():
        items = sources[name].factory(arg)
    elif Path(spec).suffix in (".txt", ".jsonl") or Path(spec).exists():
        items = read_prompt_file(spec)
    else:
        known = ", ".join(f"{n}:..." for n in sorted(sources))
        raise ConfigError(f"{field}: {spec!r} is neither a prompt file (.txt/.jsonl) nor a source ({known})")
    if not items:
        raise ConfigError(f"{field}: {spec!r} has no prompts")
    return list(items)


def weighted_tag_cycle(tags: list[str], weights: dict[str, int]) -> list[str]:
    """One period of a tag order in which each tag appears `weights[tag]` times (unlisted: once).

    Smooth weighted round robin: the copies of a heavy tag are spread over the period rather than
    bunched, so any run of draws is close to the weights. Equal weights give `tags` in their order.
    """
    share = {tag: weights.get(tag, 1) for tag in tags}
    total = sum(share.values())
    credit = dict.fromkeys(tags, 0)
    cycle = []
    for _ in range(total):
        for tag in tags:
            credit[tag] += share[tag]
        chosen = max(tags, key=lambda tag: credit[tag])  # the first of equals, in `tags` order
        credit[chosen] -= total
        cycle.append(chosen)
    return cycle
