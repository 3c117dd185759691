"""OCR reward: target rules, edit distance, and the real rapidocr engine on text rendered with PIL."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA
from PIL import Image, ImageDraw, ImageFont

from nft_rewards.ocr import OcrOptions, OcrReward, extract_target, levenshtein, normalize_text, ocr_reward

OCR_TEST = SHARED_DATA / "ocr" / "test.txt"


def render(text: str, width: int = 320, height: int = 96, size: int = 32) -> torch.Tensor:
    image = Image.new("RGB", (width, height), "white")
    ImageDraw.Draw(image).text(
        (12, (height - size) // 2), text, fill="black", font=ImageFont.load_default(size=size)
    )
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)


@pytest.fixture(scope="module")
def reward():
    return OcrReward(OcrOptions(det_limit_side_len=320, use_angle_cls=False))


@pytest.mark.parametrize(
    ("a", "b", "distance"),
    [("", "", 0), ("abc", "", 3), ("", "abcd", 4), ("kitten", "sitting", 3), ("flaw", "lawn", 2),
     ("abc", "abc", 0), ("ab", "ba", 2), ("E=mc²", "e=mc2", 2), ("½", "1/2", 3)],
)  # fmt: skip
def test_levenshtein(a, b, distance):
    assert levenshtein(a, b) == distance == levenshtein(b, a)


def test_target_rules():
    assert extract_target('A sign that says "Hello World" and "x"') == "Hello World"
    assert extract_target("no quotes at all") is None
    assert extract_target('only one " quote') is None
    assert extract_target('empty "" quotes') == ""
    assert extract_target("curly \u201cquotes\u201d") is None
    assert normalize_text(" Hello\tWorld ") == "hello\tworld"  # only ASCII spaces are removed
    assert ocr_reward("THE HELLO WORLD SIGN", "Hello World") == (1.0, 0)  # substring -> full reward
    assert ocr_reward("", "abcd") == (0.0, 4)
    assert ocr_reward("helo", "hello") == (pytest.approx(0.8), 1)
    assert ocr_reward("completely unrelated long text", "ab") == (0.0, 2)  # distance clamped to len(target)


def test_rendered_text_scores(reward):
    images = torch.stack([render("HELLO 2049"), render("Open Daily")])
    right = reward(images, ['a sign that says "Hello 2049"', 'a shop window with "OPEN DAILY"']).scores
    wrong = reward(images, ['a sign that says "Quantum Zebra"', 'a shop window with "Turtle Soup"']).scores
    assert torch.all(right >= 0.9), right
    assert torch.all(wrong <= 0.5), wrong


def test_prompt_errors_score_zero_with_a_flag(reward):
    images = torch.stack([render("HELLO"), render("HELLO"), render("HELLO")])
    out = reward(images, ["no quotes here", 'empty "" target', 'says "hello"'])
    assert out.scores.tolist()[:2] == [0.0, 0.0] and out.scores[2] >= 0.9
    assert out.details["error"].tolist() == [1.0, 1.0, 0.0]


def test_engine_failure_and_channel_order():
    class Engine:
        def __init__(self):
            self.seen = []

        def read(self, image):
            self.seen.append(image)
            if len(self.seen) == 2:
                raise RuntimeError("boom")
            return [("hel", 0.9), ("lo", 0.8)]

    reward = OcrReward(OcrOptions(det_limit_side_len=64))
    reward.engine = Engine()
    image = torch.zeros(1, 3, 8, 8)
    image[:, 0] = 1.0  # pure red
    out = reward(image.repeat(2, 1, 1, 1), ['"hello"', '"hello"'])
    assert out.scores.tolist() == [1.0, 0.0] and out.details["error"].tolist() == [0.0, 1.0]
    assert reward.engine.seen[0][0, 0].tolist() == [0, 0, 255]  # BGR for the engine
    reward.options.bgr_quirk = True
    reward(image, ['"x"'])
    assert reward.engine.seen[-1][0, 0].tolist() == [255, 0, 0]  # the reference's RGB-as-BGR


@pytest.mark.skipif(not OCR_TEST.is_file(), reason="public OCR prompts (../shared/data) not available")
def test_non_ascii_targets_of_the_test_prompts(reward):
    prompts = [line for line in OCR_TEST.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(prompts) == 1018
    targets = [extract_target(p) for p in prompts]
    assert all(t is not None and normalize_text(t) for t in targets)
    non_ascii = [p for p, t in zip(prompts, targets, strict=True) if not t.isascii()]
    assert len(non_ascii) == 10
    images = torch.stack([render(extract_target(p), width=256, height=64, size=24) for p in non_ascii[:4]])
    out = reward(images, non_ascii[:4])
    assert out.scores.shape == (4,) and torch.all((out.scores >= 0) & (out.scores <= 1))
    assert out.details["error"].sum() == 0
