"""`nft validate` and the start of `nft run` check everything cheap before any model loads."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from nft_core import registry
from nft_core.cli.app import build_app
from nft_core.config import load_config
from nft_core.errors import ConfigError
from nft_core.loop.preflight import check_device, preflight

runner = CliRunner()


@pytest.mark.parametrize(
    "override, message",
    [
        ('data.prompts="missing.txt"', "missing.txt: prompt file not found"),
        ('eval.prompts="nosuch:thing"', "eval.prompts: 'nosuch:thing' is neither a prompt file"),
        ("data.tag_weights={colour = 2}", "data.tag_weights: unknown tag 'colour'"),
        ('train.device="cuda:7"', "train.device: 'cuda:7', but"),
        ('train.device="gpu"', "train.device: 'gpu' is not a torch device"),
        ('train.device="mps"', "train.device: 'mps', but MPS"),
        ("objective.trained_times=9", "objective.trained_times: 9 exceeds the 3 training times"),
        (
            "train.optimizer_steps_per_epoch=5",
            "train.optimizer_steps_per_epoch: 5 exceeds the 2 micro-batches",
        ),
        ('policy.init_from="no/such/run"', "policy.init_from: no/such/run is not a folder"),
        ("reward[0].weight=0", "every weight is 0"),
        ("reward[0].weight=nan", "reward[0].weight: must be a finite number"),
    ],
)
def test_validate_reports_what_would_fail_later(fast_config, override, message):
    if (
        "cuda" in override
        and torch.cuda.device_count() > 7
        or "mps" in override
        and torch.backends.mps.is_available()
    ):
        pytest.skip("this machine has that device")
    result = runner.invoke(build_app(), ["validate", str(fast_config), "--set", override])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.output, result.output


def test_portable_validation_skips_the_machine_and_its_files(fast_config):
    app = build_app()
    overrides = ["--set", 'train.device="cuda:7"', "--set", 'data.prompts="on-the-cluster.txt"']
    assert runner.invoke(app, ["validate", str(fast_config), *overrides, "--portable"]).exit_code == 0
    assert runner.invoke(app, ["validate", str(fast_config), *overrides]).exit_code == 2


def test_nft_run_checks_before_it_builds_the_policy(fast_config, tmp_path, monkeypatch):
    built = []
    create = registry.create
    monkeypatch.setattr(registry, "create", lambda kind, *a, **k: built.append(kind) or create(kind, *a, **k))
    args = ["run", str(fast_config), "--out", str(tmp_path / "runs"), "--set", 'data.prompts="typo.txt"']
    result = runner.invoke(build_app(), args)
    assert result.exit_code == 2 and "typo.txt: prompt file not found" in result.output
    assert "policies" not in built and not (tmp_path / "runs").exists()


def test_check_device_accepts_the_cpu_and_the_geometry_is_returned(fast_config):
    assert check_device("cpu") == torch.device("cpu")
    geometry = preflight(load_config(fast_config))
    assert geometry.images == 4 and geometry.trained_times == 2
    with pytest.raises(ConfigError, match="data.prompts"):
        preflight(load_config(fast_config, ['data.prompts="shapes:nonsense"']))


def test_debug_shows_the_traceback_behind_the_one_line_error(fast_config):
    app = build_app()
    args = ["validate", str(fast_config), "--set", 'train.device="gpu"']
    plain = runner.invoke(app, args)
    debug = runner.invoke(app, ["--debug", *args])
    assert plain.exit_code == debug.exit_code == 2
    assert "Traceback" not in plain.output and "Traceback" in debug.output
    assert "Traceback" not in runner.invoke(app, args).output  # --debug holds for one invocation only


def test_validate_checks_the_geometry_for_a_number_of_ranks(fast_config):
    app = build_app()
    result = runner.invoke(app, ["validate", str(fast_config), "--ranks", "3"])
    assert result.exit_code == 2
    assert "data.prompts_per_epoch x data.images_per_prompt: 4 samples do not split evenly over 3 ranks" in (
        result.output
    )
    two = runner.invoke(app, ["validate", str(fast_config), "--ranks", "2"])
    assert two.exit_code == 0 and "2 ranks: each samples 2" in two.output
