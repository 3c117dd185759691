"""How a served reward protects itself beyond the wire limits: its memory budget, receive deadlines,
connection limit, and the Host and Origin headers it answers (docs/serving.md)."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

from nft_core.errors import UserError
from nft_rewards.serving.budget import required_budget
from nft_rewards.serving.wire import Limits

__all__ = ["LOOPBACK_NAMES", "Guards", "allowed_hosts", "check_guards"]

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
"""Host header names a server always answers (as starlette parses them: IPv6 in brackets)."""


@dataclass(frozen=True)
class Guards:
    """A server's protections: `max_inflight_bytes` for all requests together (503 beyond), deadlines for
    a request's headers and body (the connection closes when one passes), the most open connections (503
    beyond), and Host / Origin values answered besides loopback and `--host` (none by default)."""

    max_inflight_bytes: int = 2048 * 2**20
    header_timeout: float = 10.0
    body_timeout: float = 120.0
    keep_alive: float = 5.0
    max_connections: int = 128
    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()


def check_guards(guards: Guards, limits: Limits) -> None:
    """Refuse a budget that cannot hold one largest request (one line, exit 2 from the CLI)."""
    need = required_budget(limits)
    if guards.max_inflight_bytes < need:
        raise UserError(
            f"--max-inflight-mb {guards.max_inflight_bytes / 2**20:g} cannot hold one request of "
            f"--max-body-mb {limits.max_body_bytes / 2**20:g}: it needs at least {need / 2**20:g} MiB "
            "(6x the largest body plus its JSON header; docs/serving.md); raise it or lower --max-body-mb"
        )
    for name, value in (("--header-timeout", guards.header_timeout), ("--body-timeout", guards.body_timeout)):
        if not value > 0:
            raise UserError(f"{name} must be positive seconds, got {value}")


def _bracketed(host: str) -> str:
    try:
        return f"[{host}]" if ipaddress.ip_address(host).version == 6 else host
    except ValueError:
        return host


def _addresses(name: str) -> list[str]:
    """The addresses `name` resolves to (none when it does not)."""
    try:
        return [_bracketed(str(info[4][0])) for info in socket.getaddrinfo(name, None)]
    except (OSError, UnicodeError):
        return []


def allowed_hosts(host: str, extra: tuple[str, ...] = ()) -> list[str]:
    """The Host header names a server on `host` answers: loopback, `host` itself (with this machine's
    name and the addresses it resolves to when `host` is a wildcard address) and `extra` (`*`: any)."""
    names = [*LOOPBACK_NAMES, _bracketed(host)]
    if host in ("0.0.0.0", "::", ""):
        names += [socket.gethostname(), socket.getfqdn(), *_addresses(socket.gethostname())]
    names += [_bracketed(name.strip().lower()) for name in extra if name.strip()]
    return list(dict.fromkeys(name.lower() for name in names if name))
