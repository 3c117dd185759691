"""The official GenEval detector through mmdetection (optional; never needed by the tests).

Official GenEval pins mmdet 2.27 / mmcv-full 1.7.1 with config
`configs/mask2former/mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco.py` and checkpoint
`mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco_20220504_001756-743b7d99.pth`
(download.openmmlab.com). mmdet 3.x result objects are read too.

Channel order: for array inputs mmdet uses the array as BGR and its `Normalize(to_rgb=True)` swaps it, so
correct input is BGR. The official benchmark reads PNG files (BGR, correct). NFT / Flow-GRPO handed it RGB
arrays: `bgr_quirk=True` reproduces that.
"""

from __future__ import annotations

import numpy as np
import torch

from nft_core.errors import UserError
from nft_rewards.base import to_numpy_hwc
from nft_rewards.geneval.mask2former import GENEVAL_CLASSES
from nft_rewards.geneval.scoring import Detection, Detections

__all__ = ["MmdetDetector"]


class MmdetDetector(torch.nn.Module):
    def __init__(self, config: str, checkpoint: str, *, bgr_quirk: bool = False, device: str = "cpu") -> None:
        super().__init__()
        try:
            from mmdet.apis import inference_detector, init_detector
        except ImportError as error:
            raise UserError(
                f"geneval: detector='mmdet' needs mmdet and mmcv (extra [mmdet]): {error}"
            ) from None
        self._inference = inference_detector
        self.model = init_detector(config, checkpoint, device=device)
        self.bgr_quirk = bgr_quirk

    def detect(self, images_uint8: torch.Tensor, min_score: float = 0.0) -> list[Detections]:
        arrays = to_numpy_hwc(images_uint8)
        if not self.bgr_quirk:
            arrays = np.ascontiguousarray(arrays[..., ::-1])
        results = self._inference(self.model, list(arrays))
        return [self._convert(result, min_score) for result in results]

    @staticmethod
    def _convert(result, min_score: float) -> Detections:
        found: Detections = {}
        if isinstance(result, tuple):  # mmdet 2.x: (bbox_results, segm_results), one entry per class
            boxes_per_class, masks_per_class = result
            for label, (boxes, masks) in enumerate(zip(boxes_per_class, masks_per_class, strict=True)):
                for box, mask in zip(boxes, masks, strict=True):
                    if np.float32(box[4]) > np.float32(min_score):
                        found.setdefault(GENEVAL_CLASSES[label], []).append(
                            Detection(
                                tuple(float(v) for v in box[:4]), float(box[4]), np.asarray(mask, dtype=bool)
                            )
                        )
            return found
        instances = result.pred_instances  # mmdet 3.x DetDataSample
        for box, score, label, mask in zip(
            instances.bboxes.cpu().numpy(),
            instances.scores.cpu().numpy(),
            instances.labels.cpu().tolist(),
            instances.masks.cpu().numpy(),
            strict=True,
        ):
            if np.float32(score) > np.float32(min_score):
                found.setdefault(GENEVAL_CLASSES[label], []).append(
                    Detection(tuple(float(v) for v in box), float(score), mask.astype(bool))
                )
        return found
