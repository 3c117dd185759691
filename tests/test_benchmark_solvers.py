"""`benchmarks/solvers.py --runs`: a finished run is reused only when its resolved config is the same."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import tomli_w

from nft_core.config import load_config, resolved_config

ROOT = Path(__file__).resolve().parents[1]
_SPEC = importlib.util.spec_from_file_location("bench_solvers", ROOT / "benchmarks" / "solvers.py")
solvers = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(solvers)


def _resolved(overrides: list[str]) -> dict:
    return resolved_config(load_config(ROOT / "examples" / "shapes-geneval.toml", overrides))


def test_finished_run_needs_a_summary_and_the_same_resolved_config(tmp_path):
    run = tmp_path / "solver-dpm2"
    run.mkdir()
    # what the trainer writes for `nft run examples/shapes-geneval.toml`
    (run / "config.resolved.toml").write_text(tomli_w.dumps(_resolved([])))
    benchmark = _resolved(['solver.name="dpm2"', "solver.steps=6"])
    assert not solvers.is_finished_run(run, benchmark)  # no summary.json: it never finished
    (run / "summary.json").write_text("{}")
    assert solvers.is_finished_run(run, benchmark)
    assert not solvers.is_finished_run(run, _resolved(['solver.name="euler"']))
    assert not solvers.is_finished_run(run, _resolved(["train.epochs=7"]))
    assert not solvers.is_finished_run(tmp_path / "solver-euler", benchmark)
