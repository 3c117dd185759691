"""`nft export`: a run's checkpoint as weights that load without this project.

The policy writes them (`policy.export(checkpoint, out, merge)`): for the diffusers policies the LoRA in
diffusers' format (`pipeline.load_lora_weights(out)`) or, with `--merge`, a whole pipeline folder with
the LoRA fused in (`from_pretrained(out)`). A policy without `export` says so in one line.
"""

from __future__ import annotations

from pathlib import Path

from nft_core import registry
from nft_core.cli.sample import resolve_source, verify_source
from nft_core.config import load_config
from nft_core.errors import UserError
from nft_core.io import check_output_folder
from nft_core.protocols import ExportablePolicy

__all__ = ["add_export_command", "export_checkpoint"]


def export_checkpoint(
    source: Path, out: Path, merge: bool = False, config: Path | None = None, best: bool = False
) -> list[str]:
    """Export the checkpoint `source` (a checkpoint folder, or a run folder: its newest, or with `best` its
    best) into `out` (new or empty); returns the files written. A checkpoint whose files differ from
    the digests its state.json records is refused before anything loads."""
    checkpoint, config_path = resolve_source(source, config, best)
    if checkpoint is None:
        raise UserError(f"{source}: a run config has no trained weights; pass a run or checkpoint folder")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out}: exists and is not empty (export writes a new folder)")
    check_output_folder(out)  # before any model loads
    verify_source(checkpoint)
    if out.exists():
        out.rmdir()
    run = load_config(config_path)
    policy = registry.create("policies", run.policy.name, run.policy.options(), "policy")
    if not isinstance(policy, ExportablePolicy):
        raise UserError(f"policy {run.policy.name!r} cannot export its weights (it has no `export`)")
    return policy.export(str(checkpoint), str(out), merge)


def add_export_command(app) -> None:
    """Register `nft export` on the Typer app."""
    import typer

    @app.command("export")
    def export_command(
        source: Path = typer.Argument(..., help="run folder (its newest checkpoint) or a checkpoint folder"),
        out: Path = typer.Option(..., "--out", help="output folder (new or empty)"),
        merge: bool = typer.Option(
            False,
            "--merge",
            help="a whole pipeline folder with the LoRA fused in (loads with from_pretrained)",
        ),
        checkpoint: Path | None = typer.Option(
            None, "--checkpoint", help="a checkpoint folder of the run (default: its newest)"
        ),
        config: Path | None = typer.Option(
            None, "--config", help="run config (default: the run's resolved one)"
        ),
        best: bool = typer.Option(
            False, "--best", help="the run's best checkpoint (its best evaluation by log.best_by)"
        ),
    ) -> None:
        """Export a checkpoint: the LoRA in diffusers' format, or with --merge a whole pipeline folder."""
        written = export_checkpoint(checkpoint or source, out, merge, config, best)
        typer.echo(f"exported {len(written)} file(s) into {out}")
