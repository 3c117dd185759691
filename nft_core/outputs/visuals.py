"""Pictures a person would rather look at than read: sample grids with prompts and scores, metric curves."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw, ImageFont

from nft_core.io import atomic_write_bytes

LINE_HEIGHT = 12
"""Pixels per caption or title line (Pillow's default font)."""
CAPTION_LINES = 4
"""At most this many lines under a cell: the prompt (up to three) and the score line, always kept."""


def _wrap(text: str, width: int, limit: int = 3) -> list[str]:
    """`text` in lines of at most `width` characters (a longer word stays whole), the first `limit`."""
    words, lines, line = text.split(), [], ""
    for word in words:
        candidate = f"{line} {word}".strip()
        if len(candidate) > width and line:
            lines.append(line)
            line = word
        else:
            line = candidate
    return [*lines, line][:limit]


def _caption_lines(caption: str, width: int) -> list[str]:
    """A caption's lines: its last paragraph (after a newline: the score) always shown, the prompt wrapped
    into what is left of `CAPTION_LINES`."""
    *text, last = caption.split("\n")
    if not text:
        return _wrap(last, width, CAPTION_LINES - 1)
    return [*_wrap(" ".join(text), width, CAPTION_LINES - 1), *_wrap(last, width, 1)]


def sample_grid(
    images: torch.Tensor,
    captions: Sequence[str],
    path: str | Path,
    columns: int = 8,
    cell: int = 128,
    title: str | None = None,
) -> None:
    """A PNG grid: each image upscaled to `cell` px (nearest), its caption below (the prompt, then after a
    newline the score line, which is never cut), and `title` (what the score is) in a band above."""
    count = images.shape[0]
    columns = max(1, min(columns, count))
    rows = (count + columns - 1) // columns
    width = cell // 6
    lines = [_caption_lines(captions[index], width) for index in range(count)]
    caption_height = LINE_HEIGHT * max((len(cell_lines) for cell_lines in lines), default=1) + 4
    title_lines = _wrap(title, columns * cell // 6, limit=4) if title else []
    top = LINE_HEIGHT * len(title_lines) + 6 if title_lines else 0
    canvas = Image.new("RGB", (columns * cell, top + rows * (cell + caption_height)), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for line_number, line in enumerate(title_lines):
        draw.text((4, 3 + LINE_HEIGHT * line_number), line, fill="black", font=font)
    pixels = (images.float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    for index in range(count):
        x, y = (index % columns) * cell, top + (index // columns) * (cell + caption_height)
        tile = Image.fromarray(pixels[index]).resize((cell, cell), Image.NEAREST)
        canvas.paste(tile, (x, y))
        for line_number, line in enumerate(lines[index]):
            draw.text((x + 2, y + cell + 1 + LINE_HEIGHT * line_number), line, fill="black", font=font)
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())


def spread_over_tags(tags: Sequence[str | None], prompts: Sequence[str], count: int) -> list[int]:
    """Indices of `count` items (all if fewer) with the tags taking turns, in first-seen tag order;
    within a tag, each distinct prompt before any prompt's second image. Returned in item order, so a grid
    reads tag by tag and each index still pairs its image with its prompt. Deterministic."""
    queues: dict[str | None, list[int]] = {}
    for index, tag in enumerate(tags):
        queues.setdefault(tag, []).append(index)
    for tag, indices in queues.items():
        seen: dict[str, int] = {}
        repeat = {}
        for index in indices:
            repeat[index] = seen.get(prompts[index], 0)
            seen[prompts[index]] = repeat[index] + 1
        queues[tag] = sorted(indices, key=lambda index: (repeat[index], index))
    chosen: list[int] = []
    turn = 0
    while len(chosen) < min(count, len(tags)):
        for indices in queues.values():
            if turn < len(indices) and len(chosen) < count:
                chosen.append(indices[turn])
        turn += 1
    return sorted(chosen)


def total_reward_legend(terms: Sequence[tuple[str, float, str]]) -> str:
    """What a training grid's score is, from its rewards' (name, weight, normalizer)."""
    parts = " + ".join(f"{weight:g} x {name} ({normalize})" for name, weight, normalize in terms)
    return f"score = total reward, the weighted sum of the normalized rewards: {parts}"


def curves_figure(records: list[dict]) -> Any:
    """The matplotlib figure of the curves: training reward (raw, per reward), loss (and mean |v - v_old|),
    eval scores with the first tagged reward's per-tag breakdown (each tag once), and the monitors
    (`monitor/*`) against training minutes; a red dashed line where an alarm fired. Legends sit below
    their panels, never over the data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in records if r.get("kind") == "train"]
    evals = [r for r in records if r.get("kind") == "eval"]
    figure, axes = plt.subplots(1, 4, figsize=(20, 4))
    handles: list[list] = [[] for _ in axes]
    if train:
        minutes = [r["train_minutes"] for r in train]
        for key in train[-1]:
            if key.startswith("reward/") and key.endswith("/raw_mean"):
                axes[0].plot(minutes, [r.get(key) for r in train], label=key.split("/")[1])
        axes[1].plot(minutes, [r.get("loss") for r in train], color="tab:red", label="loss")
        if any("v_old_gap" in r for r in train):
            gap = axes[1].twinx()
            gap.plot(minutes, [r.get("v_old_gap") for r in train], color="tab:gray", label="|v - v_old|")
            gap.set_ylabel("mean |v - v_old|", fontsize=8)
            handles[1] = gap.get_legend_handles_labels()[0]
        for key in train[-1]:
            if key.startswith("monitor/"):
                axes[3].plot(minutes, [r.get(key) for r in train], label=key[len("monitor/") :])
    axes[0].set(title="training reward (raw mean)", xlabel="training minutes")
    axes[1].set(title="loss", xlabel="training minutes")
    eval_title = "eval (EMA, CFG-free)"
    if evals:
        minutes = [r["train_minutes"] for r in evals]
        keys = list(evals[-1])
        for key in keys:
            if key.startswith("eval/") and key.endswith("/score"):
                axes[2].plot(minutes, [r.get(key) for r in evals], marker="o", label=key.split("/")[1])
        # every reward with GenEval tags has the same breakdown in the shapes world: one reward's tags only
        tagged = [key for key in keys if key.startswith("eval/") and "/tag/" in key]
        if tagged:
            source = tagged[0].split("/")[1]
            palette = plt.get_cmap("Dark2")  # not the score lines' colours
            for number, key in enumerate(key for key in tagged if key.split("/")[1] == source):
                values = [r.get(key) for r in evals]
                axes[2].plot(
                    minutes, values, linestyle=":", color=palette(number % 8), label=key.split("/")[-1]
                )
            eval_title += f"; dotted: {source} per tag"
    axes[2].set(title=eval_title, xlabel="training minutes")
    axes[3].set(title="monitors (never trained on)", xlabel="training minutes")
    for alarm in (r for r in records if r.get("kind") == "alarm"):  # a mark where each alarm fired
        for axis in axes:
            axis.axvline(alarm["train_minutes"], color="tab:red", linestyle="--", linewidth=1, alpha=0.6)
        axes[0].annotate(
            alarm.get("name", "alarm"),
            (alarm["train_minutes"], 1.0),
            xycoords=("data", "axes fraction"),
            rotation=90,
            fontsize=7,
            color="tab:red",
            va="top",
        )
    for axis, extra in zip(axes, handles, strict=True):
        axis.grid(alpha=0.3)
        found = axis.get_legend_handles_labels()[0] + extra
        if not found:
            axis.text(0.5, 0.5, "nothing logged", ha="center", va="center", transform=axis.transAxes)
        else:
            longest = max(len(handle.get_label()) for handle in found)
            columns = max(1, min(4, len(found), 70 // (longest + 4)))  # as wide as its panel, at most
            axis.legend(
                handles=found,
                fontsize=7,
                loc="upper center",
                bbox_to_anchor=(0.5, -0.16),
                ncol=columns,
                frameon=False,
            )
    figure.tight_layout()
    return figure


def curves_png(records: list[dict]) -> bytes:
    """PNG bytes of `curves_figure(records)`."""
    figure = curves_figure(records)  # selects the Agg backend before pyplot is imported here
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")  # "tight": the legends below too
    plt.close(figure)
    return buffer.getvalue()


def plot_curves(records: list[dict], path: str | Path) -> None:
    """`curves.png`: `curves_png(records)` written atomically."""
    atomic_write_bytes(path, curves_png(records))
