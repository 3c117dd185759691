"""benchmarks/gpu_step.py: the GPU measurement's code, run on a tiny config on the CPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_step.py"


def test_the_tiny_config_runs_both_modes_on_the_cpu(tmp_path):
    out = tmp_path / "step.json"
    args = ["--tiny", "--device", "cpu", "--batch", "2", "--repeats", "1", "--warmup", "0", "--out", str(out)]
    subprocess.run([sys.executable, str(SCRIPT), *args], check=True, capture_output=True)
    runs = json.loads(out.read_text())["runs"]
    assert [run["mode"] for run in runs] == ["lora r32", "full fine-tuning (one GPU, no FSDP2)"]
    # the base parameters counted alike; a LoRA trains its adapters, full fine-tuning everything
    assert runs[0]["parameters"] == runs[1]["parameters"] == runs[1]["trained_parameters"]
    assert 0 < runs[0]["trained_parameters"] != runs[1]["trained_parameters"]
    assert all(run["seconds_per_micro_step"] > 0 for run in runs)


def test_without_a_gpu_it_says_so_and_exits_2():
    if torch.cuda.is_available():
        return
    done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True)
    assert done.returncode == 2 and "no CUDA GPU here" in done.stdout
