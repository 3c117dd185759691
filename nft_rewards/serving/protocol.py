"""uvicorn's h11 protocol with a header deadline: a connection whose request headers are not complete
within `header_timeout` seconds (from its opening, or from the end of its previous answer) is closed.

uvicorn bounds the size of the headers (h11's incomplete-event limit), idle keep-alive connections and
the number of connections, but not the time a client takes to send its headers: one byte every few
seconds would hold a connection for ever (slowloris). The app cannot help, since it is called only once
the headers are complete; the body deadline is the app's (`nft_rewards.serving.receive`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["header_deadline_protocol"]


def header_deadline_protocol(header_timeout: float) -> type[H11Protocol]:
    """The h11 protocol class for uvicorn's `http=` with the given header deadline, in seconds."""

    class HeaderDeadlineProtocol(H11Protocol):
        """H11Protocol that closes a connection whose request headers do not arrive in time."""

        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def handle_events(self) -> None:
            cycle = self.cycle
            super().handle_events()
            if self.cycle is not cycle and not self._waiting():  # a request's headers are complete
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and self._waiting():
                self._arm()

        def _waiting(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(header_timeout, self._expired)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _expired(self) -> None:
            self._header_timer = None
            if self._waiting() and not self.transport.is_closing():
                self.transport.close()

    return HeaderDeadlineProtocol
