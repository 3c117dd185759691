"""A loopback OpenAI-compatible chat server that plays the judge: deterministic scores, scripted failures."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest
from PIL import Image


class JudgeServer:
    """Answers `POST /v1/chat/completions`; its score depends on the image and the text (so on the prompt)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.failures: list[tuple[int, str]] = []  # (status, body) answered to the next requests
        self.delay = 0.0
        self.reply: str | None = None  # a fixed reply instead of the computed score
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @staticmethod
    def score(image: Image.Image, text: str) -> float:
        """A deterministic 1-5 score of an image and its text."""
        mean = float(np.asarray(image, dtype=np.float64).mean()) / 255
        return 1 + round(4 * ((mean * 10 + len(text) * 0.37) % 1), 2)

    def answer(self, body: dict[str, Any]) -> str:
        content = body["messages"][0]["content"]
        url = next(part["image_url"]["url"] for part in content if part["type"] == "image_url")
        text = next(part["text"] for part in content if part["type"] == "text")
        image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
        return (
            self.reply if self.reply is not None else f"Looks fine.\nFinal Score: {self.score(image, text)}"
        )

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        judge = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with judge.lock:
                    judge.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                    failure = judge.failures.pop(0) if judge.failures else None
                if judge.delay:
                    time.sleep(judge.delay)
                if failure is not None:
                    status, text = failure
                    payload = text.encode()
                else:
                    status = 200
                    message = {"role": "assistant", "content": judge.answer(body)}
                    payload = json.dumps({"choices": [{"index": 0, "message": message}]}).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def __enter__(self) -> JudgeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def judge_server() -> Iterator[JudgeServer]:
    """A judge server on a free loopback port, stopped after the test."""
    with JudgeServer() as server:
        yield server
