"""GenEval's colour classifier: CLIP zero-shot on grey-composited object crops (docs/rewards.md §9.4).

* CLIP: open_clip `ViT-L-14-quickgelu` with the OpenAI weights (what official GenEval gets from
  `open-clip-torch==2.20`'s `ViT-L-14` + `pretrained="openai"`; newer open_clip versions drop QuickGELU
  for that name), its tokenizer and eval transform (shortest side 224 bicubic, centre crop, OpenAI stats).
* One classifier per object class, cached (clip-benchmark `zero_shot_classifier`): for each of the ten
  colours encode `a photo of a {color} {class}`, `a photo of a {color}-colored {class}` and
  `a photo of a {color} object`, L2-normalize each, average, re-normalize.
* Crops: the image composited over flat #999999 grey through the instance mask (object pixels kept),
  then cropped to the box (PIL rounds the coordinates), then the CLIP transform.
* `logits = 100 cos(image feature, class weights)`; the colour is the argmax (ties -> earlier colour).

The reference runs this under fp16 autocast on CUDA; here the model's dtype (float32 by default) is used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from nft_core.errors import UserError
from nft_rewards.geneval.scoring import COLORS, Detection
from nft_rewards.weights import OPEN_CLIP_FILES, resolve_file

__all__ = ["GREY", "TEMPLATES", "ClipColorClassifier", "grey_composite_crop"]

TEMPLATES = ("a photo of a {c} {cls}", "a photo of a {c}-colored {cls}", "a photo of a {c} object")
GREY = "#999999"


def grey_composite_crop(image, detection: Detection):
    """The object over flat #999999 grey through its mask (if any), cropped to its box (a PIL image)."""
    from PIL import Image

    if detection.mask is not None:
        if tuple(image.size[::-1]) != tuple(detection.mask.shape):
            raise ValueError(f"mask shape {detection.mask.shape} does not match the image {image.size[::-1]}")
        blank = Image.new("RGB", image.size, color=GREY)
        image = Image.composite(image, blank, Image.fromarray(np.asarray(detection.mask, dtype=bool)))
    return image.crop(tuple(detection.box[:4]))


class ClipColorClassifier(torch.nn.Module):
    """Names the colour of detected objects; `for_image(rgb_hwc)` gives GenEval's `ColorClassifier`."""

    def __init__(
        self,
        architecture: str = "ViT-L-14-quickgelu",
        weights: str = "openai",
        *,
        model_config_file: str | None = None,
        weights_dir: str | None = None,
        dtype: torch.dtype = torch.float32,
        batch_size: int = 16,
        reward: str = "geneval",
    ) -> None:
        super().__init__()
        try:
            import open_clip
        except ImportError as error:
            raise UserError(
                f"{reward}: the colour classifier needs open_clip_torch (extra [geneval]): {error}"
            ) from None
        if model_config_file:
            config = Path(model_config_file).expanduser()
            if not config.is_file():
                raise UserError(f"{reward}: color_model_config_file={model_config_file!r} does not exist")
            open_clip.add_model_config(config)
        if architecture not in open_clip.list_models():
            raise UserError(f"{reward}: unknown open_clip architecture color_model={architecture!r}")
        path = self._weights_path(open_clip, architecture, weights, weights_dir, reward)
        model, _, preprocess = open_clip.create_model_and_transforms(architecture, pretrained=str(path))
        self.model = model.to(dtype).eval()
        self.model.requires_grad_(False)
        self.preprocess = preprocess
        self.tokenizer = open_clip.get_tokenizer(architecture)
        self.batch_size = batch_size
        self._classifiers: dict[str, torch.Tensor] = {}

    @staticmethod
    def _weights_path(
        open_clip: Any, architecture: str, weights: str, weights_dir: str | None, reward: str
    ) -> Path:
        """A local file for `weights`: a path, an open_clip pretrained tag (its hub file), or a hub id."""
        filenames = OPEN_CLIP_FILES
        reference = weights
        if not Path(weights).expanduser().exists() and "/" not in weights:
            config = open_clip.get_pretrained_cfg(architecture, weights)
            hub = (config or {}).get("hf_hub", "")
            if not hub:
                raise UserError(
                    f"{reward}: color_weights={weights!r} is neither a file nor an open_clip tag with "
                    f"hub weights for {architecture}"
                )
            reference, filename = hub.rstrip("/"), ""
            if hub.count("/") == 2 and not hub.endswith("/"):
                reference, filename = hub.rsplit("/", 1)
            filenames = (filename,) if filename else OPEN_CLIP_FILES
        return resolve_file(
            reference,
            reward=reward,
            option="color_weights",
            filenames=filenames,
            weights_dir_option=weights_dir,
        )

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def class_weights(self, class_name: str) -> torch.Tensor:
        """`[D, 10]` zero-shot weights of the ten colours for one object class (cached per device)."""
        key = f"{class_name}@{self.device}"
        if key not in self._classifiers:
            columns = []
            for color in COLORS:
                texts = [template.format(c=color, cls=class_name) for template in TEMPLATES]
                embeddings = self.model.encode_text(self.tokenizer(texts).to(self.device)).float()
                embedding = torch.nn.functional.normalize(embeddings, dim=-1).mean(dim=0)
                columns.append(embedding / embedding.norm())
            self._classifiers[key] = torch.stack(columns, dim=1)
        return self._classifiers[key]

    @torch.no_grad()
    def classify(self, image, class_name: str, detections: list[Detection]) -> list[str]:
        """The colour name of each detection of `class_name` in the PIL image `image`."""
        if not detections:
            return []
        weights = self.class_weights(class_name)
        dtype = next(self.model.parameters()).dtype
        names = []
        for start in range(0, len(detections), self.batch_size):
            crops = [grey_composite_crop(image, d) for d in detections[start : start + self.batch_size]]
            pixels = torch.stack([self.preprocess(crop) for crop in crops]).to(self.device, dtype)
            features = torch.nn.functional.normalize(self.model.encode_image(pixels).float(), dim=-1)
            logits = 100.0 * features @ weights
            names += [COLORS[int(i)] for i in logits.argmax(1)]
        return names

    def for_image(self, image_rgb_hwc: np.ndarray):
        """GenEval's `ColorClassifier` callback bound to one `[H, W, 3]` uint8 RGB image."""
        from PIL import Image

        image = Image.fromarray(image_rgb_hwc).convert("RGB")

        def classify(class_name: str, detections: list[Detection]) -> list[str]:
            return self.classify(image, class_name, detections)

        return classify
