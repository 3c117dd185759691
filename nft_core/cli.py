"""The `nft` command line: run, validate, plugins, plugin new (plus commands that plugins register)."""

from __future__ import annotations

import json
import re
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


def warn_plugin_errors() -> None:
    """One stderr line per installed plugin that failed to import; the command goes on without it."""
    from nft_core.plugins import load_errors, load_plugins

    load_plugins()
    for error in load_errors:
        distribution = f" (distribution {error.distribution})" if error.distribution else ""
        typer.echo(f"warning: plugin {error.name!r}{distribution} failed to load: {error.error}", err=True)


@app.command()
def run(
    config: Path = typer.Argument(..., help="TOML run config"),
    set_: list[str] = typer.Option([], "--set", help="override as KEY=VALUE (TOML literal), repeatable"),
    out: Path = typer.Option(Path("runs"), help="folder that holds run directories"),
) -> None:
    """Train: collect -> score -> NFT update -> eval, writing runs/<name>/."""
    from nft_core.config import load_config
    from nft_core.trainer import Trainer, unique_run_dir

    warn_plugin_errors()
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

    warn_plugin_errors()
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


plugin_app = typer.Typer(
    help="Write plugins: `nft plugin new NAME` scaffolds a package.", no_args_is_help=True
)
app.add_typer(plugin_app, name="plugin")

TEMPLATE_DIR = Path(__file__).resolve().parent / "plugin_template"
"""The plugin template, shipped in the package (`plugins/nft-plugin-template` in a checkout links to it):
one folder per kind, each a working plugin named by the tokens."""
TEMPLATE_TOKENS = ("nft-plugin-template", "nft_plugin_template", "PluginTemplate", "plugin-template")
"""Distribution, module, class prefix and registered name of the template; replaced in that order."""
SKIPPED_PARTS = frozenset({"__pycache__", "build", "dist"})
PLUGIN_NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


def scaffold_plugin(name: str, kind: str, out: Path, template: Path = TEMPLATE_DIR) -> Path:
    """Copy the template of `kind` to `out/<distribution>`, replacing its tokens; return the new folder.

    `name` is the distribution (`nft-colorfulness`) or the registered name (`colorfulness`): the
    distribution gets an `nft-` prefix, the module is the distribution with underscores, the
    registered name drops the prefix, and the class prefix is its CamelCase (`Colorfulness`).
    """
    if not PLUGIN_NAME.match(name) or name == "nft":
        raise UserError(
            f"plugin name {name!r}: use lowercase letters, digits and single hyphens, e.g. nft-sharpness"
        )
    registered = name.removeprefix("nft-")
    distribution = f"nft-{registered}"
    values = (distribution, distribution.replace("-", "_"), registered.title().replace("-", ""), registered)
    source = template / kind
    if not source.is_dir():
        kinds = sorted(p.name for p in template.iterdir() if p.is_dir()) if template.is_dir() else []
        raise UserError(
            f"--kind {kind!r}: no template at {source}; kinds: {', '.join(kinds) or 'none (pass --template)'}"
        )
    target = out / distribution
    if target.exists():
        raise UserError(f"{target} already exists; choose another --out or name")

    def substitute(text: str) -> str:
        for token, value in zip(TEMPLATE_TOKENS, values, strict=True):
            text = text.replace(token, value)
        return text

    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        # caches and build leftovers of a template that was itself installed or linted
        skipped = any(part.startswith(".") or part in SKIPPED_PARTS for part in relative.parts)
        if path.is_dir() or skipped or path.suffix == ".pyc" or ".egg-info" in str(relative):
            continue
        destination = target / substitute(str(relative))
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_text(substitute(path.read_text(encoding="utf-8")), encoding="utf-8")
    return target


@plugin_app.command("new")
def plugin_new(
    name: str = typer.Argument(..., help="distribution name, e.g. nft-sharpness (the nft- prefix is added)"),
    kind: str = typer.Option("reward", help="what the plugin registers: reward or solver"),
    out: Path = typer.Option(Path("."), help="folder in which the plugin's folder is created"),
    template: Path = typer.Option(TEMPLATE_DIR, help="template folder (one subfolder per kind)"),
) -> None:
    """Create a plugin package: pyproject with the `nft` entry point, the module, tests (conformance kit)."""
    try:
        target = scaffold_plugin(name, kind, out, template)
    except UserError as error:
        fail(error)
    typer.echo(f"created {target}; next: pip install -e {target} && pytest {target / 'tests'}")


def build_app() -> typer.Typer:
    """The app with every plugin's commands added (a broken plugin is reported, never fatal)."""
    from nft_core.plugins import load_plugins

    load_plugins().hook.register_commands(app=app)
    return app


def main() -> None:
    """Console-script entry point."""
    try:
        build_app()
        app()
    except UserError as error:  # bad input, also from a plugin's command: one line, exit 2
        typer.echo(f"error: {error}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
