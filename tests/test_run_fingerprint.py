"""A run is a function of its config: two runs fingerprint alike, another seed does not."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from nft_core.config import load_config
from nft_core.loop.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("run_fingerprint", ROOT / "benchmarks" / "run_fingerprint.py")
run_fingerprint = importlib.util.module_from_spec(spec)
spec.loader.exec_module(run_fingerprint)


def fingerprint(config, folder, *overrides):
    Trainer(load_config(config, ["train.epochs=1", *overrides]), folder, echo=lambda *_: None).run()
    found = run_fingerprint.fingerprint(folder)
    return found["weights_sha256"], found["metrics_sha256"], found["scores_after"]


def test_the_same_config_gives_the_same_run_bitwise(fast_config, tmp_path):
    first = fingerprint(fast_config, tmp_path / "a")
    assert fingerprint(fast_config, tmp_path / "b") == first
    assert fingerprint(fast_config, tmp_path / "c", "train.seed=1")[:2] != first[:2]


def test_the_embedded_default_is_bitwise_reproducible_at_a_fixed_thread_count(tmp_path):
    # the shipped model, solver, objective and rewards of examples/shapes-geneval.toml; one epoch and a
    # small evaluation keep it short (the budget is epochs, so nothing here depends on the clock)
    default = ROOT / "examples" / "shapes-geneval.toml"
    short = ["train.threads=1", 'eval.prompts="shapes:eval-1"', "eval.solver.steps=2", "log.progress=false"]
    first = fingerprint(default, tmp_path / "a", *short)
    assert fingerprint(default, tmp_path / "b", *short) == first
