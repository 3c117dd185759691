"""`nft score` and `nft eval` with any registered reward, and `nft weights` through its plugin hook."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import typer
from PIL import Image
from typer.testing import CliRunner

from nft_core.cli.app import build_app, parse_option
from nft_rewards import plugin
from nft_rewards.jpeg import JpegCompressibility

runner = CliRunner()


def save(image: torch.Tensor, path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((image * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()).save(path)


def test_parse_option():
    assert parse_option("quality=80") == ("quality", 80)
    assert parse_option("bgr_quirk=true") == ("bgr_quirk", True)
    assert parse_option("detector=shapes") == ("detector", "shapes")
    assert parse_option('model="a/b"') == ("model", "a/b")


def test_score_command(tmp_path):
    images = torch.rand(3, 3, 16, 24, generator=torch.Generator().manual_seed(0))
    for i, image in enumerate(images):
        save(image, tmp_path / "images" / f"{i:03d}.png")
    (tmp_path / "prompts.txt").write_text("a\nb\nc\n")
    out = tmp_path / "scores.jsonl"
    args = ["score", "jpeg-compressibility", "--images", str(tmp_path / "images"), "--prompts",
            str(tmp_path / "prompts.txt"), "--out", str(out), "-o", "quality=80"]  # fmt: skip
    result = runner.invoke(build_app(), args)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    expected = JpegCompressibility(JpegCompressibility.Options(quality=80))(images, ["a", "b", "c"])
    assert [r["prompt"] for r in rows] == ["a", "b", "c"] and rows[0]["image"].endswith("000.png")
    assert [r["score"] for r in rows] == pytest.approx(expected.scores.tolist())
    assert [r["size_kb"] for r in rows] == pytest.approx(expected.details["size_kb"].tolist())
    assert "3 images, mean score" in result.output
    result = runner.invoke(build_app(), [*args[:-2], "-o", "qualty=80"])
    assert result.exit_code == 2 and "qualty: unknown key; allowed: batch_size, quality" in result.output
    result = runner.invoke(build_app(), ["score", "jpeg-compresibility", *args[2:]])
    assert result.exit_code == 2 and "unknown reward 'jpeg-compresibility'; available:" in result.output
    (tmp_path / "prompts.txt").write_text("a\nb\n")
    result = runner.invoke(build_app(), args)
    assert result.exit_code == 2 and "error: 3 images but 2 prompts" in result.output


def geneval_layout(root, items, per_prompt=2):
    """GenEval's output layout with rendered (ground-truth) shapes scenes."""
    from nft_shapes.render import render_batch

    for index, item in enumerate(items):
        folder = root / f"{index:05d}"
        folder.mkdir(parents=True)
        (folder / "metadata.jsonl").write_text(json.dumps(item.metadata) + "\n")
        for sample, image in enumerate(render_batch([item.metadata] * per_prompt, seed=index)):
            save(image, folder / "samples" / f"{sample:04d}.png")


@pytest.mark.parametrize(
    ("reward", "options"), [("geneval", ["-o", "detector=shapes"]), ("shapes-geneval", [])]
)
def test_eval_official_layout(tmp_path, reward, options):
    from nft_shapes import grammar

    items = list({item.metadata["tag"]: item for item in grammar.eval_items(1)}.values())  # one per tag
    assert len(items) == 6
    geneval_layout(tmp_path / "outputs", items)
    results = tmp_path / "results.jsonl"
    args = ["eval", reward, "--images", str(tmp_path / "outputs"), *options, "--out", str(results)]
    result = runner.invoke(build_app(), args)
    assert result.exit_code == 0, result.output
    assert f"Total images: {2 * len(items)}" in result.output
    assert "Total prompts: 6" in result.output
    assert "Overall score (avg. over tasks): 1.00000" in result.output
    assert "single_object    = 100.00% (2 / 2)" in result.output
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert len(rows) == 2 * len(items)
    assert all(r["correct"] == 1.0 and r["score"] == 1.0 and r["note"] == "" for r in rows)
    assert [r["tag"] for r in rows[::2]] == [item.metadata["tag"] for item in items]
    result = runner.invoke(build_app(), ["eval", reward, "--images", str(tmp_path), *options])
    assert result.exit_code == 2 and "metadata.jsonl" in result.output


def test_eval_notes_say_why_an_image_failed(tmp_path):
    from nft_shapes import grammar

    item = grammar.all_prompts()[0]  # "a circle"
    wrong = grammar.metadata_for("a square")
    geneval_layout(tmp_path / "outputs", [type(item)(item.prompt, wrong)], per_prompt=1)
    (tmp_path / "outputs" / "00000" / "metadata.jsonl").write_text(json.dumps(item.metadata) + "\n")
    results = tmp_path / "results.jsonl"
    args = ["eval", "shapes-geneval", "--images", str(tmp_path / "outputs"), "--out", str(results)]
    result = runner.invoke(build_app(), args)
    assert result.exit_code == 0, result.output
    (row,) = [json.loads(line) for line in results.read_text().splitlines()]
    assert row["correct"] == 0.0 and "circle" in row["note"]


def test_eval_of_a_flat_folder_prints_the_mean(tmp_path):
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    for i, image in enumerate(images):
        save(image, tmp_path / f"{i:05d}-0.png")
    (tmp_path / "prompts.txt").write_text("a\nb\n")
    result = runner.invoke(build_app(), ["eval", "jpeg-compressibility", "--images", str(tmp_path)])
    assert result.exit_code == 0, result.output
    expected = JpegCompressibility(JpegCompressibility.Options())(images, ["a", "b"]).scores.mean()
    assert f"jpeg-compressibility: 2 images, score {float(expected):.6g}" in result.output


def test_weights_list(monkeypatch, tmp_path):
    app = typer.Typer()
    plugin.register_commands(app=app)
    monkeypatch.setenv("NFT_WEIGHTS_DIR", str(tmp_path))
    result = runner.invoke(app, ["weights", "list"])
    assert result.exit_code == 0
    assert (
        f"hpsv2: xswu/HPSv2 [HPS_v2.1_compressed.pt] HPS v2.1 state dict -> {tmp_path / 'xswu/HPSv2'}"
        in result.output
    )
    assert "ocr: no download needed" in result.output
    assert np.all([line for line in result.output.splitlines()])


def test_nft_run_refuses_an_output_folder_under_a_file_before_loading_anything(tmp_path, fast_config):
    (tmp_path / "afile").write_text("x")
    result = runner.invoke(build_app(), ["run", str(fast_config), "--out", str(tmp_path / "afile" / "runs")])
    assert result.exit_code == 2 and "afile is a file, not a folder" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "afile" / "runs").exists()
