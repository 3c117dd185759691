"""PickScore, CLIP score, aesthetic and HPSv2.1 on tiny random models loaded like real checkpoints."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
import torch
from _rewards_tiny import one_torch_thread, save_tiny_clip, save_tiny_open_clip  # noqa: F401 (autouse fixture)
from PIL import Image

from nft_core.errors import UserError
from nft_core.protocols import Reward
from nft_rewards.aesthetic import AestheticMLP, AestheticOptions, AestheticReward
from nft_rewards.base import features
from nft_rewards.clip_score import ClipScoreOptions, ClipScoreReward, clip_tensor_preprocess
from nft_rewards.hps import HpsOptions, HpsReward, resize_max_size
from nft_rewards.pickscore import PickScoreOptions, PickScoreReward

PROMPTS = ["a photo of a cat", "two dogs", "a red car on a road", "hello", "x"]


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    return save_tiny_clip(tmp_path_factory.mktemp("clip") / "model")


@pytest.fixture(scope="module")
def tiny_hps(tmp_path_factory):
    return save_tiny_open_clip(tmp_path_factory.mktemp("hps"), "tiny-hps", wrap="state_dict")


def random_images(n, height=40, width=56, seed=0, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, height, width, generator=generator).to(dtype)


def cosine(a, b):
    return (torch.nn.functional.normalize(a, dim=-1) * torch.nn.functional.normalize(b, dim=-1)).sum(-1)


def reference_clip(folder):
    from transformers import AutoTokenizer, CLIPImageProcessorPil, CLIPModel

    return (
        CLIPModel.from_pretrained(str(folder)).eval(),
        AutoTokenizer.from_pretrained(str(folder)),
        CLIPImageProcessorPil.from_pretrained(str(folder)),
    )


def pil_images(images):
    arrays = (images.float() * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(a) for a in arrays]


def test_pickscore_is_logit_scale_times_cosine_on_the_diagonal(tiny_clip):
    reward = PickScoreReward(PickScoreOptions(model=str(tiny_clip), processor=str(tiny_clip)))
    assert isinstance(reward, Reward) and reward.name == "pickscore" and reward.higher_is_better
    images = random_images(4)
    out = reward(images, PROMPTS[:4])
    model, tokenizer, processor = reference_clip(tiny_clip)
    with torch.no_grad():
        pixels = processor(images=pil_images(images), return_tensors="pt")["pixel_values"]
        tokens = tokenizer(PROMPTS[:4], padding=True, truncation=True, max_length=77, return_tensors="pt")
        image_embeds = features(model.get_image_features(pixel_values=pixels))
        text_embeds = features(model.get_text_features(**tokens))
        matrix = (
            torch.nn.functional.normalize(text_embeds, dim=-1)
            @ torch.nn.functional.normalize(image_embeds, dim=-1).T
        )
        raw = model.logit_scale.exp() * matrix.diagonal()
    assert reward.logit_scale_exp == pytest.approx(math.exp(3.0), rel=1e-6)  # read from the checkpoint
    assert out.scores.dtype == torch.float32 and out.scores.shape == (4,)
    torch.testing.assert_close(out.details["raw"], raw, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.scores, raw / 26, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out.details["cosine"], matrix.diagonal(), atol=1e-6, rtol=1e-5)
    assert reward.native_range == pytest.approx((-math.exp(3.0) / 26, math.exp(3.0) / 26))
    raw_reward = PickScoreReward(
        PickScoreOptions(model=str(tiny_clip), processor=str(tiny_clip), scale=1.0, shift=2.0)
    )
    torch.testing.assert_close(raw_reward(images, PROMPTS[:4]).scores, raw + 2.0, atol=1e-5, rtol=1e-5)


def test_pickscore_batching_and_half_precision(tiny_clip):
    reward = PickScoreReward(PickScoreOptions(model=str(tiny_clip), processor=str(tiny_clip), batch_size=2))
    images = random_images(5, seed=1)
    batched = reward(images, PROMPTS).scores
    single = torch.cat([reward(images[i : i + 1], PROMPTS[i : i + 1]).scores for i in range(5)])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)
    half = reward(images.half(), PROMPTS).scores
    assert half.dtype == torch.float32 and torch.allclose(half, batched, atol=1e-2)


def test_clipscore_is_cosine_with_bilinear_tensor_preprocessing(tiny_clip):
    reward = ClipScoreReward(ClipScoreOptions(model=str(tiny_clip), batch_size=3))
    images = random_images(4, height=48, width=64, seed=2)
    out = reward(images, PROMPTS[:4])
    model, tokenizer, _ = reference_clip(tiny_clip)
    resized = torch.nn.functional.interpolate(
        images, size=(32, 42), mode="bilinear", antialias=True, align_corners=False
    )
    cropped = resized[..., :, 5:37]
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    pixels = (cropped - mean) / std
    torch.testing.assert_close(
        clip_tensor_preprocess(images, reward.image_config), pixels, atol=1e-5, rtol=1e-5
    )
    with torch.no_grad():
        tokens = tokenizer(
            PROMPTS[:4], padding="max_length", truncation=True, max_length=77, return_tensors="pt"
        )
        logits = model(pixel_values=pixels, **tokens).logits_per_image
    # NFT's logits_per_image.diagonal() / 100 is this cosine when exp(logit_scale) = 100 (OpenAI's)
    torch.testing.assert_close(out.scores, logits.diagonal() / model.logit_scale.exp(), atol=1e-5, rtol=1e-5)
    single = torch.cat([reward(images[i : i + 1], PROMPTS[i : i + 1]).scores for i in range(4)])
    torch.testing.assert_close(out.scores, single, atol=1e-5, rtol=1e-5)
    assert reward.native_range == (-1.0, 1.0)


def test_aesthetic_mlp_shapes_and_keys():
    head = AestheticMLP()
    shapes = {key: tuple(value.shape) for key, value in head.state_dict().items()}
    assert shapes == {
        "layers.0.weight": (1024, 768), "layers.0.bias": (1024,),
        "layers.2.weight": (128, 1024), "layers.2.bias": (128,),
        "layers.4.weight": (64, 128), "layers.4.bias": (64,),
        "layers.6.weight": (16, 64), "layers.6.bias": (16,),
        "layers.7.weight": (1, 16), "layers.7.bias": (1,),
    }  # fmt: skip
    assert [type(m).__name__ for m in head.layers] == [
        "Linear",
        "Dropout",
        "Linear",
        "Dropout",
        "Linear",
        "Dropout",
        "Linear",
        "Linear",
    ]
    assert [m.p for m in head.layers if isinstance(m, torch.nn.Dropout)] == [0.2, 0.2, 0.1]


def test_aesthetic_is_the_mlp_of_the_normalized_image_embedding(tiny_clip, tmp_path):
    torch.manual_seed(3)
    head = AestheticMLP(16)
    head_file = tmp_path / "sac+logos+ava1-l14-linearMSE.pth"
    torch.save(head.state_dict(), head_file)
    reward = AestheticReward(AestheticOptions(model=str(tiny_clip), head=str(tmp_path), batch_size=2))
    images = random_images(3, seed=4)
    out = reward(images, ["", "", ""])
    model, _, processor = reference_clip(tiny_clip)
    with torch.no_grad():
        pixels = processor(images=pil_images(images), return_tensors="pt")["pixel_values"]
        embeds = features(model.get_image_features(pixel_values=pixels))
        expected = head.eval()(embeds / embeds.norm(dim=-1, keepdim=True)).squeeze(-1)
    torch.testing.assert_close(out.scores, expected, atol=1e-5, rtol=1e-5)
    torch.save(AestheticMLP(24).state_dict(), head_file)
    with pytest.raises(UserError, match="24-d"):
        AestheticReward(AestheticOptions(model=str(tiny_clip), head=str(head_file)))


def test_hps_preprocessing_sizes():
    wide = torch.rand(2, 3, 64, 48)  # H > W: width padded
    out = resize_max_size(wide, 32)
    assert out.shape == (2, 3, 32, 32)
    assert torch.all(out[..., :, :4] == 0) and torch.all(out[..., :, 28:] == 0)
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as tvf

    torch.testing.assert_close(out[..., :, 4:28], tvf.resize(wide, [32, 24], InterpolationMode.BICUBIC))
    tall = resize_max_size(torch.rand(1, 3, 45, 60), 224)  # 45 -> round(168) rows, pads 28 above / 28 below
    assert tall.shape == (1, 3, 224, 224)
    assert (
        torch.all(tall[..., :28, :] == 0)
        and torch.all(tall[..., 196:, :] == 0)
        and tall[..., 28:196, :].abs().sum() > 0
    )
    odd = resize_max_size(
        torch.rand(1, 3, 100, 31), 32
    )  # 31 * 0.32 = 9.92 -> 10 columns, pad 11 left / 11 right
    assert torch.all(odd[..., :11] == 0) and torch.all(odd[..., 21:] == 0)
    square = torch.rand(1, 3, 512, 512)
    torch.testing.assert_close(
        resize_max_size(square, 224), tvf.resize(square, [224, 224], InterpolationMode.BICUBIC)
    )


def test_hps_is_cosine_of_open_clip_features(tiny_hps):
    import open_clip

    config, weights = tiny_hps
    reward = HpsReward(
        HpsOptions(
            checkpoint=str(weights), architecture="tiny-hps", model_config_file=str(config), batch_size=2
        )
    )
    images = random_images(3, height=48, width=40, seed=5)
    out = reward(images, PROMPTS[:3])
    model = open_clip.create_model("tiny-hps", pretrained=None)
    model.load_state_dict(
        {
            k.removeprefix("module."): v
            for k, v in torch.load(weights, weights_only=True)["state_dict"].items()
        }
    )
    model.eval()
    pixels = reward.preprocess(images)
    assert pixels.shape == (3, 3, 32, 32)
    with torch.no_grad():
        expected = cosine(
            model.encode_image(pixels), model.encode_text(open_clip.get_tokenizer("tiny-hps")(PROMPTS[:3]))
        )
    torch.testing.assert_close(out.scores, expected, atol=1e-5, rtol=1e-5)
    single = torch.cat([reward(images[i : i + 1], PROMPTS[i : i + 1]).scores for i in range(3)])
    torch.testing.assert_close(out.scores, single, atol=1e-5, rtol=1e-5)


def test_hps_checkpoint_that_does_not_fit(tiny_hps, tmp_path):
    config, weights = tiny_hps
    state = torch.load(weights, weights_only=True)["state_dict"]
    state.pop("module.logit_scale")
    torch.save({"state_dict": state}, tmp_path / "bad.pt")
    with pytest.raises(UserError, match="missing.*logit_scale"):
        HpsReward(
            HpsOptions(
                checkpoint=str(tmp_path / "bad.pt"), architecture="tiny-hps", model_config_file=str(config)
            )
        )


def test_weights_directory_layout(tiny_clip, tmp_path, monkeypatch):
    for repo in ("yuvalkirstain/PickScore_v1", "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"):
        shutil.copytree(tiny_clip, tmp_path / repo)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("NFT_WEIGHTS_DIR", str(tmp_path))
    reward = PickScoreReward()  # default hub ids, found under $NFT_WEIGHTS_DIR/<org>/<name>
    monkeypatch.delenv("NFT_WEIGHTS_DIR")
    other = PickScoreReward(PickScoreOptions(weights_dir=str(tmp_path)))
    images = random_images(2, seed=6)
    torch.testing.assert_close(reward(images, PROMPTS[:2]).scores, other(images, PROMPTS[:2]).scores)
    assert np.isfinite(reward(images, PROMPTS[:2]).scores.numpy()).all()
