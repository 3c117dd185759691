"""`benchmarks/learning_curves.py`: a run's changes against a config, its curve by epochs trained."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from nft_core.config import load_config
from nft_core.loop.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
_SPEC = importlib.util.spec_from_file_location("bench_curves", ROOT / "benchmarks" / "learning_curves.py")
curves = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(curves)


def test_flatten_names_nested_keys_and_arrays_of_tables():
    table = {"a": {"b": 1, "c": [1, 2]}, "reward": [{"weight": 1.0}, {"weight": 2.0}]}
    flat = {"a.b": 1, "a.c": [1, 2], "reward[0].weight": 1.0, "reward[1].weight": 2.0}
    assert curves.flatten(table) == flat


def test_a_run_reports_what_it_changed_and_its_curve(fast_config, tmp_path):
    run = tmp_path / "lr-run"
    Trainer(load_config(fast_config, ["train.lr=1e-3"]), run, echo=lambda *_: None).run()
    out = tmp_path / "curves.json"
    curves.main([str(run), "--out", str(out), "--against", str(fast_config), "--reward", "shapes-geneval"])
    row = json.loads(out.read_text())["runs"][0]
    assert row["changes"] == {"train.lr": 1e-3}
    # eval.every = 1 over 2 epochs: before, after epoch 0, after (epoch 1)
    assert [point["epochs"] for point in row["curve"]] == [0, 1, 2]
    assert row["epochs"] == 2 and set(row["seconds_per_epoch"]) == {"sampling", "reward", "training"}
    assert out.with_suffix(".png").is_file()
