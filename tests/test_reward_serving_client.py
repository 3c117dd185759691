"""The `remote` reward trusts no server: an overall deadline per answer (a server that drips bytes cannot
hold a training step), answers under a byte cap and never decompressed, redirects refused, `/info` checked
field by field (one line; an optional remote reward with a nonsense server leaves the run going),
requests split to fit the server's limits, a busy server waited for, and a retried request scored once.
The misbehaving servers are raw HTTP servers on free loopback ports, stopped by their test."""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterable

import httpx
import pytest
import torch
from _served_rewards import ServerThread, flaky
from typer.testing import CliRunner

import nft_rewards
from nft_core.cli.app import build_app
from nft_core.errors import UserError
from nft_core.types import RewardOutput
from nft_rewards.serving.wire import CONTENT_TYPE, Limits, encode_output

MiB = 2**20
INFO = {
    "protocol": 1,
    "name": "fake",
    "native_range": [0.0, 1.0],
    "higher_is_better": True,
    "deterministic": True,
    "needs_metadata": False,
    "custom_aggregate": False,
    "batch_size": 4,
    "options": {},
    "limits": {"max_body_bytes": MiB, "max_header_bytes": 2**16, "max_images": 64},
}


def answer(status: int = 200, body: bytes = b"", content_type: str = "application/json", **headers) -> bytes:
    lines = [f"HTTP/1.1 {status} X", f"Content-Type: {content_type}", "Connection: close"]
    if not any(key.lower() in ("content_length", "transfer_encoding") for key in headers):
        lines.append(f"Content-Length: {len(body)}")
    lines += [f"{key.replace('_', '-')}: {value}" for key, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def info(**changes) -> bytes:
    data = json.loads(json.dumps(INFO))
    for key, value in changes.items():
        if key.startswith("limits_"):
            data["limits"][key.removeprefix("limits_")] = value
        else:
            data[key] = value
    return answer(body=json.dumps(data).encode())


def run_with_optional_remote(config, out, url: str):
    """`nft run` of the fast config with an optional remote reward at `url` besides its own."""
    remote = f'{{name="remote", required=false, options={{url="{url}", retries=0}}}}'
    rewards = f'reward=[{{name="shapes-geneval", normalize="group-zscore"}}, {remote}]'
    return CliRunner().invoke(build_app(), ["run", str(config), "--out", str(out), "--set", rewards])


def scores_answer(n: int) -> bytes:
    return answer(
        body=encode_output(RewardOutput(scores=torch.zeros(n), details={})), content_type=CONTENT_TYPE
    )


class FakeServer:
    """A raw HTTP/1.1 server on a free loopback port: `handler(method, path, headers)` gives the bytes to
    send, as one bytes object or an iterable of parts (sent one by one until the client leaves)."""

    def __init__(self, handler: Callable[[str, str, dict], bytes | Iterable[bytes]]) -> None:
        self.handler = handler
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.requests: list[tuple[str, str, dict]] = []
        self.sent = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            data = b""
            try:
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536) or b"\r\n\r\n"
                head, _, rest = data.partition(b"\r\n\r\n")
                request_line, *lines = head.decode("latin-1").split("\r\n")
                headers = {
                    k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)
                }
                length = int(headers.get("content-length", 0))
                while len(rest) < length:
                    rest += conn.recv(65536)
                method, path, _ = request_line.split(" ", 2)
                self.requests.append((method, path, headers))
                reply = self.handler(method, path, headers)
                for part in [reply] if isinstance(reply, bytes) else reply:
                    conn.sendall(part)
                    self.sent += len(part)
            except OSError:
                pass

    def __enter__(self) -> FakeServer:
        return self

    def __exit__(self, *_) -> None:
        self.listener.close()


def routes(score: Callable[[dict], bytes | Iterable[bytes]], **info_changes) -> Callable:
    def handler(method: str, path: str, headers: dict):
        return info(**info_changes) if path == "/info" else score(headers)

    return handler


def one_line(error: pytest.ExceptionInfo, *parts: str) -> str:
    message = str(error.value)
    assert "\n" not in message and all(part in message for part in parts), message
    return message


def test_the_deadline_covers_the_whole_answer_not_each_read():
    def drip(headers):  # a byte every 0.1 s: no read ever waits long, the answer never ends
        yield f"HTTP/1.1 200 OK\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: 100000\r\n\r\n".encode()
        for _ in range(300):
            time.sleep(0.1)
            yield b"x"

    with FakeServer(routes(drip)) as server:
        remote = nft_rewards.load("remote", url=server.url, timeout=1.0, retries=0)
        started = time.monotonic()
        with pytest.raises(UserError) as error:
            remote(torch.rand(2, 3, 8, 8), ["a", "b"])
        assert time.monotonic() - started < 2.5
        one_line(error, f"{server.url}/score", "no whole answer within 1 s", "after 1 tries")
    with FakeServer(lambda method, path, headers: drip(headers)) as server:
        started = time.monotonic()
        with pytest.raises(UserError, match="/info: no whole answer within 0.5 s"):
            nft_rewards.load("remote", url=server.url, timeout=0.5, retries=1)
        assert time.monotonic() - started < 3.0


def endless(headers):
    yield f"HTTP/1.1 200 OK\r\nContent-Type: {CONTENT_TYPE}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
    chunk = f"{MiB:x}\r\n".encode() + bytes(MiB) + b"\r\n"
    for _ in range(600):  # 600 MiB, if anyone read it
        yield chunk


def test_answers_are_read_under_a_byte_cap_and_never_decompressed():
    bomb = gzip.compress(bytes(100 * MiB))  # 100 kB that unpack to 100 MiB
    cases = {
        "endless chunked answer": (endless, "exceeds this client's cap of 4194304 bytes"),
        "declared huge answer": (
            lambda headers: answer(content_type=CONTENT_TYPE, content_length=600 * MiB),
            "answer of 629145600 bytes exceeds this client's cap",
        ),
        "gzip bomb": (
            lambda headers: answer(body=bomb, content_type=CONTENT_TYPE, content_encoding="gzip"),
            "the answer is gzip-encoded; this client takes identity only",
        ),
    }
    for case, (score, message) in cases.items():
        with FakeServer(routes(score)) as server:
            remote = nft_rewards.load("remote", url=server.url, max_answer_mb=4, retries=2)
            tracemalloc.start()
            with pytest.raises(UserError) as error:
                remote(torch.rand(1, 3, 8, 8), ["a"])
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            one_line(error, f"{server.url}/score", message)
            assert peak < 24 * MiB, (case, peak)
            assert len(server.requests) == 2, case  # /info and one /score: never retried
            assert all(headers.get("accept-encoding") == "identity" for _, _, headers in server.requests)
    assert server.sent < 64 * MiB  # what the endless server managed to push before the client left


def test_redirects_are_failures_even_with_a_valid_body():
    redirect = answer(
        302, encode_output(RewardOutput(torch.zeros(1), {})), CONTENT_TYPE, location="http://x/"
    )
    with FakeServer(routes(lambda headers: redirect)) as server:
        remote = nft_rewards.load("remote", url=server.url)
        with pytest.raises(UserError) as error:
            remote(torch.rand(1, 3, 8, 8), ["a"])
        one_line(error, "redirected (302) to http://x/", "redirects are not followed")
        assert len(server.requests) == 2
    with FakeServer(lambda method, path, headers: answer(301, location="https://elsewhere/info")) as server:
        with pytest.raises(UserError, match="/info: redirected"):
            nft_rewards.load("remote", url=server.url)


BAD_INFO = {
    "not JSON": (answer(body=b"<html>hello</html>"), "not valid JSON"),
    "HTML page": (answer(body=b"<html></html>", content_type="text/html"), "the answer is text/html"),
    "a list": (answer(body=b"[1, 2]"), "field '(the answer)' must be a JSON object"),
    "another protocol": (info(protocol=2), "field 'protocol' must be 1"),
    "no direction": (info(higher_is_better=None), "field 'higher_is_better' must be true or false"),
    "max_images 0": (info(limits_max_images=0), "field 'limits.max_images' must be a whole number in 1.."),
    "max_images negative": (info(limits_max_images=-3), "field 'limits.max_images'"),
    "max_images a string": (info(limits_max_images="64"), "field 'limits.max_images'"),
    "tiny bodies": (info(limits_max_body_bytes=10), "field 'limits.max_body_bytes'"),
    "batch_size 0": (info(batch_size=0), "field 'batch_size'"),
    "range reversed": (
        info(native_range=[1, 0]),
        "field 'native_range' must be [low, high] with low <= high",
    ),
    "range a string": (info(native_range="0..1"), "field 'native_range'"),
    "no limits": (info(limits=None), "field 'limits' must be a JSON object"),
    "deep JSON": (answer(body=b"[" * 100000 + b"]" * 100000), "not valid JSON"),
}


@pytest.mark.parametrize("case", list(BAD_INFO))
def test_a_malformed_or_nonsense_info_is_one_line_naming_the_server_and_the_field(case):
    reply, message = BAD_INFO[case]
    with FakeServer(lambda method, path, headers: reply) as server:
        with pytest.raises(UserError) as error:
            nft_rewards.load("remote", url=server.url)
        one_line(error, f"remote reward {server.url}", message)


def test_an_optional_remote_reward_with_a_nonsense_server_leaves_the_run_going(fast_config, tmp_path):
    with FakeServer(routes(lambda headers: scores_answer(1), limits_max_images=0)) as server:
        result = run_with_optional_remote(fast_config, tmp_path, server.url)
    assert result.exit_code == 0, result.output
    assert "'remote' (required = false) skipped" in result.output and "limits.max_images" in result.output
    records = [json.loads(line) for line in (tmp_path / "tiny" / "metrics.jsonl").read_text().splitlines()]
    assert [r["samples/excluded"] for r in records if r["kind"] == "train"] == [0, 0]


def test_a_busy_server_is_waited_for_as_it_asks_without_using_up_retries():
    replies = [answer(503, b'{"error": "busy"}', retry_after="0.2")] * 3

    def score(headers):
        return replies.pop() if replies else scores_answer(2)

    with FakeServer(routes(score)) as server:
        remote = nft_rewards.load("remote", url=server.url, retries=0)
        assert remote(torch.rand(2, 3, 8, 8), ["a", "b"]).scores.tolist() == [0.0, 0.0]
        ids = {headers["x-request-id"] for method, _, headers in server.requests if method == "POST"}
        assert len(server.requests) == 5 and len(ids) == 1  # one request id for all its tries


def test_requests_are_split_to_fit_the_servers_body_limit_in_multiples_of_its_batch():
    limits = Limits(max_body_bytes=256 * 2**10, max_images=64)
    images = torch.rand(24, 3, 32, 32)  # 12 kB each as float32: 295 kB in all, more than one body
    prompts = [f"prompt {i}" for i in range(24)]
    with ServerThread(flaky(), name="flaky", limits=limits, batch_size=2) as server:
        remote = nft_rewards.load("remote", url=server.url, batch_size=64)
        assert remote.batch_size == 64
        out = remote(images, prompts)
        torch.testing.assert_close(out.scores, images.mean(dim=(1, 2, 3)), rtol=0, atol=1e-6)
        assert httpx.get(f"{server.url}/health").json()["calls"] == 2  # 20 images, then 4
        with pytest.raises(UserError) as error:
            remote(torch.rand(1, 3, 160, 160), ["one large image"])  # 307 kB alone
        one_line(error, "one image with its prompt is", 'send wire_dtype = "uint8"')
        small = nft_rewards.load("remote", url=server.url, wire_dtype="uint8")
        assert small(torch.rand(1, 3, 160, 160), ["fits as uint8"]).scores.shape == (1,)


def test_a_request_retried_after_its_deadline_is_scored_once():
    with ServerThread(flaky(delay=0.8), name="flaky") as server:
        remote = nft_rewards.load("remote", url=server.url, timeout=0.5, retries=2)
        images = torch.rand(2, 3, 8, 8)
        out = remote(images, ["a", "b"])  # the first try times out; its retry joins the first scoring
        torch.testing.assert_close(out.scores, images.mean(dim=(1, 2, 3)), rtol=0, atol=1e-6)
        assert httpx.get(f"{server.url}/health").json()["calls"] == 1
