"""Tables of the registered names of one kind (rewards, solvers, ...), put into a page where it writes
the marker `<!-- nft-docs: registered KIND -->`."""

from __future__ import annotations

import re

from nft_core import registry
from nft_docs import config_reference
from nft_docs.text import cell, relative_link, table

MARKER = re.compile(r"<!--\s*nft-docs:\s*registered\s+([a-z_]+)\s*-->")


def registered_table(kind: str, page: str) -> str:
    """Name (linked to its options in the configuration reference), description and plugin of every
    registered name of `kind`, as a markdown table for the page whose source is `page`."""
    if kind not in registry.KINDS:
        raise ValueError(f"{page}: marker names an unknown kind {kind!r}; known: {', '.join(registry.KINDS)}")
    rows = []
    for item in registry.registrations(kind).values():
        target = f"{config_reference.PAGE}#{config_reference.anchor(kind, item.name)}"
        rows.append(
            (f"[`{item.name}`]({relative_link(page, target)})", cell(item.description), f"`{item.plugin}`")
        )
    return table(("name", "what", "registered by"), rows)


def fill_markers(markdown: str, page: str) -> str:
    """`markdown` with every registered-names marker replaced by its table."""
    return MARKER.sub(lambda match: registered_table(match.group(1), page), markdown)
