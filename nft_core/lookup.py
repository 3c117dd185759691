"""One wording for a name that is not there, whatever kind of thing it names (a contract module).

The plugin registry, the standalone `nft_rewards` / `nft_solvers` lookups, GenEval's detector backends
and the plugin scaffold all look names up in a table; an unknown one is the same line everywhere:
`<where>: unknown <what> 'x'; available: a, b, c; did you mean 'y'?`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import TypeVar

from nft_core.errors import UserError

__all__ = ["did_you_mean", "lookup", "unknown_name"]

Value = TypeVar("Value")


def did_you_mean(name: object, names: Iterable[str]) -> str:
    """`"; did you mean 'y'?"` for the closest of `names` to a mistyped `name`, else `""`."""
    close = difflib.get_close_matches(str(name), [str(candidate) for candidate in names], n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def unknown_name(what: str, name: object, available: Iterable[str], where: str = "") -> str:
    """The one line for `name`, which is not among `available` (a near miss gets "did you mean")."""
    names = [str(candidate) for candidate in available]
    prefix = f"{where}: " if where else ""
    return (
        f"{prefix}unknown {what} {name!r}; available: {', '.join(names) or 'none'}{did_you_mean(name, names)}"
    )


def lookup(
    table: Mapping[str, Value],
    name: str,
    what: str,
    where: str = "",
    error: type[UserError] = UserError,
    available: Iterable[str] | None = None,
) -> Value:
    """`table[name]`; an unknown name raises `error` with `unknown_name`'s line (listing `available`,
    default: the table's names in their order)."""
    if name in table:
        return table[name]
    raise error(unknown_name(what, name, table if available is None else available, where))
