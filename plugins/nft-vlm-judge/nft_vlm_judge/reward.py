"""`vlm-judge`: an OpenAI-compatible vision chat model rates each image-prompt pair 1-5; reward = score / 5.

The protocol of NFT's `unifiedreward_score_sglang` (docs/rewards.md §10): pixels are quantized to
uint8, resized to `image_size` squared (PIL bicubic), sent as a base64 PNG data URL followed by the
instruction with the caption, at temperature 0; the reply is searched for `Final Score: <1-5>`
(decimals allowed). A reply without one scores 0, as in the reference, and is counted in the
`parsed` detail.

An edit (its metadata holds the `source_image` an editing policy conditioned on) is judged against its
source: the source image, then the edit, then `edit_instruction` with the editing instruction.
"""

from __future__ import annotations

import base64
import io
import os
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import torch
from PIL import Image
from pydantic import Field, field_validator

from nft_core.errors import UserError
from nft_core.types import SOURCE_IMAGE
from nft_rewards.base import BaseReward, RewardOptions, quantize_uint8, to_numpy_hwc
from nft_vlm_judge.client import ChatClient

__all__ = [
    "API_KEY_ENV",
    "BASE_URL_ENV",
    "DEFAULT_EDIT_INSTRUCTION",
    "DEFAULT_INSTRUCTION",
    "MODEL_ENV",
    "VLMJudgeOptions",
    "VLMJudgeReward",
    "encode_png",
    "parse_final_score",
]

BASE_URL_ENV = "NFT_VLM_JUDGE_BASE_URL"
MODEL_ENV = "NFT_VLM_JUDGE_MODEL"
API_KEY_ENV = "NFT_VLM_JUDGE_API_KEY"
DEFAULT_MODEL = "UnifiedReward-7b-v1.5"

DEFAULT_INSTRUCTION = (
    "<image>\n"
    "You are given a text caption and an image generated from it. Evaluate the image on two criteria:\n"
    "1. Alignment with the caption: how well the image matches it, including the objects, their "
    "attributes, counts and relations described in the caption.\n"
    "2. Overall image quality: clarity, detail, colour accuracy and aesthetic appeal.\n"
    "Considering both, give a score from 1 to 5 after 'Final Score:'.\n"
    "Text Caption: [{prompt}]"
)
"""The UnifiedReward-style instruction; `{prompt}` is replaced by the image's caption."""

DEFAULT_EDIT_INSTRUCTION = (
    "<image>\n<image>\n"
    "You are given a source image (the first) and an edited image (the second) made from it by following "
    "an editing instruction. Evaluate the edit on two criteria:\n"
    "1. Instruction following: how well the edited image carries out the instruction while keeping what "
    "the instruction does not ask to change.\n"
    "2. Overall image quality of the edited image: clarity, detail and the absence of artifacts.\n"
    "Considering both, give a score from 1 to 5 after 'Final Score:'.\n"
    "Instruction: [{prompt}]"
)
"""The instruction for an edit (sent after the source image and the edit); `{prompt}` is the edit's
instruction."""

FINAL_SCORE = re.compile(r"Final Score:\s*([1-5](?:\.\d+)?)")


def parse_final_score(text: str) -> float | None:
    """The 1-5 score after the first `Final Score:` in a reply, or None when there is none."""
    match = FINAL_SCORE.search(text or "")
    return float(match.group(1)) if match else None


def encode_png(image_hwc: Any, size: int) -> str:
    """A `[H,W,3]` uint8 array as a `data:image/png;base64,...` URL, resized to `size` squared (0: as is)."""
    image = Image.fromarray(image_hwc)
    if size and image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class VLMJudgeOptions(RewardOptions):
    """`[reward.options]` of `vlm-judge`. Server, model and key fall back to environment variables."""

    base_url: str | None = Field(
        None, description=f"OpenAI-compatible API root, e.g. http://HOST:PORT/v1; default: ${BASE_URL_ENV}"
    )
    model: str | None = Field(
        None, description=f"served model name; default: ${MODEL_ENV}, else {DEFAULT_MODEL}"
    )
    api_key: str | None = Field(None, description="API key; prefer the environment (api_key_env)")
    api_key_env: str = Field(API_KEY_ENV, description="environment variable holding the API key, if any")
    timeout: float = Field(60.0, gt=0, description="seconds to wait for one reply")
    retries: int = Field(
        2, ge=0, description="retries after a failed request (connection, timeout, 429, 5xx)"
    )
    retry_backoff: float = Field(1.0, ge=0, description="seconds before the first retry, doubled after each")
    concurrency: int = Field(8, ge=1, description="requests in flight at once")
    image_size: int = Field(512, ge=0, description="images are resized to this size squared (0: as they are)")
    temperature: float = Field(0.0, ge=0)
    max_tokens: int | None = Field(None, ge=1, description="reply length limit (default: the server's)")
    instruction: str = Field(
        DEFAULT_INSTRUCTION, description="text after the image; `{prompt}` is the caption"
    )
    edit_instruction: str = Field(
        DEFAULT_EDIT_INSTRUCTION,
        description="text after the source image and the edit, for samples with a source_image (an "
        "editing policy's); `{prompt}` is the editing instruction",
    )

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @field_validator("instruction", "edit_instruction")
    @classmethod
    def _has_prompt(cls, value: str) -> str:
        if "{prompt}" not in value:
            raise ValueError("must contain {prompt}, where the caption goes")
        return value


class VLMJudgeReward(BaseReward):
    """A vision chat model's 1-5 rating of each image against its prompt, / 5 (UnifiedReward style)."""

    name: ClassVar[str] = "vlm-judge"
    higher_is_better: ClassVar[bool] = True
    # a remote model is not bitwise repeatable (server-side batching and kernels), so the conformance kit
    # checks repeatability only when told the server is deterministic
    deterministic: ClassVar[bool] = False
    Options = VLMJudgeOptions

    def __init__(self, options: VLMJudgeOptions | None = None) -> None:
        super().__init__(options or VLMJudgeOptions())
        options = self.options
        self.native_range = (0.0, 1.0)
        base_url = options.base_url or os.environ.get(BASE_URL_ENV, "")
        if not base_url.startswith(("http://", "https://")):
            where = (
                f"${BASE_URL_ENV}={base_url!r}"
                if base_url
                else f"neither base_url nor ${BASE_URL_ENV} is set"
            )
            raise UserError(
                f"reward 'vlm-judge': needs the server's OpenAI-compatible API root "
                f"(e.g. http://HOST:PORT/v1) in [reward.options] base_url or ${BASE_URL_ENV}; {where}"
            )
        self.model = options.model or os.environ.get(MODEL_ENV) or DEFAULT_MODEL
        self.client = ChatClient(
            base_url,
            api_key=options.api_key or os.environ.get(options.api_key_env) or None,
            timeout=options.timeout,
            retries=options.retries,
            retry_backoff=options.retry_backoff,
            label="reward 'vlm-judge'",
        )

    def extra_repr(self) -> str:
        return f"url={self.client.url!r}, model={self.model!r}"

    def request(self, image_url: str, prompt: str, source_url: str | None = None) -> dict[str, Any]:
        """The chat-completion payload for one image and its caption (an edit: its source image first)."""
        urls = [image_url] if source_url is None else [source_url, image_url]
        instruction = self.options.instruction if source_url is None else self.options.edit_instruction
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        *({"type": "image_url", "image_url": {"url": url}} for url in urls),
                        {"type": "text", "text": instruction.replace("{prompt}", prompt)},
                    ],
                }
            ],
            "temperature": self.options.temperature,
        }
        if self.options.max_tokens is not None:
            payload["max_tokens"] = self.options.max_tokens
        return payload

    def score_batch(
        self, images: torch.Tensor, prompts: list[str], metadata: Any
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Send the batch's requests concurrently; scores keep the batch order."""
        size = self.options.image_size
        urls = [encode_png(array, size) for array in to_numpy_hwc(quantize_uint8(images))]
        sources = (
            [entry.get(SOURCE_IMAGE) for entry in metadata] if metadata is not None else [None] * len(urls)
        )
        source_urls = [
            None if source is None else encode_png(to_numpy_hwc(quantize_uint8(source[None]))[0], size)
            for source in sources
        ]
        payloads = [self.request(*request) for request in zip(urls, prompts, source_urls, strict=True)]
        workers = min(self.options.concurrency, len(payloads))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            replies = list(pool.map(self.client.complete, payloads))
        parsed = [parse_final_score(reply) for reply in replies]
        judge = torch.tensor([0.0 if p is None else p for p in parsed], dtype=torch.float32)
        found = torch.tensor([p is not None for p in parsed], dtype=torch.float32)
        return judge / 5.0, {"judge_score": judge, "parsed": found}
