"""Plain-text mentions of pages (`docs/core.md`, as the repository's files write them) made into links
on the site, outside code."""

from __future__ import annotations

import re
from collections.abc import Container

from nft_docs.text import relative_link

MENTION = re.compile(r"(?<![\w/.\[])(?<!\]\()docs/((?:[A-Za-z0-9_-]+/)*[A-Za-z0-9_-]+\.md)(#[A-Za-z0-9_-]+)?")
_FENCE = re.compile(r"^\s*(```|~~~)")
_CODE_SPAN = re.compile(r"(`+).+?\1")


def _link_text(text: str, page: str, pages: Container[str]) -> str:
    def link(match: re.Match[str]) -> str:
        target, anchor = match.group(1), match.group(2) or ""
        if target not in pages:  # a page that does not exist (yet) stays text
            return match.group(0)
        return f"[{match.group(0)}]({relative_link(page, target)}{anchor})"

    return MENTION.sub(link, text)


def link_mentions(markdown: str, page: str, pages: Container[str]) -> str:
    """Every `docs/<page>.md` written as plain text in `markdown` (the page `page`), made a link to that
    page when it is one of `pages` (their sources, e.g. `core.md`); code blocks and spans stay as they are."""
    lines, fenced = [], False
    for line in markdown.split("\n"):
        if _FENCE.match(line):
            fenced = not fenced
        if fenced or _FENCE.match(line):
            lines.append(line)
            continue
        pieces, start = [], 0
        for match in _CODE_SPAN.finditer(line):
            pieces.append(_link_text(line[start : match.start()], page, pages))
            pieces.append(match.group(0))
            start = match.end()
        pieces.append(_link_text(line[start:], page, pages))
        lines.append("".join(pieces))
    return "\n".join(lines)
