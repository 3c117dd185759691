"""`nft weights download REWARD [--dir DIR]` / `nft weights list`: the built-in rewards' checkpoints;
`nft reward serve NAME` (nft_rewards.serving).

Added to the `nft` Typer app by `nft_rewards.plugin.register_commands`. (`nft score` and `nft eval`,
which score with any registered reward, built-in or installed, live with the core's commands.)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import typer

from nft_core.errors import UserError

__all__ = ["add_commands"]


def _guard(function: Callable[[], None]) -> None:
    try:
        function()
    except UserError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None


def weights_download_command(
    reward: str = typer.Argument(..., help="reward name"),
    directory: Path | None = typer.Option(
        None, "--dir", help="weights directory (default $NFT_WEIGHTS_DIR or HF cache)"
    ),
) -> None:
    """Download a reward's default weights (needs internet) into the weights directory or the HF cache."""

    def run() -> None:
        from nft_rewards.weights import download

        for path in download(reward, str(directory) if directory else None):
            typer.echo(str(path))

    _guard(run)


def weights_list_command() -> None:
    """The hub files each reward needs with its default options."""
    from nft_rewards.weights import WEIGHTS, weights_dir

    root = weights_dir()
    for reward, items in WEIGHTS.items():
        if not items:
            typer.echo(f"{reward}: no download needed")
        for item in items:
            where = f" -> {root / item.repo_id}" if root else ""
            typer.echo(f"{reward}: {item.repo_id} [{', '.join(item.patterns)}] {item.purpose}{where}")


def _group(app: typer.Typer, name: str, help_text: str) -> typer.Typer:
    """The sub-app `name` of `app`, created unless another plugin already added it."""
    for info in getattr(app, "registered_groups", []):
        if info.name == name and info.typer_instance is not None:
            return info.typer_instance
    group = typer.Typer(help=help_text, no_args_is_help=True)
    app.add_typer(group, name=name)
    return group


def add_commands(app: typer.Typer) -> None:
    """Add `weights download|list` and `reward serve` to the `nft` Typer app."""
    weights = _group(app, "weights", "Reward model weights.")
    if any(info.name == "download" for info in weights.registered_commands):
        return  # added by an earlier build of the app
    weights.command("download")(weights_download_command)
    weights.command("list")(weights_list_command)
    from nft_rewards.serving.command import serve_command

    _group(app, "reward", "Serve a reward over HTTP (docs/serving.md).").command("serve")(serve_command)
