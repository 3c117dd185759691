"""Markdown helpers: escaping free text outside code spans, table cells, TOML-looking literals."""

from __future__ import annotations

import html
import json
import math
import posixpath
import re
from collections.abc import Iterable, Sequence
from enum import Enum
from pathlib import Path, PurePath
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[3]
"""The repository checkout the site is built from (docs/hooks/nft_docs/ is three levels down)."""

_CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.DOTALL)


def portable(text: str) -> str:
    """`text` with this checkout's absolute path made relative (a default such as the plugin template's
    folder), so that the site never shows where it was built."""
    return text.replace(f"{REPO_ROOT}/", "").replace(str(REPO_ROOT), ".")


def escape(text: str, in_table: bool = False) -> str:
    """Free text (a docstring, a help string) as markdown: HTML special characters and brackets escaped
    outside code spans, so `<name>` shows as written, and whitespace folded into single spaces. `in_table`:
    also pipes outside code spans (the table extension leaves those inside code spans alone)."""
    text = " ".join(portable(text).split())

    def plain(piece: str) -> str:
        # brackets too: `name[-N][,seed=S]` in a help text is not a reference link
        piece = html.escape(piece, quote=False).replace("[", "\\[").replace("]", "\\]")
        return piece.replace("|", "&#124;") if in_table else piece

    pieces, start = [], 0
    for match in _CODE_SPAN.finditer(text):
        pieces.append(plain(text[start : match.start()]))
        pieces.append(match.group(0))
        start = match.end()
    pieces.append(plain(text[start:]))
    return "".join(pieces)


def cell(text: str) -> str:
    """One table cell of free text (a non-breaking space when empty)."""
    return escape(text, in_table=True) or "&nbsp;"


def code(text: str) -> str:
    """`text` as an inline code span (a longer fence when it contains backticks)."""
    text = portable(text)
    fence = "``" if "`" in text else "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A markdown table; the cells are used as given (escape them with `cell` or `code`)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def literal(value: Any) -> str:
    """A default value as it is written in TOML (`true`, `"dpm2"`, `[0.9, 0.999]`, `{}`)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return literal(value.value)
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else ("-inf" if value < 0 else "nan")
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, PurePath):
        return json.dumps(portable(str(value)))
    if isinstance(value, str):
        return json.dumps(portable(value))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(literal(item) for item in value) + "]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        return "{ " + ", ".join(f"{key} = {literal(item)}" for key, item in value.items()) + " }"
    return portable(repr(value))


def relative_link(from_page: str, target: str) -> str:
    """The link from the page whose source is `from_page` (e.g. `recipes/evaluation.md`) to the
    docs file `target` (e.g. `reference/config.md#reward-geneval`)."""
    path, _, anchor = target.partition("#")
    link = posixpath.relpath(path, posixpath.dirname(from_page) or ".")
    return f"{link}#{anchor}" if anchor else link
