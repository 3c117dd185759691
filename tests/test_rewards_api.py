"""The reward package surface: light import, load/available, input checks, quantization, JPEG, weights."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image

import nft_rewards
from nft_core.errors import ConfigError, UserError
from nft_core.protocols import Reward
from nft_rewards.base import batch_slices, quantize_uint8
from nft_rewards.jpeg import JpegCompressibility, JpegIncompressibility


def test_available_and_load():
    table = nft_rewards.available()
    assert list(table) == list(nft_rewards.BUILTIN_REWARDS)
    assert {"pickscore", "hpsv2", "clipscore", "aesthetic", "ocr", "geneval", "jpeg-compressibility"} <= set(
        table
    )
    assert all(description for description in table.values())
    reward = nft_rewards.load("jpeg-compressibility", quality=80)
    assert isinstance(reward, Reward) and reward.options.quality == 80
    with pytest.raises(UserError, match="unknown reward 'pickscor'; available: pickscore"):
        nft_rewards.load("pickscor")
    with pytest.raises(
        ConfigError,
        match=r"^reward 'jpeg-compressibility': qualty: unknown key; allowed: batch_size, quality$",
    ) as error:
        nft_rewards.load("jpeg-compressibility", qualty=80)
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="quality.*less than or equal to 100"):
        nft_rewards.load("jpeg-compressibility", quality=101)
    assert nft_rewards.options_model("ocr")().backend == "rapidocr"


def test_plugin_registers_every_builtin():
    from nft_rewards import plugin

    found = {}
    plugin.register_rewards(
        register=lambda name, factory, options=None, description="": found.update(
            {name: (factory, options, description)}
        )
    )
    assert list(found) == list(nft_rewards.BUILTIN_REWARDS)
    factory, options, description = found["jpeg-incompressibility"]
    assert options is JpegIncompressibility.Options and description.startswith("`size_kB`")
    assert isinstance(factory(**options(quality=90).model_dump()), JpegIncompressibility)


def test_registry_sees_the_rewards():
    try:
        from nft_core import registry

        rewards = registry.registrations("rewards")
    except ModuleNotFoundError as error:  # the other default plugins may not exist yet
        pytest.skip(f"plugin manager not complete: {error}")
    assert "geneval" in rewards and rewards["ocr"].plugin == "nft_rewards.plugin"
    reward = registry.create("rewards", "jpeg-compressibility", {"quality": 90})
    assert reward.options.quality == 90


def test_input_checks():
    reward = JpegCompressibility()
    images = torch.rand(2, 3, 8, 8)
    cases = [
        (images, ["a"], "2 images but 1 prompts"),
        (images[0], ["a"], r"shape \[N,3,H,W\], got \(3, 8, 8\)"),
        (torch.rand(2, 4, 8, 8), ["a", "b"], "shape"),
        ((images * 255).to(torch.uint8), ["a", "b"], "float tensor"),
        (images * 2, ["a", "b"], r"\[0,1\], got min"),
        (images - 0.5, ["a", "b"], r"x/2\+0.5"),
        (images.clone().fill_(float("nan")), ["a", "b"], "NaN"),
        (images, "ab", "list of strings"),
        (images, ["a", 3], r"prompts\[1\] must be a string"),
        (images.numpy(), ["a", "b"], "torch.Tensor"),
    ]
    for value, prompts, message in cases:
        with pytest.raises(UserError, match=message) as error:
            reward(value, prompts)
        assert "\n" not in str(error.value) and str(error.value).startswith("jpeg-compressibility: ")
    with pytest.raises(UserError, match="2 images but 1 metadata"):
        reward(images, ["a", "b"], [{}])
    slightly_over = images.clone()
    slightly_over[0, 0, 0, 0] = 1.0005  # rounding slack of a decoder is clamped, not rejected
    assert reward(slightly_over, ["a", "b"]).scores.shape == (2,)
    empty = reward(torch.zeros(0, 3, 8, 8), [])
    assert empty.scores.shape == (0,)


def test_quantization_rule():
    values = torch.tensor([0.0, 0.4 / 255, 0.6 / 255, 1.5 / 255, 2.5 / 255, 0.5, 1.0, 1.0 + 1e-4])
    images = values.view(1, 1, 1, -1).expand(1, 3, 1, -1)
    expected = [0, 0, 1, 2, 2, 128, 255, 255]  # round half to even, as torch.round in the references
    assert quantize_uint8(images)[0, 0, 0].tolist() == expected
    assert quantize_uint8(images.half()).dtype == torch.uint8
    assert [(s.start, s.stop) for s in batch_slices(5, 2)] == [(0, 2), (2, 4), (4, 5)]


def test_jpeg_sizes_and_batching():
    images = torch.rand(3, 3, 32, 48, generator=torch.Generator().manual_seed(0))
    images[1] = 0.5  # flat: compresses well
    sizes = []
    for image in images:
        array = (image * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="JPEG", quality=95)
        sizes.append(len(buffer.getvalue()) / 1000)
    incompressibility = JpegIncompressibility()(images, ["", "", ""])
    assert incompressibility.scores.tolist() == pytest.approx(sizes)
    compressibility = JpegCompressibility(JpegCompressibility.Options(batch_size=2))
    out = compressibility(images, ["", "", ""])
    assert out.scores.tolist() == pytest.approx([-s / 500 for s in sizes])
    assert out.details["size_kb"].tolist() == pytest.approx(sizes)
    assert out.scores[1] > out.scores[0] and compressibility.higher_is_better
    assert compressibility.native_range == (-float("inf"), 0.0)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.delenv("NFT_WEIGHTS_DIR", raising=False)
    return tmp_path


def test_missing_checkpoint_is_one_clear_line(offline, monkeypatch):
    with pytest.raises(UserError) as error:
        nft_rewards.load("pickscore")
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("pickscore: weights for model='yuvalkirstain/PickScore_v1' not found (offline")
    assert "config.json" in message and "model.safetensors" in message
    assert "$NFT_WEIGHTS_DIR/yuvalkirstain/PickScore_v1/" in message
    assert "nft weights download pickscore" in message
    monkeypatch.setenv("NFT_WEIGHTS_DIR", str(offline / "weights"))
    with pytest.raises(UserError, match="HPS_v2.1_compressed.pt") as error:
        nft_rewards.load("hpsv2")
    assert f"{offline / 'weights' / 'xswu' / 'HPSv2'}/" in str(error.value)
    with pytest.raises(UserError, match="sac\\+logos\\+ava1-l14-linearMSE.pth|openai/clip-vit-large-patch14"):
        nft_rewards.load("aesthetic")
    with pytest.raises(UserError, match="does not exist"):
        nft_rewards.load("clipscore", model=str(offline / "nowhere"))
    (offline / "partial").mkdir()
    (offline / "partial" / "config.json").write_text("{}")
    with pytest.raises(UserError, match="lacks model.safetensors"):
        nft_rewards.load("clipscore", model=str(offline / "partial"))


def test_weights_table_and_download_guard():
    from nft_rewards.weights import WEIGHTS, download

    assert set(WEIGHTS) == set(nft_rewards.BUILTIN_REWARDS)
    assert WEIGHTS["hpsv2"][0].repo_id == "xswu/HPSv2"
    with pytest.raises(UserError, match="no weights table"):
        download("nope")
