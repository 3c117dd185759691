"""Running a served reward with uvicorn: loopback by default (any other address needs a token), the port
bound before anything is announced, and uvicorn's own limits on connections, keep-alive and headers."""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from typing import Any

from nft_core.errors import JobError, UserError
from nft_rewards.serving.settings import Guards, check_guards
from nft_rewards.serving.wire import PROTOCOL, TOKEN_ENV, Limits

__all__ = ["TOKEN_ENV", "bind", "build_server", "check_bind", "is_loopback", "serve"]

GRACEFUL_SHUTDOWN_S = 5
"""On SIGTERM / Ctrl-C, requests in progress get this long before they are cut off."""

MAX_HEADER_BYTES = 16 * 2**10
"""The most bytes of request line and headers (h11's incomplete-event limit); beyond is a 400."""

_HINTS = {
    errno.EADDRINUSE: "another program listens there: pick another --port",
    errno.EACCES: "ports below 1024 need privileges: pick --port 1024 or above",
    errno.EADDRNOTAVAIL: "not an address of this machine: use 127.0.0.1, 0.0.0.0 or one of its addresses",
}


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


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to `host:port` (not listening yet); a UserError naming why when it cannot be."""
    where = f"{host}:{port}"
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        found.sort(key=lambda info: info[0] != socket.AF_INET)  # "localhost": 127.0.0.1, as clients use
        family, kind, proto, _, address = found[0]
    except (socket.gaierror, UnicodeError) as error:
        raise UserError(f"cannot listen on {where}: --host {host!r} is not an address ({error})") from None
    except OverflowError:
        raise UserError(f"cannot listen on {where}: --port must be 1..65535") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
    except OSError as error:
        sock.close()
        hint = f" ({_HINTS[error.errno]})" if error.errno in _HINTS else ""
        raise UserError(f"cannot listen on {where}: {error.strerror or error}{hint}") from None
    return sock


def build_server(
    reward: Any,
    *,
    name: str | None = None,
    host: str = "127.0.0.1",
    token: str | None = None,
    limits: Limits = Limits(),
    batch_size: int | None = None,
    guards: Guards = Guards(),
) -> Any:
    """The uvicorn server of `reward` (not started): `server.run(sockets=[bind(host, port)])` serves it;
    `server.deaths` lists why its scoring worker died (then it stops by itself)."""
    import uvicorn

    from nft_rewards.serving.app import build_app
    from nft_rewards.serving.protocol import header_deadline_protocol

    check_guards(guards, limits)
    deaths: list[str] = []

    def on_death(message: str) -> None:
        deaths.append(message)
        server.should_exit = True

    app = build_app(
        reward, name=name, token=token, limits=limits, batch_size=batch_size, guards=guards, host=host,
        on_death=on_death,
    )  # fmt: skip
    config = uvicorn.Config(
        app,
        http=header_deadline_protocol(guards.header_timeout),
        ws="none",
        loop="asyncio",
        lifespan="on",
        log_level="warning",
        access_log=False,
        server_header=False,
        limit_concurrency=guards.max_connections,
        timeout_keep_alive=guards.keep_alive,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
    )
    server = uvicorn.Server(config)
    server.deaths = deaths
    return server


def serve(
    reward: Any,
    *,
    name: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8765,
    token: str | None = None,
    limits: Limits = Limits(),
    batch_size: int | None = None,
    guards: Guards = Guards(),
    sock: socket.socket | None = None,
    echo=print,
) -> None:
    """Serve `reward` on `host:port` (or on `sock`, bound by `bind`) until interrupted (Ctrl-C / SIGTERM
    end it cleanly). A scoring worker that dies ends it with a JobError (exit code 1), for a supervisor
    to restart it."""
    token = token or os.environ.get(TOKEN_ENV) or None
    check_bind(host, token)
    server = build_server(
        reward, name=name, host=host, token=token, limits=limits, batch_size=batch_size, guards=guards
    )
    sock = sock or bind(host, port)
    try:
        sock.listen(server.config.backlog)  # connections wait in the backlog from now on
        bound_host, bound_port = sock.getsockname()[:2]
        where = f"http://{f'[{bound_host}]' if ':' in bound_host else bound_host}:{bound_port}"
        auth = "token required" if token else "no token"
        label = name or reward.name
        echo(f"serving reward {label!r} on {where} (protocol {PROTOCOL}, {auth}); Ctrl-C stops it")
        server.run(sockets=[sock])
    finally:
        sock.close()
    if server.deaths:
        raise JobError(f"reward server stopped: {server.deaths[0]}")
