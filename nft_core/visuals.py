"""Pictures a person would rather look at than read: sample grids with prompts and scores, metric curves."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

from nft_core.io import atomic_write_bytes


def _wrap(text: str, width: int) -> list[str]:
    words, lines, line = text.split(), [], ""
    for word in words:
        candidate = f"{line} {word}".strip()
        if len(candidate) > width and line:
            lines.append(line)
            line = word
        else:
            line = candidate
    return [*lines, line][:3]


def sample_grid(
    images: torch.Tensor, captions: Sequence[str], path: str | Path, columns: int = 8, cell: int = 128
) -> None:
    """A PNG grid: each image upscaled to `cell` px (nearest), its caption (prompt and score) below."""
    count = images.shape[0]
    rows = (count + columns - 1) // columns
    caption_height = 40
    canvas = Image.new("RGB", (columns * cell, rows * (cell + caption_height)), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    pixels = (images.float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    for index in range(count):
        x, y = (index % columns) * cell, (index // columns) * (cell + caption_height)
        tile = Image.fromarray(pixels[index]).resize((cell, cell), Image.NEAREST)
        canvas.paste(tile, (x, y))
        for line_number, line in enumerate(_wrap(captions[index], cell // 6)):
            draw.text((x + 2, y + cell + 1 + 12 * line_number), line, fill="black", font=font)
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())


def plot_curves(records: list[dict], path: str | Path) -> None:
    """`curves.png`: training reward (raw, per reward), loss (and mean |v - v_old|), eval scores and the
    monitors (`monitor/*`) against training minutes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in records if r.get("kind") == "train"]
    evals = [r for r in records if r.get("kind") == "eval"]
    figure, axes = plt.subplots(1, 4, figsize=(20, 4))
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
        for key in train[-1]:
            if key.startswith("monitor/"):
                axes[3].plot(minutes, [r.get(key) for r in train], label=key[len("monitor/") :])
    axes[0].set(title="training reward (raw mean)", xlabel="training minutes")
    axes[1].set(title="loss", xlabel="training minutes")
    if evals:
        minutes = [r["train_minutes"] for r in evals]
        for key in evals[-1]:
            if key.startswith("eval/") and key.endswith("/score"):
                axes[2].plot(minutes, [r.get(key) for r in evals], marker="o", label=key.split("/")[1])
            if key.startswith("eval/") and "/tag/" in key:
                axes[2].plot(
                    minutes, [r.get(key) for r in evals], linestyle=":", alpha=0.6, label=key.split("/")[-1]
                )
    axes[2].set(title="eval (EMA, CFG-free)", xlabel="training minutes")
    axes[3].set(title="monitors (never trained on)", xlabel="training minutes")
    for axis in axes:
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=7)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())
