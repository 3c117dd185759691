"""reference/cli.md: every command and subcommand of `nft` (the Typer app of `nft_core.cli.app.build_app`,
plugins' commands included) with its help, arguments and options."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import typer.main

from nft_core.cli.app import build_app
from nft_docs.text import cell, code, escape, table

PAGE = "reference/cli.md"

SKIPPED_OPTIONS = {"--help"}
"""Every command has `--help`; the page says so once."""


@dataclass(frozen=True)
class Command:
    """One command of the tree: its path (`nft weights download`), the click command and its context."""

    path: str
    command: Any
    context: Any


def command_tree(app: typer.Typer | None = None) -> list[Command]:
    """Every visible command of the app, depth first in the order `nft --help` lists them."""
    root = typer.main.get_command(app or build_app())
    found: list[Command] = []

    def walk(command: Any, path: str, parent: Any) -> None:
        # the command's own Context class: typer >= 0.2x carries a click of its own
        context = command.context_class(command, info_name=path.split()[-1], parent=parent)
        found.append(Command(path, command, context))
        for name in getattr(command, "list_commands", lambda _: [])(context):
            child = command.get_command(context, name)
            if child is not None and not getattr(child, "hidden", False):
                walk(child, f"{path} {name}", context)

    walk(root, "nft", None)
    return found


def anchor(path: str) -> str:
    """The anchor of a command's section: `nft-weights-download`."""
    return path.replace(" ", "-")


def _usage(entry: Command) -> str:
    arguments = [param for param in entry.command.params if param.param_type_name == "argument"]
    words = [entry.path, "[OPTIONS]", *(param.name.upper() for param in arguments)]
    if hasattr(entry.command, "list_commands"):
        words += ["COMMAND", "[ARGS]..."]
    return " ".join(words)


def _rows(entry: Command) -> list[tuple[str, str]]:
    rows = []
    for param in entry.command.get_params(entry.context):
        if param.param_type_name == "argument":
            required = "required" if param.required else "optional"
            rows.append(
                (code(param.name.upper()), cell(f"argument ({required}). {getattr(param, 'help', '') or ''}"))
            )
            continue
        if set(param.opts) & SKIPPED_OPTIONS or getattr(param, "hidden", False):
            continue
        record = param.get_help_record(entry.context)
        if record is None:
            continue
        declaration, help_text = record
        rows.append((code(declaration), cell(help_text)))
    return rows


def _help(command: Any) -> str:
    text = inspect.cleandoc(command.help or command.short_help or "")
    paragraphs = [paragraph.replace("\b", "").strip() for paragraph in text.split("\n\n")]
    return "\n\n".join(escape(paragraph) for paragraph in paragraphs if paragraph)


def render_cli_reference(app: typer.Typer | None = None) -> str:
    """The markdown of reference/cli.md."""
    entries = command_tree(app)
    parts = [
        "# Command line reference",
        "",
        "Generated from the `nft` command tree when the site is built: the built-in commands and those "
        "of every plugin installed where the site was built (`register_commands`). Every command also "
        "takes `--help`. A bad command line or bad input is one `error: ...` line on stderr and exit "
        "code 2; `nft --debug COMMAND ...` (or `NFT_DEBUG=1`) prints the traceback behind it.",
        "",
        table(
            ("command", "what it does"),
            [(f"[`{e.path}`](#{anchor(e.path)})", cell(e.command.get_short_help_str(120))) for e in entries],
        ),
        "",
    ]
    for entry in entries:
        level = "#" * min(1 + max(entry.path.count(" "), 1), 4)  # nft, nft run: ##; nft weights list: ###
        parts += [f"{level} `{entry.path}` {{#{anchor(entry.path)}}}", "", _help(entry.command), ""]
        parts += ["```", _usage(entry), "```", ""]
        rows = _rows(entry)
        if rows:
            parts += [table(("argument / option", "meaning"), rows), ""]
    return "\n".join(parts).rstrip() + "\n"
