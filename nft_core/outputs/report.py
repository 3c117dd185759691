"""`nft report`: one self-contained HTML page for a run (docs/report.md; two runs: `report_compare`).

The page makes no request: the PNGs are base64 `data:` URIs, the CSS is inline, there is no script. It
shows the status and machine, every reward's score before and after, the GenEval per-tag tables, the
curves, the sample grids, the seconds per phase, the monitors and the resolved config. A piece the run
directory lacks (an interrupted run has no `eval_after`) is said to be missing; only `summary.json` is
required.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from nft_core.errors import UserError
from nft_core.io import atomic_write_text

__all__ = ["RunData", "load_run", "render_report", "write_report", "write_report_after_run"]

REPORT_FILE = "report.html"
PHASES = ("sampling", "reward", "training", "evaluation")
GRIDS = (("eval_before", "eval before (base model)"), ("eval_after", "eval after (EMA weights)"))
CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em auto; max-width: 1800px; padding: 0 1em;
       color: #222; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { font-size: 1.2em; margin-top: 1.6em;
       border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0 1em; } caption { text-align: left; font-weight: 600; }
td, th { border: 1px solid #ddd; padding: 2px 8px; text-align: right; }
td:first-child, th:first-child { text-align: left; }
table.facts td { text-align: left; }
th { background: #f3f3f3; } .pos { color: #1a7f37; } .neg { color: #c62828; }
.missing { color: #8a6d00; font-style: italic; }
img { max-width: 100%; border: 1px solid #ddd; image-rendering: pixelated; }
.pair { display: grid; grid-template-columns: 1fr 1fr; gap: 1em; } figure { margin: 0 0 1em; }
pre { background: #f7f7f7; padding: 0.6em; overflow-x: auto; font-size: 12px; }
.status-finished { color: #1a7f37; }
.status-failed, .status-interrupted, .status-diverged { color: #c62828; font-weight: 600; }
.alarm { color: #c62828; }
"""


@dataclass
class RunData:
    """What one run directory holds; everything but `summary` may be missing."""

    path: Path
    summary: dict[str, Any]
    records: list[dict[str, Any]] = field(default_factory=list)
    config_text: str | None = None
    curves: bytes | None = None
    """`curves.png`, or the curves drawn from `metrics.jsonl` when it is missing."""
    grids: dict[str, bytes] = field(default_factory=dict)
    """`samples/<name>.png` (a video run's `.gif`) by name: eval_before, eval_after, the latest epoch's."""
    skipped_lines: int = 0
    """Lines of `metrics.jsonl` that are not JSON (a run killed while writing one)."""

    @property
    def name(self) -> str:
        """The config's `name` (else the folder's)."""
        if self.config_text:
            try:
                return str(tomllib.loads(self.config_text).get("name") or self.path.name)
            except tomllib.TOMLDecodeError:
                pass
        return self.path.name

    @property
    def status(self) -> str:
        """`summary.json`'s status: running, finished, interrupted, failed or diverged."""
        return str(self.summary.get("status", "unknown"))

    @property
    def train(self) -> list[dict[str, Any]]:
        """The per-epoch training records."""
        return [r for r in self.records if r.get("kind") == "train"]


def load_run(run_dir: str | Path) -> RunData:
    """Read a run directory; a UserError (one line) unless it holds a readable `summary.json`."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: not a folder; give a run directory (the folder `nft run` wrote)")
    summary_file = run_dir / "summary.json"
    if not summary_file.is_file():
        raise UserError(f"{run_dir}: no summary.json; not a run directory, or a run that never started")
    try:
        summary = json.loads(summary_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{summary_file}: not readable JSON ({error})") from None
    if not isinstance(summary, dict):
        raise UserError(f"{summary_file}: a JSON object was expected, found {type(summary).__name__}")
    run = RunData(run_dir, summary)
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file():
        for line in metrics.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                run.skipped_lines += bool(line.strip())
                continue
            if isinstance(record, dict):
                run.records.append(record)
    config = run_dir / "config.resolved.toml"
    run.config_text = config.read_text(encoding="utf-8", errors="replace") if config.is_file() else None
    curves = run_dir / "curves.png"
    if curves.is_file():
        run.curves = curves.read_bytes()
    elif run.records:
        from nft_core.outputs.visuals import curves_png  # matplotlib only when there is something to draw

        run.curves = curves_png(run.records)
    samples = run_dir / "samples"  # PNG grids; a video policy's are animated GIFs
    found = {p.stem: p for p in sorted(samples.glob("*")) if p.suffix in (".png", ".gif")}
    for name in [name for name, _ in GRIDS] + sorted(n for n in found if n.startswith("epoch_"))[-1:]:
        if name in found:
            run.grids[name] = found[name].read_bytes()
    return run


# ---- the numbers ---------------------------------------------------------------------------------------
def _number(value: Any) -> float | None:
    """A finite float, else None (`null` in strict JSON, a string, a missing key)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _evals(run: RunData) -> dict[str, dict[str, Any]]:
    """The run's evaluations by column label: before, before CFG <g>, after (those it has)."""
    columns: dict[str, dict[str, Any]] = {}
    if isinstance(run.summary.get("eval_before"), dict):
        columns["before"] = run.summary["eval_before"]
    for scale, entries in (run.summary.get("eval_before_cfg") or {}).items():
        if isinstance(entries, dict):
            columns[f"before, CFG {scale}"] = entries
    if isinstance(run.summary.get("eval_after"), dict):
        columns["after"] = run.summary["eval_after"]
    return columns


def _score_table(run: RunData) -> tuple[list[str], dict[str, dict[str, float | None]]]:
    """Column labels and, per reward, its main score (`score`) in each evaluation."""
    columns = _evals(run)
    rows: dict[str, dict[str, float | None]] = {}
    for label, entries in columns.items():
        for reward, entry in entries.items():
            if isinstance(entry, dict):
                rows.setdefault(reward, {})[label] = _number(entry.get("score"))
    return list(columns), rows


@dataclass
class TagTable:
    """One per-tag table: the per-tag score before and after, and each tag's item count."""

    title: str
    before: dict[str, float | None]
    after: dict[str, float | None]
    counts: dict[str, Any] = field(default_factory=dict)
    same_as: list[str] = field(default_factory=list)

    @property
    def tags(self) -> list[str]:
        """Tags in the order the tables list them."""
        return list(dict.fromkeys([*self.before, *self.after]))


def _tag_tables(run: RunData) -> list[TagTable]:
    """The aggregates' per-tag tables (GenEval: `official`, `strict`) of every reward, before and after; a
    table equal to one already listed is named under it instead. Without any in `summary.json`, the
    `eval/<reward>/tag/<tag>` values of the before / after records of `metrics.jsonl`."""
    found: dict[str, TagTable] = {}
    before, after = run.summary.get("eval_before") or {}, run.summary.get("eval_after") or {}
    for reward in dict.fromkeys([*before, *after]):
        entries = [e.get(reward) if isinstance(e.get(reward), dict) else {} for e in (before, after)]
        names = [k for k, v in {**entries[0], **entries[1]}.items() if isinstance(v, dict) and "per_tag" in v]
        for name in names:
            first, last = (entry.get(name, {}) for entry in entries)
            table = TagTable(
                f"{reward}: {name}",
                {t: _number(v) for t, v in (first.get("per_tag") or {}).items()},
                {t: _number(v) for t, v in (last.get("per_tag") or {}).items()},
                dict(last.get("counts") or first.get("counts") or {}),
            )
            key = json.dumps([table.before, table.after, name], sort_keys=True)
            if key in found:
                found[key].same_as.append(reward)
            else:
                found[key] = table
    if found:
        return list(found.values())
    tables: dict[str, TagTable] = {}
    for record in run.records:
        if record.get("kind") != "eval" or record.get("label") not in ("before", "after"):
            continue
        for key, value in record.items():
            parts = key.split("/")
            if len(parts) == 4 and parts[0] == "eval" and parts[2] == "tag":
                table = tables.setdefault(parts[1], TagTable(parts[1], {}, {}))
                getattr(table, record["label"])[parts[3]] = _number(value)
    return list(tables.values())


def _phase_seconds(run: RunData) -> tuple[dict[str, float], dict[str, float], str]:
    """Seconds per phase over the run and per epoch, and where they come from."""
    total = run.summary.get("seconds_per_phase")
    if isinstance(total, dict) and total:
        per_epoch = run.summary.get("seconds_per_epoch") or {}
        return (
            {k: v for k, v in total.items() if _number(v) is not None},
            {k: v for k, v in per_epoch.items() if _number(v) is not None},
            "from summary.json",
        )
    train = run.train
    total = {}
    for phase in PHASES:
        values = [_number(r.get(f"seconds/{phase}")) for r in train]
        if any(v is not None for v in values):
            total[phase] = sum(v for v in values if v is not None)
    per_epoch = {phase: seconds / len(train) for phase, seconds in total.items() if phase != "evaluation"}
    return total, per_epoch, f"from metrics.jsonl, {len(train)} epochs"


def _monitors(run: RunData) -> dict[str, list[float | None]]:
    """Each `monitor/*` key of the training records: its value per epoch."""
    keys = dict.fromkeys(k for r in run.train for k in r if k.startswith("monitor/"))
    return {key[len("monitor/") :]: [_number(r.get(key)) for r in run.train] for key in keys}


def _facts(run: RunData) -> list[tuple[str, Any]]:
    """The run's status, counters, times and machine, as (label, value) rows."""
    summary, train = run.summary, run.train
    epochs = summary.get("epochs")
    if epochs is None and train:
        epochs = f"{max(int(r.get('epoch', 0)) for r in train) + 1} (from metrics.jsonl)"
    speeds = [v for v in (_number(r.get("images_per_second")) for r in train) if v is not None]
    rows: list[tuple[str, Any]] = [
        ("status", run.status),
        ("error", summary.get("error")),
        ("diverged", summary.get("reason") if run.status == "diverged" else None),
        ("last good checkpoint", summary.get("last_good_checkpoint")),
        ("stopped by", summary.get("stopped_by")),
        ("epochs", epochs),
        ("optimizer steps", summary.get("optimizer_steps", train[-1].get("step") if train else None)),
        ("training seconds", summary.get("train_seconds")),
        ("wall seconds", summary.get("wall_seconds")),
        ("images per second (mean of epochs)", sum(speeds) / len(speeds) if speeds else None),
        ("precision", summary.get("precision")),
        ("checkpoint", summary.get("checkpoint") or summary.get("last_checkpoint")),
    ]
    machine = summary.get("machine")
    if isinstance(machine, dict):
        rows += [(f"machine: {key}", value) for key, value in machine.items()]
    else:
        rows.append(("machine", None))
    return [(label, value) for label, value in rows if value is not None or label in ("epochs", "machine")]


# ---- HTML pieces -----------------------------------------------------------------------------------------
def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any, digits: int = 3) -> str:
    """A number with `digits` decimals, an int as is, anything missing as an en dash."""
    if value is None:
        return "&ndash;"
    if isinstance(value, bool) or isinstance(value, int):
        return _esc(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}" if math.isfinite(value) else _esc(value)
    return _esc(value)


def _diff(new: float | None, old: float | None, digits: int = 3, signed_class: bool = True) -> str:
    """`new - old` with its sign, coloured (better up) where `signed_class`."""
    if new is None or old is None:
        return "&ndash;"
    delta = new - old
    css = ("pos" if delta > 0 else "neg" if delta < 0 else "") if signed_class else ""
    return f'<span class="{css}">{delta:+.{digits}f}</span>'


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], caption: str = "", css: str = "") -> str:
    """An HTML table of class `css`; `header` is escaped, the cells are HTML already."""
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    cap = f"<caption>{_esc(caption)}</caption>" if caption else ""
    return f'<table class="{css}">{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _missing(text: str) -> str:
    return f'<p class="missing">{_esc(text)}</p>'


def _kind(data: bytes) -> str:
    return "gif" if data[:4] == b"GIF8" else "png"  # a video policy's grids are animated GIFs


def _image(data: bytes, alt: str, css: str) -> str:
    encoded = base64.b64encode(data).decode("ascii")
    return f'<img class="{css}" alt="{_esc(alt)}" src="data:image/{_kind(data)};base64,{encoded}">'


def _sparkline(values: Sequence[float | None], width: int = 160, height: int = 28) -> str:
    """An inline SVG line of the values (missing ones left out)."""
    points = [(i, v) for i, v in enumerate(values) if v is not None]
    if len(points) < 2:
        return ""
    low, high = min(v for _, v in points), max(v for _, v in points)
    span, last = (high - low) or 1.0, max(len(values) - 1, 1)
    coords = " ".join(
        f"{2 + (width - 4) * i / last:.1f},{height - 2 - (height - 4) * (v - low) / span:.1f}"
        for i, v in points
    )
    return (
        f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
        f'<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="{coords}"/></svg>'
    )


def _page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{_esc(title)}</title>'
        f'<link rel="icon" href="data:,"><style>{CSS}</style></head>\n<body>\n{body}\n</body></html>\n'
    )


def _missing_reason(run: RunData, what: str) -> str:
    return f"no {what} in {run.path.name}: the run's status is {run.status!r}" + (
        " (it stopped before the final evaluation)"
        if run.status in ("interrupted", "failed", "running", "diverged")
        else ""
    )


# ---- one run -------------------------------------------------------------------------------------------
def _facts_html(run: RunData) -> str:
    rows = []
    for label, value in _facts(run):
        if label == "status":
            cell = f'<span class="status-{_esc(value)}">{_esc(value)}</span>'
        elif label == "diverged":
            cell = f'<span class="alarm">{_esc(value)}</span>'
        else:
            cell = _fmt(value, 2 if "seconds" in label else 3)
        rows.append([_esc(label), cell])
    return _table(["", "value"], rows, css="facts")


def _scores_html(run: RunData) -> str:
    columns, rows = _score_table(run)
    if not rows:
        return _missing(_missing_reason(run, "evaluation"))
    header = ["reward", *columns, "after - before"]
    cells = [
        [
            _esc(reward),
            *(_fmt(values.get(c)) for c in columns),
            _diff(values.get("after"), values.get("before")),
        ]
        for reward, values in rows.items()
    ]
    note = "" if "after" in columns else _missing(_missing_reason(run, "eval_after"))
    return _table(header, cells, "main score of every reward (GenEval: the official mean over tags)") + note


def _tags_html(run: RunData) -> str:
    tables = _tag_tables(run)
    if not tables:
        return _missing(f"no per-tag table in {run.path.name} (no reward reported tags)")
    parts = []
    for table in tables:
        rows = [
            [
                _esc(tag),
                _fmt(table.before.get(tag)),
                _fmt(table.after.get(tag)),
                _diff(table.after.get(tag), table.before.get(tag)),
                _fmt(table.counts.get(tag)),
            ]
            for tag in table.tags
        ]
        also = f" (the same for {', '.join(table.same_as)})" if table.same_as else ""
        parts.append(_table(["tag", "before", "after", "after - before", "items"], rows, table.title + also))
    return "".join(parts)


def _phases_html(run: RunData) -> str:
    total, per_epoch, source = _phase_seconds(run)
    if not total:
        return _missing(f"no phase times in {run.path.name}")
    whole = sum(total.values())
    rows = [
        [_esc(phase), _fmt(seconds, 2), _fmt(per_epoch.get(phase), 3), f"{100 * seconds / whole:.1f}%"]
        for phase, seconds in total.items()
    ]
    return _table(["phase", "seconds", "seconds per epoch", "share"], rows, f"seconds per phase ({source})")


def _monitors_html(run: RunData) -> str:
    monitors = _monitors(run)
    if not monitors:
        return _missing(f"no monitor/* values in {run.path.name}'s metrics.jsonl")
    rows = []
    for key, values in monitors.items():
        known = [v for v in values if v is not None]
        first, last = (known[0], known[-1]) if known else (None, None)
        low, high = (min(known), max(known)) if known else (None, None)
        rows.append([_esc(key), _fmt(first), _fmt(last), _fmt(low), _fmt(high), _sparkline(values)])
    return _table(["monitor", "first", "last", "min", "max", "per epoch"], rows, "watched, never trained on")


def _curves_html(run: RunData) -> str:
    if run.curves is None:
        return _missing(f"no curves.png and no metrics.jsonl records in {run.path.name}")
    return f"<figure>{_image(run.curves, f'{run.name}: curves', 'curves')}</figure>"


def _grid_html(run: RunData, name: str, label: str) -> str:
    if name not in run.grids:
        return _missing(_missing_reason(run, f"samples/{name}.png"))
    image, kind = _image(run.grids[name], f"{run.name}: {label}", "grid"), _kind(run.grids[name])
    return f"<figure><figcaption>{_esc(label)}: samples/{_esc(name)}.{kind}</figcaption>{image}</figure>"


def _grid_names(run: RunData) -> list[tuple[str, str]]:
    epochs = [name for name in run.grids if name.startswith("epoch_")]
    latest = [(epochs[-1], f"latest training grid ({epochs[-1]})")] if epochs else []
    return [*GRIDS, *latest]


def _alarms_html(run: RunData) -> str:
    alarms = [r for r in run.records if r.get("kind") == "alarm"]
    if not alarms:
        return "<p>none fired (docs/guards.md says what each watches)</p>"
    rows = [
        [_esc(r.get("epoch")), f'<span class="alarm">{_esc(r.get("name"))}</span>', _esc(r.get("message"))]
        for r in alarms
    ]
    return _table(["epoch", "alarm", "what it saw"], rows, css="facts")


def _config_html(run: RunData) -> str:
    if run.config_text is None:
        return _missing(f"no config.resolved.toml in {run.path.name}")
    return f"<details><summary>config.resolved.toml</summary><pre>{_esc(run.config_text)}</pre></details>"


def render_report(run: RunData) -> str:
    """The HTML page of one run."""
    skipped = f" ({run.skipped_lines} unreadable metrics.jsonl lines skipped)" if run.skipped_lines else ""
    grids = "".join(_grid_html(run, name, label) for name, label in _grid_names(run))
    body = (
        f"<h1>{_esc(run.name)}</h1><p>{_esc(run.path)}{_esc(skipped)}</p>"
        f"<h2>Status and machine</h2>{_facts_html(run)}"
        f"<h2>Alarms</h2>{_alarms_html(run)}"
        f"<h2>Scores</h2>{_scores_html(run)}"
        f"<h2>Per tag</h2>{_tags_html(run)}"
        f"<h2>Curves</h2>{_curves_html(run)}"
        f"<h2>Samples</h2>{grids}"
        f"<h2>Phase times</h2>{_phases_html(run)}"
        f"<h2>Monitors</h2>{_monitors_html(run)}"
        f"<h2>Config</h2>{_config_html(run)}"
    )
    return _page(f"{run.name}: run report", body)


# ---- files ---------------------------------------------------------------------------------------------
def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write one run's report (default `RUN_DIR/report.html`) atomically; returns its path."""
    run = load_run(run_dir)
    path = Path(out) if out is not None else run.path / REPORT_FILE
    atomic_write_text(path, render_report(run))
    return path


def write_report_after_run(run_dir: str | Path, echo: Callable[[str], Any] = print) -> Path | None:
    """The trainer's last step: the run's report, or a warning line (never an exception) if it fails."""
    try:
        return write_report(run_dir)
    except Exception as error:  # a report is a convenience; the run it describes has finished
        echo(f"warning: could not write {Path(run_dir) / REPORT_FILE}: {error}")
        return None
