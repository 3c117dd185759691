"""The `nft` command line: run, validate, plugins (plus commands that plugins register)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from nft_core.errors import UserError

app = typer.Typer(
    help="DiffusionNFT: online RL for flow-matching image models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def fail(error: Exception) -> None:
    """A user error: one line on stderr, exit code 2."""
    typer.echo(f"error: {error}", err=True)
    raise typer.Exit(2)


@app.command()
def run(
    config: Path = typer.Argument(..., help="TOML run config"),
    set_: list[str] = typer.Option([], "--set", help="override as KEY=VALUE (TOML literal), repeatable"),
    out: Path = typer.Option(Path("runs"), help="folder that holds run directories"),
) -> None:
    """Train: collect -> score -> NFT update -> eval, writing runs/<name>/."""
    from nft_core.config import load_config
    from nft_core.trainer import Trainer, unique_run_dir

    try:
        loaded = load_config(config, set_)
        trainer = Trainer(loaded, unique_run_dir(out, loaded.name), echo=typer.echo)
        summary = trainer.run()
    except UserError as error:
        fail(error)
    typer.echo(json.dumps({k: summary[k] for k in ("run_dir", "train_seconds", "wall_seconds")}))


@app.command()
def validate(
    config: Path = typer.Argument(..., help="TOML run config"),
    set_: list[str] = typer.Option([], "--set", help="override as KEY=VALUE (TOML literal), repeatable"),
) -> None:
    """Check a config (keys, types, plugin names and their options) without running it."""
    from nft_core.config import load_config

    try:
        loaded = load_config(config, set_)
    except UserError as error:
        fail(error)
    typer.echo(
        f"{config}: ok (policy {loaded.policy.name}, sampler {loaded.sampler.name}, "
        f"rewards {', '.join(r.name for r in loaded.reward)})"
    )


@app.command()
def plugins() -> None:
    """JSON: each plugin's distribution, version, hooks and registered names; plugins that failed to load."""
    from nft_core import plugins as plugin_module
    from nft_core import registry

    manager = plugin_module.load_plugins()
    names_by_plugin: dict[str, dict[str, list[str]]] = {}
    for kind in registry.KINDS:
        for name, registration in registry.registrations(kind).items():
            names_by_plugin.setdefault(registration.plugin, {}).setdefault(kind, []).append(name)
    listing = []
    for plugin_name, plugin in manager.list_name_plugin():
        distribution, version = plugin_module.plugin_distribution(plugin_name)
        hooks = sorted(caller.name for caller in manager.get_hookcallers(plugin) or [])
        listing.append(
            {
                "name": plugin_name,
                "distribution": distribution,
                "version": version,
                "hooks": hooks,
                "registers": names_by_plugin.get(plugin_name, {}),
            }
        )
    errors = [vars(error) for error in plugin_module.load_errors]
    typer.echo(json.dumps({"plugins": listing, "errors": errors}, indent=2))


def build_app() -> typer.Typer:
    """The app with every plugin's commands added (a broken plugin is reported, never fatal)."""
    from nft_core.plugins import load_plugins

    load_plugins().hook.register_commands(app=app)
    return app


def main() -> None:
    """Console-script entry point."""
    try:
        build_app()
    except UserError as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(2)
    app()
