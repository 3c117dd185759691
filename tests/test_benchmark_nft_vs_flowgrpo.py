"""`benchmarks/nft_vs_flowgrpo.py` end to end on the tiny shapes config: every method runs in its own
process under the same budget, and the result holds curves, time ratios, memory and stored bytes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_SPEC = importlib.util.spec_from_file_location("bench_h2h", ROOT / "benchmarks" / "nft_vs_flowgrpo.py")
h2h = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(h2h)


def test_the_flowgrpo_config_keeps_the_loop_knobs_and_replaces_the_objective_options():
    base = {
        "objective": {"name": "nft", "beta": 1.0, "ema_decay": 0.6, "trained_times": 2},
        "train": {"lr": 1},
    }
    config = h2h.merged(base, h2h.FLOWGRPO_RECIPE)
    assert "beta" not in config["objective"] and config["objective"]["ema_decay"] == 0.6
    assert config["objective"]["trained_times"] == 9 and config["train"]["optimizer_steps_per_epoch"] == 2
    assert base["objective"]["beta"] == 1.0  # the base is left as it was


def test_time_ratio_counts_a_run_that_never_reached_the_target_as_the_budget():
    nft = [{"minutes_to_target": 1.0}, {"minutes_to_target": 2.0}]
    other = [{"minutes_to_target": 3.0}, {"minutes_to_target": None}]
    ratio = h2h.time_ratio(other, nft, budget=5.0)
    assert ratio["per_seed"] == [3.0, 2.5] and ratio["lower_bound"] and ratio["spread"] == [2.5, 3.0]


def test_the_benchmark_runs_every_method_and_writes_its_result(fast_config, tmp_path):
    out = tmp_path / "h2h"
    h2h.main(
        [
            "--base",
            str(fast_config),
            "--out",
            str(out),
            "--budget-minutes",
            "0.02",
            "--seeds",
            "0",
            "1",
            "--target",
            "0.5",
            "--reward",
            "shapes-geneval",
            "--eval-prompts",
            "shapes:eval-1",
            "--eval-every",
            "1",
            "1",
            "--sweep",
            "1",
        ]
    )
    result = json.loads((out / "result.json").read_text())
    assert set(result["methods"]) == {"nft", "flowgrpo"} and (out / "result.png").is_file()
    for method in result["methods"].values():
        assert len(method["runs"]) == 2 and method["peak_rss_mib"] > 0
        assert all(run["curve"] and run["epochs"] >= 1 for run in method["runs"])
    nft, flowgrpo = (result["methods"][m]["stored_bytes_per_sample"] for m in ("nft", "flowgrpo"))
    assert nft * (10 + 1) <= flowgrpo  # NFT keeps <= 1/(steps + 1) of FlowGRPO's bytes per sample
    assert result["stored_bytes_nft_over_flowgrpo"] == nft / flowgrpo
    assert len(result["flowgrpo_sweep"]) == 1 and result["flowgrpo_best_setting"] == h2h.SWEEP[0]
