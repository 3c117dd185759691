"""`nft report A B`: two runs side by side on one self-contained page (docs/report.md): paired tables (A,
B, B - A), the grids side by side, the curves one above the other, the difference of the configs."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nft_core.io import atomic_write_text
from nft_core.outputs.report import (
    GRIDS,
    RunData,
    _config_html,
    _curves_html,
    _diff,
    _esc,
    _facts,
    _fmt,
    _grid_html,
    _grid_names,
    _missing,
    _monitors,
    _page,
    _phase_seconds,
    _score_table,
    _table,
    _tag_tables,
    load_run,
)

__all__ = ["comparison_path", "render_comparison", "write_comparison"]


def _paired(
    keys: Sequence[str], a: dict[str, Any], b: dict[str, Any], digits: int = 3, signed: bool = True
) -> list[list[str]]:
    """Rows key | A | B | B - A."""
    return [
        [
            _esc(key),
            _fmt(a.get(key), digits),
            _fmt(b.get(key), digits),
            _diff(b.get(key), a.get(key), digits, signed),
        ]
        for key in keys
    ]


def _pair(left: str, right: str) -> str:
    return f'<div class="pair"><div>{left}</div><div>{right}</div></div>'


def _compare_scores(a: RunData, b: RunData, header: list[str]) -> str:
    (_, rows_a), (_, rows_b) = _score_table(a), _score_table(b)
    parts = []
    for label in ("before", "after"):
        first = {reward: values.get(label) for reward, values in rows_a.items()}
        second = {reward: values.get(label) for reward, values in rows_b.items()}
        keys = list(dict.fromkeys([*first, *second]))
        if any(v is not None for v in [*first.values(), *second.values()]):
            parts.append(
                _table(["reward", *header], _paired(keys, first, second), f"main score, eval {label}")
            )
        else:
            parts.append(_missing(f"neither run has eval_{label}"))
    return "".join(parts)


def _compare_tags(a: RunData, b: RunData, header: list[str]) -> str:
    tables_b = {table.title: table for table in _tag_tables(b)}
    parts = []
    for table in _tag_tables(a):
        other = tables_b.get(table.title)
        if other is None:
            parts.append(_missing(f"{table.title}: only in {a.name}"))
            continue
        after = bool(table.after or other.after)
        first, second = (table.after, other.after) if after else (table.before, other.before)
        keys = list(dict.fromkeys([*table.tags, *other.tags]))
        title = f"{table.title}, eval {'after' if after else 'before'}"
        parts.append(_table(["tag", *header], _paired(keys, first, second), title))
    return "".join(parts) or _missing("no per-tag table in either run")


def _compare_phases(a: RunData, b: RunData, header: list[str]) -> str:
    (total_a, epoch_a, _), (total_b, epoch_b, _) = _phase_seconds(a), _phase_seconds(b)
    keys = list(dict.fromkeys([*total_a, *total_b]))
    rows = _paired(keys, total_a, total_b, 2, signed=False)
    per_epoch = _paired(list(dict.fromkeys([*epoch_a, *epoch_b])), epoch_a, epoch_b, 3, signed=False)
    return _table(["phase", *header], rows, "seconds per phase") + _table(
        ["phase", *header], per_epoch, "seconds per epoch"
    )


def _compare_monitors(a: RunData, b: RunData, header: list[str]) -> str:
    def last(run: RunData) -> dict[str, float | None]:
        return {
            key: next((v for v in reversed(vs) if v is not None), None) for key, vs in _monitors(run).items()
        }

    first, second = last(a), last(b)
    if not first and not second:
        return _missing("no monitor/* values in either run")
    keys = list(dict.fromkeys([*first, *second]))
    return _table(["monitor (last value)", *header], _paired(keys, first, second, signed=False))


def _compare_configs(a: RunData, b: RunData) -> str:
    if a.config_text is None or b.config_text is None:
        return _missing("a config.resolved.toml is missing; no config difference")
    lines = list(
        difflib.unified_diff(
            a.config_text.splitlines(), b.config_text.splitlines(), a.name, b.name, lineterm="", n=1
        )
    )
    difference = (
        f"<pre>{_esc(chr(10).join(lines))}</pre>" if lines else "<p>the resolved configs are identical</p>"
    )
    return difference + _pair(_config_html(a), _config_html(b))


def _labels(a: RunData, b: RunData) -> list[str]:
    """How the page names the runs: their config names, else folder names, else paths, as A and B."""
    for first, second in ((a.name, b.name), (a.path.name, b.path.name)):
        if first != second:
            return [f"A: {first}", f"B: {second}"]
    return [f"A: {a.path}", f"B: {b.path}"]


def render_comparison(a: RunData, b: RunData) -> str:
    """The HTML page of two runs: paired tables (A, B, B - A), the grids side by side, the curves one
    above the other (each needs the page's width)."""
    header = [*_labels(a, b), "B - A"]
    facts = [dict(_facts(run)) for run in (a, b)]
    fact_rows = [
        [_esc(label), _fmt(facts[0].get(label), 2), _fmt(facts[1].get(label), 2)]
        for label in dict.fromkeys([*facts[0], *facts[1]])
    ]
    grids = "".join(
        f"<h3>{_esc(label)}</h3>" + _pair(_grid_html(a, name, label), _grid_html(b, name, label))
        for name, label in GRIDS
    )
    latest = [_grid_names(run)[len(GRIDS) :] for run in (a, b)]
    if latest[0] or latest[1]:
        sides = [
            _grid_html(run, *found[0]) if found else _missing(f"no training grid in {run.path.name}")
            for run, found in zip((a, b), latest, strict=True)
        ]
        grids += "<h3>latest training grid</h3>" + _pair(*sides)
    curves = "".join(
        f"<h3>{_esc(label)}</h3>{_curves_html(run)}" for label, run in zip(header[:2], (a, b), strict=True)
    )
    body = (
        f"<h1>{_esc(header[0])} vs {_esc(header[1])}</h1><p>A: {_esc(a.path)}<br>B: {_esc(b.path)}</p>"
        f"<h2>Status and machine</h2>{_table(['', *header[:2]], fact_rows, css='facts')}"
        f"<h2>Scores</h2>{_compare_scores(a, b, header)}"
        f"<h2>Per tag</h2>{_compare_tags(a, b, header)}"
        f"<h2>Curves</h2>{curves}"
        f"<h2>Samples</h2>{grids}"
        f"<h2>Phase times</h2>{_compare_phases(a, b, header)}"
        f"<h2>Monitors</h2>{_compare_monitors(a, b, header)}"
        f"<h2>Config</h2>{_compare_configs(a, b)}"
    )
    return _page(f"{header[0]} vs {header[1]}: run comparison", body)


def comparison_path(a: str | Path, b: str | Path) -> Path:
    """Where `nft report A B` writes by default: `A/compare-<B's folder name>.html`."""
    return Path(a) / f"compare-{Path(b).resolve().name}.html"


def write_comparison(a: str | Path, b: str | Path, out: str | Path | None = None) -> Path:
    """Write the comparison of two runs (default `comparison_path(a, b)`) atomically; returns its path."""
    first, second = load_run(a), load_run(b)
    path = Path(out) if out is not None else comparison_path(a, b)
    atomic_write_text(path, render_comparison(first, second))
    return path
