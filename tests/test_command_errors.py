"""Bad input to `nft score`, `eval`, `sample`, `shapes pretrain` and `plugin new`: exit code 2 and one
short `error:` line naming the file, option or value, never a traceback. No model is trained or run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import Result
from PIL import Image
from typer.testing import CliRunner

from nft_core.cli.app import build_app

runner = CliRunner()  # Click >= 8.2: `result.output` holds stdout and stderr, interleaved as written
APP = build_app()


def invoke(*args: str | Path) -> Result:
    """Run `nft ARGS` in-process."""
    return runner.invoke(APP, [str(arg) for arg in args])


def assert_one_error_line(result: Result, *needles: str) -> str:
    """Exit code 2, one short `error:` line holding every needle, no traceback; returns the line."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # not an uncaught error
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    line = lines[0]
    assert line.startswith("error: ") and len(line) < 300, line
    for needle in needles:
        assert needle in line, line
    return line


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """A folder of three small images and `prompts.txt` with three lines (the flat layout)."""
    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(3):
        Image.new("RGB", (16, 16), (80 * index, 40, 0)).save(folder / f"{index:05d}.png")
    (folder / "prompts.txt").write_text("a\nb\nc\n")
    return folder


# --- nft score ------------------------------------------------------------------------------------------


def score(images: Path, *args: str | Path) -> Result:
    return invoke("score", "jpeg-compressibility", "--images", images, *args)


def test_score_a_missing_image_folder(tmp_path, images):
    missing = tmp_path / "nowhere"
    result = score(missing, "--prompts", images / "prompts.txt", "--out", tmp_path / "s.jsonl")
    assert_one_error_line(result, f"--images: {missing} does not exist")


def test_score_a_folder_without_images(tmp_path, images):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_error_line(score(empty, "--prompts", images / "prompts.txt"), "no image files", str(empty))


@pytest.mark.parametrize(("lines", "message"), [("a\nb\n", "3 images but 2 prompts"), ("", "3 images but 0")])
def test_score_prompts_that_do_not_pair_with_the_images(tmp_path, images, lines, message):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(lines)
    assert_one_error_line(score(images, "--prompts", prompts, "--out", tmp_path / "s.jsonl"), message)
    assert not (tmp_path / "s.jsonl").exists()


def test_score_a_missing_prompt_file_or_none(tmp_path, images):
    missing = tmp_path / "prompts.txt"
    assert_one_error_line(score(images, "--prompts", missing), f"{missing}: prompt file not found")
    assert_one_error_line(score(images), "give --prompts")


def test_score_an_unknown_reward_suggests_the_close_one(tmp_path, images):
    result = invoke("score", "jpeg-compresibility", "--images", images, "--prompts", images / "prompts.txt")
    line = assert_one_error_line(result, "unknown reward 'jpeg-compresibility'", "available: ")
    assert line.endswith("did you mean 'jpeg-compressibility'?"), line


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("qualty=80", "qualty: unknown key; allowed: batch_size, quality"),
        ("quality=500", "quality: Input should be less than or equal to 100 (got 500)"),
        ("quality=high", "quality: Input should be a valid integer"),
        ("quality", "--option expects key=value, got 'quality'"),
        ("=80", "--option expects key=value, got '=80'"),
    ],
)
def test_score_a_bad_reward_option(tmp_path, images, option, message):
    result = score(images, "--prompts", images / "prompts.txt", "-o", option, "--out", tmp_path / "s.jsonl")
    assert_one_error_line(result, message)


def test_score_an_out_that_is_a_folder(tmp_path, images):
    assert_one_error_line(score(images, "--prompts", images / "prompts.txt", "--out", tmp_path), "--out")


def test_score_an_unknown_device(images):
    assert_one_error_line(score(images, "--prompts", images / "prompts.txt", "--device", "gpu9"), "--device")


# --- nft eval -------------------------------------------------------------------------------------------


def test_eval_a_folder_of_images_without_prompts_or_geneval_layout(images):
    (images / "prompts.txt").unlink()
    result = invoke("eval", "shapes-geneval", "--images", images)
    assert_one_error_line(result, str(images), "no prompts.txt", "<index>/metadata.jsonl")


def test_eval_an_empty_or_missing_folder(tmp_path):
    result = invoke("eval", "shapes-geneval", "--images", tmp_path)
    assert_one_error_line(result, f"no <index>/metadata.jsonl folders in {tmp_path}")
    missing = tmp_path / "nowhere"
    assert_one_error_line(invoke("eval", "shapes-geneval", "--images", missing), f"{missing} is not a folder")


def test_eval_prompts_txt_that_does_not_pair(images):
    (images / "prompts.txt").write_text("a\n")
    result = invoke("eval", "jpeg-compressibility", "--images", images)
    assert_one_error_line(result, f"{images}: 3 images but 1 lines in prompts.txt")


def test_eval_an_unknown_reward_suggests_the_close_one(images):
    line = assert_one_error_line(invoke("eval", "shapes-genevl", "--images", images), "available: ")
    assert "unknown reward 'shapes-genevl'" in line and line.endswith("did you mean 'shapes-geneval'?")


def test_eval_a_bad_reward_option(images):
    result = invoke("eval", "shapes-geneval", "--images", images, "-o", "outcome=best")
    assert_one_error_line(result, "outcome: Input should be 'partial', 'strict' or 'official' (got 'best')")


def test_eval_a_geneval_layout_with_bad_metadata_or_no_samples(tmp_path):
    folder = tmp_path / "00000"
    folder.mkdir()
    (folder / "metadata.jsonl").write_text("{not json\n")
    line = assert_one_error_line(invoke("eval", "shapes-geneval", "--images", tmp_path), "invalid JSON")
    assert f"{folder / 'metadata.jsonl'}:1" in line
    meta = {"tag": "single_object", "include": [{"class": "circle", "count": 1}], "prompt": "a circle"}
    (folder / "metadata.jsonl").write_text(json.dumps(meta) + "\n")
    assert_one_error_line(invoke("eval", "shapes-geneval", "--images", tmp_path), "no samples/*.png under")


# --- nft sample -----------------------------------------------------------------------------------------

GOOD_CONFIG = '[[reward]]\nname = "shapes-geneval"\n'


def sample(source: str | Path, out: Path, *args: str | Path) -> Result:
    return invoke("sample", source, "--prompts", "shapes:eval-1", "--out", out, *args)


def test_sample_a_missing_checkpoint_folder(tmp_path):
    missing = tmp_path / "runs" / "nope"
    assert_one_error_line(sample(missing, tmp_path / "out"), f"{missing}: no such checkpoint folder")
    assert not (tmp_path / "out").exists()


def test_sample_a_folder_that_is_no_run_nor_checkpoint(tmp_path):
    folder = tmp_path / "weights"
    folder.mkdir()
    assert_one_error_line(sample(folder, tmp_path / "out"), f"{folder}: neither a run folder", "--config")


def test_sample_a_run_without_checkpoints_or_config(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    assert_one_error_line(sample(run, tmp_path / "out"), f"{run}: no complete checkpoints/step_XXXXX folder")
    step = run / "checkpoints" / "step_00002"
    step.mkdir()
    assert_one_error_line(sample(run, tmp_path / "out"), "no complete")  # a folder without state.json
    (step / "state.json").write_text("{}")
    result = sample(run, tmp_path / "out")
    assert_one_error_line(result, f"{step}: no run config at {run / 'config.resolved.toml'}", "--config")
    missing = tmp_path / "missing.toml"
    assert_one_error_line(
        sample(run, tmp_path / "out", "--config", missing), f"--config {missing}: config file not found"
    )


@pytest.mark.parametrize(
    ("text", "override", "message"),
    [
        (
            GOOD_CONFIG + "[train]\nepochs = 0\n",
            None,
            "train.epochs: Input should be greater than or equal to 1",
        ),
        (GOOD_CONFIG + "[policy]\nname = 'shapes-tin'\n", None, "did you mean 'shapes-tiny'?"),
        ("[[reward]\n", None, "invalid TOML"),
        (GOOD_CONFIG, "train.epochs=true", "train.epochs: Input should be a valid integer (got True)"),
        (GOOD_CONFIG, "policy.checkpointt='x'", "policy.checkpointt: unknown key; allowed: channels_last"),
    ],
)
def test_sample_a_bad_config(tmp_path, text, override, message):
    config = tmp_path / "run.toml"
    config.write_text(text)
    result = sample(config, tmp_path / "out", *(["--set", override] if override else []))
    assert_one_error_line(result, str(config), message)
    assert not (tmp_path / "out").exists()


def test_sample_a_bad_out_prompts_solver_or_device(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text(GOOD_CONFIG)
    assert_one_error_line(sample(config, config), f"--out {config}: a file, not a folder")
    assert_one_error_line(sample(config, config / "sub"), f"--out {config / 'sub'}: {config} is a file")
    full = tmp_path / "full"
    full.mkdir()
    (full / "old.png").write_bytes(b"")
    assert_one_error_line(sample(config, full), f"--out {full} is not empty")
    out = tmp_path / "out"
    result = invoke("sample", config, "--prompts", "shapes:eval-x", "--out", out)
    assert_one_error_line(result, "--prompts: shapes:eval-x: eval-N takes N >= 1")
    result = invoke("sample", config, "--prompts", tmp_path / "none.txt", "--out", out)
    assert_one_error_line(result, f"{tmp_path / 'none.txt'}: prompt file not found")
    assert_one_error_line(
        sample(config, out, "--solver", "eulr"), "--solver: unknown solver 'eulr'", "'euler'?"
    )
    assert_one_error_line(sample(config, out, "--device", "gpu9"), "--device: 'gpu9' is not a torch device")
    assert not out.exists()


# --- nft shapes pretrain --------------------------------------------------------------------------------


@pytest.fixture
def no_training(monkeypatch):
    """Pretraining fails the test instead of running: every bad option is refused before it starts."""

    def refuse(*args, **kwargs):
        raise AssertionError("pretraining started")

    monkeypatch.setattr("nft_shapes.pretrain.pretrain", refuse)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--steps", "0"], "steps: 0 must be a whole number >= 1"),
        (["--steps", "-5"], "steps: -5 must be a whole number >= 1"),
        (["--threads", "0"], "--threads 0: must be at least 1"),
        (["--lr", "-1"], "lr: -1.0 must be >= 0"),
        (["--text-layers", "0"], "text_layers: 0 must be a whole number >= 1"),
        (["--token-init-std", "-1"], "token_init_std: -1.0 must be >= 0"),
        (["--label-noise", "2"], r"label_noise: 2.0 must be in [0, 1]"),
        (["--snapshots", "1,x"], "--snapshots '1,x': expected comma-separated step counts"),
        (["--steps", "10", "--snapshots", "20"], "--snapshots: step 20 is outside the run's 1 to 10 steps"),
        (["--tag-weights", "1,2"], "tag_weights: [1.0, 2.0] must be 6 non-negative numbers"),
    ],
)
def test_pretrain_a_bad_numeric_option(tmp_path, no_training, args, message):
    result = invoke("shapes", "pretrain", "--out", tmp_path / "ck.safetensors", *args)
    assert_one_error_line(result, message)
    assert not any(tmp_path.iterdir())


def test_pretrain_an_out_that_cannot_be_written(tmp_path, no_training):
    assert_one_error_line(invoke("shapes", "pretrain", "--out", tmp_path), f"--out {tmp_path}: a folder")
    file = tmp_path / "file"
    file.write_text("")
    out = file / "ck.safetensors"
    assert_one_error_line(invoke("shapes", "pretrain", "--out", out), f"--out {file}: {file} is a file")
    json_out = tmp_path / "ck.json"
    assert_one_error_line(
        invoke("shapes", "pretrain", "--out", json_out), f"--out {json_out}:", ".safetensors"
    )


# --- nft plugin new -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["Bad_Name", "nft", "nft-", "two--hyphens", "9lives", "sharp ness"])
def test_plugin_new_an_invalid_name(tmp_path, name):
    result = invoke("plugin", "new", name, "--out", tmp_path)
    assert_one_error_line(result, f"plugin name {name!r}: use lowercase letters")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("name", ["core", "nft-rewards", "shapes"])
def test_plugin_new_a_name_that_would_shadow_a_shipped_package(tmp_path, name):
    result = invoke("plugin", "new", name, "--out", tmp_path)
    assert_one_error_line(result, f"plugin name {name!r}: its module nft_", "would shadow")
    assert not any(tmp_path.iterdir())


def test_plugin_new_an_unknown_kind(tmp_path):
    line = assert_one_error_line(invoke("plugin", "new", "sharp", "--kind", "rewrd", "--out", tmp_path))
    assert "--kind 'rewrd'" in line and "kinds: reward, solver" in line and line.endswith("'reward'?")
    result = invoke("plugin", "new", "sharp", "--template", tmp_path / "none", "--out", tmp_path)
    assert_one_error_line(result, "kinds: none (pass --template)")
    assert not any(tmp_path.iterdir())


def test_plugin_new_an_existing_target_or_an_out_that_is_a_file(tmp_path):
    (tmp_path / "nft-sharp").mkdir()
    (tmp_path / "nft-sharp" / "keep.txt").write_text("mine")
    result = invoke("plugin", "new", "sharp", "--out", tmp_path)
    assert_one_error_line(result, f"{tmp_path / 'nft-sharp'} already exists")
    assert [p.name for p in (tmp_path / "nft-sharp").iterdir()] == ["keep.txt"]
    file = tmp_path / "file"
    file.write_text("")
    for out in (file, file / "sub"):
        assert_one_error_line(
            invoke("plugin", "new", "sharp", "--out", out), f"{file} is a file, not a folder"
        )


@pytest.mark.parametrize(
    "args, message",
    [
        (["validate"], "Missing argument 'config'. (see `"),
        (["run", "x.toml", "--bogus"], "No such option: --bogus"),
        (["shapes", "pretrain", "--steps", "abc"], "Invalid value for '--steps'"),
        (["nosuch"], "No such command 'nosuch'"),
    ],
    ids=["missing-argument", "unknown-option", "not-a-number", "unknown-command"],
)
def test_a_bad_command_line_is_one_line_not_a_usage_box(args, message):
    assert_one_error_line(invoke(*args), message)


def test_eval_checks_out_and_device_before_scoring(tmp_path, images):
    base = ["eval", "shapes-geneval", "--images", images]
    assert_one_error_line(invoke(*base, "--out", tmp_path), "--out")
    assert_one_error_line(invoke(*base, "--device", "gpu9"), "--device")
