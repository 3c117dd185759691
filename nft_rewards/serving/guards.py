"""What keeps web pages away from a served reward: a Host allow-list (DNS rebinding) and no cross-origin
requests (a page on any site could otherwise make a token-less loopback server score).

Host: starlette's `TrustedHostMiddleware` (400 for another Host). Origin: browsers send it with every
cross-origin request and every POST; a request carrying one that is not allowed is a 403 before the app
sees it. The server sends no `Access-Control-*` header, so no browser lets a page read an answer.
"""

from __future__ import annotations

from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from nft_rewards.serving.wire import error_body

__all__ = ["OriginCheck", "guard_middleware"]


class OriginCheck:
    """ASGI middleware: a 403 for any request with an `Origin` header not in `allowed`."""

    def __init__(self, app: ASGIApp, allowed: tuple[str, ...] = ()) -> None:
        self.app = app
        self.allowed = {origin.rstrip("/").lower() for origin in allowed}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            origin = next((value for key, value in scope["headers"] if key == b"origin"), None)
            if origin is not None and origin.decode("latin-1").rstrip("/").lower() not in self.allowed:
                body = error_body("cross-origin requests are refused (this Origin is not in --allow-origin)")
                headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
                await send({"type": "http.response.start", "status": 403, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def guard_middleware(hosts: list[str], origins: tuple[str, ...]) -> list[Middleware]:
    """The Host and Origin checks, outermost first."""
    return [
        Middleware(TrustedHostMiddleware, allowed_hosts=hosts, www_redirect=False),
        Middleware(OriginCheck, allowed=origins),
    ]
