"""`benchmarks/nft_vs_flowgrpo.py`: the recipes it builds, its ratios and intervals, and end to end on the
tiny shapes config (every method in its own process, stopped once it reaches the target)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
_SPEC = importlib.util.spec_from_file_location("bench_h2h", ROOT / "benchmarks" / "nft_vs_flowgrpo.py")
h2h = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(h2h)


def test_the_flowgrpo_config_keeps_the_loop_knobs_and_the_shift_and_replaces_the_options():
    base = {
        "objective": {"name": "nft", "beta": 1.0, "ema_decay": 0.6, "trained_times": 2},
        "solver": {"name": "dpm2", "steps": 6, "shift": 3.0},
        "train": {"lr": 1},
    }
    config = h2h.merged(base, h2h.FLOWGRPO_RECIPE)
    assert "beta" not in config["objective"] and config["objective"]["ema_decay"] == 0.6
    assert config["objective"]["trained_times"] == 9 and config["train"]["optimizer_steps_per_epoch"] == 2
    assert config["solver"] == {"name": "euler", "steps": 10, "grid": "diffusers", "shift": 3.0}
    assert base["objective"]["beta"] == 1.0  # the base is left as it was
    paper = h2h.merged(config, h2h.PAPER_PROTOCOL)  # same objective: its options are updated
    assert paper["objective"]["guidance"] == 4.5 and paper["objective"]["kl_weight"] == 0.04
    assert paper["eval"]["guidance"] == 4.5 and config["objective"]["guidance"] == 1.0


def test_the_bootstrap_ratio_is_the_ratio_of_means_inside_its_interval():
    assert h2h.bootstrap_ratio([3.0, 3.0], [1.5, 1.5]) == {"ratio": 2.0, "interval": [2.0, 2.0]}
    spread = h2h.bootstrap_ratio([2.0, 4.0, 6.0], [1.0, 2.0, 3.0], resamples=2000)
    assert spread["ratio"] == pytest.approx(2.0)
    low, high = spread["interval"]
    assert 2 / 3 <= low < 2.0 < high <= 6.0  # the extremes: all of one side's smallest over the largest


def _row(seed, minutes, images=None, epochs_run=10):
    reached = None if minutes is None else {"train_minutes": minutes, "epochs": 1, "images": images}
    return {"seed": seed, "to": {"0.7": reached}, "images": epochs_run * 96}


def test_a_seed_that_never_reached_the_target_counts_as_the_cap_and_makes_a_lower_bound():
    nft = [_row(0, 1.0, 960), _row(1, 2.0, 1920)]
    other = [_row(0, 3.0, 960), _row(1, None, epochs_run=40)]
    ratio = h2h.time_ratio(other, nft, "0.7", cap_minutes=7.5)
    assert ratio["minutes"] == [3.0, 7.5] and ratio["images"] == [960, 3840]
    assert ratio["capped_seeds"] == [1] and ratio["lower_bound"]
    assert ratio["minutes_ratio"]["ratio"] == pytest.approx(10.5 / 3.0)
    assert ratio["images_ratio"]["ratio"] == pytest.approx(4800 / 2880)
    assert h2h.time_ratio(other, [_row(0, None)], "0.7", 7.5)["ratio"] is None  # nothing to divide by


def test_the_benchmark_stops_each_run_at_the_target_and_writes_both_protocols(fast_config, tmp_path):
    out = tmp_path / "h2h"
    # target 0: the evaluation before training reaches it, so every run is stopped after one epoch
    result = h2h.main(
        [
            *("--base", str(fast_config), "--out", str(out), "--seeds", "0", "--targets", "0"),
            *("--reward", "shapes-geneval", "--eval-prompts", "shapes:eval-1", "--eval-every", "1", "1"),
            *("--sweep", "1", "--nft-max-minutes", "1", "--jobs", "2"),
        ]
    )
    assert result == json.loads((out / "result.json").read_text()) and (out / "result.png").is_file()
    assert set(result["methods"]) == {"nft", "flowgrpo", "flowgrpo-paper"}
    for name, method in result["methods"].items():
        (run,) = method["runs"]
        assert run["to"]["0"] == {"train_minutes": 0.0, "epochs": 0, "images": 0}
        assert 1 <= run["epochs"] <= 2 and method["peak_rss_mib"] > 0  # stopped, not at epoch 100,000
        if name != "nft":
            assert method["against_nft"]["0"]["ratio"] is None  # the base already scores the target
    recorded = json.loads(
        (out / "runs" / "flowgrpo-paper" / "lr0.0003_noise_level0.7" / "seed0" / "run.json").read_text()
    )
    assert recorded["measured"]["stopped_at_target"]
    paper = tomllib.loads(
        (out / "runs" / "flowgrpo-paper" / "lr0.0003_noise_level0.7" / "seed0" / "config.toml").read_text()
    )
    assert paper["eval"]["guidance"] == 4.5 and paper["objective"]["guidance"] == 4.5
    nft, flowgrpo = (result["methods"][m]["stored_bytes_per_sample"] for m in ("nft", "flowgrpo"))
    assert nft * (10 + 1) <= flowgrpo  # NFT keeps <= 1/(steps + 1) of FlowGRPO's bytes per sample
    assert result["stored_bytes_nft_over_flowgrpo"] == nft / flowgrpo
    assert len(result["flowgrpo_sweep"]) == 1 and result["flowgrpo_best_setting"] == h2h.SWEEP[0]
