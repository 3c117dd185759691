"""HPSv2.1 (docs/rewards.md §3; Wu et al. 2023, `tgxs002/HPSv2`; NFT `flow_grpo/hpsv2_scorer.py`).

Model: open_clip `ViT-H-14` (embed 1024; vision 224 px, patch 14, 32 layers, width 1280; text 77 tokens,
24 layers, width 1024), built without pretrained weights, then the HPS v2.1 state dict
(`HPS_v2.1_compressed.pt` of hub repo `xswu/HPSv2`, key `state_dict`) is loaded over every parameter:
the LAION base checkpoint the reference also loads is fully overwritten, so it is not needed.
Tokenizer: open_clip's for the architecture (the CLIP BPE shipped with open_clip, context 77).

Preprocessing (NFT's tensor version of HPS `ResizeMaxSize`): the float [0,1] tensor, not quantized;
`scale = S / max(H, W)` with `S` the model's image size (224); if `scale != 1`, bicubic (antialiased)
resize to `(round(H scale), round(W scale))`, then zero padding to `S x S` (left/top get half, rounded
down); normalize with the model's mean/std (OpenAI CLIP). No centre crop.

Score: the cosine of the normalized image and text features of each pair (no logit scale), ~0.2-0.35.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import Field

from nft_core.errors import UserError
from nft_rewards.base import BaseReward, ModelOptions, torch_dtype
from nft_rewards.weights import resolve_file

__all__ = ["HpsOptions", "HpsReward", "resize_max_size"]

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def resize_max_size(images: torch.Tensor, size: int, fill: float = 0.0) -> torch.Tensor:
    """HPS `ResizeMaxSize` on tensors: longest side to `size` (bicubic, antialias), zero-pad to `size^2`."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as tvf

    height, width = images.shape[-2:]
    scale = size / float(max(height, width))
    if scale == 1.0:
        return images
    new_size = [round(height * scale), round(width * scale)]
    images = tvf.resize(images, new_size, InterpolationMode.BICUBIC)
    pad_h, pad_w = size - new_size[0], size - new_size[1]
    return tvf.pad(images, [pad_w // 2, pad_h // 2, pad_w - pad_w // 2, pad_h - pad_h // 2], fill=fill)


@contextlib.contextmanager
def _without_random_init_warning():
    """Drop open_clip's 'No pretrained weights loaded ... initialized randomly' root-logger warning."""

    def keep(record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        checkpoint = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:
        raise UserError(f"hpsv2: cannot read {path} as a torch checkpoint ({type(error).__name__})") from None
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise UserError(f"hpsv2: {path} holds no state dict")
    return {key.removeprefix("module."): value for key, value in state.items()}


class HpsOptions(ModelOptions):
    """`[reward.options]` of `hpsv2`."""

    checkpoint: str = Field(
        "xswu/HPSv2", description="HPS state dict: a file, a folder holding checkpoint_file, or a hub id"
    )
    checkpoint_file: str = Field(
        "HPS_v2.1_compressed.pt", description="file name inside a folder or hub repo"
    )
    architecture: str = Field("ViT-H-14", description="open_clip model name")
    model_config_file: str | None = Field(
        None, description="JSON config of a custom open_clip architecture, registered under its file stem"
    )


class HpsReward(BaseReward):
    """HPSv2.1: cosine of open_clip ViT-H-14 features with the HPS v2.1 weights, longest-side resize + pad."""

    name: ClassVar[str] = "hpsv2"
    Options = HpsOptions

    def __init__(self, options: HpsOptions | None = None) -> None:
        options = options or HpsOptions()
        super().__init__(options)
        import open_clip

        path = resolve_file(
            options.checkpoint,
            reward=self.name,
            option="checkpoint",
            filenames=(options.checkpoint_file,),
            weights_dir_option=options.weights_dir,
        )
        if options.model_config_file:
            config = Path(options.model_config_file).expanduser()
            if not config.is_file():
                raise UserError(f"hpsv2: model_config_file={options.model_config_file!r} does not exist")
            open_clip.add_model_config(config)
        if options.architecture not in open_clip.list_models():
            raise UserError(f"hpsv2: unknown open_clip architecture {options.architecture!r}")
        with _without_random_init_warning():  # the HPS state dict is loaded right below
            model = open_clip.create_model(
                options.architecture, pretrained=None, precision="fp32", output_dict=True
            )
        missing, unexpected = model.load_state_dict(_load_state_dict(path), strict=False)
        if missing or unexpected:
            raise UserError(
                f"hpsv2: {path} does not fit open_clip {options.architecture}: "
                f"missing {sorted(missing)[:3]}, "
                f"unexpected {sorted(unexpected)[:3]}"
            )
        self.model = model.to(torch_dtype(options.dtype)).eval()
        self.model.requires_grad_(False)
        self.tokenizer = open_clip.get_tokenizer(options.architecture)
        image_size = self.model.visual.image_size
        self.image_size = int(image_size[0] if isinstance(image_size, (tuple, list)) else image_size)
        self.mean = tuple(getattr(self.model.visual, "image_mean", None) or OPENAI_MEAN)
        self.std = tuple(getattr(self.model.visual, "image_std", None) or OPENAI_STD)
        self.native_range = (-1.0, 1.0)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """`[N,3,H,W]` float in [0,1] -> the model input `[N,3,S,S]` (resize longest side, pad, normalize)."""
        from torchvision.transforms import functional as tvf

        return tvf.normalize(resize_max_size(images.float(), self.image_size), self.mean, self.std)

    def score_batch(
        self, images: torch.Tensor, prompts: list[str], metadata: Any
    ) -> tuple[torch.Tensor, dict]:
        dtype = next(self.model.parameters()).dtype
        pixels = self.preprocess(images).to(dtype)
        tokens = self.tokenizer(prompts).to(self.device)
        image_features = self.model.encode_image(pixels, normalize=True).float()
        text_features = self.model.encode_text(tokens, normalize=True).float()
        return (image_features * text_features).sum(-1), {}
