"""`nft reward serve NAME [--set option=value ...]` and `python -m nft_rewards.serving NAME ...`.

Inside `nft`, NAME is any registered reward (built-in or a plugin's): the core passes its loader in the
Typer context. Run as a module, NAME is a built-in reward or `package.module:factory` (a callable that
takes the options as keywords and returns a reward), so nothing but this package needs to be installed.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any

import typer

from nft_core.errors import UserError
from nft_core.options import parse_option
from nft_rewards.serving.wire import Limits

__all__ = ["load_for_serving", "serve_command"]


def load_for_serving(name: str, options: dict[str, Any]) -> Any:
    """A built-in reward by name, or the reward `module:factory(**options)` builds."""
    if ":" in name:
        module, _, attribute = name.partition(":")
        try:
            factory = getattr(importlib.import_module(module), attribute)
        except (ImportError, AttributeError) as error:
            raise UserError(
                f"reward {name!r}: cannot import {attribute!r} from {module!r}: {error}"
            ) from None
        return factory(**options)
    import nft_rewards

    return nft_rewards.load(name, **options)


def serve_command(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="reward name (`nft plugins` lists them), or module:factory"),
    set_: list[str] = typer.Option(
        [], "--set", "-o", help="reward option key=value (value read as JSON, else a string), repeatable"
    ),
    host: str = typer.Option("127.0.0.1", help="address to listen on; other than loopback needs --token"),
    port: int = typer.Option(8765, min=1, max=65535, help="port to listen on"),
    token: str | None = typer.Option(
        None, help="require Authorization: Bearer TOKEN (default: $NFT_REWARD_TOKEN if set)"
    ),
    device: str = typer.Option("cpu", help="device the reward runs on (cpu, cuda, cuda:1, ...)"),
    batch_size: int | None = typer.Option(
        None, min=1, help="merge concurrent requests up to this many images (default: the reward's)"
    ),
    max_body_mb: float = typer.Option(256.0, min=0.001, help="largest request body, in MiB"),
    max_images: int = typer.Option(1024, min=1, help="most images in one request"),
    max_inflight_mb: float = typer.Option(
        2048.0,
        min=1.0,
        help="memory all requests in flight may hold together, in MiB (beyond: 503 + Retry-After); "
        "at least 6x --max-body-mb plus the JSON header's share",
    ),
    header_timeout: float = typer.Option(
        10.0, min=0.001, help="seconds a connection has to send a request's headers (then it is closed)"
    ),
    body_timeout: float = typer.Option(
        120.0, min=0.001, help="seconds a request has to send its body once its headers arrived (then 408)"
    ),
    max_connections: int = typer.Option(128, min=1, help="most open connections (beyond: 503)"),
    allow_host: list[str] = typer.Option(
        [],
        "--allow-host",
        help="Host header name answered besides loopback and --host (repeatable; * for any)",
    ),
    allow_origin: list[str] = typer.Option(
        [],
        "--allow-origin",
        help="Origin (e.g. https://app.example.org) whose requests are answered; default: none",
    ),
    threads: int | None = typer.Option(
        None, min=1, help="torch CPU threads (the same count as in-process gives bit-identical CPU scores)"
    ),
) -> None:
    """Serve a reward over HTTP (loopback by default) for the `remote` reward: docs/serving.md."""
    from nft_rewards.serving.server import TOKEN_ENV, bind, check_bind, serve
    from nft_rewards.serving.settings import Guards, check_guards

    token = token or os.environ.get(TOKEN_ENV) or None
    check_bind(host, token)  # before a model loads
    limits = Limits(max_body_bytes=int(max_body_mb * 2**20), max_images=max_images)
    guards = Guards(
        max_inflight_bytes=int(max_inflight_mb * 2**20),
        header_timeout=header_timeout,
        body_timeout=body_timeout,
        max_connections=max_connections,
        allowed_hosts=tuple(allow_host),
        allowed_origins=tuple(allow_origin),
    )
    check_guards(guards, limits)
    options = dict(parse_option(pair) for pair in set_)
    sock = bind(host, port)  # the port is ours (or one line, exit 2) before a model loads
    try:
        if threads:
            import torch

            torch.set_num_threads(threads)
        root = ctx.find_root().obj
        loader: Callable[..., Any] | None = root.get("load_reward") if isinstance(root, dict) else None
        reward = loader(name, **options) if loader and ":" not in name else load_for_serving(name, options)
        moved = reward.to(device)
        reward = moved if moved is not None else reward
        serve(
            reward,
            name=name,
            host=host,
            port=port,
            token=token,
            limits=limits,
            batch_size=batch_size,
            guards=guards,
            sock=sock,
            echo=lambda line: typer.echo(line, err=True),
        )
    finally:
        sock.close()
