"""A minimal client for OpenAI-compatible `POST {base_url}/chat/completions`, with timeouts and retries.

Standard library only. Connection failures, timeouts and HTTP 408/425/429/5xx are retried with
exponential backoff; other HTTP errors (a wrong key, an unknown model) fail at once. Every failure
ends as a one-line `UserError` naming the URL and what went wrong.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from nft_core.errors import UserError

__all__ = ["RETRYABLE_STATUS", "ChatClient"]

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


class ChatClient:
    """Sends chat-completion requests to one OpenAI-compatible server and returns the reply text."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float = 60.0,
        retries: int = 2,
        retry_backoff: float = 1.0,
        label: str = "vlm-judge",
    ) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.api_key = api_key
        self.timeout = timeout
        self.retries = retries
        self.retry_backoff = retry_backoff
        self.label = label
        host = urllib.parse.urlsplit(self.url).hostname or ""
        # a judge on this machine is never reached through an HTTP proxy from the environment
        handlers = [urllib.request.ProxyHandler({})] if host in LOOPBACK_HOSTS else []
        self.opener = urllib.request.build_opener(*handlers)

    def complete(self, payload: dict[str, Any]) -> str:
        """POST one chat-completion request; return `choices[0].message.content`."""
        body = json.dumps(payload).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        attempts = self.retries + 1
        problem = ""
        for attempt in range(attempts):
            if attempt:
                time.sleep(self.retry_backoff * 2 ** (attempt - 1))
            request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
            try:
                with self.opener.open(request, timeout=self.timeout) as response:
                    answer = response.read()
            except urllib.error.HTTPError as error:
                detail = error.read()[:200].decode("utf-8", "replace").strip()
                problem = f"HTTP {error.code} {error.reason}" + (f": {detail}" if detail else "")
                if error.code not in RETRYABLE_STATUS:
                    raise UserError(f"{self.label}: {self.url} answered {problem}") from None
                continue
            except (urllib.error.URLError, OSError) as error:  # refused, reset, timed out, no route
                reason = getattr(error, "reason", error)
                timed_out = isinstance(reason, TimeoutError)
                problem = f"timed out after {self.timeout:g} s (option timeout)" if timed_out else str(reason)
                continue
            return self._content(answer)
        raise UserError(
            f"{self.label}: cannot reach {self.url} after {attempts} attempt(s): {problem}; "
            "is the server running and is base_url right?"
        )

    def _content(self, answer: bytes) -> str:
        try:
            content = json.loads(answer)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            shown = answer[:200].decode("utf-8", "replace")
            raise UserError(f"{self.label}: {self.url} did not answer a chat completion: {shown!r}") from None
        if isinstance(content, list):  # content parts: keep the text ones
            content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        return content if isinstance(content, str) else ""
