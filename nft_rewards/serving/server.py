"""Running a served reward with uvicorn: loopback by default; any other address needs a token."""

from __future__ import annotations

import ipaddress
import os
from typing import Any

from nft_core.errors import UserError
from nft_rewards.serving.wire import TOKEN_ENV, Limits

__all__ = ["TOKEN_ENV", "check_bind", "is_loopback", "serve"]


def is_loopback(host: str) -> bool:
    """Whether `host` is a loopback address (only this machine can connect)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse to listen beyond this machine without a token (one line, exit 2 from the CLI)."""
    if not is_loopback(host) and not token:
        raise UserError(
            f"--host {host} is reachable from other machines: give a token with --token or ${TOKEN_ENV} "
            "(clients send it as Authorization: Bearer TOKEN), or keep the default --host 127.0.0.1"
        )


def serve(
    reward: Any,
    *,
    name: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8765,
    token: str | None = None,
    limits: Limits = Limits(),
    batch_size: int | None = None,
    echo=print,
) -> None:
    """Serve `reward` on `host:port` until interrupted (Ctrl-C / SIGTERM end it cleanly)."""
    import uvicorn

    from nft_rewards.serving.app import build_app

    token = token or os.environ.get(TOKEN_ENV) or None
    check_bind(host, token)
    app = build_app(reward, name=name, token=token, limits=limits, batch_size=batch_size)
    where = f"http://{host}:{port}"
    auth = "token required" if token else "no token"
    echo(f"serving reward {name or reward.name!r} on {where} (protocol 1, {auth}); Ctrl-C stops it")
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
