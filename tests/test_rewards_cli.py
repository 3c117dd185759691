"""`nft score`, `nft eval geneval` and `nft weights` on a Typer app of our own, through the hook function."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import typer
from PIL import Image
from typer.testing import CliRunner

from nft_rewards import plugin
from nft_rewards.cli import parse_option
from nft_rewards.jpeg import JpegCompressibility

runner = CliRunner()


@pytest.fixture
def app():
    app = typer.Typer()
    existing = typer.Typer()
    existing.command("other")(lambda: None)
    app.add_typer(existing, name="eval")  # another plugin's `eval` group: ours joins it
    plugin.register_commands(app=app)
    return app


def save(image: torch.Tensor, path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((image * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()).save(path)


def test_parse_option():
    assert parse_option("quality=80") == ("quality", 80)
    assert parse_option("bgr_quirk=true") == ("bgr_quirk", True)
    assert parse_option("detector=shapes") == ("detector", "shapes")
    assert parse_option('model="a/b"') == ("model", "a/b")


def test_score_command(app, tmp_path):
    images = torch.rand(3, 3, 16, 24, generator=torch.Generator().manual_seed(0))
    for i, image in enumerate(images):
        save(image, tmp_path / "images" / f"{i:03d}.png")
    (tmp_path / "prompts.txt").write_text("a\nb\nc\n")
    out = tmp_path / "scores.jsonl"
    args = ["score", "jpeg-compressibility", "--images", str(tmp_path / "images"), "--prompts",
            str(tmp_path / "prompts.txt"), "--out", str(out), "-o", "quality=80"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    expected = JpegCompressibility(JpegCompressibility.Options(quality=80))(images, ["a", "b", "c"])
    assert [r["prompt"] for r in rows] == ["a", "b", "c"] and rows[0]["image"].endswith("000.png")
    assert [r["score"] for r in rows] == pytest.approx(expected.scores.tolist())
    assert [r["size_kb"] for r in rows] == pytest.approx(expected.details["size_kb"].tolist())
    assert "3 images, mean score" in result.output
    result = runner.invoke(app, [*args[:-2], "-o", "qualty=80"])
    assert result.exit_code == 2 and "qualty: unknown option" in result.output
    (tmp_path / "prompts.txt").write_text("a\nb\n")
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "error: 3 images but 2 prompts" in result.output


def test_eval_geneval_official_layout(app, tmp_path):
    from nft_core.shapes import grammar
    from nft_core.shapes.render import render_batch

    items = list(
        {item.metadata["tag"]: item for item in grammar.eval_items(1)}.values()
    )  # one prompt per tag
    assert len(items) == 6
    for index, item in enumerate(items):
        folder = tmp_path / "outputs" / f"{index:05d}"
        folder.mkdir(parents=True)
        (folder / "metadata.jsonl").write_text(json.dumps(item.metadata) + "\n")
        for sample, image in enumerate(render_batch([item.metadata] * 2, seed=index)):
            save(image, folder / "samples" / f"{sample:04d}.png")
    results = tmp_path / "results.jsonl"
    result = runner.invoke(
        app,
        [
            "eval",
            "geneval",
            "--images",
            str(tmp_path / "outputs"),
            "-o",
            "detector=shapes",
            "--out",
            str(results),
        ],
    )
    assert result.exit_code == 0, result.output
    assert f"Total images: {2 * len(items)}" in result.output
    assert "Overall score (avg. over tasks): 1.00000" in result.output
    assert "single_object    = 100.00% (2 / 2)" in result.output
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert len(rows) == 2 * len(items) and all(r["correct"] and r["score"] == 1.0 for r in rows)
    assert runner.invoke(app, ["eval", "other"]).exit_code == 0
    result = runner.invoke(app, ["eval", "geneval", "--images", str(tmp_path)])
    assert result.exit_code == 2 and "metadata.jsonl" in result.output


def test_weights_list(app, monkeypatch, tmp_path):
    monkeypatch.setenv("NFT_WEIGHTS_DIR", str(tmp_path))
    result = runner.invoke(app, ["weights", "list"])
    assert result.exit_code == 0
    assert (
        f"hpsv2: xswu/HPSv2 [HPS_v2.1_compressed.pt] HPS v2.1 state dict -> {tmp_path / 'xswu/HPSv2'}"
        in result.output
    )
    assert "ocr: no download needed" in result.output
    assert np.all([line for line in result.output.splitlines()])
