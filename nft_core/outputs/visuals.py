"""Pictures a person would rather look at than read: sample grids with prompts and scores (videos as
animated GIFs, editing results beside their source images), metric curves."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw, ImageFont

from nft_core.io import atomic_write_bytes
from nft_core.types import SOURCE_IMAGE

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


VIDEO_FPS = 8.0
"""The playback rate of an animated grid when the policy declares none."""
GRID_FRAMES = 32
"""At most this many frames of a video are drawn into an animated grid (spread evenly; the playback
keeps the video's duration)."""


def sample_grid(
    images: torch.Tensor,
    captions: Sequence[str],
    path: str | Path,
    columns: int = 8,
    cell: int = 128,
    title: str | None = None,
    fps: float = VIDEO_FPS,
) -> None:
    """A grid: each image scaled to `cell` px high (nearest, its aspect kept), its caption below (the
    prompt, then after a newline the score line, which is never cut), and `title` (what the score is) in
    a band above. Images `[N,3,H,W]` make a PNG; videos `[N,F,3,H,W]` an animated GIF at `fps` frames a
    second, looping."""
    count = images.shape[0]
    columns = max(1, min(columns, count))
    rows = (count + columns - 1) // columns
    wide = max(1, round(cell * images.shape[-1] / images.shape[-2]))
    lines = [_caption_lines(captions[index], wide // 6) for index in range(count)]
    caption_height = LINE_HEIGHT * max((len(cell_lines) for cell_lines in lines), default=1) + 4
    title_lines = _wrap(title, columns * wide // 6, limit=4) if title else []
    top = LINE_HEIGHT * len(title_lines) + 6 if title_lines else 0
    base = Image.new("RGB", (columns * wide, top + rows * (cell + caption_height)), "white")
    draw = ImageDraw.Draw(base)
    font = ImageFont.load_default()
    for line_number, line in enumerate(title_lines):
        draw.text((4, 3 + LINE_HEIGHT * line_number), line, fill="black", font=font)
    corners = [((i % columns) * wide, top + (i // columns) * (cell + caption_height)) for i in range(count)]
    for (x, y), cell_lines in zip(corners, lines, strict=True):
        for line_number, line in enumerate(cell_lines):
            draw.text((x + 2, y + cell + 1 + LINE_HEIGHT * line_number), line, fill="black", font=font)
    video = images.ndim == 5
    frames = images if video else images.unsqueeze(1)
    step = max(1, -(-frames.shape[1] // GRID_FRAMES))
    frames = frames[:, ::step].float().clamp(0, 1).mul(255).round().to(torch.uint8)
    pixels = frames.permute(0, 1, 3, 4, 2).cpu().numpy()  # [N, F, H, W, 3]
    canvases = []
    for frame in range(pixels.shape[1]):
        canvas = base.copy()
        for index, corner in enumerate(corners):
            canvas.paste(Image.fromarray(pixels[index, frame]).resize((wide, cell), Image.NEAREST), corner)
        canvases.append(canvas)
    buffer = io.BytesIO()
    if video:
        duration = max(20, round(1000 * step / fps))
        canvases[0].save(
            buffer, format="GIF", save_all=True, append_images=canvases[1:], duration=duration, loop=0
        )
    else:
        canvases[0].save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())


def beside_sources(images: torch.Tensor, metadata: Sequence[dict[str, Any]]) -> torch.Tensor:
    """Editing results `[N,3,H,W]` with each one's source image (its metadata's `SOURCE_IMAGE`, scaled
    to the result's size) on its left: `[N,3,H,2W]`; the images as they are when a row has no source."""
    sources = [entry.get(SOURCE_IMAGE) for entry in metadata]
    if images.ndim != 4 or not sources or any(source is None for source in sources):
        return images
    size = tuple(images.shape[-2:])
    scaled = [
        torch.nn.functional.interpolate(source[None].float(), size=size, mode="bilinear", antialias=True)[0]
        for source in sources
    ]
    return torch.cat([torch.stack(scaled).clamp(0, 1).to(images.device), images.float()], dim=-1)


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
    # fixed margins, not tight_layout(): measuring every label costs a draw, and the curves are redrawn at
    # every evaluation; savefig's bbox_inches="tight" still keeps the legends below the panels
    figure.subplots_adjust(left=0.03, right=0.97, top=0.92, bottom=0.14, wspace=0.3)
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
