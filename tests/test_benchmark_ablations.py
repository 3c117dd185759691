"""`benchmarks/ablations.py` on the tiny shapes config: a group against the default, with monitors."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
_SPEC = importlib.util.spec_from_file_location("bench_ablations", ROOT / "benchmarks" / "ablations.py")
ablations = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(ablations)


def test_an_ablation_group_runs_against_the_default_and_reads_the_monitors(fast_config, tmp_path):
    out = tmp_path / "ablations"
    ablations.main(
        [
            "--base",
            str(fast_config),
            "--out",
            str(out),
            "--epochs",
            "2",
            "--eval-every",
            "1",
            "--eval-prompts",
            "shapes:eval-1",
            "--reward",
            "shapes-geneval",
            "--only",
            "positive",
        ]
    )
    result = json.loads((out / "result.json").read_text())
    positive = result["groups"]["positive"]["positive-only (rft)"]
    for row in (result["default"], positive):
        assert [p["epochs"] for p in row["curve"]] == [0, 1, 2]
        assert len(row["monitors"]["monitor/shapes-diversity/colour_entropy"]) == 2
    assert all(gap is not None for gap in result["default"]["monitors"]["v_old_gap"])
    assert all(gap is None for gap in positive["monitors"]["v_old_gap"])  # RFT has no old-policy term
    assert (out / "result.png").is_file()
