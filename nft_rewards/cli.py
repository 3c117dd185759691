"""Reward commands of the `nft` CLI, added to its Typer app by `nft_rewards.plugin.register_commands`:

* `nft score REWARD --images DIR_OR_FILES --prompts FILE [--metadata FILE.jsonl] --out scores.jsonl`
* `nft eval geneval --images DIR`: the official GenEval folder layout and summary table
* `nft weights download REWARD [--dir DIR]` / `nft weights list`
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from nft_core.errors import UserError

__all__ = ["add_commands", "parse_option", "read_images"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def parse_option(text: str) -> tuple[str, Any]:
    """`key=value`, the value read as a JSON literal (`1e-3`, `true`, `"x"`), else kept as a string."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise UserError(f"--option expects key=value, got {text!r}")
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    return key.strip(), parsed


def _options(pairs: list[str] | None, **extra: Any) -> dict[str, Any]:
    options = dict(parse_option(pair) for pair in pairs or [])
    options.update({key: value for key, value in extra.items() if value is not None})
    return options


def image_files(sources: list[Path]) -> list[Path]:
    """Image files from folders (sorted, non-recursive) and explicit files, in the order given."""
    files: list[Path] = []
    for source in sources:
        if source.is_dir():
            files += sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif source.is_file():
            files.append(source)
        else:
            raise UserError(f"--images: {source} does not exist")
    if not files:
        raise UserError(
            f"--images: no image files ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(map(str, sources))}"
        )
    return files


def read_images(files: list[Path]):
    """Each file as a float tensor `[3, H, W]` in [0, 1] (RGB)."""
    import numpy as np
    import torch
    from PIL import Image

    tensors = []
    for path in files:
        try:
            with Image.open(path) as image:
                array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
        except OSError as error:
            raise UserError(f"cannot read image {path}: {error}") from None
        tensors.append(torch.from_numpy(array).permute(2, 0, 1))
    return tensors


def score_images(reward: Any, tensors: list, prompts: list[str], metadata: list | None) -> tuple[list, dict]:
    """Score images of possibly different sizes: consecutive runs of one size go in one call."""
    import torch

    scores: list[float] = []
    details: dict[str, list[float]] = {}
    start = 0
    while start < len(tensors):
        end = start + 1
        while end < len(tensors) and tensors[end].shape == tensors[start].shape:
            end += 1
        out = reward(
            torch.stack(tensors[start:end]),
            prompts[start:end],
            None if metadata is None else metadata[start:end],
        )
        scores += out.scores.tolist()
        for key, value in out.details.items():
            details.setdefault(key, []).extend(value.tolist())
        start = end
    return scores, details


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise UserError(f"--prompts: {path} does not exist")
    return [
        line.rstrip("\n").rstrip("\r")
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise UserError(f"--metadata: {path} does not exist")
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise UserError(f"{path}:{number}: invalid JSON: {error.msg}") from None
    return items


def _guard(function: Callable[[], None]) -> None:
    try:
        function()
    except UserError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None


def score_command(
    reward: str = typer.Argument(..., help="reward name (nft_rewards.available())"),
    images: list[Path] = typer.Option(..., "--images", help="a folder of images or image files (repeatable)"),
    prompts: Path | None = typer.Option(None, "--prompts", help="text file, one prompt per image"),
    metadata: Path | None = typer.Option(None, "--metadata", help="JSONL, one object per image (GenEval)"),
    out: Path = typer.Option(Path("scores.jsonl"), "--out", help="where to write one JSON line per image"),
    option: list[str] | None = typer.Option(
        None, "--option", "-o", help="reward option key=value (repeatable)"
    ),
    device: str = typer.Option("cpu", "--device", help="torch device for the reward model"),
) -> None:
    """Score images with one reward; prompts (and metadata) pair with the images in order."""

    def run() -> None:
        import nft_rewards

        files = image_files(images)
        meta = _read_jsonl(metadata) if metadata else None
        if prompts is not None:
            texts = _read_lines(prompts)
        elif meta is not None:
            texts = [str(item.get("prompt", "")) for item in meta]
        else:
            raise UserError("give --prompts (one per image) or --metadata with a prompt field")
        if len(texts) != len(files):
            raise UserError(f"{len(files)} images but {len(texts)} prompts (they are paired in order)")
        if meta is not None and len(meta) != len(files):
            raise UserError(f"{len(files)} images but {len(meta)} metadata lines (they are paired in order)")
        model = nft_rewards.load(reward, **_options(option)).to(device)
        scores, details = score_images(model, read_images(files), texts, meta)
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w", encoding="utf-8") as handle:
            for i, (path, text, score) in enumerate(zip(files, texts, scores, strict=True)):
                row = {"image": str(path), "prompt": text, "score": score}
                row.update({key: values[i] for key, values in details.items()})
                handle.write(json.dumps(row) + "\n")
        mean = sum(scores) / len(scores)
        typer.echo(f"{reward}: {len(scores)} images, mean score {mean:.6g} -> {out}")

    _guard(run)


def geneval_folders(root: Path) -> list[tuple[dict, list[Path]]]:
    """The official layout: `<root>/<index>/metadata.jsonl` (one object) and `<index>/samples/*.png`."""
    from nft_rewards.geneval.metadata import parse_metadata_line

    if not root.is_dir():
        raise UserError(f"--images: {root} is not a folder")
    folders = sorted(
        (p for p in root.iterdir() if p.is_dir() and (p / "metadata.jsonl").is_file()),
        key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name),
    )
    if not folders:
        raise UserError(f"--images: no <index>/metadata.jsonl folders in {root} (the GenEval output layout)")
    found = []
    for folder in folders:
        text = (folder / "metadata.jsonl").read_text(encoding="utf-8").strip().splitlines()
        if not text:
            raise UserError(f"{folder / 'metadata.jsonl'} is empty")
        try:
            item = parse_metadata_line(text[0], str(folder / "metadata.jsonl"))
        except ValueError as error:
            raise UserError(str(error)) from None
        samples = sorted((folder / "samples").glob("*.png")) if (folder / "samples").is_dir() else []
        found.append((item, samples))
    return found


def summary_table(rows: list[dict[str, Any]]) -> str:
    """GenEval `summary_scores.py`: image and prompt accuracy, per-task accuracy, mean over tasks."""
    from nft_rewards.geneval.scoring import TAGS, official_score

    summary = official_score([r["tag"] for r in rows], [r["correct"] for r in rows])
    prompts: dict[str, bool] = {}
    for row in rows:
        prompts[row["folder"]] = prompts.get(row["folder"], False) or bool(row["correct"])
    lines = [
        "Summary",
        "=======",
        f"Total images: {len(rows)}",
        f"Total prompts: {len(prompts)}",
        f"% correct images: {summary['image_accuracy']:.2%}",
        f"% correct prompts: {sum(prompts.values()) / len(prompts):.2%}",
        "",
        "Task breakdown",
        "==============",
    ]
    for tag in TAGS:
        if tag in summary["per_tag"]:
            hits = sum(r["correct"] for r in rows if r["tag"] == tag)
            lines.append(
                f"{tag:<16} = {summary['per_tag'][tag]:.2%} ({int(hits)} / {summary['counts'][tag]})"
            )
    lines += ["", f"Overall score (avg. over tasks): {summary['overall']:.5f}"]
    if summary["missing_tags"]:
        lines.append(
            f"(tasks missing: {', '.join(summary['missing_tags'])}: not comparable to published scores)"
        )
    return "\n".join(lines)


def eval_geneval_command(
    images: Path = typer.Option(..., "--images", help="folder in GenEval's <index>/samples/*.png layout"),
    out: Path | None = typer.Option(None, "--out", help="per-image results (JSONL)"),
    option: list[str] | None = typer.Option(
        None, "--option", "-o", help="geneval option key=value (repeatable)"
    ),
    device: str = typer.Option("cpu", "--device", help="torch device"),
) -> None:
    """Evaluate generated images with GenEval and print the official summary (mean of six task accuracies)."""

    def run() -> None:
        import torch

        import nft_rewards

        folders = geneval_folders(images)
        reward = nft_rewards.load("geneval", **_options(option)).to(device)
        rows = []
        for item, samples in folders:
            if not samples:
                continue
            tensors = read_images(samples)
            outcomes = []
            start = 0
            while start < len(tensors):  # one call per run of same-sized images
                end = start + 1
                while end < len(tensors) and tensors[end].shape == tensors[start].shape:
                    end += 1
                outcomes += reward.evaluate(torch.stack(tensors[start:end]), [item] * (end - start))
                start = end
            for path, outcome in zip(samples, outcomes, strict=True):
                rows.append(
                    {
                        "folder": path.parent.parent.name,
                        "filename": str(path),
                        "tag": outcome.tag,
                        "prompt": item.get("prompt", ""),
                        "correct": bool(outcome.correct),
                        "strict_correct": bool(outcome.strict_correct),
                        "score": outcome.score,
                        "reason": outcome.reason,
                    }
                )
            del tensors
        if not rows:
            raise UserError(f"--images: no samples/*.png under {images}")
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
        typer.echo(summary_table(rows))

    _guard(run)


def weights_download_command(
    reward: str = typer.Argument(..., help="reward name"),
    directory: Path | None = typer.Option(
        None, "--dir", help="weights directory (default $NFT_WEIGHTS_DIR or HF cache)"
    ),
) -> None:
    """Download a reward's default weights (needs internet) into the weights directory or the HF cache."""

    def run() -> None:
        from nft_rewards.weights import download

        for path in download(reward, str(directory) if directory else None):
            typer.echo(str(path))

    _guard(run)


def weights_list_command() -> None:
    """The hub files each reward needs with its default options."""
    from nft_rewards.weights import WEIGHTS, weights_dir

    root = weights_dir()
    for reward, items in WEIGHTS.items():
        if not items:
            typer.echo(f"{reward}: no download needed")
        for item in items:
            where = f" -> {root / item.repo_id}" if root else ""
            typer.echo(f"{reward}: {item.repo_id} [{', '.join(item.patterns)}] {item.purpose}{where}")


def _group(app: typer.Typer, name: str, help_text: str) -> typer.Typer:
    """The sub-app `name` of `app`, created unless another plugin already added it."""
    for info in getattr(app, "registered_groups", []):
        if info.name == name and info.typer_instance is not None:
            return info.typer_instance
    group = typer.Typer(help=help_text, no_args_is_help=True)
    app.add_typer(group, name=name)
    return group


def add_commands(app: typer.Typer) -> None:
    """Add `score`, `eval geneval` and `weights download|list` to the `nft` Typer app."""
    app.command("score")(score_command)
    _group(app, "eval", "Evaluate generated images on benchmarks.").command("geneval")(eval_geneval_command)
    weights = _group(app, "weights", "Reward model weights.")
    weights.command("download")(weights_download_command)
    weights.command("list")(weights_list_command)
