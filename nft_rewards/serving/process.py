"""A served reward as a child process on a free loopback port: for scripts, benchmarks and tests.

with RewardServer("ocr", {"use_angle_cls": False}) as server:
    reward = nft_rewards.load("remote", url=server.url)
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

__all__ = ["RewardServer", "free_port"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RewardServer:
    """`python -m nft_rewards.serving NAME --set k=v ...` on 127.0.0.1, started on enter (after `/health`
    answers) and stopped on exit. `args` are more command-line options (`["--threads", "1"]`); `program`
    replaces `python -m nft_rewards.serving` (e.g. with `nft reward serve`)."""

    def __init__(
        self,
        name: str,
        options: dict[str, Any] | None = None,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
        cwd: str | Path | None = None,
        startup_timeout: float = 120.0,
        program: list[str] | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        pairs = [f"{key}={json.dumps(value)}" for key, value in (options or {}).items()]
        program = program or [sys.executable, "-m", "nft_rewards.serving"]
        self.command = [*program, name, "--port", str(self.port)]
        self.command += [item for pair in pairs for item in ("--set", pair)] + list(args or [])
        self.env = {**os.environ, **(env or {})}
        self.cwd = cwd
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen | None = None
        self._log: Any = None

    def __enter__(self) -> RewardServer:
        self._log = tempfile.TemporaryFile()  # a pipe could fill up and stall the server
        self.process = subprocess.Popen(
            self.command, env=self.env, cwd=self.cwd, stdout=subprocess.DEVNULL, stderr=self._log
        )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                error = self.log()
                raise RuntimeError(f"reward server exited with {self.process.returncode}: {error.strip()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1) as answer:
                    if answer.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        self.__exit__()
        raise RuntimeError(f"reward server did not answer on {self.url} within {self.startup_timeout} s")

    def __exit__(self, *_: Any) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def log(self) -> str:
        """What the server wrote to stderr so far."""
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace").strip()
