"""GenEval's detector on transformers: Mask2Former COCO instance segmentation with mmdet 2.x's test
pipeline and post-processing (docs/rewards.md §9.2).

Default checkpoint `facebook/mask2former-swin-small-coco-instance`: Swin-S, 100 queries, the same model
family and size as GenEval's mmdet checkpoint, converted from the original Mask2Former release, so scores
can differ slightly from the official benchmark (the `mmdet` backend runs the exact one).

* Preprocessing (mmdet LSJ test pipeline): keep-ratio bilinear resize to fit (1333, 800) (512^2 -> 800^2),
  ImageNet mean/std (from the checkpoint's preprocessor config when present), zero padding to a multiple
  of 32. `bgr_quirk=True` swaps the channels first, as NFT / Flow-GRPO did by handing RGB arrays to mmdet.
* Post-processing (mmdet 2.x `MaskFormerFusionHead.instance_postprocess`): mask logits resized to the
  padded input, cropped to the resized image, resized to the original size (bilinear); class scores =
  softmax without "no object"; top-100 (query, class) pairs; binary masks = logits > 0; score = class
  probability x mean sigmoid inside the mask; box = the mask's extent `(x_min, y_min, x_max + 1, y_max + 1)`.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch

from nft_core.errors import UserError
from nft_rewards.geneval.scoring import Detection, Detections
from nft_rewards.weights import MODEL_FILES, resolve_repo

__all__ = ["GENEVAL_CLASSES", "Mask2FormerDetector", "mask_boxes", "resize_keep_ratio"]

GENEVAL_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "computer mouse", "tv remote",
    "computer keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book",
    "clock",
    "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip
"""The 80 COCO thing classes with GenEval's names, in detector index order (GenEval `object_names.txt`)."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resize_keep_ratio(height: int, width: int, short: int = 800, long: int = 1333) -> tuple[int, int]:
    """mmcv `rescale_size`: the largest scale fitting (long, short), sizes rounded half up."""
    scale = min(long / max(height, width), short / min(height, width))
    return int(height * scale + 0.5), int(width * scale + 0.5)


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """mmdet `mask2bbox`: bool `[n, H, W]` -> `[n, 4]` boxes `(x_min, y_min, x_max + 1, y_max + 1)`."""
    n = masks.shape[0]
    boxes = torch.zeros((n, 4), dtype=torch.float32, device=masks.device)
    if n == 0:
        return boxes
    x_any, y_any = masks.any(dim=1), masks.any(dim=2)
    xs = torch.arange(masks.shape[2], device=masks.device)
    ys = torch.arange(masks.shape[1], device=masks.device)
    big = masks.shape[1] + masks.shape[2]
    x_min = torch.where(x_any, xs, big).amin(1)
    x_max = torch.where(x_any, xs, -1).amax(1)
    y_min = torch.where(y_any, ys, big).amin(1)
    y_max = torch.where(y_any, ys, -1).amax(1)
    found = x_any.any(1) & y_any.any(1)
    boxes[found] = torch.stack([x_min, y_min, x_max + 1, y_max + 1], dim=1)[found].float()
    return boxes


class Mask2FormerDetector(torch.nn.Module):
    """`detect(images_uint8 [N,3,H,W]) -> [Detections per image]` with masks; see the module docstring."""

    def __init__(
        self,
        model: str = "facebook/mask2former-swin-small-coco-instance",
        *,
        weights_dir: str | None = None,
        dtype: torch.dtype = torch.float32,
        short_side: int = 800,
        long_side: int = 1333,
        max_per_image: int = 100,
        bgr_quirk: bool = False,
        reward: str = "geneval",
    ) -> None:
        super().__init__()
        try:
            from transformers import Mask2FormerForUniversalSegmentation
        except ImportError as error:
            raise UserError(
                f"{reward}: the mask2former detector needs transformers (extra [geneval]): {error}"
            ) from None
        folder = resolve_repo(
            model,
            reward=reward,
            option="detector_model",
            required=MODEL_FILES,
            weights_dir_option=weights_dir,
        )
        self.model = Mask2FormerForUniversalSegmentation.from_pretrained(str(folder)).to(dtype).eval()
        self.model.requires_grad_(False)
        mean, std = IMAGENET_MEAN, IMAGENET_STD
        config_file = folder / "preprocessor_config.json"
        if config_file.is_file():
            config = json.loads(config_file.read_text())
            mean, std = config.get("image_mean", mean), config.get("image_std", std)
        self.register_buffer(
            "mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        labels = self.model.config.num_labels
        if labels == len(GENEVAL_CLASSES):
            self.class_names = GENEVAL_CLASSES
        else:
            self.class_names = tuple(self.model.config.id2label[i] for i in range(labels))
        self.short_side, self.long_side = short_side, long_side
        self.max_per_image = max_per_image
        self.bgr_quirk = bgr_quirk

    def preprocess(self, images_uint8: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """uint8 `[N,3,H,W]` -> normalized, resized, padded float input and the resized (unpadded) size."""
        images = images_uint8.float() / 255
        if self.bgr_quirk:
            images = images.flip(1)
        height, width = resize_keep_ratio(*images.shape[-2:], short=self.short_side, long=self.long_side)
        images = torch.nn.functional.interpolate(
            images, size=(height, width), mode="bilinear", align_corners=False
        )
        images = (images - self.mean) / self.std
        pad_h, pad_w = (-height) % 32, (-width) % 32
        return torch.nn.functional.pad(images, (0, pad_w, 0, pad_h)), (height, width)

    def detect(self, images_uint8: torch.Tensor, min_score: float = 0.0) -> list[Detections]:
        """Per image: class name -> detections with score `> min_score` (float32), boxes and bool masks."""
        height, width = images_uint8.shape[-2:]
        pixels, (resized_h, resized_w) = self.preprocess(images_uint8.to(self.mean.device))
        dtype = next(self.model.parameters()).dtype
        outputs = self.model(pixel_values=pixels.to(dtype))
        class_logits = outputs.class_queries_logits.float()
        mask_logits = outputs.masks_queries_logits.float()
        num_classes = class_logits.shape[-1] - 1
        results = []
        for index in range(class_logits.shape[0]):
            scores = class_logits[index].softmax(-1)[:, :-1]
            k = min(self.max_per_image, scores.numel())
            top_scores, top_indices = scores.flatten().topk(k, sorted=False)
            labels = top_indices % num_classes
            queries = top_indices // num_classes
            masks = mask_logits[index, queries][None]
            masks = torch.nn.functional.interpolate(
                masks, size=pixels.shape[-2:], mode="bilinear", align_corners=False
            )
            masks = masks[..., :resized_h, :resized_w]
            masks = torch.nn.functional.interpolate(
                masks, size=(height, width), mode="bilinear", align_corners=False
            )[0]
            binary = masks > 0
            mask_scores = (masks.sigmoid() * binary).flatten(1).sum(1) / (binary.flatten(1).sum(1) + 1e-6)
            det_scores = top_scores * mask_scores
            keep = torch.nonzero(det_scores > min_score).flatten()
            boxes = mask_boxes(binary[keep]).cpu().numpy()
            kept_masks = binary[keep].cpu().numpy()
            kept_scores = det_scores[keep].cpu().numpy().astype(np.float32)
            kept_labels = labels[keep].cpu().tolist()
            detections: Detections = {}
            for j, label in enumerate(kept_labels):
                detections.setdefault(self.class_names[label], []).append(
                    Detection(tuple(float(v) for v in boxes[j]), float(kept_scores[j]), kept_masks[j])
                )
            results.append(detections)
        return results

    def forward(self, images_uint8: torch.Tensor) -> list[Detections]:
        return self.detect(images_uint8)


def describe(detections: Detections) -> dict[str, Any]:
    """A compact JSON-able summary (class -> [[x1, y1, x2, y2, score], ...]) for logs and the CLI."""
    return {
        name: [[*map(lambda v: round(v, 2), d.box), round(float(d.score), 4)] for d in found]
        for name, found in detections.items()
    }
