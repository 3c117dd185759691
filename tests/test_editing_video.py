"""Editing and video, beyond the families' shared checks (tests/test_families.py runs `qwen-image-edit` and
`wan` through sampling equality, the policy contract, a 6-epoch NFT run and export):

- the `edit:` prompt source (a JSONL or a folder), its one-line errors, and drawn prompts carrying their
  source image; the editing policy's refusals;
- the `frames` reward (mean, min, the temporal term, a subset of frames) and its option errors;
- the pixel-diversity monitor and the sample grids on videos (an animated GIF), editing grids beside
  their sources;
- a one-epoch tiny Wan run: an animated grid in the report and a video in TensorBoard (and W&B);
- a one-epoch tiny editing run: its grids show each source beside its edit, in the report too.
"""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nft_core import registry
from nft_core.errors import ConfigError, UserError
from nft_core.loop.conditions import PROMPTS_FILE, with_sources
from nft_core.loop.frames import frame_indices, temporal_change
from nft_core.loop.prompts import load_prompts
from nft_core.outputs.monitors import PixelDiversity
from nft_core.outputs.visuals import beside_sources, sample_grid
from nft_core.types import CONDITION_IMAGE, SOURCE_IMAGE, PromptItem
from tests import _qwen_image_edit_tiny, _wan_tiny

pytest.importorskip("diffusers")
pytest.importorskip("peft")


def write_png(path: Path, value: float, size: int = 32) -> torch.Tensor:
    """A flat grey PNG of `value`; returns it as read back ([3, H, W] in [0, 1])."""
    path.parent.mkdir(parents=True, exist_ok=True)
    level = round(value * 255)
    Image.new("RGB", (size, size), (level, level, level)).save(path)
    return torch.full((3, size, size), level / 255)


# ---- the edit: prompt source ------------------------------------------------------------------------
def test_the_edit_source_reads_a_jsonl_or_a_folder_of_images_with_their_instructions(tmp_path):
    write_png(tmp_path / "images" / "a.png", 0.2)
    write_png(tmp_path / "images" / "b.png", 0.6)
    lines = [{"prompt": "make it red", "image": "images/a.png", "tag": "colour"}]
    lines.append({"prompt": "add a cat", "image": str(tmp_path / "images" / "b.png")})
    (tmp_path / "edits.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    items = load_prompts(f"edit:{tmp_path / 'edits.jsonl'}")
    assert [item.prompt for item in items] == ["make it red", "add a cat"]
    assert items[0].metadata["tag"] == "colour"
    assert items[0].metadata[CONDITION_IMAGE] == str(tmp_path / "images" / "a.png")  # relative: to the JSONL
    (tmp_path / "images" / PROMPTS_FILE).write_text("make it red\nadd a cat\n")
    folder = load_prompts(f"edit:{tmp_path / 'images'}")
    assert [(i.prompt, Path(i.metadata[CONDITION_IMAGE]).name) for i in folder] == [
        ("make it red", "a.png"),
        ("add a cat", "b.png"),
    ]


@pytest.mark.parametrize(
    "layout, message",
    [
        ("missing-image", "item 1: image nowhere.png not found"),
        ("no-image-key", 'item 1: needs a string "image"'),
        ("not-an-image", "cannot read image"),
        ("count", "1 prompts for 2 images"),
        ("no-prompts-file", f"no {PROMPTS_FILE}"),
        ("neither", "expected a .jsonl file or a folder"),
    ],
)
def test_a_broken_edit_source_is_one_line_naming_the_file(tmp_path, layout, message):
    jsonl = tmp_path / "edits.jsonl"
    spec = f"edit:{jsonl}"
    if layout == "missing-image":
        jsonl.write_text('{"prompt": "x", "image": "nowhere.png"}\n')
    elif layout == "no-image-key":
        jsonl.write_text('{"prompt": "x"}\n')
    elif layout == "not-an-image":
        (tmp_path / "fake.png").write_text("not a png")
        jsonl.write_text('{"prompt": "x", "image": "fake.png"}\n')
    elif layout in ("count", "no-prompts-file"):
        write_png(tmp_path / "a.png", 0.1)
        write_png(tmp_path / "b.png", 0.2)
        if layout == "count":
            (tmp_path / PROMPTS_FILE).write_text("only one\n")
        spec = f"edit:{tmp_path}"
    else:
        spec = f"edit:{tmp_path / 'prompts.txt'}"
    with pytest.raises(ConfigError, match=re.escape(message)) as error:
        load_prompts(spec)
    assert str(error.value).startswith("data.prompts: ") and "\n" not in str(error.value)


def test_drawn_edit_prompts_carry_their_source_image_once_per_prompt(tmp_path):
    expected = write_png(tmp_path / "a.png", 0.4)
    item = PromptItem("make it red", {CONDITION_IMAGE: str(tmp_path / "a.png")})
    plain = PromptItem("a cat")
    drawn = with_sources([item, item, plain])
    assert drawn[0] is drawn[1] and drawn[2] is plain  # a prompt's K samples share one copy and tensor
    source = drawn[0].metadata[SOURCE_IMAGE]
    assert source.dtype == torch.float32 and torch.equal(source, expected)
    assert SOURCE_IMAGE not in item.metadata  # the training set itself keeps only the file name


def test_the_editing_policy_refuses_prompts_without_source_images(model_dirs_edit):
    options = _qwen_image_edit_tiny.qwen_image_edit_options(model_dirs_edit, condition_resolution=64)
    policy = registry.create("policies", "qwen-image-edit", options, "policy")
    with pytest.raises(UserError, match="prompts come from an edit: source"):
        policy.encode_prompts(["make it red"])
    with pytest.raises(UserError, match="has no source image"):
        policy.encode_items([PromptItem("make it red")])
    wide, tall = torch.rand(3, 32, 64), torch.rand(3, 64, 32)
    items = [PromptItem("a", {SOURCE_IMAGE: wide}), PromptItem("b", {SOURCE_IMAGE: tall})]
    with pytest.raises(UserError, match=r"several sizes \(32x96, 96x32\)"):
        policy.encode_items(items)


@pytest.fixture(scope="module")
def model_dirs_edit(tiny_pipelines) -> Path:
    return tiny_pipelines("qwen-image-edit", _qwen_image_edit_tiny.save_tiny_qwen_image_edit)


@pytest.fixture(scope="module")
def model_dirs_wan(tiny_pipelines) -> Path:
    return tiny_pipelines("wan", _wan_tiny.save_tiny_wan)


# ---- the frames reward ------------------------------------------------------------------------------
def frames_reward(**options):
    return registry.create("rewards", "frames", {"reward": "brightness", **options}, "reward[0].options")


def test_frames_scores_each_frame_with_the_image_reward_and_aggregates(brightness_reward):
    levels = torch.tensor([[0.2, 0.4, 0.9], [0.5, 0.5, 0.5]])  # per video, per frame
    videos = levels[:, :, None, None, None].expand(2, 3, 3, 4, 4).clone()
    prompts = ["a", "b"]
    mean = frames_reward()(videos, prompts)
    torch.testing.assert_close(mean.scores, levels.mean(dim=1))
    torch.testing.assert_close(mean.details["frame_min"], torch.tensor([0.2, 0.5]))
    torch.testing.assert_close(
        frames_reward(aggregate="min")(videos, prompts).scores, torch.tensor([0.2, 0.5])
    )
    change = torch.tensor([0.35, 0.0])  # mean |frame[f+1] - frame[f]|
    torch.testing.assert_close(temporal_change(videos), change)
    flicker = frames_reward(temporal_weight=0.5)
    torch.testing.assert_close(flicker(videos, prompts).scores, levels.mean(dim=1) - 0.5 * change)
    assert flicker.native_range == (-0.5, 1.0)
    last_two = frames_reward(max_frames=2)(videos, prompts)
    torch.testing.assert_close(last_two.scores, torch.tensor([0.55, 0.5]))  # frames 0 and 2
    assert frame_indices(81, 5) == [0, 20, 40, 60, 80] and frame_indices(3, 0) == [0, 1, 2]
    with pytest.raises(UserError, match=r"videos must have shape \[N,F,3,H,W\]"):
        frames_reward()(videos[:, 0], prompts)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"reward": "brightnes"}, "reward[0].options: reward: unknown reward 'brightnes'"),
        ({"reward": "brightness", "reward_options": {"size": 1}}, "reward_options.size: unknown key"),
        ({"reward": "frames"}, "frames cannot score its own frames"),
        ({"reward": "brightness", "aggregate": "max"}, "reward[0].options.aggregate: Input should be 'mean'"),
    ],
)
def test_frames_option_errors_name_the_key(brightness_reward, options, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        registry.check_options("rewards", "frames", options, "reward[0].options", toml=True)


# ---- monitors and grids on videos -------------------------------------------------------------------
def test_pixel_diversity_measures_videos_over_all_their_frames():
    videos = torch.rand((4, 3, 3, 8, 8), generator=torch.Generator().manual_seed(0))
    groups = torch.tensor([0, 0, 1, 1])
    monitor = PixelDiversity(size=4)
    flat = monitor(videos.reshape(4, 9, 8, 8)[:, :, :, :], ["p"] * 4, groups)  # frames as channels
    assert monitor(videos, ["p"] * 4, groups)["distance"] == pytest.approx(flat["distance"], rel=1e-6)
    same = videos[:1].expand(4, -1, -1, -1, -1)
    assert monitor(same, ["p"] * 4, groups)["distance"] == 0


def test_a_video_grid_is_an_animated_gif_and_an_edit_grid_shows_the_source_on_the_left(tmp_path):
    videos = torch.rand((2, 5, 3, 8, 8), generator=torch.Generator().manual_seed(0))
    sample_grid(videos, ["a\nscore 1", "b\nscore 2"], tmp_path / "grid.gif", cell=16, fps=10)
    with Image.open(tmp_path / "grid.gif") as grid:
        assert grid.format == "GIF" and grid.n_frames == 5 and grid.info["duration"] == 100
    results, sources = torch.zeros((2, 3, 8, 8)), torch.ones((2, 3, 16, 16))
    paired = beside_sources(results, [{SOURCE_IMAGE: s} for s in sources])
    assert paired.shape == (2, 3, 8, 16) and paired[..., :8].min() == 1 and paired[..., 8:].max() == 0
    assert beside_sources(results, [{}, {}]) is results


# ---- tiny runs --------------------------------------------------------------------------------------
RUN = """
name = "{name}"
[policy]
name = "{policy}"
model = "{model}"
resolution = 32
max_sequence_length = {tokens}
{policy_extra}
[policy.lora]
rank = 4
alpha = 8.0
[solver]
name = "euler"
steps = 2
[data]
prompts = "{prompts}"
prompts_per_epoch = 2
images_per_prompt = 2
[train]
epochs = 1
batch_size = 4
precision = "fp32"
threads = 1
[eval]
prompts = "{prompts}"
[eval.solver]
name = "euler"
steps = 2
[log]
grid_every = 1
progress = false
monitors = ["pixel-diversity"]
trackers = {trackers}
[[reward]]
{reward}
"""


def run_once(tmp_path: Path, **fields) -> tuple[Path, dict]:
    from nft_core.config import load_config
    from nft_core.loop.trainer import Trainer

    config = tmp_path / "run.toml"
    config.write_text(RUN.format(**fields))
    summary = Trainer(load_config(config), tmp_path / "runs" / fields["name"], echo=lambda *_: None).run()
    assert summary["status"] == "finished"
    return tmp_path / "runs" / fields["name"], summary


def report_images(run_dir: Path) -> dict[str, bytes]:
    """The report's embedded images by their caption's file name."""
    page = (run_dir / "report.html").read_text()
    found = re.findall(
        r"samples/([\w.]+)</figcaption><img [^>]*src=\"data:image/(\w+);base64,([^\"]+)\"", page
    )
    return {name: base64.b64decode(data) for name, kind, data in found if name.endswith(kind)}


def test_a_tiny_wan_run_shows_animated_samples_in_its_report_and_videos_in_tensorboard(
    tmp_path, model_dirs_wan, brightness_reward
):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (tmp_path / "prompts.txt").write_text("a red circle\ntwo squares\n")
    run_dir, summary = run_once(
        tmp_path,
        name="wan-run",
        policy="wan",
        model=model_dirs_wan,
        tokens=_wan_tiny.MAX_SEQUENCE_LENGTH,
        policy_extra=f"frames = {_wan_tiny.FRAMES}\nfps = {_wan_tiny.FPS}",
        prompts=tmp_path / "prompts.txt",
        trackers='["tensorboard"]',
        reward='name = "frames"\noptions = { reward = "brightness", aggregate = "min", max_frames = 3 }',
    )
    assert {"frame_mean_mean", "temporal_change_mean"} <= set(summary["eval_after"]["frames"])
    record = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[1])
    assert record["monitor/pixel-diversity/distance"] >= 0
    grids = report_images(run_dir)
    assert {"eval_before.gif", "eval_after.gif", "epoch_0000.gif"} <= set(grids)
    with Image.open(io.BytesIO(grids["epoch_0000.gif"])) as grid:
        assert grid.n_frames == _wan_tiny.FRAMES  # each shown 1 / fps s (GIF: whole centiseconds)
        assert grid.info["duration"] == pytest.approx(1000 / _wan_tiny.FPS, abs=10)
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    (video,) = events.Images("samples/epoch")
    assert video.encoded_image_string == (run_dir / "samples" / "epoch_0000.gif").read_bytes()
    sampled = sample_checkpoint(run_dir, str(tmp_path / "prompts.txt"), tmp_path / "sampled")
    with Image.open(sampled / "00000-0.png") as first:  # nft sample: each video an animated PNG
        assert first.n_frames == _wan_tiny.FRAMES and first.info["duration"] == 1000 / _wan_tiny.FPS


def sample_checkpoint(run_dir: Path, prompts: str, out: Path) -> Path:
    """`nft sample` of the run's newest checkpoint: one sample per prompt, 2 Euler steps."""
    from typer.testing import CliRunner

    from nft_core.cli.app import build_app

    arguments = ["sample", str(run_dir), "--prompts", prompts, "--out", str(out), "--steps", "2"]
    result = CliRunner().invoke(build_app(), arguments)
    assert result.exit_code == 0, result.output
    return out


def test_wandb_logs_a_video_grid_as_a_wandb_video(tmp_path, monkeypatch):
    from nft_trackers.wandb_tracker import WandbTracker

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for name in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    videos = torch.rand((1, 3, 3, 8, 8), generator=torch.Generator().manual_seed(0))
    sample_grid(videos, ["a\nscore"], tmp_path / "epoch_0000.gif", cell=16)
    tracker = WandbTracker()
    tracker.start(tmp_path, {}, "video")
    tracker.log_video(0, "samples/epoch", tmp_path / "epoch_0000.gif", 8.0)
    tracker.finish("finished")
    (offline,) = (tmp_path / "wandb").glob("offline-run-*")
    assert list((offline / "files" / "media" / "videos" / "samples").glob("*.gif"))


def test_a_tiny_editing_run_shows_each_source_beside_its_edit(tmp_path, model_dirs_edit, brightness_reward):
    sources = [write_png(tmp_path / f"src-{k}.png", value) for k, value in enumerate((0.1, 0.8))]
    edits = [{"prompt": "make it bright", "image": "src-0.png"}, {"prompt": "darker", "image": "src-1.png"}]
    (tmp_path / "edits.jsonl").write_text("".join(json.dumps(e) + "\n" for e in edits))
    run_dir, summary = run_once(
        tmp_path,
        name="edit-run",
        policy="qwen-image-edit",
        model=model_dirs_edit,
        tokens=_qwen_image_edit_tiny.EDIT_SEQUENCE_LENGTH,
        policy_extra=f"condition_resolution = {_qwen_image_edit_tiny.CONDITION_RESOLUTION}",
        prompts=f"edit:{tmp_path / 'edits.jsonl'}",
        trackers="[]",
        reward='name = "brighter-than-source"',  # raises without the source image in its metadata
    )
    assert summary["eval_after"]["brighter-than-source"]["source_brightness_mean"] == pytest.approx(
        float(torch.stack(sources).mean()), abs=1e-6
    )
    grids = report_images(run_dir)
    assert {"eval_before.png", "eval_after.png", "epoch_0000.png"} <= set(grids)
    with Image.open(io.BytesIO(grids["eval_before.png"])) as grid:
        pixels = torch.from_numpy(np.array(grid.convert("RGB"))).permute(2, 0, 1) / 255
    # the grid's first cell: 128 px high, 256 wide (source, then edit); the title band above it
    top = next(row for row in range(pixels.shape[1]) if abs(float(pixels[0, row, 64]) - 0.1) < 0.01)
    source_half, edit_half = pixels[:, top : top + 128, :128], pixels[:, top : top + 128, 128:256]
    torch.testing.assert_close(source_half, torch.full_like(source_half, round(0.1 * 255) / 255))
    assert (edit_half - source_half).abs().max() > 0.05
    sampled = sample_checkpoint(run_dir, f"edit:{tmp_path / 'edits.jsonl'}", tmp_path / "sampled")
    assert sorted(path.name for path in sampled.glob("*.png")) == ["00000-0.png", "00001-0.png"]
