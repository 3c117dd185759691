"""Runs and files: one run per run directory (created atomically, locked), checkpoints that prove they are
whole (digests in state.json, verified on resume, sample, export and warm start), and every file a user
hands in checked (UTF-8 text, image size and modes, a writable --out); `nft sample` goes on after an
interruption."""

from __future__ import annotations

import io
import json
import os
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import Result
from PIL import Image
from typer.testing import CliRunner

from nft_core.cli.app import build_app
from nft_core.config import load_config
from nft_core.errors import UserError
from nft_core.loop.images import read_image
from nft_core.loop.trainer import Trainer
from nft_core.state.checkpoints import (
    FILES_KEY,
    RESUME_FILE,
    STATE_FILE,
    CorruptCheckpoint,
    checkpoint_folders,
    latest_checkpoint,
    verify_checkpoint,
)
from nft_core.state.run_dir import LOCK_FILE, RunDirBusy, create_run_dir, lock_run_dir

runner = CliRunner()
APP = build_app()
QUIET = ["log.grid_every=0", "eval.baseline_guidance=[]", "eval.every=0", "train.threads=1"]
SETS = [arg for override in QUIET for arg in ("--set", override)]
BAD_UTF8 = b"a red circle\nthree bl\xe9e squares\n"  # Latin-1, not UTF-8: 0xe9 at offset 21
WEIGHTS = "model.safetensors"  # shapes-tiny's weights file in a checkpoint


def invoke(*args: str | Path) -> Result:
    """Run `nft ARGS` in-process."""
    return runner.invoke(APP, [str(arg) for arg in args])


def one_error_line(result: Result, *needles: str) -> str:
    """Exit code 2, one `error:` line holding every needle, no traceback; returns the line."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def nft_process(config: Path, out: Path, *extra: str) -> subprocess.Popen:
    """`nft run` in a process of its own."""
    command = [sys.executable, "-m", "nft_core.cli", "run", str(config), "--out", str(out), *SETS, *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_checkpoint) -> tuple[Path, Path]:
    """A finished two-epoch run (checkpoints step_00002 and step_00004) and its config file."""
    from conftest import FAST_CONFIG

    folder = tmp_path_factory.mktemp("finished")
    config = folder / "fast.toml"
    config.write_text(FAST_CONFIG.format(checkpoint=tiny_checkpoint))
    run_dir = folder / "runs" / "tiny"
    Trainer(load_config(config, QUIET), run_dir, echo=lambda *_: None).run()
    return config, run_dir


@pytest.fixture
def run_copy(finished, tmp_path) -> tuple[Path, Path]:
    """A copy of the finished run to damage, and the config."""
    config, run_dir = finished
    copy = tmp_path / "runs" / "tiny"
    shutil.copytree(run_dir, copy)
    return config, copy


def damage(path: Path, how: str) -> None:
    """Flip 100 bytes in the middle of `path`, or cut it in half."""
    data = bytearray(path.read_bytes())
    if how == "flip":
        middle = len(data) // 2
        for index in range(middle, middle + 100):
            data[index] ^= 0xFF
    else:
        del data[len(data) // 2 :]
    path.write_bytes(bytes(data))


# ---- one run per run directory -----------------------------------------------------------------------


def test_two_runs_started_together_get_two_run_dirs_and_each_its_own_metrics(fast_config, tmp_path):
    out = tmp_path / "runs"
    processes = [nft_process(fast_config, out, "--set", "train.epochs=1") for _ in range(2)]
    outputs = [process.communicate(timeout=600)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    summaries = [json.loads(output.strip().splitlines()[-1]) for output in outputs]
    assert sorted(Path(s["run_dir"]).name for s in summaries) == ["tiny", "tiny-2"]
    for summary in summaries:
        run_dir = Path(summary["run_dir"])
        assert summary["status"] == "finished"
        assert json.loads((run_dir / "summary.json").read_text())["status"] == "finished"
        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        seen = [(r["kind"], r["epoch"], r["step"]) for r in records]
        assert seen == [("eval", 0, 0), ("train", 0, 2), ("eval", 0, 2)]  # one run's lines, not two
        assert [f.name for f in checkpoint_folders(run_dir)] == ["step_00002"]


def test_create_run_dir_never_hands_out_a_taken_name(tmp_path):
    made = [create_run_dir(tmp_path / "runs", "tiny") for _ in range(3)]
    assert [p.name for p in made] == ["tiny", "tiny-2", "tiny-3"] and all(p.is_dir() for p in made)
    (tmp_path / "runs" / "tiny-4").write_text("a file takes the name too")
    assert create_run_dir(tmp_path / "runs", "tiny").name == "tiny-5"


HOLD = """
import sys
from pathlib import Path
from nft_core.state.run_dir import lock_run_dir
with lock_run_dir(Path(sys.argv[1])):
    print("held", flush=True)
    sys.stdin.read()
"""


def test_the_lock_refuses_another_process_naming_its_pid_and_goes_with_it(tmp_path):
    run_dir = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(run_dir)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunDirBusy, match=f"another run is using this run directory \\(pid {holder.pid}"):
            with lock_run_dir(run_dir):
                pass
    finally:
        holder.kill()  # the OS drops the lock of a killed process
        holder.wait()
    with lock_run_dir(run_dir), lock_run_dir(run_dir):  # re-entrant in one process
        assert (run_dir / LOCK_FILE).read_text().strip() == str(os.getpid())
    assert (run_dir / LOCK_FILE).read_text() == ""  # released
    with lock_run_dir(run_dir, enabled=False):  # ranks other than 0 hold nothing
        pass


def test_a_resume_of_a_running_run_is_refused_naming_its_pid(fast_config, tmp_path):
    process = nft_process(
        fast_config, tmp_path, "--set", "train.epochs=200", "--set", "log.checkpoint_every=1"
    )
    run_dir = tmp_path / "tiny"
    try:
        deadline = time.time() + 120
        while latest_checkpoint(run_dir, resumable=True) is None:
            assert process.poll() is None, process.stdout.read()
            assert time.time() < deadline, "no checkpoint in time"
            time.sleep(0.05)
        metrics = (run_dir / "metrics.jsonl").read_text()
        result = invoke(
            "run",
            fast_config,
            "--out",
            tmp_path,
            *SETS,
            "--set",
            "train.epochs=200",
            "--set",
            "log.checkpoint_every=1",
            "--resume",
            run_dir,
        )
        one_error_line(result, f"{run_dir}: another run is using this run directory (pid {process.pid}")
        assert (run_dir / "metrics.jsonl").read_text().startswith(metrics)  # not cut back by a restore
        with pytest.raises(RunDirBusy, match=f"pid {process.pid}"):  # a Trainer in a program, too
            Trainer(load_config(fast_config, QUIET), run_dir, echo=lambda *_: None).run()
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=60)
    with lock_run_dir(run_dir):  # a killed run leaves no lock behind
        pass


@pytest.mark.parametrize("name", ["../../escape", "..", "/abs/path", "", "a/b"])
def test_a_run_name_that_would_leave_out_is_refused(fast_config, tmp_path, name):
    out = tmp_path / "deep" / "runs"
    result = invoke("run", fast_config, "--out", out, "--set", f"name={json.dumps(name)}")
    one_error_line(result, "name: must be a plain folder name under --out")
    assert not (tmp_path / "escape").exists() and not out.exists()


def test_the_resume_hint_is_shell_quoted(fast_config, tmp_path, monkeypatch):
    original = Trainer.after_epoch

    def stop_after_the_first_epoch(self, *args):
        written = original(self, *args)
        self.stop_signal = "SIGTERM"
        return written

    monkeypatch.setattr(Trainer, "after_epoch", stop_after_the_first_epoch)
    out = tmp_path / "my runs"
    result = invoke("run", fast_config, "--out", out, *SETS, "--set", 'name="it\'s mine"')
    assert result.exit_code == 0, result.output
    hint = next(line for line in result.output.splitlines() if line.startswith("resume with: "))
    words = shlex.split(hint.removeprefix("resume with: "))
    sets = [word for override in [*QUIET, 'name="it\'s mine"'] for word in ("--set", override)]
    assert words == ["nft", "run", str(fast_config), *sets, "--resume", str(out / "it's mine")]
    assert json.loads((out / "it's mine" / "summary.json").read_text())["status"] == "interrupted"


def test_a_failed_start_leaves_no_empty_run_dir(fast_config, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise UserError("the policy cannot be built")

    monkeypatch.setattr("nft_core.loop.trainer.build_policy", broken)
    one_error_line(invoke("run", fast_config, "--out", tmp_path / "runs", *SETS), "cannot be built")
    assert list((tmp_path / "runs").iterdir()) == []


# ---- checkpoints that prove they are whole -----------------------------------------------------------


def test_state_json_records_the_size_and_digest_of_every_other_file(finished):
    import hashlib

    folder = latest_checkpoint(finished[1])
    recorded = json.loads((folder / STATE_FILE).read_text())[FILES_KEY]
    assert set(recorded) == {RESUME_FILE, WEIGHTS}
    for name, entry in recorded.items():
        data = (folder / name).read_bytes()
        assert entry == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert verify_checkpoint(folder) is True


@pytest.mark.parametrize("how", ["flip", "truncate"])
@pytest.mark.parametrize("file", [RESUME_FILE, WEIGHTS])
@pytest.mark.parametrize("command", ["resume", "sample", "export", "validate"])
def test_a_damaged_checkpoint_is_refused_in_one_line(run_copy, tmp_path, how, file, command):
    config, run_dir = run_copy
    folder = run_dir / "checkpoints" / "step_00004"
    size = (folder / file).stat().st_size
    damage(folder / file, how)
    if command == "resume":
        result = invoke("run", config, "--out", tmp_path, *SETS, "--resume", folder)
    elif command == "sample":
        result = invoke("sample", run_dir, "--prompts", "shapes:eval-1", "--out", tmp_path / "images")
    elif command == "export":
        result = invoke("export", run_dir, "--out", tmp_path / "exported")
    else:
        result = invoke("validate", config, "--set", f"policy.init_from={json.dumps(str(folder))}")
    why = (
        "corrupt (its sha256 differs"
        if how == "flip"
        else f"{size // 2} bytes, but its state.json records {size}"
    )
    one_error_line(result, f"{folder / file}: {why}")
    assert not (tmp_path / "images").exists() and not (tmp_path / "exported").exists()


def test_restore_and_warm_start_refuse_a_damaged_checkpoint(run_copy, tmp_path):
    config, run_dir = run_copy
    folder = run_dir / "checkpoints" / "step_00002"
    damage(folder / RESUME_FILE, "flip")
    with pytest.raises(CorruptCheckpoint, match=f"{folder / RESUME_FILE}: corrupt"):
        Trainer(load_config(config, QUIET), run_dir, echo=lambda *_: None).run(resume=folder)
    damage(folder / WEIGHTS, "truncate")
    warm = load_config(config, [*QUIET, f"policy.init_from={json.dumps(str(folder))}"])
    with pytest.raises(UserError, match=f"policy.init_from: {folder / WEIGHTS}: .* bytes"):
        Trainer(warm, tmp_path / "warm", echo=lambda *_: None)


@pytest.mark.parametrize("spec", ["auto", "run folder"])
def test_resume_falls_back_to_the_newest_checkpoint_that_verifies(run_copy, tmp_path, spec):
    config, run_dir = run_copy
    newest, older = run_dir / "checkpoints" / "step_00004", run_dir / "checkpoints" / "step_00002"
    damage(newest / RESUME_FILE, "flip")
    resume = "auto" if spec == "auto" else str(run_dir)
    result = invoke("run", config, "--out", run_dir.parent, *SETS, "--resume", resume)
    assert result.exit_code == 0, result.output
    warning = [line for line in result.output.splitlines() if line.startswith("warning: ")]
    assert len(warning) == 1 and f"{newest / RESUME_FILE}: corrupt" in warning[0]
    assert f"going on from {older}, the newest checkpoint that verifies" in warning[0]
    assert f"resumed from {older} (epoch 0, step 2)" in result.output
    assert verify_checkpoint(newest)  # rewritten whole by the resumed run
    damage(newest / RESUME_FILE, "truncate")
    damage(older / WEIGHTS, "flip")
    result = invoke("run", config, "--out", run_dir.parent, *SETS, "--resume", resume)
    one_error_line(result, f"{run_dir}: no checkpoint verifies (the newest: {newest / RESUME_FILE}")


def test_a_checkpoint_without_digests_still_loads_and_says_so_when_it_cannot(run_copy, tmp_path):
    config, run_dir = run_copy
    folder = run_dir / "checkpoints" / "step_00002"
    state = json.loads((folder / STATE_FILE).read_text())
    del state[FILES_KEY]  # as written before digests were recorded
    (folder / STATE_FILE).write_text(json.dumps(state))
    assert verify_checkpoint(folder) is False
    shutil.rmtree(run_dir / "checkpoints" / "step_00004")
    result = invoke("run", config, "--out", tmp_path, *SETS, "--resume", folder)
    assert result.exit_code == 0 and "resumed from" in result.output, result.output
    shutil.rmtree(run_dir / "checkpoints" / "step_00004")
    (folder / STATE_FILE).write_text(json.dumps(state))  # the resumed run's prune left it; digests gone
    damage(folder / RESUME_FILE, "truncate")
    result = invoke("run", config, "--out", tmp_path, *SETS, "--resume", folder)
    one_error_line(result, f"{folder / RESUME_FILE}: cannot be read", "without digests: it was not verified")


# ---- files a user hands in -----------------------------------------------------------------------------


@pytest.fixture
def latin1(tmp_path) -> Path:
    path = tmp_path / "prompts.txt"
    path.write_bytes(BAD_UTF8)
    return path


def small_images(folder: Path, count: int = 2) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        Image.new("RGB", (16, 16), (60 * index, 40, 0)).save(folder / f"{index:05d}.png")
    return folder


NOT_UTF8 = "not UTF-8 text: byte 0xe9 at offset 21 (line 2"


def test_a_prompt_file_that_is_not_utf8_is_one_line_with_the_offset(fast_config, tmp_path, latin1):
    images = small_images(tmp_path / "images")
    out = tmp_path / "scores.jsonl"
    one_error_line(
        invoke("score", "jpeg-compressibility", "--images", images, "--prompts", latin1, "--out", out),
        f"{latin1}: {NOT_UTF8}",
    )
    metadata = tmp_path / "meta.jsonl"
    metadata.write_bytes(b'{"prompt": "a"}\n{"prompt": "\xff"}\n')
    one_error_line(
        invoke("score", "jpeg-compressibility", "--images", images, "--metadata", metadata),
        f"{metadata}: not UTF-8 text: byte 0xff at offset 28 (line 2",
    )
    shutil.copy(latin1, images / "prompts.txt")
    one_error_line(
        invoke("eval", "jpeg-compressibility", "--images", images), f"{images / 'prompts.txt'}: {NOT_UTF8}"
    )
    geneval = tmp_path / "geneval"
    (geneval / "00000" / "samples").mkdir(parents=True)
    (geneval / "00000" / "metadata.jsonl").write_bytes(b'{"prompt": "\xe9"}\n')
    one_error_line(
        invoke("eval", "jpeg-compressibility", "--images", geneval), "metadata.jsonl: not UTF-8 text"
    )
    one_error_line(invoke("sample", fast_config, "--prompts", latin1, "--out", tmp_path / "s"), NOT_UTF8)
    prompts = f"data.prompts={json.dumps(str(latin1))}"
    one_error_line(invoke("validate", fast_config, "--set", prompts), f"{latin1}: {NOT_UTF8}")
    one_error_line(invoke("run", fast_config, "--out", tmp_path / "runs", "--set", prompts), NOT_UTF8)
    assert not (tmp_path / "s").exists() and not (tmp_path / "runs").exists()


def png_claiming(path: Path, width: int, height: int) -> Path:
    """A 60-byte PNG whose header claims `width` x `height` pixels (no pixel data follows)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )
    return path


def test_an_image_claiming_too_many_pixels_is_refused_naming_its_size(tmp_path, monkeypatch):
    images = small_images(tmp_path / "images", 1)
    bomb = png_claiming(images / "00001.png", 30000, 30000)
    (images / "prompts.txt").write_text("a\nb\n")
    claim = f"{bomb}: the image claims 30000x30000 pixels (900,000,000), over the limit of 67,108,864"
    one_error_line(invoke("eval", "jpeg-compressibility", "--images", images), claim, "NFT_MAX_IMAGE_PIXELS")
    one_error_line(
        invoke(
            "score",
            "jpeg-compressibility",
            "--images",
            images,
            "--prompts",
            images / "prompts.txt",
            "--out",
            tmp_path / "s.jsonl",
        ),
        claim,
    )
    assert not (tmp_path / "s.jsonl").exists()
    monkeypatch.setenv("NFT_MAX_IMAGE_PIXELS", "100")
    with pytest.raises(UserError, match="claims 16x16 pixels \\(256\\), over the limit of 100"):
        read_image(images / "00000.png")
    monkeypatch.setenv("NFT_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(UserError, match="NFT_MAX_IMAGE_PIXELS='lots': expected a whole number"):
        read_image(images / "00000.png")


def saved(image: Image.Image, path: Path, **kwargs) -> Path:
    image.save(path, **kwargs)
    return path


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda: Image.fromarray(np.full((4, 4), 32768, np.uint16)), 32768 / 65535),  # 16-bit grey PNG
        (lambda: Image.new("I", (4, 4), 65535), 1.0),
        (lambda: Image.new("F", (4, 4), 0.25), 0.25),
        (lambda: Image.new("1", (4, 4), 1), 1.0),
        (lambda: Image.new("L", (4, 4), 51), 0.2),
        (lambda: Image.new("P", (4, 4), 0), 0.0),
        (lambda: Image.new("LA", (4, 4), (0, 0)), 1.0),  # transparent: composited onto white
        (lambda: Image.new("RGBA", (4, 4), (0, 0, 0, 255)), 0.0),
        (lambda: Image.new("CMYK", (4, 4), (0, 0, 0, 0)), 1.0),
    ],
    ids=["I;16", "I", "F", "1", "L", "P", "LA", "RGBA", "CMYK"],
)
def test_every_image_mode_reads_as_rgb_in_0_1(tmp_path, make, expected):
    image = make()
    path = saved(image, tmp_path / ("image.tiff" if image.mode in ("F", "CMYK", "I") else "image.png"))
    tensor = read_image(path)
    assert tensor.shape == (3, 4, 4) and str(tensor.dtype) == "torch.float32"
    assert tensor.numpy() == pytest.approx(np.full((3, 4, 4), expected), abs=1e-6)


def test_16_bit_grey_is_scaled_not_clipped_and_unknown_ranges_are_refused(tmp_path):
    ramp = np.array([[0, 16384, 32768, 65535]], np.uint16)
    tensor = read_image(saved(Image.fromarray(ramp), tmp_path / "ramp.png"))
    assert tensor[0, 0].tolist() == pytest.approx([0, 0.25, 0.5, 1.0], abs=1e-4)
    with pytest.raises(UserError, match="32-bit integer pixels from 0 to 70000: no known white level"):
        read_image(saved(Image.fromarray(np.array([[0, 70000]], np.int32)), tmp_path / "wide.tiff"))
    with pytest.raises(UserError, match=r"floating-point pixels outside \[0, 1\]"):
        read_image(saved(Image.new("F", (2, 2), 3.0), tmp_path / "hdr.tiff"))


def test_an_unwritable_out_is_refused_before_anything_loads(run_copy, tmp_path):
    if not Path("/proc").is_dir():
        pytest.skip("needs Linux's /proc (where nothing can be created, even by root)")
    config, run_dir = run_copy
    images = small_images(tmp_path / "images")
    (images / "prompts.txt").write_text("a\nb\n")
    out = Path("/proc/nft-out")
    one_error_line(invoke("run", config, "--out", out), f"--out {out}: /proc is not writable")
    one_error_line(
        invoke("sample", run_dir, "--prompts", "shapes:eval-1", "--out", out), "/proc is not writable"
    )
    one_error_line(invoke("export", run_dir, "--out", out), "/proc is not writable")
    one_error_line(
        invoke(
            "score",
            "jpeg-compressibility",
            "--images",
            images,
            "--prompts",
            images / "prompts.txt",
            "--out",
            out / "s.jsonl",
        ),
        "/proc is not writable",
    )
    one_error_line(
        invoke("eval", "jpeg-compressibility", "--images", images, "--out", out / "s.jsonl"),
        "/proc is not writable",
    )
    afile = tmp_path / "afile"
    afile.write_text("")
    one_error_line(invoke("export", run_dir, "--out", afile / "x"), f"{afile} is a file, not a folder")


# ---- nft sample goes on after an interruption ----------------------------------------------------------


def test_an_interrupted_sample_goes_on_and_another_request_is_refused(finished, tmp_path, monkeypatch):
    _, run_dir = finished
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("one red circle\ntwo blue squares\nthree green triangles\n")
    args = ["sample", run_dir, "--prompts", prompts, "-n", "2", "--batch-size", "2"]
    whole = tmp_path / "whole"
    assert invoke(*args, "--out", whole).exit_code == 0
    import nft_core.cli.sample as sample_module

    real, written = sample_module._save_png, []

    def interrupted(image, path):
        if len(written) == 4:
            raise KeyboardInterrupt
        real(image, path)
        written.append(path)

    monkeypatch.setattr(sample_module, "_save_png", interrupted)
    out = tmp_path / "parts"
    assert invoke(*args, "--out", out).exit_code != 0
    monkeypatch.setattr(sample_module, "_save_png", real)
    assert len(list(out.glob("*.png"))) == 4 and not (out / "prompts.txt").exists()
    (out / ".00002-1.png.x1y2.tmp").write_bytes(b"half an image")  # what a kill -9 mid-write leaves
    result = invoke(*args, "--out", out)
    assert result.exit_code == 0, result.output
    assert f"{out}: 4 of 6 images are there; sampling the rest" in result.output
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in whole.iterdir())
    for image in whole.glob("*.png"):
        assert (out / image.name).read_bytes() == image.read_bytes(), image.name
    assert (out / "prompts.txt").read_text() == (whole / "prompts.txt").read_text()
    again = invoke(*args, "--out", out)
    assert again.exit_code == 0 and "6 of 6 images are there" in again.output
    one_error_line(
        invoke(*args, "--seed", "1", "--out", out),
        f"--out {out} holds the images of another request",
        "seed (0 -> 1)",
    )
    prompts.write_text("one red circle\n")
    one_error_line(invoke(*args, "--out", out), "prompts (its content changed)")


def test_sample_images_are_written_whole_under_their_name(tmp_path):
    import torch

    from nft_core.cli.sample import _save_png

    path = tmp_path / "a.png"
    _save_png(torch.full((3, 4, 4), 0.5), path)
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]
    with Image.open(io.BytesIO(path.read_bytes())) as image:
        assert image.size == (4, 4) and image.mode == "RGB"
