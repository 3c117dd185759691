"""`train.precision`: auto picks bf16 only where it is native; fp16 trains with a loss scaler."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import tomllib
import torch

from nft_core.config import load_config
from nft_core.errors import ConfigError
from nft_core.loop import precision
from nft_core.loop.trainer import Trainer


@pytest.mark.parametrize(
    ("onednn_bf16", "capability", "expected"),
    [(True, "AVX512", "bf16"), (False, "AVX512", "fp32"), (True, "AVX2", "fp32"), (False, "DEFAULT", "fp32")],
)
def test_auto_is_bf16_only_on_a_cpu_with_native_bf16(monkeypatch, onednn_bf16, capability, expected):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: onednn_bf16)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    assert precision.resolve_precision("auto", "cpu") == expected
    for chosen in ("fp32", "bf16", "fp16"):
        assert precision.resolve_precision(chosen, "cpu") == chosen


def test_auto_is_fp32_where_torch_dispatches_avx2_kernels():
    """The real probe, not a mock: with ATen and oneDNN limited to AVX2 (as on a CPU without AVX-512)."""
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    code = (
        "import json, torch; from nft_core.loop.precision import resolve_precision; "
        "print(json.dumps([torch.backends.cpu.get_cpu_capability(), resolve_precision('auto', 'cpu')]))"
    )
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert json.loads(result.stdout) == ["AVX2", "fp32"]


def test_a_cuda_device_without_cuda_has_no_native_bf16():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert precision.resolve_precision("auto", "cuda") == "fp32"
    with pytest.raises(ConfigError, match="train.precision: 'fp8' is not one of auto, fp32, bf16, fp16"):
        precision.resolve_precision("fp8", "cpu")


def test_the_run_prints_and_records_what_auto_chose(fast_config, tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "native_bf16", lambda device: False)
    lines: list[str] = []
    config = load_config(fast_config, ['train.precision="auto"', "train.epochs=1"])
    trainer = Trainer(config, tmp_path / "run", echo=lines.append)
    assert trainer.precision == "fp32"
    trainer.run()
    assert any(line.startswith("precision: fp32 (train.precision = auto: cpu (") for line in lines), lines
    resolved = tomllib.loads((tmp_path / "run" / "config.resolved.toml").read_text())
    assert resolved["train"]["precision"] == "fp32"


def test_fp16_trains_with_a_loss_scaler(fast_config, tmp_path):
    trainer = Trainer(load_config(fast_config, ['train.precision="fp16"']), tmp_path / "run", echo=print)
    assert trainer.updater.scaler.is_enabled() and trainer.updater.scaler.get_scale() > 1
    before = [p.detach().clone() for _, p in trainer.policy.trainable_parameters()]
    samples = trainer.collect()
    losses = trainer.updater.step(samples, torch.linspace(0, 1, len(samples)))
    assert all(torch.isfinite(torch.tensor(v)) for k, v in losses.items() if k != "grad_norm")
    after = [p for _, p in trainer.policy.trainable_parameters()]
    assert all(p.dtype == torch.float32 for p in after)
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_fp32_and_bf16_leave_the_scaler_out(fast_config, tmp_path):
    for chosen in ("fp32", "bf16"):
        trainer = Trainer(load_config(fast_config, [f'train.precision="{chosen}"']), tmp_path / chosen)
        assert not trainer.updater.scaler.is_enabled()
