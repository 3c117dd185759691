"""`benchmarks/reward_hacking.py`: the hackable config it builds and how it reads a run's records."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import tomli_w
import tomllib

from nft_core.config import load_config

ROOT = Path(__file__).resolve().parents[1]
_SPEC = importlib.util.spec_from_file_location("bench_hacking", ROOT / "benchmarks" / "reward_hacking.py")
hacking = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(hacking)


def test_the_hackable_config_trains_on_red_area_and_watches_geneval(fast_config, tmp_path):
    base = tomllib.loads(fast_config.read_text())
    base["objective"] = {"name": "nft", "kl_weight": 1.0}  # as the embedded default: the guards weigh it
    config = hacking.hackable_config(base)
    path = tmp_path / "hack.toml"
    path.write_text(tomli_w.dumps(config))
    for overrides in hacking.VARIANTS.values():  # every variant is a valid config
        loaded = load_config(path, [f"{k}={json.dumps(v)}" for k, v in overrides.items()] + ["eval.every=5"])
        assert [r.label for r in loaded.reward] == ["shapes-geneval", "shapes-colour-area"]
        assert [r.label for r in loaded.eval.reward] == ["geneval"] and loaded.log.best_by == "geneval"


def test_a_run_is_read_into_its_fall_its_alarm_and_its_kept_best(tmp_path):
    def evaluation(label, epoch, area, geneval):
        return {"kind": "eval", "label": label, "epoch": epoch, "eval/shapes-colour-area/score": area,
                "eval/geneval/score": geneval}  # fmt: skip

    records = [
        evaluation("before", 0, 0.05, 0.42),
        {
            "kind": "train",
            "epoch": 0,
            "seconds/sampling": 1.0,
            "seconds/reward": 0.5,
            "seconds/training": 2.5,
        },
        evaluation("epoch 4", 4, 0.08, 0.66),
        {"kind": "alarm", "epoch": 9, "alarm/reward_hacking": 1, "alarm/diversity_collapse": 1},
        evaluation("epoch 9", 9, 0.20, 0.50),
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    best = {"score": 0.66, "epoch": 4, "checkpoint": "checkpoints/step_00005", "reward": "geneval"}
    (tmp_path / "summary.json").write_text(json.dumps({"eval_best": best}))
    row = hacking.summarize({"run_dir": tmp_path})
    assert [p["epochs"] for p in row["curve"]] == [0, 5, 10]
    assert row["geneval_best"] == 0.66 and row["geneval_best_epochs"] == 5 and row["geneval_final"] == 0.5
    assert abs(row["geneval_fall_from_best"] - 0.16) < 1e-12 and row["hacking_alarm_epoch"] == 9
    assert row["alarms"] == [{"epoch": 9, "names": ["diversity_collapse", "reward_hacking"]}]
    assert row["best_checkpoint"] == {"score": 0.66, "epoch": 4, "checkpoint": "checkpoints/step_00005"}
    assert row["seconds_per_epoch"] == 4.0


def test_the_alarms_cost_is_timed_against_an_epoch(fast_config):
    cost = hacking.alarm_cost(fast_config, epochs=1)
    assert cost["probe_every"] == 5 and cost["epochs_timed"] == 1
    assert cost["epoch_seconds"] > 0 and cost["probe_seconds"] > 0 and cost["check_seconds"] > 0
    assert cost["ratio"] == (cost["probe_seconds"] / 5 + cost["check_seconds"]) / cost["epoch_seconds"]
