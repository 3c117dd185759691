"""Experiment trackers (`[log] trackers`): what TensorBoard and W&B (offline) get from a real run, the
fan-out's failure handling, resuming, and the config errors."""

from __future__ import annotations

import io
import json
import math
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tomllib
from PIL import Image
from typer.testing import CliRunner

from nft_core import plugins, registry
from nft_core.cli.app import build_app
from nft_core.hookspecs import hookimpl
from nft_core.loop.trainer import Trainer
from nft_core.outputs.tracking import record_scalars
from nft_core.protocols import Tracker
from nft_trackers import TensorBoardTracker, WandbTracker
from nft_trackers.wandb_tracker import RUN_ID_FILE

runner = CliRunner()


def run(config: Path, out: Path, *sets: str):
    args = ["run", str(config), "--out", str(out)]
    for assignment in sets:
        args += ["--set", assignment]
    return runner.invoke(build_app(), args)


def records(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def expected_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every number of metrics.jsonl by key: (epoch, value) in the file's order."""
    expected: dict[str, list[tuple[int, float]]] = {}
    for record in records(run_dir):
        for key, value in record_scalars(record).items():
            expected.setdefault(key, []).append((record["epoch"], value))
    return expected


def same_numbers(actual: list[tuple[int, float]], expected: list[tuple[int, float]]) -> bool:
    """Equal step by step, values float32-close (TensorBoard stores float32), NaN equal to NaN."""
    return len(actual) == len(expected) and all(
        a_step == e_step and (math.isnan(e) and math.isnan(a) or a == pytest.approx(e, rel=1e-6, abs=1e-7))
        for (a_step, a), (e_step, e) in zip(actual, expected, strict=True)
    )


@pytest.fixture
def wandb_offline(monkeypatch, tmp_path):
    """W&B with no network and no files outside tmp_path; WANDB_DIR elsewhere shows `dir` wins."""
    for name in ("WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for name in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        folder = tmp_path / "wandb-home" / name.lower()
        folder.mkdir(parents=True)
        monkeypatch.setenv(name, str(folder))
    return tmp_path / "wandb-home"


# --- TensorBoard ----------------------------------------------------------------------------------


def test_tensorboard_gets_every_number_of_metrics_jsonl_and_every_grid(fast_config, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    result = run(fast_config, tmp_path / "runs", 'log.trackers=["tensorboard"]')
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "runs" / "tiny"
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    expected = expected_scalars(run_dir)
    assert {"reward/total_mean", "eval/shapes-geneval/score", "loss", "seconds/sampling"} <= set(expected)
    assert set(events.Tags()["scalars"]) == set(expected)
    for key, values in expected.items():
        actual = sorted((event.step, event.value) for event in events.Scalars(key))
        assert same_numbers(actual, sorted(values, key=lambda item: item[0])), key
    # the grids, one tag per kind, one image per epoch, pixel for pixel the PNGs the run wrote
    assert set(events.Tags()["images"]) == {"samples/epoch", "samples/eval_before", "samples/eval_after"}
    assert [event.step for event in events.Images("samples/epoch")] == [0, 1]
    assert [event.step for event in events.Images("samples/eval_after")] == [1]
    grids = sorted((run_dir / "samples").glob("epoch_*.png"))
    for event, png in zip(events.Images("samples/epoch"), grids, strict=True):
        sent = np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB"))
        assert np.array_equal(sent, np.asarray(Image.open(png).convert("RGB")))
    (status,) = events.Tensors("status/text_summary")
    assert tensor_util.make_ndarray(status.tensor_proto).item() == b"finished" and status.step == 1
    (config,) = events.Tensors("config/text_summary")
    assert b'"shapes-tiny"' in tensor_util.make_ndarray(config.tensor_proto).item()


def test_tensorboard_hides_the_steps_a_resumed_run_redoes(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    first = TensorBoardTracker(flush_secs=1)
    first.start(tmp_path, {"name": "r"}, "r")
    for step in range(3):
        first.log_scalars(step, {"x": float(step)})
    first.finish("interrupted")
    second = TensorBoardTracker(flush_secs=1)
    second.start(tmp_path, {"name": "r"}, "r", first_step=2)
    second.log_scalars(2, {"x": 20.0})
    second.log_scalars(3, {"x": 30.0})
    second.finish("finished")
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [(event.step, event.value) for event in events.Scalars("x")] == [(0, 0), (1, 1), (2, 20), (3, 30)]


# --- W&B, offline --------------------------------------------------------------------------------


def wandb_history(path: Path) -> list[dict[str, Any]]:
    """The history rows of a `.wandb` file: a 7-byte header, then a LevelDB log (32 KiB blocks of
    chunks with a 7-byte header: crc, length, type 1 full / 2 first / 3 middle / 4 last) of `Record`s."""
    from wandb.proto import wandb_internal_pb2

    data, block, position, pending, rows = path.read_bytes(), 32768, 7, b"", []
    while position + 7 <= len(data):
        if block - position % block < 7:  # a block's tail too short for a header is padding
            position += block - position % block
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        pending += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            if record.WhichOneof("record_type") == "history":
                items = record.history.item
                rows.append(
                    {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items}
                )
    return rows


def test_wandb_offline_writes_the_run_with_every_record_and_grid(fast_config, tmp_path, wandb_offline):
    result = run(
        fast_config,
        tmp_path / "runs",
        'log.trackers=["wandb"]',
        'log.tracker_options.wandb.tags=["test"]',
        "log.tracker_options.wandb.images=true",
    )
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "runs" / "tiny"
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    run_id = (run_dir / RUN_ID_FILE).read_text().strip()
    assert offline.name.endswith(f"-{run_id}") and (offline / f"run-{run_id}.wandb").is_file()
    assert not any(wandb_offline.rglob("*.wandb")), "the `dir` option, not WANDB_DIR, places the run"
    rows = wandb_history(offline / f"run-{run_id}.wandb")
    # an image row holds the image's fields under nested keys: `samples/epoch/_type` = "image-file", ...
    images = [
        (row["epoch"], key.removesuffix("/_type")) for row in rows for key in row if key.endswith("/_type")
    ]
    scalar_rows = [
        {key: value for key, value in row.items() if not key.startswith("_")}
        for row in rows
        if not any(key.endswith("/_type") for key in row)
    ]
    wanted = [(record["epoch"], record_scalars(record)) for record in records(run_dir)]
    assert len(scalar_rows) == len(wanted)
    for row, (epoch, scalars) in zip(scalar_rows, wanted, strict=True):
        assert row["epoch"] == epoch and set(row) == set(scalars)
        for key, value in scalars.items():  # W&B keeps float64; NaN becomes a string in its JSON
            assert (math.isnan(value) and str(row[key]).lower() == "nan") or row[key] == value, key
    assert images == [
        (0, "samples/eval_before"),
        (0, "samples/epoch"),
        (1, "samples/epoch"),
        (1, "samples/eval_after"),
    ]
    assert len(list((offline / "files" / "media" / "images" / "samples").glob("*.png"))) == 4


def test_wandb_resumed_run_reopens_the_same_run_id(tmp_path, wandb_offline):
    first = WandbTracker(images=False)
    first.start(tmp_path, {"a": 1}, "r")
    first.log_scalars(0, {"x": 1.0})
    first.finish("interrupted")
    run_id = (tmp_path / RUN_ID_FILE).read_text().strip()
    second = WandbTracker()
    second.start(tmp_path, {"a": 1}, "r", first_step=1)
    second.log_scalars(1, {"x": 2.0})
    second.finish("finished")
    folders = sorted((tmp_path / "wandb").glob("offline-run-*"))
    # (two in one second: W&B names the second folder `...-<id>-1`)
    assert len(folders) == 2 and all((folder / f"run-{run_id}.wandb").is_file() for folder in folders)
    assert [row["x"] for folder in folders for row in wandb_history(folder / f"run-{run_id}.wandb")] == [1, 2]


# --- the fan-out: failures contained -------------------------------------------------------------


CALLS: dict[str, list[tuple[Any, ...]]] = {}
"""What each test tracker was called with, by its registered name."""


class Recorder:
    """Keeps every call in `CALLS[name]`; `fail_start` / `fail_log_after` make it raise."""

    def __init__(self, name: str, fail_start: bool = False, fail_log_after: int | None = None) -> None:
        self.name, self.fail_start, self.fail_log_after = name, fail_start, fail_log_after
        self.calls = CALLS.setdefault(name, [])

    def start(self, run_dir, config, run_name, first_step=0):
        self.calls.append(("start", Path(run_dir), config, run_name, first_step))
        if self.fail_start:
            raise RuntimeError("no tracking server here\nsecond line")

    def log_scalars(self, step, scalars):
        self.calls.append(("scalars", step, dict(scalars)))
        if self.fail_log_after is not None and len(self.calls) > self.fail_log_after:
            raise ConnectionError("lost the tracking server")

    def log_image(self, step, tag, image):
        self.calls.append(("image", step, tag, Path(image).name))

    def finish(self, status):
        self.calls.append(("finish", status))


class _TestTrackers:
    @staticmethod
    @hookimpl
    def register_trackers(register):
        register("recorder", lambda: Recorder("recorder"))
        register("broken-start", lambda: Recorder("broken-start", fail_start=True))
        register("broken-log", lambda: Recorder("broken-log", fail_log_after=2))


@pytest.fixture
def recorded():
    """The test trackers registered like an installed plugin; yields `CALLS`."""
    CALLS.clear()
    plugins.load_plugins()
    plugins.pm.register(_TestTrackers, name="nft-test-trackers")
    registry.clear_cache()
    yield CALLS
    plugins.pm.unregister(name="nft-test-trackers")
    registry.clear_cache()


def test_a_tracker_that_fails_is_a_warning_and_the_run_finishes(fast_config, tmp_path, recorded):
    result = run(fast_config, tmp_path / "runs", 'log.trackers=["broken-start", "broken-log", "recorder"]')
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "runs" / "tiny"
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "finished"
    warnings = [line for line in result.output.splitlines() if line.startswith("warning: tracker")]
    assert warnings == [
        "warning: tracker 'broken-start' did not start (RuntimeError: no tracking server here); "
        "the run goes on",
        "warning: tracker 'broken-log' failed while logging (ConnectionError: lost the tracking server); "
        "disabled for the rest of the run",
    ]
    assert [call[0] for call in recorded["broken-start"]] == ["start"]
    assert [call[0] for call in recorded["broken-log"]] == ["start", "scalars", "image", "scalars", "finish"]
    assert recorded["broken-log"][-1] == ("finish", "failed")
    # the one that works got the start, each record (step = epoch), each grid, the status, in order
    calls = recorded["recorder"]
    assert calls[0] == (
        "start",
        run_dir,
        tomllib.loads((run_dir / "config.resolved.toml").read_text()),
        "tiny",
        0,
    )
    assert calls[-1] == ("finish", "finished")
    wanted = [(record["epoch"], record_scalars(record)) for record in records(run_dir)]
    assert [call[1:] for call in calls if call[0] == "scalars"] == wanted
    assert [call[1:] for call in calls if call[0] == "image"] == [
        (0, "samples/eval_before", "eval_before.png"),
        (0, "samples/epoch", "epoch_0000.png"),
        (1, "samples/epoch", "epoch_0001.png"),
        (1, "samples/eval_after", "eval_after.png"),
    ]
    assert isinstance(Recorder("x"), Tracker)  # the test trackers keep to the contract


def test_a_failed_run_finishes_its_trackers_with_failed(fast_config, tmp_path, recorded, monkeypatch):
    def broken(self, *args):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(Trainer, "after_epoch", broken)
    result = run(fast_config, tmp_path / "runs", 'log.trackers=["recorder"]', "eval.baseline_guidance=[]")
    assert result.exit_code != 0 and "disk on fire" in str(result.exception)
    assert recorded["recorder"][-1] == ("finish", "failed")


def test_a_resumed_run_starts_its_trackers_after_the_checkpoint(fast_config, tmp_path, recorded):
    out = tmp_path / "runs"
    assert run(fast_config, out, "train.epochs=1", "eval.baseline_guidance=[]").exit_code == 0
    result = runner.invoke(
        build_app(),
        ["run", str(fast_config), "--resume", str(out / "tiny"), "--set", "train.epochs=2"]
        + ["--set", "eval.baseline_guidance=[]", "--set", 'log.trackers=["recorder"]'],
    )
    assert result.exit_code == 0, result.output
    calls = recorded["recorder"]
    assert calls[0][0] == "start" and calls[0][4] == 1
    assert {call[1] for call in calls if call[0] == "scalars"} == {1}
    assert calls[-1] == ("finish", "finished")


# --- configuration -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        (
            'log.trackers=["tensorbord"]',
            "log.trackers[0]: unknown tracker 'tensorbord'; available: tensorboard, wandb; "
            "did you mean 'tensorboard'?",
        ),
        ('log.trackers=["wandb", "wandb"]', "log.trackers[1]: 'wandb' is already log.trackers[0]"),
        ("log.trackers='wandb'", "log.trackers: Input should be a valid array (got 'wandb')"),
        ("log.tracker_options.tensorboard.flush_secs=0", "log.tracker_options.tensorboard.flush_secs: "),
        ("log.tracker_options.wandb.projet='x'", "log.tracker_options.wandb.projet: unknown key; allowed: "),
        ("log.tracker_options.wandb.mode='cloud'", "log.tracker_options.wandb.mode: Input should be "),
        ("log.tracker_options.tb.log_dir='x'", "log.tracker_options.tb: unknown tracker 'tb'"),
    ],
)
@pytest.mark.parametrize("command", ["validate", "run"])
def test_tracker_config_errors_are_one_line_exit_2(fast_config, tmp_path, assignment, message, command):
    args = [command, str(fast_config), "--set", assignment]
    result = runner.invoke(
        build_app(), args + (["--out", str(tmp_path / "runs")] if command == "run" else [])
    )
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {fast_config}: {message}"), lines
    assert not (tmp_path / "runs").exists()


def test_nft_plugins_lists_the_builtin_trackers():
    result = runner.invoke(build_app(), ["plugins"])
    assert result.exit_code == 0, result.output
    by_name = {entry["name"]: entry for entry in json.loads(result.output)["plugins"]}
    entry = by_name["nft_trackers.plugin"]
    assert entry["hooks"] == ["register_trackers"] and entry["registers"] == {
        "trackers": ["tensorboard", "wandb"]
    }
    assert entry["distribution"] == "diffusion-nft"
