"""Rewards for the serving tests, built by `python -m nft_rewards.serving _served_rewards:NAME` (with
tests/ as the working directory), and a served reward in a thread of the test's own process."""

from __future__ import annotations

import threading
import time
import urllib.request
from typing import Any, ClassVar

import torch
from pydantic import Field

from nft_rewards.base import BaseReward, RewardOptions


class FlakyOptions(RewardOptions):
    """Options of `Flaky`."""

    delay: float = Field(0.0, ge=0, description="seconds each call sleeps (lets requests queue up)")
    fail: bool = Field(False, description="raise on every call (a reward that is broken)")


class Flaky(BaseReward):
    """Mean brightness plus its call's batch size as a detail; raises on the prompt "boom" (a reward
    failing on one request's input), or always with `fail`; scores NaN for the prompt "nan" (a per-sample
    failure); raises SystemExit on the prompt "exit" (what no reward should do: it ends the worker)."""

    name: ClassVar[str] = "flaky"
    Options = FlakyOptions

    def __init__(self, options: FlakyOptions) -> None:
        super().__init__(options)
        self.native_range = (0.0, 1.0)

    def score_batch(self, images: torch.Tensor, prompts: list[str], metadata: Any):
        time.sleep(self.options.delay)
        if "exit" in prompts:
            raise SystemExit("exit prompt")
        if self.options.fail or "boom" in prompts:
            raise RuntimeError("boom prompt")
        scores = images.float().mean(dim=(1, 2, 3))
        scores[[prompt == "nan" for prompt in prompts]] = float("nan")  # a per-sample failure
        return scores, {"size": torch.full((len(prompts),), float(len(prompts)))}


def flaky(**options: Any) -> Flaky:
    """The `Flaky` reward from keyword options."""
    return Flaky.from_options(**options)


class ServerThread:
    """A served reward on a free 127.0.0.1 port in a thread of this process (so a test can patch the
    server's modules), started on enter once it answers `/health` and stopped on exit."""

    def __init__(self, reward: Any, startup_timeout: float = 20.0, **options: Any) -> None:
        from nft_rewards.serving.server import bind, build_server

        self.server = build_server(reward, **options)
        self.sock = bind("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.startup_timeout = startup_timeout
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def app(self) -> Any:
        return self.server.config.app

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1) as answer:
                    if answer.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        self.__exit__()
        raise RuntimeError(f"reward server thread did not answer on {self.url}")

    def __exit__(self, *_: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.sock.close()
