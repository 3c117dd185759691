"""Reward serving: a served reward scores exactly like the in-process one; bad requests get a clear 4xx
and the server keeps serving; a failing reward is a 5xx for that request alone; requests of many clients
are merged. Every server here is a child process on a free loopback port, stopped by its test. (The
server's protections: test_reward_serving_guards.py; the client's: test_reward_serving_client.py.)"""

from __future__ import annotations

import json
import math
import pickle
import re
import struct
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from _rewards_tiny import save_tiny_clip
from PIL import Image, ImageDraw, ImageFont
from safetensors.torch import save as save_tensors
from typer.testing import CliRunner

import nft_rewards
from nft_core.cli.app import build_app
from nft_core.errors import UserError
from nft_core.testing import check_reward
from nft_rewards.serving.process import RewardServer
from nft_rewards.serving.wire import (
    CONTENT_TYPE,
    Limits,
    WireError,
    decode_output,
    decode_request,
    encode_request,
    reward_images,
)
from nft_shapes import grammar
from nft_shapes.render import render_batch
from nft_shapes.reward import shapes_geneval

TESTS = Path(__file__).resolve().parent
NFT = [sys.executable, "-c", "from nft_core.cli.app import main; main()", "reward", "serve"]
ONE_THREAD = ["--threads", "1"]


@pytest.fixture(autouse=True)
def one_thread():
    """In-process scores on one thread, like the servers' `--threads 1`: bit-identical matmuls."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def assert_same_output(remote, local):
    assert torch.equal(remote.scores, local.scores)
    assert remote.details.keys() == local.details.keys()
    for key in local.details:
        assert torch.equal(remote.details[key], local.details[key].float()), key
    assert remote.notes == local.notes


def test_shapes_reward_served_by_nft_reward_serve_scores_and_aggregates_exactly():
    items = grammar.eval_items(images_per_tag=3)
    metadata = [item.metadata for item in items]
    images, prompts = render_batch(metadata, 5), [item.prompt for item in items]
    images[::4] = torch.rand_like(images[::4])  # some failures too, so the notes say something
    local = shapes_geneval(batch_size=8)
    with RewardServer("shapes-geneval", {"batch_size": 8}, ONE_THREAD, program=NFT) as server:
        remote = nft_rewards.load("remote", url=server.url)
        assert (remote.native_range, remote.higher_is_better) == (local.native_range, local.higher_is_better)
        assert remote.needs_metadata and remote.batch_size % 8 == 0
        out, expected = remote(images, prompts, metadata), local(images, prompts, metadata)
        assert_same_output(out, expected)
        assert 0 < float(expected.scores.mean()) < 1
        mine, theirs = local.aggregate(expected, prompts, metadata), remote.aggregate(out, prompts, metadata)
        assert theirs.score == mine.score and theirs.per_tag == mine.per_tag and theirs.report == mine.report
        with pytest.raises(UserError, match="needs one metadata"):
            remote(images[:2], prompts[:2])


def render_text(text: str, width: int = 256, height: int = 80) -> torch.Tensor:
    image = Image.new("RGB", (width, height), "white")
    ImageDraw.Draw(image).text((10, 20), text, fill="black", font=ImageFont.load_default(size=30))
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)


def test_ocr_with_real_rapidocr_weights_scores_exactly_over_uint8():
    words = ["hello", "serve", "nft 42"]
    images = torch.stack([render_text(word) for word in words] + [render_text("other")])
    prompts = [f'a sign that says "{word}"' for word in words] + ['a sign that says "missing"']
    options = {"det_limit_side_len": 320, "use_angle_cls": False}
    local = nft_rewards.load("ocr", **options)
    with RewardServer("ocr", options, ONE_THREAD) as server:
        for wire in ("auto", "uint8"):  # OCR quantizes to uint8 itself: uint8 on the wire is exact
            remote = nft_rewards.load("remote", url=server.url, wire_dtype=wire)
            assert_same_output(remote(images, prompts), local(images, prompts))
    assert float(local(images, prompts).scores[:3].min()) > 0.5


def test_tiny_clip_reward_scores_exactly(tmp_path):
    folder = save_tiny_clip(tmp_path / "clip", image_size=32)
    generator = torch.Generator().manual_seed(3)
    images = torch.rand(7, 3, 40, 48, generator=generator)
    prompts = [f"a photo of {n} cats" for n in range(7)]
    local = nft_rewards.load("clipscore", model=str(folder), batch_size=3)
    with RewardServer("clipscore", {"model": str(folder), "batch_size": 3}, ONE_THREAD) as server:
        remote = nft_rewards.load("remote", url=server.url, batch_size=5)
        assert remote.batch_size == 3  # rounded to the server's batches: the same slices as in-process
        assert_same_output(remote(images, prompts), local(images, prompts))
        assert_same_output(remote(images.bfloat16(), prompts), local(images.bfloat16(), prompts))


def request_bytes(images: torch.Tensor, prompts, metadata=None, **header_changes) -> bytes:
    header = {
        "protocol": 1,
        "prompts": list(prompts),
        "metadata": metadata,
        "shape": list(images.shape),
        "dtype": str(images.dtype).removeprefix("torch."),
    }
    header.update(header_changes)
    return save_tensors({"images": images.contiguous()}, metadata={"nft": json.dumps(header)})


def raw_safetensors(header: str, data: bytes = b"") -> bytes:
    """A body with any JSON text as its safetensors header."""
    return struct.pack("<Q", len(header.encode())) + header.encode() + data


IMAGE_ENTRY = {"dtype": "F32", "shape": [1, 3, 1, 1], "data_offsets": [0, 12]}
DEEP = 5000 * "[" + 5000 * "]"
TOO_DEEP = json.loads(40 * "[" + 40 * "]")


def post(url: str, body: bytes, **kwargs) -> httpx.Response:
    return httpx.post(f"{url}/score", content=body, headers={"Content-Type": CONTENT_TYPE}, **kwargs)


@pytest.fixture(scope="module")
def flaky_server():
    """The `Flaky` test reward (tests/_served_rewards.py) behind a server with a 1 MiB body limit."""
    args = ["--max-body-mb", "1", "--max-images", "64", "--batch-size", "32"]
    with RewardServer("_served_rewards:flaky", {"delay": 0.02}, args, cwd=TESTS) as server:
        yield server


def valid_call(url: str, seed: int = 0, n: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores over the wire, the expected mean brightness) of a fresh valid request."""
    images = torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))
    answer = post(url, encode_request(images, ["ok"] * n))
    assert answer.status_code == 200, answer.text
    return decode_output(answer.content, n).scores, images.mean(dim=(1, 2, 3))


BAD_REQUESTS = {
    "malformed JSON": (b'{"prompts": ["a"', 400, "not a safetensors file"),
    "JSON instead of safetensors": (
        json.dumps({"images": [[0.5]], "prompts": ["a"]}).encode(),
        400,
        "safetensors",
    ),
    "pickle payload": (
        pickle.dumps({"images": torch.zeros(1, 3, 4, 4), "prompts": ["a"]}),
        400,
        "safetensors",
    ),
    "bad header JSON": (
        save_tensors({"images": torch.zeros(1, 3, 4, 4)}, metadata={"nft": "{not json"}),
        400,
        "not valid JSON",
    ),
    "no header": (save_tensors({"images": torch.zeros(1, 3, 4, 4)}), 400, "lacks the 'nft' JSON header"),
    "wrong protocol": (request_bytes(torch.zeros(1, 3, 4, 4), ["a"], protocol=99), 400, "protocol 99"),
    "grey images": (request_bytes(torch.zeros(2, 1, 4, 4), ["a", "b"]), 400, r"shape \[N,3,H,W\]"),
    "3-d images": (request_bytes(torch.zeros(3, 4, 4), ["a", "b", "c"]), 400, r"shape \[N,3,H,W\]"),
    "float64 images": (request_bytes(torch.zeros(1, 3, 4, 4, dtype=torch.float64), ["a"]), 400, "dtype"),
    "int32 images": (request_bytes(torch.zeros(1, 3, 4, 4, dtype=torch.int32), ["a"]), 400, "dtype"),
    "header dtype lies": (request_bytes(torch.zeros(1, 3, 4, 4), ["a"], dtype="uint8"), 400, "differs"),
    "header shape lies": (request_bytes(torch.zeros(1, 3, 4, 4), ["a"], shape=[2, 3, 4, 4]), 400, "differs"),
    "too few prompts": (request_bytes(torch.zeros(2, 3, 4, 4), ["a"]), 400, "2 images but 1 prompts"),
    "prompts not strings": (request_bytes(torch.zeros(1, 3, 4, 4), [7]), 400, "list of 1 strings"),
    "metadata count": (request_bytes(torch.zeros(2, 3, 4, 4), ["a", "b"], [{}]), 400, "1 metadata entries"),
    "NaN pixels": (request_bytes(torch.full((1, 3, 4, 4), math.nan), ["a"]), 400, "NaN or infinite"),
    "out of range": (request_bytes(torch.full((1, 3, 4, 4), 2.0), ["a"]), 400, r"lie in \[0,1\]"),
    "prompt too long": (request_bytes(torch.zeros(1, 3, 4, 4), ["x" * 5000]), 400, "limit is 4096"),
    "nested nft header": (
        save_tensors({"images": torch.zeros(1, 3, 4, 4)}, metadata={"nft": DEEP}),
        400,
        "nests deeper than 32",
    ),
    "nested safetensors header": (
        raw_safetensors('{"x": ' + DEEP + ', "images": ' + json.dumps(IMAGE_ENTRY) + "}", bytes(12)),
        400,
        "nests deeper than 32",
    ),
    "metadata nested too deep": (
        request_bytes(torch.zeros(1, 3, 4, 4), ["a"], [{"deep": TOO_DEEP}]),
        400,
        "nests deeper than 32",
    ),
    "__metadata__ a list": (
        raw_safetensors(json.dumps({"__metadata__": ["nft"], "images": IMAGE_ENTRY}), bytes(12)),
        400,
        "__metadata__ is not a JSON object",
    ),
    "nft header not a string": (
        raw_safetensors(
            json.dumps({"__metadata__": {"nft": {"protocol": 1}}, "images": IMAGE_ENTRY}), bytes(12)
        ),
        400,
        "lacks the 'nft' JSON header",
    ),
    "too many images": (request_bytes(torch.zeros(65, 3, 1, 1), ["a"] * 65), 413, "limit of 64"),
    "oversized body": (request_bytes(torch.zeros(1, 3, 300, 300), ["a"]), 413, "exceeds the limit"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_requests_get_one_line_4xx_and_the_server_keeps_serving(flaky_server, case):
    body, status, message = BAD_REQUESTS[case]
    answer = post(flaky_server.url, body)
    assert answer.status_code == status, answer.text
    assert answer.text.count("\n") == 1 and set(answer.json()) == {"error"}
    assert re.search(message, answer.json()["error"]), answer.json()
    scores, expected = valid_call(flaky_server.url, seed=len(case))
    torch.testing.assert_close(scores, expected, rtol=0, atol=1e-6)


def test_per_sample_nan_scores_pass_through_so_the_trainer_drops_only_those_samples(flaky_server):
    remote = nft_rewards.load("remote", url=flaky_server.url)
    images = torch.rand(3, 3, 8, 8)
    scores = remote(images, ["ok", "nan", "ok"]).scores
    assert torch.isnan(scores[1]) and torch.isfinite(scores[[0, 2]]).all()


def test_reward_exception_is_a_500_for_that_request_alone(flaky_server):
    answer = post(flaky_server.url, encode_request(torch.rand(2, 3, 8, 8), ["ok", "boom"]))
    assert answer.status_code == 500 and "RuntimeError: boom prompt" in answer.json()["error"]
    assert httpx.get(f"{flaky_server.url}/404").json() == {"error": "Not Found"}
    valid_call(flaky_server.url)


def test_many_concurrent_clients_are_merged_and_each_gets_its_own_scores(flaky_server):
    def client(index: int):
        if index % 7 == 3:  # a failing request inside merged batches: the others must not fail with it
            images = torch.rand(2, 3, 16, 16)
            return post(flaky_server.url, encode_request(images, ["ok", "boom"])).status_code
        return valid_call(flaky_server.url, seed=index, n=1 + index % 4)

    before = httpx.get(f"{flaky_server.url}/health").json()["merged_calls"]
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(client, range(48)))
    for index, result in enumerate(results):
        if index % 7 == 3:
            assert result == 500
        else:
            torch.testing.assert_close(*result, rtol=0, atol=1e-6)
    assert httpx.get(f"{flaky_server.url}/health").json()["merged_calls"] > before
    valid_call(flaky_server.url, seed=99)


def test_token_is_required_when_set_and_beyond_loopback(tmp_path):
    result = CliRunner().invoke(build_app(), ["reward", "serve", "jpeg-compressibility", "--host", "0.0.0.0"])
    assert result.exit_code == 2 and "--token" in result.output and "Traceback" not in result.output
    with RewardServer("jpeg-compressibility", args=["--token", "s3cret"]) as server:
        assert httpx.get(f"{server.url}/info").status_code == 401
        assert httpx.get(f"{server.url}/health").status_code == 200
        with pytest.raises(UserError, match="401"):
            nft_rewards.load("remote", url=server.url, token="wrong")
        remote = nft_rewards.load("remote", url=server.url, token="s3cret")
        check_reward(remote)  # the conformance kit holds a served reward to the contract like a local one
        images = torch.rand(2, 3, 16, 16)
        assert torch.equal(
            remote(images, ["a", "b"]).scores,
            nft_rewards.load("jpeg-compressibility")(images, ["a", "b"]).scores,
        )


def test_a_dead_server_is_a_clear_error_after_the_retries():
    from nft_rewards.serving.process import free_port

    with pytest.raises(UserError, match=r"after 2 tries.*nft reward serve"):
        nft_rewards.load("remote", url=f"http://127.0.0.1:{free_port()}", retries=1)


def test_wire_round_trip_is_bit_exact_and_limits_hold():
    images = torch.rand(3, 3, 5, 7)
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        decoded = decode_request(encode_request(images.to(dtype), ["a", "b", "c"], [{"k": 1}] * 3))
        assert decoded.images.dtype == dtype and torch.equal(decoded.images, images.to(dtype))
        assert decoded.metadata == [{"k": 1}] * 3
    quantized = decode_request(encode_request(images, ["a", "b", "c"], dtype="uint8")).images
    assert quantized.dtype == torch.uint8  # kept small until the worker converts its batch
    assert torch.equal((reward_images(quantized) * 255).round(), (images * 255).round())
    with pytest.raises(WireError, match="limit of 2 per request") as caught:
        decode_request(encode_request(images, ["a", "b", "c"]), Limits(max_images=2))
    assert caught.value.status == 413
