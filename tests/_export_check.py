"""The `nft export` check every diffusers family's tests run: the exported LoRA loads into the stock
pipeline and changes its output; the merged export loads with `from_pretrained` alone and equals
LoRA-on-base within 1e-4."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from typer.testing import CliRunner


def check_export(
    run_dir: Path, model_dir: Path, pipeline_class: Any, call: dict, tmp_path: Path, output: str = "images"
) -> None:
    """Export `run_dir`'s newest checkpoint both ways and compare the `output` (images, or a video
    pipeline's frames) of `pipeline_class(**call)`."""
    from nft_core.cli.app import build_app

    runner = CliRunner()
    for args in (["--out", str(tmp_path / "lora")], ["--out", str(tmp_path / "merged"), "--merge"]):
        result = runner.invoke(build_app(), ["export", str(run_dir), *args])
        assert result.exit_code == 0, result.output
    assert (tmp_path / "lora" / "pytorch_lora_weights.safetensors").is_file()

    def images(folder: Path, lora: Path | None = None) -> torch.Tensor:
        pipeline = pipeline_class.from_pretrained(str(folder))
        pipeline.set_progress_bar_config(disable=True)
        if lora is not None:
            pipeline.load_lora_weights(str(lora))
        fresh = {key: list(value) if isinstance(value, list) else value for key, value in call.items()}
        # a copy of the prompt list each call: ZImagePipeline rewrites it in place (its chat template)
        result = pipeline(**fresh, output_type="pt", generator=torch.Generator().manual_seed(0))
        return getattr(result, output)

    before, with_lora = images(model_dir), images(model_dir, tmp_path / "lora")
    assert (with_lora - before).abs().max() > 1e-4, "the LoRA changes the stock pipeline's output"
    torch.testing.assert_close(images(tmp_path / "merged"), with_lora, rtol=0, atol=1e-4)
    again = runner.invoke(build_app(), ["export", str(run_dir), "--out", str(tmp_path / "lora")])
    assert again.exit_code == 2 and "not empty" in again.output
