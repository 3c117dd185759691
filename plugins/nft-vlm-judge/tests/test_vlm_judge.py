"""nft-vlm-judge against a loopback judge server: protocol, parsing, environment, failures, contract."""

from __future__ import annotations

import base64
import io
import socket
import time

import pytest
import torch
from nft_vlm_judge import VLMJudgeReward, parse_final_score
from nft_vlm_judge.reward import BASE_URL_ENV, MODEL_ENV
from PIL import Image

from nft_core.errors import ConfigError, UserError
from nft_core.testing import check_listed, check_reward


def images(n: int = 2, size: int = 16) -> torch.Tensor:
    return torch.rand((n, 3, size, size), generator=torch.Generator().manual_seed(n))


def test_installed_plugin_is_listed_by_nft_plugins():
    check_listed("nft-vlm-judge", {"rewards": ["vlm-judge"]}, version="0.1.0")


def test_keeps_the_reward_contract(judge_server):
    reward = VLMJudgeReward.from_options(base_url=judge_server.url, batch_size=3, image_size=64)
    # the loopback judge is deterministic, so repeatability, batching and pairing are checked too
    check_reward(reward, deterministic=True)


def test_request_follows_the_unifiedreward_protocol(judge_server, monkeypatch):
    monkeypatch.setenv("NFT_VLM_JUDGE_API_KEY", "secret")
    reward = VLMJudgeReward.from_options(base_url=judge_server.url, model="judge-7b")
    output = reward(images(1), ["a red circle"])
    (request,) = judge_server.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == "Bearer secret"
    body = request["body"]
    assert body["model"] == "judge-7b" and body["temperature"] == 0.0
    image_part, text_part = body["messages"][0]["content"]
    header, data = image_part["image_url"]["url"].split(",", 1)
    assert header == "data:image/png;base64"
    sent = Image.open(io.BytesIO(base64.b64decode(data)))
    assert sent.format == "PNG" and sent.size == (512, 512) and sent.mode == "RGB"
    assert "Text Caption: [a red circle]" in text_part["text"] and "Final Score:" in text_part["text"]
    expected = judge_server.score(sent, text_part["text"])
    assert output.scores.tolist() == pytest.approx([expected / 5])
    assert output.details["judge_score"].tolist() == pytest.approx([expected])
    assert output.details["parsed"].tolist() == [1.0]


@pytest.mark.parametrize(
    ("text", "score"),
    [
        ("Final Score: 4", 4.0),
        ("reasoning...\nFinal Score: 3.75 (good)", 3.75),
        ("Final Score:5", 5.0),
        ("Final Score: 7", None),
        ("score: 4", None),
        ("", None),
    ],
)
def test_parse_final_score(text, score):
    assert parse_final_score(text) == score


def test_an_edit_is_judged_against_its_source_image(judge_server):
    from nft_vlm_judge.reward import DEFAULT_EDIT_INSTRUCTION

    from nft_core.types import SOURCE_IMAGE

    reward = VLMJudgeReward.from_options(base_url=judge_server.url, image_size=0)
    sources = [torch.zeros((3, 24, 24)), None]
    metadata = [{SOURCE_IMAGE: sources[0]}, {}]
    reward(images(2), ["make it red", "a red circle"], metadata)
    edit, plain = sorted(judge_server.requests, key=lambda r: len(r["body"]["messages"][0]["content"]))[::-1]
    parts = edit["body"]["messages"][0]["content"]
    assert [part["type"] for part in parts] == ["image_url", "image_url", "text"]
    first = Image.open(io.BytesIO(base64.b64decode(parts[0]["image_url"]["url"].split(",", 1)[1])))
    assert first.size == (24, 24)  # the source first, then the edit
    assert parts[2]["text"] == DEFAULT_EDIT_INSTRUCTION.replace("{prompt}", "make it red")
    assert [part["type"] for part in plain["body"]["messages"][0]["content"]] == ["image_url", "text"]


def test_unparsable_reply_scores_zero(judge_server):
    judge_server.reply = "I cannot rate this image."
    output = VLMJudgeReward.from_options(base_url=judge_server.url)(images(2), ["a", "b"])
    assert output.scores.tolist() == [0.0, 0.0] and output.details["parsed"].tolist() == [0.0, 0.0]


def test_server_model_and_key_from_the_environment(judge_server, monkeypatch):
    monkeypatch.setenv(BASE_URL_ENV, judge_server.url)
    monkeypatch.setenv(MODEL_ENV, "env-model")
    monkeypatch.setenv("MY_KEY", "k2")
    VLMJudgeReward.from_options(api_key_env="MY_KEY")(images(1), ["x"])
    (request,) = judge_server.requests
    assert request["body"]["model"] == "env-model" and request["headers"]["Authorization"] == "Bearer k2"


def test_missing_server_url_is_a_user_error(monkeypatch):
    monkeypatch.delenv(BASE_URL_ENV, raising=False)
    with pytest.raises(UserError, match=rf"base_url or \${BASE_URL_ENV}"):
        VLMJudgeReward.from_options()


def test_server_down_is_a_clear_user_error():
    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    reward = VLMJudgeReward.from_options(base_url=f"http://127.0.0.1:{port}/v1", retries=1, retry_backoff=0)
    with pytest.raises(UserError) as error:
        reward(images(1), ["x"])
    message = str(error.value)
    assert f"cannot reach http://127.0.0.1:{port}/v1/chat/completions after 2 attempt(s)" in message
    assert "refused" in message.lower() and "\n" not in message


def test_transient_errors_are_retried(judge_server):
    judge_server.failures = [(503, "busy"), (429, "slow down")]
    reward = VLMJudgeReward.from_options(base_url=judge_server.url, retries=2, retry_backoff=0.01)
    assert reward(images(1), ["x"]).details["parsed"].tolist() == [1.0]
    assert len(judge_server.requests) == 3
    judge_server.failures = [(503, "busy")] * 2
    reward = VLMJudgeReward.from_options(base_url=judge_server.url, retries=1, retry_backoff=0.01)
    with pytest.raises(UserError, match="after 2 attempt.*HTTP 503"):
        reward(images(1), ["x"])


def test_client_errors_fail_at_once(judge_server):
    judge_server.failures = [(401, '{"error": "bad key"}')]
    reward = VLMJudgeReward.from_options(base_url=judge_server.url, retries=3, retry_backoff=5)
    with pytest.raises(UserError, match="answered HTTP 401.*bad key"):
        reward(images(1), ["x"])
    assert len(judge_server.requests) == 1


def test_timeout(judge_server):
    judge_server.delay = 1.0
    reward = VLMJudgeReward.from_options(base_url=judge_server.url, timeout=0.2, retries=0)
    start = time.perf_counter()
    with pytest.raises(UserError, match=r"timed out after 0.2 s"):
        reward(images(1), ["x"])
    assert time.perf_counter() - start < 1.0


@pytest.fixture
def registered():
    """The plugin registered in this process (as `nft` does after pip install), removed afterwards."""
    import nft_vlm_judge.plugin

    from nft_core import registry
    from nft_core.plugins import load_plugins

    manager = load_plugins()
    added = not manager.has_plugin("nft-vlm-judge")
    if added:
        manager.register(nft_vlm_judge.plugin, name="nft-vlm-judge")
    registry.clear_cache()
    yield
    if added:
        manager.unregister(name="nft-vlm-judge")
    registry.clear_cache()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"timeout": -1}, r"reward\[1\]\.options\.timeout: .*greater than 0"),
        ({"base_url": "localhost:8000"}, r"reward\[1\]\.options\.base_url: .*http://"),
        ({"instruction": "rate it"}, r"reward\[1\]\.options\.instruction: .*\{prompt\}"),
        ({"temprature": 0}, r"reward\[1\]\.options\.temprature: unknown key"),
    ],
)
def test_options_table_is_validated_with_its_toml_path(registered, options, message):
    from nft_core.config import validate

    data = {"reward": [{"name": "shapes-geneval"}, {"name": "vlm-judge", "weight": 0.5, "options": options}]}
    with pytest.raises(ConfigError, match=message):
        validate(data)
