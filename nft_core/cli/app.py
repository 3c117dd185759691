"""The `nft` command line: run, validate, plugins, score, eval, sample, plugin new (plus plugins' commands).

Every command sees the same registry: the built-in plugins and the installed ones.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import traceback
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup

try:  # typer >= 0.2x carries its own copy of click
    from typer._click import exceptions as cli_errors
except ImportError:  # older typer runs on click itself
    from click import exceptions as cli_errors

from nft_core.cli.scaffold import TEMPLATE_DIR, scaffold_plugin
from nft_core.errors import JobError, UserError
from nft_core.options import parse_option

_NO_ARGS = getattr(cli_errors, "NoArgsIsHelpError", ())
"""`nft` alone shows the help (click >= 8.2 raises this for `no_args_is_help`)."""


class _OneLineErrors(TyperGroup):
    """The `nft` group: a bad command line, or a UserError from any command (a plugin's included), is one
    `error:` line on stderr and exit code 2, never a usage box or a traceback."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra: Any) -> Any:
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _NO_ARGS as error:
            typer.echo(error.ctx.get_help() if error.ctx else str(error))
            sys.exit(0)
        except cli_errors.UsageError as error:
            where = f" (see `{error.ctx.command_path} --help`)" if error.ctx else ""
            typer.echo(f"error: {error.format_message()}{where}", err=True)
            sys.exit(2)
        except UserError as error:
            _print_traceback_if_debugging(error)
            typer.echo(f"error: {error}", err=True)
            sys.exit(2)
        except JobError as error:
            _print_traceback_if_debugging(error)
            typer.echo(f"error: {error}", err=True)
            sys.exit(1)
        except typer.Abort:
            typer.echo("aborted", err=True)
            sys.exit(1)
        except cli_errors.ClickException as error:
            error.show()
            sys.exit(error.exit_code)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=_OneLineErrors,
    help="DiffusionNFT: online RL for flow-matching image models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
SET_HELP = "override as KEY=VALUE (TOML literal), repeatable"
OPTION_HELP = "reward option key=value (value read as JSON, else a string), repeatable"


DEBUG_ENV = "NFT_DEBUG"
"""Set to 1 (or pass `nft --debug`) to see the traceback behind a one-line error."""


@app.callback()
def _options(
    ctx: typer.Context,
    debug: bool = typer.Option(False, "--debug", help="print the traceback behind a one-line error"),
) -> None:
    """DiffusionNFT: online RL for flow-matching image models."""
    _debug["on"] = debug
    ctx.obj = {"load_reward": _load_reward}  # plugins' commands build any registered reward with it


def _load_reward(name: str, **options: Any) -> Any:
    from nft_core import api

    return api.load_reward(name, **options)


_debug = {"on": False}


def _quiet(*_: Any) -> None:
    """The echo of ranks other than 0 under torchrun: rank 0 speaks for the job."""


def _print_traceback_if_debugging(error: Exception) -> None:
    if _debug["on"] or os.environ.get(DEBUG_ENV) == "1":
        traceback.print_exception(error, file=sys.stderr)


def fail(error: Exception) -> None:
    """A user error: one line on stderr (with `--debug`, its traceback first), exit code 2."""
    _print_traceback_if_debugging(error)
    typer.echo(f"error: {error}", err=True)
    raise typer.Exit(2)


def warn_plugin_errors() -> None:
    """One stderr line per installed plugin that failed to import; the command goes on without it."""
    from nft_core.plugins import load_errors, load_plugins

    load_plugins()
    for error in load_errors:
        distribution = f" (distribution {error.distribution})" if error.distribution else ""
        typer.echo(f"warning: plugin {error.name!r}{distribution} failed to load: {error.error}", err=True)


def _preflight(config: Path, loaded: Any, portable: bool = False, ranks: int = 1) -> Any:
    """`preflight` with the config file named in its error, as the config's own errors name it."""
    from nft_core.errors import ConfigError
    from nft_core.loop.preflight import preflight

    try:
        return preflight(loaded, portable=portable, ranks=ranks)
    except ConfigError as error:
        raise ConfigError(f"{config}: {error}") from None


@app.command()
def run(
    config: Path = typer.Argument(..., help="TOML run config"),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    out: Path = typer.Option(Path("runs"), help="folder that holds run directories"),
    resume: str | None = typer.Option(
        None,
        "--resume",
        help="go on with a stopped run: its run directory, one of its checkpoint folders, or `auto` (the "
        "newest run of this config's name under --out, if it has a checkpoint; else a new run)",
    ),
) -> None:
    """Train: collect -> score -> NFT update -> eval, writing runs/<name>/."""
    from nft_core.config import load_config
    from nft_core.io import check_output_folder
    from nft_core.loop.trainer import Trainer
    from nft_core.state.resume import check_same_run, resolve_resume
    from nft_core.state.run_dir import create_run_dir, discard_unused_run_dir, lock_run_dir

    warn_plugin_errors()
    main = os.environ.get("RANK", "0") == "0"  # under torchrun rank 0 picks, makes and locks the run dir
    say = typer.echo if main else _quiet
    try:
        loaded = load_config(config, set_)
        check_output_folder(out)  # before any model loads
        _preflight(config, loaded, ranks=int(os.environ.get("WORLD_SIZE", "1")))
        found = resolve_resume(resume, out, loaded.name, say) if resume else None
        if found is not None:
            run_dir, checkpoint = found
            check_same_run(run_dir, loaded, checkpoint, int(os.environ.get("WORLD_SIZE", "1")))
            check_output_folder(run_dir, "--resume")
        else:
            run_dir, checkpoint = (create_run_dir(out, loaded.name) if main else out / loaded.name), None
            if resume == "auto":
                say(f"--resume auto: no checkpoint of a run named {loaded.name!r} in {out}; a new run")
        try:
            with lock_run_dir(run_dir, enabled=main):  # before the model loads; `Trainer.run` holds it too
                trainer = Trainer(loaded, run_dir, echo=typer.echo)
                summary = trainer.run(resume=checkpoint)
        except BaseException:
            if main and found is None:
                discard_unused_run_dir(run_dir)
            raise
        trainer.dist.close()  # not after a failure: the other ranks may be stuck in a collective
        run_dir = trainer.run_dir
    except UserError as error:
        fail(error)
    if summary.get("status") == "diverged":  # every rank exits non-zero; rank 0 says why
        if trainer.dist.is_main:
            good = summary.get("last_good_checkpoint")
            where = (
                f"the last good checkpoint is {good} (a new run starts from it with policy.init_from and a "
                "lower train.lr)"
                if good
                else "no optimizer step was taken, so there is no good state to save"
            )
            typer.echo(
                f"error: the run diverged at epoch {summary.get('epoch')}: {summary.get('reason')}; {where}",
                err=True,
            )
        raise typer.Exit(1)
    if not trainer.dist.is_main:  # rank 0 speaks for the job
        return
    if summary.get("status") == "interrupted":
        sets = [arg for override in set_ for arg in ("--set", override)]
        again = shlex.join(["nft", "run", str(config), *sets, "--resume", str(run_dir)])
        launcher = " (under the same torchrun command)" if trainer.dist.enabled else ""
        typer.echo(f"resume with: {again}{launcher}")
        return
    typer.echo(
        json.dumps({k: summary.get(k) for k in ("run_dir", "status", "train_seconds", "wall_seconds")})
    )


@app.command()
def validate(
    config: Path = typer.Argument(..., help="TOML run config"),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    portable: bool = typer.Option(
        False,
        "--portable",
        help="skip what depends on this machine: the device, prompt files, the warm-start folder",
    ),
    ranks: int = typer.Option(1, "--ranks", min=1, help="data-parallel ranks to check the geometry for"),
) -> None:
    """Check a config without running it: keys, types, plugin names and options, prompt sources, the
    batch geometry against the solver's grid and, unless --portable, the device, prompt sources and the
    warm-start folder."""
    from nft_core.config import load_config

    warn_plugin_errors()
    try:
        loaded = load_config(config, set_)
        geometry = _preflight(config, loaded, portable, ranks)
    except UserError as error:
        fail(error)
    from nft_core.loop.levers import build_levers, describe_rollout

    typer.echo(
        f"{config}: ok (policy {loaded.policy.name}, solver {loaded.solver.name}, "
        f"rewards {', '.join(r.name for r in loaded.reward)}; {geometry.describe()}; "
        f"{describe_rollout(loaded, build_levers(loaded), 'cpu' if portable else loaded.train.device)})"
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


def _reward(name: str, options: list[str] | None, device: str):
    from nft_core import api
    from nft_core.loop.preflight import check_device

    check_device(device, "--device")
    return api.load_reward(name, **dict(parse_option(pair) for pair in options or [])).to(device)


def _check_out_file(out: Path) -> None:
    """A UserError, before any scoring, unless `out` can be written as a file."""
    from nft_core.io import check_output_folder

    if out.is_dir():
        raise UserError(f"--out {out}: a folder; give a file to write, e.g. {out / 'scores.jsonl'}")
    check_output_folder(out.parent, "--out")


def _write_rows(path: Path, images: Any, output: Any) -> None:
    """One JSON line per image: file, prompt, tag (if any), score, details and note."""
    from nft_core.io import atomic_write_text, strict_json

    lines = []
    for i, file in enumerate(images.files):
        row: dict[str, Any] = {"image": str(file), "prompt": images.prompts[i]}
        if images.metadata is not None and "tag" in images.metadata[i]:
            row["tag"] = images.metadata[i]["tag"]
        row["score"] = float(output.scores[i])
        row.update({key: float(values[i]) for key, values in output.details.items()})
        if output.notes is not None:
            row["note"] = output.notes[i]
        lines.append(strict_json(row) + "\n")  # a NaN score: null, with `non_finite`
    atomic_write_text(path, "".join(lines))


@app.command()
def score(
    reward: str = typer.Argument(..., help="reward name (any registered one: `nft plugins` lists them)"),
    images: list[Path] = typer.Option(
        ...,
        "--images",
        help="a folder of images or image files (repeatable); larger than NFT_MAX_IMAGE_PIXELS (default "
        "4096*4096*4) is refused",
    ),
    prompts: Path | None = typer.Option(None, "--prompts", help="text file, one prompt per image"),
    metadata: Path | None = typer.Option(None, "--metadata", help="JSONL, one object per image (GenEval)"),
    out: Path = typer.Option(Path("scores.jsonl"), "--out", help="where to write one JSON line per image"),
    option: list[str] | None = typer.Option(None, "--option", "-o", help=OPTION_HELP),
    device: str = typer.Option("cpu", "--device", help="torch device for the reward model"),
) -> None:
    """Score images with one reward; prompts (and metadata) pair with the images in order."""
    from nft_core.cli.image_folders import ImageSet, image_files, score_files
    from nft_core.loop.images import check_images
    from nft_core.loop.prompts import read_prompt_file

    warn_plugin_errors()
    try:
        _check_out_file(out)
        files = image_files(images)
        items = read_prompt_file(metadata) if metadata else None
        meta = None if items is None else [item.metadata for item in items]
        if prompts is not None:
            texts = [item.prompt for item in read_prompt_file(prompts)]
        elif items is not None:
            texts = [item.prompt for item in items]
        else:
            raise UserError("give --prompts (one per image) or --metadata with a prompt field")
        if len(texts) != len(files):
            raise UserError(f"{len(files)} images but {len(texts)} prompts (they are paired in order)")
        if meta is not None and len(meta) != len(files):
            raise UserError(f"{len(files)} images but {len(meta)} metadata lines (they are paired in order)")
        check_images(files)  # every header, before the reward model loads
        found = ImageSet(files, texts, meta)
        output = score_files(_reward(reward, option, device), found)
        _write_rows(out, found, output)
    except UserError as error:
        fail(error)
    typer.echo(f"{reward}: {len(files)} images, mean score {float(output.scores.mean()):.6g} -> {out}")


@app.command("eval")
def eval_(
    reward: str = typer.Argument(..., help="reward name, e.g. geneval or shapes-geneval"),
    images: Path = typer.Option(
        ...,
        "--images",
        help="folder written by `nft sample` (GenEval or flat); images larger than NFT_MAX_IMAGE_PIXELS "
        "(default 4096*4096*4) are refused",
    ),
    out: Path | None = typer.Option(None, "--out", help="per-image results (JSONL)"),
    option: list[str] | None = typer.Option(None, "--option", "-o", help=OPTION_HELP),
    device: str = typer.Option("cpu", "--device", help="torch device"),
) -> None:
    """Evaluate a folder of generated images and print the reward's summary (GenEval: the official one).

    The folder is GenEval's layout (`<index>/metadata.jsonl`, `<index>/samples/*.png`) or, with a
    `prompts.txt` beside the images, the flat one.
    """
    from nft_core.cli.image_folders import ImageSet, image_files, metadata_layout, score_files
    from nft_core.loop.images import check_images
    from nft_core.loop.prompts import read_prompt_file

    warn_plugin_errors()
    try:
        if out is not None:
            _check_out_file(out)
        if (images / "prompts.txt").is_file():
            files = image_files([images])
            found = ImageSet(files, [item.prompt for item in read_prompt_file(images / "prompts.txt")])
            if len(found.prompts) != len(files):
                raise UserError(
                    f"{images}: {len(files)} images but {len(found.prompts)} lines in prompts.txt"
                )
        else:
            found = metadata_layout(images)
        check_images(found.files)  # every header, before the reward model loads
        model = _reward(reward, option, device)
        output = score_files(model, found, progress=True)
        summary = model.aggregate(output, found.prompts, found.metadata)
        if out is not None:
            _write_rows(out, found, output)
    except UserError as error:
        fail(error)
    typer.echo(summary.report or f"{reward}: {len(found.files)} images, score {summary.score:.6g}")


@app.command()
def report(
    run_dir: Path = typer.Argument(..., help="run directory (it holds summary.json)"),
    other: Path | None = typer.Argument(None, help="a second run directory: the two side by side"),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="HTML file to write (default: RUN_DIR/report.html; two runs: RUN_DIR/compare-<OTHER>.html)",
    ),
) -> None:
    """One self-contained HTML page of a run (or two compared): scores, per-tag tables, curves, grids,
    phase times, monitors, status, machine and config; it makes no network request (docs/report.md)."""
    from nft_core.outputs.report import write_report
    from nft_core.outputs.report_compare import write_comparison

    try:
        if out is not None:
            _check_out_file(out)
        written = write_report(run_dir, out) if other is None else write_comparison(run_dir, other, out)
    except UserError as error:
        fail(error)
    typer.echo(f"report: {written}")


plugin_app = typer.Typer(
    help="Write plugins: `nft plugin new NAME` scaffolds a package.", no_args_is_help=True
)
app.add_typer(plugin_app, name="plugin")


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
    """The app with `nft sample`, `nft export` and every plugin's commands added (a broken plugin is
    reported)."""
    from nft_core.cli.export import add_export_command
    from nft_core.cli.sample import add_sample_command
    from nft_core.plugins import load_plugins

    if not any(info.name == "sample" for info in app.registered_commands):
        add_sample_command(app)
        add_export_command(app)
        load_plugins().hook.register_commands(app=app)  # once: a second call would add them again
    return app


def main() -> None:
    """Console-script entry point."""
    try:
        build_app()
        app()
    except UserError as error:  # bad input, also from a plugin's command: one line, exit 2
        _print_traceback_if_debugging(error)
        typer.echo(f"error: {error}", err=True)
        sys.exit(2)
