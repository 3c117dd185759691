"""`nft report`: the self-contained HTML page of a run (written by every run's `finish` too), two runs side
by side, missing pieces, bad input; and the visuals it shows (eval grids over tags, captions, curves)."""

from __future__ import annotations

import base64
import io
import itertools
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import Result
from PIL import Image
from typer.testing import CliRunner

from nft_core.cli.app import build_app
from nft_core.config import load_config
from nft_core.loop.evaluation import EvalResult
from nft_core.loop.trainer import Trainer
from nft_core.outputs.report import write_report_after_run
from nft_core.outputs.visuals import curves_figure, spread_over_tags
from tests.conftest import FAST_CONFIG

runner = CliRunner()
APP = build_app()
IMG = re.compile(r'<img class="(\w+)" alt="[^"]*" src="([^"]*)"')


def invoke(*args: str | Path) -> Result:
    """Run `nft ARGS` in-process."""
    return runner.invoke(APP, [str(arg) for arg in args])


@pytest.fixture(scope="module")
def runs(tiny_checkpoint, tmp_path_factory) -> tuple[Path, Path]:
    """Two finished runs of the fast config (the second with another learning rate), built once."""
    folder = tmp_path_factory.mktemp("report")
    config = folder / "fast.toml"
    config.write_text(FAST_CONFIG.format(checkpoint=tiny_checkpoint))
    made = []
    for extra in ([], ["--set", "train.lr=0.003"]):
        result = invoke("run", config, "--out", folder / "runs", *extra)
        assert result.exit_code == 0, result.output
        made.append(Path(json.loads(result.output.strip().splitlines()[-1])["run_dir"]))
    return made[0], made[1]


def images_of(page: str) -> list[tuple[str, bytes]]:
    """(class, PNG bytes) of every <img>; each must be an inline PNG."""
    found = []
    for css, source in IMG.findall(page):
        assert source.startswith("data:image/png;base64,"), source[:40]
        found.append((css, base64.b64decode(source.split(",", 1)[1])))
    return found


def assert_self_contained(page: str) -> None:
    """No URL that a browser would fetch: no http(s), no protocol-relative or relative src / href."""
    assert not re.search(r"https?://", page)
    for attribute in re.findall(r'(?:src|href)="([^"]*)"', page):
        assert attribute.startswith("data:"), attribute[:40]


# ---- one run -------------------------------------------------------------------------------------------
def test_every_run_ends_with_its_report_and_nft_report_rewrites_it(runs, tmp_path):
    run, _ = runs
    page = (run / "report.html").read_text(encoding="utf-8")  # written by the trainer's finish
    assert_self_contained(page)
    summary = json.loads((run / "summary.json").read_text())
    for text in ("Status and machine", "finished", "Per tag", "Phase times", "Monitors", "pixel-diversity"):
        assert text in page, text
    for tag in summary["eval_after"]["shapes-geneval"]["official"]["per_tag"]:
        assert f"<td>{tag}</td>" in page, tag
    assert f"{summary['seconds_per_phase']['training']:.2f}" in page
    assert summary["machine"]["cpu_capability"] in page
    assert "<details><summary>config.resolved.toml</summary><pre>" in page
    assert "prompts = &quot;shapes:eval-1&quot;" in page  # the resolved config, escaped
    pictures = images_of(page)
    assert [css for css, _ in pictures] == ["curves", "grid", "grid", "grid"]
    samples = run / "samples"
    expected = [run / "curves.png", samples / "eval_before.png", samples / "eval_after.png"]
    assert [data for _, data in pictures] == [p.read_bytes() for p in [*expected, samples / "epoch_0001.png"]]

    result = invoke("report", run, "--out", tmp_path / "again.html")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"report: {tmp_path / 'again.html'}"
    assert (tmp_path / "again.html").read_text(encoding="utf-8") == page


def test_an_interrupted_run_gets_a_report_that_says_what_is_missing(runs, tmp_path):
    run = tmp_path / "interrupted"
    shutil.copytree(runs[0], run, ignore=shutil.ignore_patterns("checkpoints", "report.html"))
    summary = json.loads((run / "summary.json").read_text())
    for key in ("eval_after", "seconds_per_phase", "seconds_per_epoch", "machine", "epochs"):
        summary.pop(key)
    summary.update(status="interrupted", stopped_by="SIGTERM")
    (run / "summary.json").write_text(json.dumps(summary))
    (run / "samples" / "eval_after.png").unlink()
    (run / "curves.png").unlink()
    with (run / "metrics.jsonl").open("a") as file:
        file.write('{"kind": "train", "epo')  # killed while writing a line
    result = invoke("report", run)
    assert result.exit_code == 0, result.output
    page = (run / "report.html").read_text(encoding="utf-8")
    assert_self_contained(page)
    assert "no samples/eval_after.png in interrupted" in page and "SIGTERM" in page
    assert "no eval_after in interrupted" in page
    assert "seconds per phase (from metrics.jsonl, 2 epochs)" in page
    assert "2 (from metrics.jsonl)" in page and "1 unreadable metrics.jsonl lines skipped" in page
    pictures = images_of(page)
    assert [css for css, _ in pictures] == ["curves", "grid", "grid"]  # the curves drawn again
    curves = np.asarray(Image.open(io.BytesIO(pictures[0][1])).convert("L"), dtype=float)
    assert curves.shape[1] > 1000 and curves.std() > 10


def test_a_folder_without_summary_is_a_one_line_error(tmp_path):
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "metrics.jsonl").write_text("{}\n")
    for target, needle in ((tmp_path / "half", "no summary.json"), (tmp_path / "nowhere", "not a folder")):
        result = invoke("report", target)
        assert result.exit_code == 2, result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith(f"error: {target}: {needle}"), result.output
    assert not (tmp_path / "half" / "report.html").exists()
    warnings: list[str] = []
    assert write_report_after_run(tmp_path / "half", warnings.append) is None  # the trainer's: a warning
    assert (
        len(warnings) == 1 and warnings[0].startswith("warning: could not write") and "summary" in warnings[0]
    )


def test_out_must_be_a_file(runs, tmp_path):
    result = invoke("report", runs[0], "--out", tmp_path)
    assert result.exit_code == 2 and result.output.startswith(f"error: --out {tmp_path}: a folder"), (
        result.output
    )


# ---- two runs ------------------------------------------------------------------------------------------
def test_two_runs_side_by_side(runs, tmp_path):
    a, b = runs
    result = invoke("report", a, b)
    assert result.exit_code == 0, result.output
    written = a / f"compare-{b.name}.html"
    assert result.output.strip() == f"report: {written}"
    page = written.read_text(encoding="utf-8")
    assert_self_contained(page)
    assert "<h1>A: tiny vs B: tiny-2</h1>" in page  # both configs are named "tiny": the folders' names
    assert "<th>B - A</th>" in page and "main score, eval after" in page
    assert re.search(r"<pre>--- tiny\n\+\+\+ tiny\n.*-lr = 0\.0003\n\+lr = 0\.003", page, re.S)
    assert [css for css, _ in images_of(page)] == ["curves", "curves", *["grid"] * 6]
    other = invoke("report", a, b, "--out", tmp_path / "pair.html")
    assert other.exit_code == 0 and (tmp_path / "pair.html").read_text(encoding="utf-8") == page


# ---- in a browser --------------------------------------------------------------------------------------
def _chromium() -> str:
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the dev extra has it)")
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("no chromium executable on PATH (Debian: apt-get install chromium)")


def test_the_pages_load_in_headless_chromium_without_a_request(runs, tmp_path):
    executable = _chromium()
    from playwright.sync_api import sync_playwright

    a, b = runs
    pages = [a / "report.html", a / f"compare-{b.name}.html"]
    if not pages[1].is_file():
        assert invoke("report", a, b).exit_code == 0
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            for path, grids in zip(pages, (3, 6), strict=True):
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                requests: list[str] = []
                page.on("request", lambda request, seen=requests: seen.append(request.url))
                page.goto(path.resolve().as_uri(), wait_until="load")
                for css, count in (("curves", grids // 3), ("grid", grids)):
                    elements = page.locator(f"img.{css}")
                    assert elements.count() == count, (path.name, css)
                    for index in range(count):
                        element = elements.nth(index)
                        assert element.evaluate("e => e.complete && e.naturalWidth > 0"), (path.name, css)
                        shot = Image.open(io.BytesIO(element.screenshot())).convert("L")
                        assert np.asarray(shot, dtype=float).std() > 10, (path.name, css, index)
                whole = np.asarray(Image.open(io.BytesIO(page.screenshot(full_page=True))).convert("L"))
                assert whole.shape[0] > 900 and whole.std() > 10
                assert requests and all(url.startswith(("data:", "file:")) for url in requests), requests
                page.close()
        finally:
            browser.close()


# ---- the visuals ---------------------------------------------------------------------------------------
def test_spread_over_tags_takes_turns_and_shows_distinct_prompts_first():
    tags = ["one"] * 6 + ["two"] * 2 + ["three"] * 4
    prompts = ["a", "a", "b", "b", "c", "c", "d", "e", "f", "f", "g", "g"]
    assert spread_over_tags(tags, prompts, 6) == [0, 2, 6, 7, 8, 10]
    assert spread_over_tags(tags, prompts, 8) == [0, 2, 4, 6, 7, 8, 9, 10]  # "c" before "a" again
    assert spread_over_tags(tags, prompts, 9) == [0, 1, 2, 4, 6, 7, 8, 9, 10]
    assert spread_over_tags(tags, prompts, 50) == list(range(12))
    assert spread_over_tags([None] * 4, ["x", "x", "y", "y"], 2) == [0, 2]


def test_eval_grids_spread_over_tags_with_captions_paired(fast_config, tmp_path, monkeypatch):
    trainer = Trainer(load_config(fast_config), tmp_path / "run", echo=lambda *_: None)
    drawn: list[tuple[torch.Tensor, list[str], str]] = []
    monkeypatch.setattr(
        "nft_core.outputs.observer.sample_grid",
        lambda images, captions, path, title=None: drawn.append((images, list(captions), title)),
    )
    items = trainer.eval_items
    count = len(items)
    images = torch.arange(count).float().div(count - 1).view(-1, 1, 1, 1).expand(-1, 3, 4, 4)
    scores = torch.arange(count).float() / 100  # image i scored i / 100
    trainer.outputs.grid_from_eval(
        "eval_before", EvalResult(images=images, per_image={"shapes-geneval": scores})
    )
    grid, captions, title = drawn[-1]
    assert len(captions) == trainer.config.log.grid_images == 32 < count
    assert title == f"eval_before: 32 of {count} images, tags taking turns; score = shapes-geneval per image"
    shown_tags = set()
    for image, caption in zip(grid, captions, strict=True):
        index = round(float(image[0, 0, 0]) * (count - 1))  # which eval image this tile is
        tag = items[index].metadata["tag"]
        assert caption == f"[{tag}] {items[index].prompt}\nshapes-geneval {index / 100:.2f}"
        shown_tags.add(tag)
    assert shown_tags == {item.metadata["tag"] for item in items} and len(shown_tags) == 6

    trainer.outputs.write_grid(
        "epoch_0000", images[:4], [i.prompt for i in items[:4]], torch.tensor([1.5, 0, -1, 2])
    )
    _, captions, title = drawn[-1]
    assert title.startswith("score = total reward") and "1 x shapes-geneval (group-zscore)" in title
    assert captions[0] == f"{items[0].prompt}\ntotal 1.50" and captions[2].endswith("\ntotal -1.00")


def test_curves_draw_each_tag_once_with_legends_outside_the_data():
    tags = ["single_object", "two_object", "counting", "colors", "position", "color_attr"]
    records = []
    for epoch in range(3):
        train = {"kind": "train", "train_minutes": epoch + 1.0, "loss": 1.0 / (epoch + 1), "v_old_gap": 0.1}
        train |= {"reward/a/raw_mean": 0.5, "reward/b/raw_mean": 0.4, "monitor/pixel-diversity/distance": 0.3}
        train |= {f"monitor/shapes-diversity/{key}": 1.0 for key in ("colour_entropy", "colour_free_groups")}
        evaluation = {"kind": "eval", "train_minutes": float(epoch)}
        for reward in ("a", "b"):  # two rewards with the same tags: each tag is drawn once
            evaluation[f"eval/{reward}/score"] = 0.1 * epoch
            evaluation |= {f"eval/{reward}/tag/{tag}": 0.1 * epoch + 0.01 * i for i, tag in enumerate(tags)}
        records += [evaluation, train]
    figure = curves_figure(records)
    axes = figure.axes[:4]
    labels = [line.get_label() for line in axes[2].get_lines()]
    assert labels == ["a", "b", *tags]
    assert "dotted: a per tag" in axes[2].get_title()
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    legends = []
    for axis in axes:
        legend = axis.get_legend()
        assert legend is not None
        legends.append(legend.get_window_extent(renderer))
        assert legends[-1].y1 <= axis.get_window_extent(renderer).y0  # below its panel
    assert all(left.x1 <= right.x0 for left, right in itertools.pairwise(legends))  # side by side
    assert [t.get_text() for t in axes[1].get_legend().get_texts()] == ["loss", "|v - v_old|"]
