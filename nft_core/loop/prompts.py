"""Prompts: their sources (a registered `name:arg`, or a `.txt` / `.jsonl` file) and each epoch's draw."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from nft_core import registry
from nft_core.errors import ConfigError, UserError
from nft_core.io import read_prompt_file
from nft_core.state.holders import python_rng_from_json, python_rng_to_json
from nft_core.types import PromptItem

__all__ = ["PromptDrawer", "load_prompts", "read_prompt_file", "weighted_tag_cycle"]


def load_prompts(spec: str, field: str = "data.prompts") -> list[PromptItem]:
    """Resolve a prompt spec: a registered source (`shapes:train`) or a file path."""
    name, _, arg = spec.partition(":")
    sources = registry.registrations("prompt_sources")
    if arg and name in sources and not Path(spec).exists():
        try:
            items = sources[name].factory(arg)
        except ConfigError:
            raise
        except UserError as error:  # the source's own complaint, said at the key that named it
            raise ConfigError(f"{field}: {error}") from None
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


class PromptDrawer:
    """Draws each epoch's prompts from a training set, reproducibly from `seed`.

    When every tag of `tag_weights` is known and the items carry a metadata `tag` (and `balance_tags`),
    tags take turns in `weighted_tag_cycle` order, continuing across epochs, and each turn draws a
    prompt of that tag uniformly; otherwise prompts are drawn uniformly from all items.
    """

    def __init__(
        self,
        items: list[PromptItem],
        per_epoch: int,
        seed: int,
        balance_tags: bool = True,
        tag_weights: dict[str, int] | None = None,
        source: str = "data.prompts",
    ) -> None:
        self.items = items
        self.per_epoch = per_epoch
        self.balance_tags = balance_tags
        self.rng = random.Random(seed)
        self.by_tag: dict[str, list[PromptItem]] = {}
        for item in items:
            if item.metadata.get("tag"):
                self.by_tag.setdefault(item.metadata["tag"], []).append(item)
        weights = tag_weights or {}
        tags = sorted(self.by_tag)
        unknown = sorted(set(weights) - set(tags))
        if unknown:
            raise ConfigError(
                f"data.tag_weights: unknown tag {unknown[0]!r}; tags of {source}: {', '.join(tags) or 'none'}"
            )
        if weights and not balance_tags:
            raise ConfigError("data.tag_weights: needs data.balance_tags = true")
        self.tag_cycle = weighted_tag_cycle(tags, weights)
        """The order in which tags take turns (empty: the prompts carry no tags)."""

    def draw(self, epoch: int) -> list[PromptItem]:
        """The `per_epoch` prompts of `epoch` (epochs must be drawn in order: one random stream)."""
        count, cycle = self.per_epoch, self.tag_cycle
        if self.balance_tags and cycle:
            order = [cycle[(epoch * count + k) % len(cycle)] for k in range(count)]
            return [self.rng.choice(self.by_tag[tag]) for tag in order]
        return [self.rng.choice(self.items) for _ in range(count)]

    def state_dict(self) -> dict[str, Any]:
        """The draw's position: the random stream's state (JSON)."""
        return {"rng": python_rng_to_json(self.rng.getstate())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Go on drawing where `state_dict` was taken."""
        self.rng.setstate(python_rng_from_json(state["rng"]))
