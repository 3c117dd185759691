"""benchmarks/gpu_check.py: its code on tiny configs on the CPU (every key of the JSON), and one line and
exit code 2 without a GPU."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
FAMILIES = ["sd3", "flux", "qwen-image", "flux2", "flux2-klein", "z-image", "sana"]
LEVERS = ["cache-first-block", "cache-taylorseer", "sdpa-cudnn", "sdpa-flash", "sdpa-efficient", "sdpa-math"]
LEVERS += ["precision", "compile-default", "compile-reduce-overhead"]
REAL_BILLIONS = {  # the real transformers' sizes, counted from the configs the check builds
    "sd3": 2.24,
    "flux": 11.9,
    "qwen-image": 20.4,
    "flux2": 32.2,
    "flux2-klein": 3.88,
    "z-image": 6.16,
    "sana": 1.60,
}
ROLLOUT = {"seconds_per_rollout", "images_per_second", "peak_memory_gib", "model_flops", "mfu"}
STEP = {"mode", "batch", "trained_parameters", "seconds_per_step", "all_seconds", "peak_memory_gib"}
STEP |= {"model_flops", "mfu", "losses", "losses_finite"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("gpu-check") / "check.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(out.read_text())


def test_the_tiny_run_writes_the_header_and_finishes(tiny):
    assert tiny["schema"] == 1 and tiny["tiny"] is True and tiny["status"] == "complete"
    assert tiny["device"] == "cpu" and tiny["gpu"] is None
    assert {"machine", "versions", "peak_bf16_tflops", "flops", "settings", "total_seconds"} <= set(tiny)
    assert tiny["settings"]["families"] == FAMILIES and tiny["settings"]["compile_families"] == []
    guard = tiny["time_guard"]
    assert guard["skipped"] == [] and guard["hard_stop"] is False and guard["in_flight"] is None
    assert guard["elapsed_seconds"] <= guard["budget_seconds"] < guard["hard_limit_seconds"]


@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_runs_each_stage(tiny, name):
    family = tiny["families"][name]
    assert {"stands_for", "pipeline", "transformer", "config", "blocks", "reduced", "reduced_why"} <= set(
        family
    )
    assert {"parameters", "parameters_real", "stand_ins", "resolution", "image_tokens", "text_tokens"} <= set(
        family
    )
    assert family["tokens"] == family["image_tokens"] + family["text_tokens"] > 0
    assert family["parameters_real"] / 1e9 == pytest.approx(REAL_BILLIONS[name], rel=0.01)
    assert family["reduced"] is False  # tiny configs are built whole
    stages = family["stages"]
    for stage in ("build", "stock_rollout", "policy", "our_rollout", "lora_step"):
        assert stages[stage]["status"] == "ok", stages[stage]
    assert ROLLOUT <= set(stages["stock_rollout"]) and ROLLOUT <= set(stages["our_rollout"])
    assert family["ratio_ours_over_stock"] > 0 and stages["our_rollout"]["mfu"] is None  # no claims on a CPU
    assert STEP <= set(stages["lora_step"]) and stages["lora_step"]["losses_finite"]
    assert stages["lora_step"]["trained_parameters"] > 0 and stages["lora_step"]["mode"] == "lora r32"
    full = stages["full_step"]
    if name in ("sd3", "sana"):  # the real models whose full fine-tuning fits 80 GB
        assert full["status"] == "ok" and full["trained_parameters"] == family["parameters"]
    else:
        assert full["status"] == "skipped" and "does not fit 80 GB" in full["reason"]
    levers = family["levers"]
    assert set(LEVERS) <= set(levers)
    assert all(levers[lever]["status"] in ("ok", "error", "skipped") for lever in LEVERS)
    assert levers["sdpa-math"]["status"] == "ok" and levers["sdpa-math"]["speedup"] > 0
    assert levers["precision"]["status"] == "ok" and levers["precision"]["speedup"] > 0
    assert levers["compile-default"]["status"] == "skipped"  # not in --tiny's --compile-families
    if name in ("sd3", "sana", "z-image"):  # transformers without diffusers' feature caches: a local error
        assert "has none" in levers["cache-first-block"]["error"]


def test_the_end_to_end_run_finished_with_finite_losses(tiny):
    run = tiny["end_to_end"]
    assert run["status"] == "ok" and run["passed"] is True, run
    assert run["summary_status"] == "finished" and run["epochs"] == 2 and run["optimizer_steps"] == 2
    assert len(run["losses"]) == 2 and all(math.isfinite(v) for v in run["losses"])
    assert len(run["seconds_scoring"]) == 2 and run["skipped_steps"] == 0


def test_without_a_gpu_it_says_so_in_one_line_and_exits_2(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    out = tmp_path / "check.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no CUDA GPU: "), done.stderr
    assert not out.exists()
