"""The reward server's protections, each fault replayed: a worker fault (the next request is answered), a
worker that dies (the server exits 1 for its supervisor), the memory budget (503, and the peak RSS of
three maximum-size requests), slow clients (headers a byte at a time, bodies that never come), the Host
and Origin checks, binding errors (one line, exit 2), SIGTERM, and request ids (a retry is scored once).
Servers run on free loopback ports, in a thread of this process (to inject faults) or as child processes
(to measure them), and stop with their test."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import torch
from _served_rewards import ServerThread, flaky
from typer.testing import CliRunner

from nft_core.cli.app import build_app
from nft_rewards.serving import batcher
from nft_rewards.serving.budget import required_budget
from nft_rewards.serving.process import RewardServer
from nft_rewards.serving.settings import Guards
from nft_rewards.serving.wire import CONTENT_TYPE, Limits, decode_output, encode_request

TESTS = Path(__file__).resolve().parent
MiB = 2**20


def body(n: int = 1, seed: int = 0, prompts: list[str] | None = None, side: int = 8) -> bytes:
    images = torch.rand(n, 3, side, side, generator=torch.Generator().manual_seed(seed))
    return encode_request(images, prompts or ["ok"] * n)


def post(url: str, content: bytes, timeout: float = 20.0, **headers: str) -> httpx.Response:
    headers = {"Content-Type": CONTENT_TYPE, **{k.replace("_", "-"): v for k, v in headers.items()}}
    return httpx.post(f"{url}/score", content=content, headers=headers, timeout=timeout)


def health(url: str) -> dict:
    return httpx.get(f"{url}/health", timeout=5).json()


def wait_until(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def test_a_fault_outside_the_reward_fails_the_requests_it_held_and_the_worker_goes_on(monkeypatch):
    real, injected = batcher.merge_images, []

    def merge_without_memory(images):
        if not injected:
            injected.append(True)
            raise MemoryError("injected: no memory to merge the batch")
        return real(images)

    monkeypatch.setattr(batcher, "merge_images", merge_without_memory)
    with ServerThread(flaky(delay=0.5), name="flaky", batch_size=8) as server:
        with ThreadPoolExecutor(3) as pool:
            first = pool.submit(post, server.url, body(seed=0))
            wait_until(lambda: health(server.url)["busy_seconds"] is not None)
            merged = [pool.submit(post, server.url, body(seed=seed)) for seed in (1, 2)]
            wait_until(lambda: health(server.url)["queued_requests"] == 2)  # both wait: they merge
            answers = [future.result(timeout=20) for future in merged]
        assert first.result().status_code == 200
        assert [answer.status_code for answer in answers] == [500, 500]
        assert "MemoryError: injected" in answers[0].json()["error"] and injected
        state = health(server.url)
        assert (state["status"], state["worker_alive"], state["worker_faults"]) == ("ok", True, 1)
        assert post(server.url, body(seed=3)).status_code == 200  # the next request is answered
        assert post(server.url, body(seed=4)).status_code == 200


def test_a_worker_that_dies_fails_what_it_holds_and_the_server_exits_1_for_its_supervisor():
    with RewardServer("_served_rewards:flaky", {"delay": 0.3}, cwd=TESTS) as server:
        with ThreadPoolExecutor(2) as pool:
            dying = pool.submit(post, server.url, body(prompts=["exit"]))
            wait_until(lambda: health(server.url)["busy_seconds"] is not None)
            queued = pool.submit(post, server.url, body())
            answers = [dying.result(timeout=20), queued.result(timeout=20)]
        assert [answer.status_code for answer in answers] == [503, 503], [a.text for a in answers]
        assert "scoring worker died: SystemExit" in answers[0].json()["error"]
        assert server.process.wait(timeout=20) == 1
        errors = [line for line in server.log().splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "scoring worker died: SystemExit: exit prompt" in errors[0]


HEALTH_POLLER = """
import select, sys, time, urllib.request
url, slowest, polls = sys.argv[1], 0.0, 0
while not select.select([sys.stdin], [], [], 0.05)[0]:  # until the test closes this stdin
    started = time.monotonic()
    urllib.request.urlopen(url, timeout=10).read()
    slowest, polls = max(slowest, time.monotonic() - started), polls + 1
print(slowest, polls)
"""


def test_three_maximum_size_requests_stay_within_the_memory_budget_and_health_answers_throughout():
    """Three concurrent uint8 bodies of just under the 64 MiB limit (float32 in the worker: 4x) on a
    server whose budget is the least it accepts: its peak RSS stays under the budget + 1 GiB, and
    `/health` (polled from another process) answers within 1 s throughout."""
    limits = Limits(max_body_bytes=64 * MiB)
    budget_mb = required_budget(limits) // MiB
    args = ["--max-body-mb", "64", "--max-inflight-mb", str(budget_mb), "--threads", "1"]
    images = torch.randint(0, 256, (21, 3, 1024, 1024), dtype=torch.uint8)  # 63 MiB on the wire
    content = encode_request(images, ["ok"] * 21)
    expected = images.float().div_(255).mean(dim=(1, 2, 3))
    del images
    assert 60 * MiB < len(content) <= limits.max_body_bytes

    def client(url: str) -> torch.Tensor:
        for _ in range(60):
            answer = post(url, content, timeout=60)
            if answer.status_code != 503:
                break
            time.sleep(float(answer.headers["retry-after"]))
        assert answer.status_code == 200, answer.text
        return decode_output(answer.content, 21).scores

    with RewardServer("_served_rewards:flaky", args=args, cwd=TESTS) as server:
        command = [sys.executable, "-c", HEALTH_POLLER, f"{server.url}/health"]
        poller = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        with ThreadPoolExecutor(3) as pool:
            scores = list(pool.map(client, [server.url] * 3))
        slowest, polls = poller.communicate(timeout=30)[0].split()
        status = Path(f"/proc/{server.process.pid}/status").read_text()
        peak_kib = int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1])
    for found in scores:
        torch.testing.assert_close(found, expected, rtol=0, atol=1e-6)
    assert peak_kib * 2**10 <= (budget_mb + 1024) * MiB, f"peak RSS {peak_kib / 1024:.0f} MiB"
    assert float(slowest) < 1.0 and int(polls) > 3, (slowest, polls)
    print(f"peak RSS {peak_kib / 1024:.0f} MiB (budget {budget_mb} MiB); slowest /health {slowest} s")


def test_the_budget_answers_503_with_retry_after_and_takes_the_request_once_there_is_room():
    limits = Limits(max_body_bytes=MiB)
    guards = Guards(max_inflight_bytes=required_budget(limits))  # room for one header-heavy request
    heavy = encode_request(torch.rand(150, 3, 1, 1), ["x" * 4000] * 150)  # a 600 kB JSON header
    reward = flaky(delay=0.6, batch_size=256)
    with ServerThread(reward, name="flaky", limits=limits, guards=guards) as server:
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(post, server.url, heavy)
            wait_until(lambda: health(server.url)["inflight_bytes"] > 0)
            busy = post(server.url, heavy)
            assert busy.status_code == 503 and busy.headers["retry-after"] == "1", busy.text
            assert "try again" in busy.json()["error"]
            assert first.result(timeout=20).status_code == 200
        assert post(server.url, heavy).status_code == 200 and health(server.url)["inflight_bytes"] == 0


def closed(sock: socket.socket, answers: dict) -> bool:
    """Whether the server closed `sock` (what it sent first is kept in `answers[sock]`)."""
    try:
        while True:
            readable, _, _ = select.select([sock], [], [], 0)
            if not readable:
                return False
            data = sock.recv(65536)
            if not data:
                return True
            answers[sock] = answers.get(sock, b"") + data
    except OSError:
        return True


def test_slow_clients_do_not_delay_a_valid_request_and_are_closed_at_their_deadline():
    """50 slowloris connections: 40 send their headers a byte every 0.2 s, 10 send headers whose
    Content-Length promises a body that never comes. A valid request is answered in well under 1 s, and
    every slow connection is closed by the 2 s deadlines (plus polling slack)."""
    deadline = 2.0
    args = ["--header-timeout", str(deadline), "--body-timeout", str(deadline)]
    with RewardServer("_served_rewards:flaky", args=args, cwd=TESTS) as server:
        head = f"POST /score HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {CONTENT_TYPE}\r\n".encode()
        drippers, liars, opened, closed_at, sent, answers = [], [], {}, {}, {}, {}
        for index in range(50):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            opened[sock] = time.monotonic()
            if index < 40:
                sent[sock] = sock.send(head[:1])
                drippers.append(sock)
            else:
                sock.sendall(head + b"Content-Length: 1000000\r\n\r\n" + bytes(10))
                liars.append(sock)
        valid_seconds = None
        while len(closed_at) < 50 and time.monotonic() - min(opened.values()) < deadline + 3:
            for sock in drippers + liars:
                if sock in closed_at:
                    continue
                if closed(sock, answers):
                    closed_at[sock] = time.monotonic()
                elif sock in drippers:
                    try:
                        at = sent[sock] % len(head)
                        sent[sock] += sock.send(head[at : at + 1])
                    except OSError:
                        closed_at[sock] = time.monotonic()
            if valid_seconds is None and time.monotonic() - min(opened.values()) > 1.0:  # mid-attack
                started = time.monotonic()
                assert post(server.url, body(), timeout=10).status_code == 200
                valid_seconds = time.monotonic() - started
            time.sleep(0.2)
        lived = [closed_at[sock] - opened[sock] for sock in closed_at]
        for sock in opened:
            sock.close()
        assert valid_seconds < 1.0, valid_seconds
        assert len(closed_at) == 50, f"{50 - len(closed_at)} slow connections still open"
        assert deadline - 0.1 < min(lived) and max(lived) < deadline + 1.0, (min(lived), max(lived))
        assert all(b" 408 " in answers.get(sock, b"") for sock in liars)
        assert post(server.url, body(), timeout=10).status_code == 200
    print(f"valid request during the slowloris: {valid_seconds:.3f} s; slow ones lived {max(lived):.2f} s")


def test_host_and_origin_are_checked_no_cors_and_connections_are_limited():
    guards = Guards(allowed_origins=("https://trainer.example",), max_connections=8, header_timeout=3)
    with ServerThread(flaky(), name="flaky", guards=guards) as server:
        port = server.url.rsplit(":", 1)[1]
        for host in ("rebound.example", f"rebound.example:{port}", "127.0.0.2"):  # DNS rebinding
            answer = httpx.get(f"{server.url}/info", headers={"Host": host})
            assert answer.status_code == 400, host
            assert httpx.get(f"{server.url}/health", headers={"Host": host}).status_code == 400
        for host in ("localhost", f"127.0.0.1:{port}", f"localhost:{port}"):
            assert httpx.get(f"{server.url}/info", headers={"Host": host}).status_code == 200, host
        page = {"Origin": "https://any-site.example"}  # a web page's request: refused before scoring
        refused = httpx.post(
            f"{server.url}/score", content=body(), headers={"Content-Type": CONTENT_TYPE, **page}
        )
        assert refused.status_code == 403 and "Origin" in refused.json()["error"]
        preflight = httpx.options(
            f"{server.url}/score", headers={**page, "Access-Control-Request-Method": "POST"}
        )
        allowed = post(server.url, body(), Origin="https://trainer.example")
        assert preflight.status_code == 403 and allowed.status_code == 200
        for answer in (refused, preflight, allowed, httpx.get(f"{server.url}/info", headers=page)):
            assert not [key for key in answer.headers if key.lower().startswith("access-control")]
        idle = [socket.create_connection(("127.0.0.1", int(port))) for _ in range(8)]
        try:
            assert httpx.get(f"{server.url}/health").status_code == 503  # uvicorn's connection limit
        finally:
            for sock in idle:
                sock.close()
        wait_until(lambda: httpx.get(f"{server.url}/health").status_code == 200)


def serve_args(*args: str) -> list[str]:
    return ["reward", "serve", "jpeg-compressibility", *args]


def test_binding_errors_and_bad_options_are_one_line_and_exit_2_with_nothing_served():
    runner = CliRunner()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        cases = {
            "port taken": (["--port", port], "Address already in use (another program listens there"),
            "not this machine's": (
                ["--host", "192.0.2.1", "--token", "t"],
                "Cannot assign requested address",
            ),
            "no such host": (["--host", "no-such-host.invalid", "--token", "t"], "is not an address"),
            "budget too small": (
                ["--max-inflight-mb", "100"],
                "cannot hold one request of --max-body-mb 256",
            ),
        }
        if os.geteuid() != 0:
            cases["privileged port"] = (["--port", "80"], "ports below 1024 need privileges")
        for case, (args, message) in cases.items():
            result = runner.invoke(build_app(), serve_args(*args))
            assert result.exit_code == 2 and message in result.output, (case, result.output)
            assert result.output.count("\n") == 1 and "serving reward" not in result.output, (
                case,
                result.output,
            )
        module = [sys.executable, "-m", "nft_rewards.serving", "jpeg-compressibility", "--port", port]
        done = subprocess.run(module, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and done.stdout == "", done
        assert done.stderr.count("\n") == 1 and "Address already in use" in done.stderr, done.stderr


def test_sigterm_lets_the_request_in_progress_finish_and_exits_promptly():
    with RewardServer("_served_rewards:flaky", {"delay": 1.0}, cwd=TESTS) as server:
        with ThreadPoolExecutor(1) as pool:
            answer = pool.submit(post, server.url, body())
            wait_until(lambda: health(server.url)["busy_seconds"] is not None)
            stopped = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            assert answer.result(timeout=20).status_code == 200
        server.process.wait(timeout=10)
        assert time.monotonic() - stopped < 6.0


def test_a_retried_request_id_is_scored_once_and_a_request_whose_client_left_is_dropped():
    with ServerThread(flaky(delay=0.6), name="flaky", batch_size=1) as server:
        content = body(n=2, seed=7)
        with pytest.raises(httpx.TimeoutException):  # the client gives up; the server goes on scoring
            post(server.url, content, timeout=0.2, X_Request_Id="call-1")
        again = post(server.url, content, X_Request_Id="call-1")  # the retry joins the first scoring
        assert again.status_code == 200 and health(server.url)["calls"] == 1
        late = post(server.url, content, X_Request_Id="call-1")  # answered from memory at once
        assert late.content == again.content and health(server.url)["calls"] == 1
        assert post(server.url, body(n=3), X_Request_Id="call-1").status_code == 409
        assert post(server.url, content, X_Request_Id="\x01").status_code == 400
        with ThreadPoolExecutor(1) as pool:  # a request without id whose client leaves while it waits
            busy = pool.submit(post, server.url, body(seed=1))
            wait_until(lambda: health(server.url)["busy_seconds"] is not None)
            with pytest.raises(httpx.TimeoutException):
                post(server.url, body(seed=2), timeout=0.2)
            assert busy.result(timeout=20).status_code == 200
        wait_until(
            lambda: health(server.url)["busy_seconds"] is None and health(server.url)["queued_requests"] == 0
        )
        assert health(server.url)["calls"] == 2  # call-1 once, the busy one; never the one that left
        assert json.loads(httpx.get(f"{server.url}/health").text)["inflight_bytes"] == 0
