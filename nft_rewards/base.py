"""What every reward shares: input checks, the uint8 quantization rule, batching, the reward base class.

Only torch, numpy, pydantic and the core's contract modules (`nft_core.types`, `.errors`, `.options`)
are imported here; model libraries
(transformers, open_clip, rapidocr, ...) are imported inside the reward constructors that need them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from nft_core.errors import UserError
from nft_core.options import validate_options
from nft_core.types import Aggregate, RewardOutput

__all__ = [
    "DTYPES",
    "RANGE_TOLERANCE",
    "BaseReward",
    "ModelOptions",
    "RewardOptions",
    "batch_slices",
    "check_inputs",
    "quantize_uint8",
    "to_numpy_hwc",
]

RANGE_TOLERANCE = 1e-3
"""Pixel values may exceed [0, 1] by this much (rounding of a decoder's output); they are clamped."""

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

Dtype = Literal["float32", "float16", "bfloat16"]


class RewardOptions(BaseModel):
    """Options every reward accepts."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    batch_size: int = Field(16, ge=1, description="images per model call inside one reward call")


class ModelOptions(RewardOptions):
    """Options of rewards that load checkpoints."""

    weights_dir: str | None = Field(
        None,
        description="folder holding downloaded weights as <weights_dir>/<hub id>/<files>; "
        "default: the NFT_WEIGHTS_DIR environment variable, then the Hugging Face cache",
    )
    dtype: Dtype = Field("float32", description="dtype of the model weights (the references run float32)")


def check_inputs(
    name: str,
    images: Any,
    prompts: Any,
    metadata: Any = None,
    *,
    need_metadata: bool = False,
) -> tuple[torch.Tensor, list[str], list[dict[str, Any]] | None]:
    """Validate one reward call; return images clamped to [0, 1], prompts and metadata as lists.

    `images` must be a floating tensor `[N, 3, H, W]` with values in [0, 1] (up to `RANGE_TOLERANCE`),
    `prompts` N strings, `metadata` None or N dicts. Any violation is a UserError with one line.
    """
    if not isinstance(images, torch.Tensor):
        raise UserError(f"{name}: images must be a torch.Tensor [N,3,H,W], got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3:
        video = " (videos: score their frames with the `frames` reward)" if images.ndim == 5 else ""
        raise UserError(f"{name}: images must have shape [N,3,H,W], got {tuple(images.shape)}{video}")
    if not images.is_floating_point():
        raise UserError(
            f"{name}: images must be a float tensor with values in [0,1], got dtype {images.dtype}"
        )
    if isinstance(prompts, str) or not isinstance(prompts, Sequence):
        raise UserError(
            f"{name}: prompts must be a list of strings (one per image), got {type(prompts).__name__}"
        )
    prompts = list(prompts)
    n = images.shape[0]
    if len(prompts) != n:
        raise UserError(f"{name}: {n} images but {len(prompts)} prompts (they are paired one-to-one)")
    bad = next((i for i, p in enumerate(prompts) if not isinstance(p, str)), None)
    if bad is not None:
        raise UserError(f"{name}: prompts[{bad}] must be a string, got {type(prompts[bad]).__name__}")
    if metadata is not None:
        if isinstance(metadata, dict) or not isinstance(metadata, Sequence):
            raise UserError(f"{name}: metadata must be a list of dicts (one per image) or None")
        metadata = list(metadata)
        if len(metadata) != n:
            raise UserError(
                f"{name}: {n} images but {len(metadata)} metadata entries (they are paired one-to-one)"
            )
    elif need_metadata:
        raise UserError(f"{name}: needs one metadata dict per image; got none")
    if n:
        extremes = torch.aminmax(images.detach())
        low, high = float(extremes.min), float(extremes.max)
        if not (np.isfinite(low) and np.isfinite(high)):
            raise UserError(f"{name}: images contain NaN or infinite values")
        if low < -RANGE_TOLERANCE or high > 1 + RANGE_TOLERANCE:
            raise UserError(
                f"{name}: image values must lie in [0,1], got min {low:.4g} max {high:.4g} "
                "(map [-1,1] images with x/2+0.5)"
            )
        if low < 0 or high > 1:
            images = images.clamp(0, 1)
    return images, prompts, metadata


def quantize_uint8(images: torch.Tensor) -> torch.Tensor:
    """The references' pixel rule: `clamp(round(255 x), 0, 255)` as uint8, same layout `[N,3,H,W]`.

    Computed in float32 whatever the input dtype, so half-precision inputs round like float32 ones.
    """
    return (images.float() * 255).round().clamp(0, 255).to(torch.uint8)


def to_numpy_hwc(images_uint8: torch.Tensor) -> np.ndarray:
    """`[N,3,H,W]` uint8 tensor -> `[N,H,W,3]` uint8 numpy array (RGB), on the CPU."""
    return np.ascontiguousarray(images_uint8.permute(0, 2, 3, 1).cpu().numpy())


def batch_slices(n: int, batch_size: int) -> Iterator[slice]:
    """Consecutive slices of at most `batch_size` items covering `range(n)`."""
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


class BaseReward(torch.nn.Module):
    """A reward: `reward(images, prompts, metadata=None) -> RewardOutput`, scores `[N]` float32 on the CPU.

    Subclasses set `name`, `native_range`, `higher_is_better`, `Options` and implement
    `score_batch(images, prompts, metadata) -> (scores [n], details {key: [n]})` for one batch of at most
    `batch_size` images already validated and on the reward's device (or return a `RewardOutput`, which
    may carry per-sample `notes`). The base class checks inputs, splits the call into batches, runs
    without gradients and concatenates. Models are loaded once in `__init__`; `.to(device)` moves them
    (it is `torch.nn.Module.to`). `deterministic` (default True) and `aggregate` (default: the mean
    score) are the other declarations the trainer and `nft eval` read.
    """

    name: ClassVar[str] = "reward"
    higher_is_better: ClassVar[bool] = True
    deterministic: ClassVar[bool] = True
    needs_metadata: ClassVar[bool] = False
    Options: ClassVar[type[BaseModel]] = RewardOptions

    def __init__(self, options: BaseModel, name: str | None = None) -> None:
        super().__init__()
        if name is not None:  # a preset registered under its own name (e.g. `shapes-geneval`)
            self.name = name  # type: ignore[misc]
        self.options = options
        self.batch_size = options.batch_size
        self.native_range: tuple[float, float] = (-float("inf"), float("inf"))
        self.register_buffer("_device_anchor", torch.zeros(0), persistent=False)

    @classmethod
    def from_options(cls, **options: Any) -> BaseReward:
        """Build from keyword options validated by `Options` (bad ones raise a one-line ConfigError)."""
        return cls(validate_options(cls.Options, options, owner=f"reward {cls.name!r}"))

    @property
    def device(self) -> torch.device:
        return self._device_anchor.device

    def extra_repr(self) -> str:
        return ", ".join(f"{key}={value!r}" for key, value in self.options.model_dump().items())

    def score_batch(
        self, images: torch.Tensor, prompts: list[str], metadata: list[dict[str, Any]] | None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]] | RewardOutput:
        """Scores `[n]` and details of one validated batch on the reward's device."""
        raise NotImplementedError

    def aggregate(
        self,
        output: RewardOutput,
        prompts: Sequence[str],
        metadata: Sequence[dict[str, Any]] | None = None,
    ) -> Aggregate:
        """The summary of an evaluation set: the mean score, unless a reward declares its own."""
        return Aggregate.mean(output)

    @torch.no_grad()
    def forward(
        self,
        images: torch.Tensor,
        prompts: Sequence[str],
        metadata: Sequence[dict[str, Any]] | None = None,
    ) -> RewardOutput:
        images, prompts, metadata = check_inputs(
            self.name, images, prompts, metadata, need_metadata=self.needs_metadata
        )
        scores: list[torch.Tensor] = []
        details: dict[str, list[torch.Tensor]] = {}
        notes: list[str] = []
        for part in batch_slices(len(prompts), self.batch_size):
            batch = self.score_batch(
                images[part].to(self.device, non_blocking=True),
                prompts[part],
                None if metadata is None else metadata[part],
            )
            if isinstance(batch, RewardOutput):
                batch_scores, batch_details = batch.scores, batch.details
                notes += batch.notes or []
            else:
                batch_scores, batch_details = batch
            scores.append(batch_scores.detach().float().cpu())
            for key, value in batch_details.items():
                details.setdefault(key, []).append(torch.as_tensor(value).detach().float().cpu())
        if not scores:
            return RewardOutput(scores=torch.zeros(0), details={})
        return RewardOutput(
            scores=torch.cat(scores),
            details={key: torch.cat(values) for key, values in details.items()},
            notes=notes if len(notes) == len(prompts) else None,
        )


def features(output: Any) -> torch.Tensor:
    """Projected CLIP features from `get_image_features` / `get_text_features` (a tensor in transformers 4,
    a `BaseModelOutputWithPooling` whose `pooler_output` holds them in transformers 5)."""
    if isinstance(output, torch.Tensor):
        return output
    for key in ("image_embeds", "text_embeds", "pooler_output"):
        value = getattr(output, key, None)
        if isinstance(value, torch.Tensor):
            return value
    raise TypeError(f"cannot find projected features in {type(output).__name__}")


def clip_image_processor(folder: Any) -> Any:
    """The PIL-based CLIP image processor (bicubic PIL resize, as transformers 4.x that the references pin).

    transformers 5 made `CLIPImageProcessor` a torchvision backend; its PIL one is `CLIPImageProcessorPil`.
    """
    try:
        from transformers import CLIPImageProcessorPil as processor_class
    except ImportError:  # transformers 4.x: CLIPImageProcessor is the PIL one
        from transformers import CLIPImageProcessor as processor_class
    return processor_class.from_pretrained(str(folder))


def torch_dtype(name: str) -> torch.dtype:
    return DTYPES[name]
