"""`python -m nft_rewards.serving NAME [--set option=value ...] [--host H] [--port P]`: serve a reward
without the trainer's command line (docs/serving.md)."""

from __future__ import annotations

import sys

import typer

from nft_core.errors import JobError, UserError
from nft_rewards.serving.command import serve_command


def main() -> None:
    """The module's command line; a bad option or name is one `error:` line and exit code 2, a scoring
    worker that died one line and exit code 1 (for a supervisor to restart the server)."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(serve_command)
    try:
        app(standalone_mode=False)
    except UserError as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(2)
    except JobError as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(1)
    except typer.Exit as stop:
        sys.exit(stop.exit_code)
    except Exception as error:  # click's usage errors
        show = getattr(error, "show", None)
        if show is None:
            raise
        show()
        sys.exit(2)


if __name__ == "__main__":
    main()
