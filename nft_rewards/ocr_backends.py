"""OCR engines behind one call: `engine.read(image) -> [(text, confidence), ...]` in reading order.

`image` is one `[H, W, 3]` uint8 array in the channel order the engine expects for arrays (BGR for both
engines here: they come from the OpenCV world). The reward converts from RGB unless its `bgr_quirk`
option reproduces the reference, which handed RGB arrays to PaddleOCR unchanged.

* `rapidocr` (default): ONNX runtime on the PP-OCR models shipped inside the `rapidocr` wheel, offline.
* `paddleocr` (optional, as the paper): PaddleOCR 2.x (`ocr(img, cls=...)`) or 3.x (`predict`) APIs;
  it downloads its models on first use.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from nft_core.errors import UserError

__all__ = ["OcrEngine", "PaddleOcrEngine", "RapidOcrEngine", "make_engine"]


class OcrEngine(Protocol):
    def read(self, image_bgr: np.ndarray) -> list[tuple[str, float]]: ...


class RapidOcrEngine:
    """rapidocr with PaddleOCR-like knobs: detector side limit, angle classifier, text score threshold."""

    def __init__(
        self,
        det_limit_side_len: int = 960,
        det_limit_type: str = "max",
        use_angle_cls: bool = False,
        text_score: float = 0.5,
    ) -> None:
        try:
            from rapidocr import RapidOCR
        except ImportError as error:
            raise UserError(
                f"ocr: the rapidocr backend needs `pip install rapidocr onnxruntime` (extra [ocr]): {error}"
            ) from None
        self.engine = RapidOCR(
            params={
                "Global.use_cls": use_angle_cls,
                "Global.text_score": text_score,
                "Global.log_level": "error",
                "Det.limit_side_len": det_limit_side_len,
                "Det.limit_type": det_limit_type,
            }
        )

    def read(self, image_bgr: np.ndarray) -> list[tuple[str, float]]:
        result = self.engine(image_bgr)
        if result.txts is None:
            return []
        return [(str(text), float(score)) for text, score in zip(result.txts, result.scores, strict=True)]


class PaddleOcrEngine:
    """PaddleOCR as in the reference: `PaddleOCR(use_angle_cls=False, lang="en")` on the CPU."""

    def __init__(
        self,
        lang: str = "en",
        det_limit_side_len: int = 960,
        det_limit_type: str = "max",
        use_angle_cls: bool = False,
        text_score: float = 0.5,
    ) -> None:
        try:
            import paddleocr
        except ImportError as error:
            raise UserError(
                f"ocr: the paddleocr backend needs `pip install paddleocr paddlepaddle`: {error}"
            ) from None
        self.use_angle_cls = use_angle_cls
        self.major = int(str(getattr(paddleocr, "__version__", "2")).split(".")[0] or 2)
        try:
            if self.major < 3:
                self.engine = paddleocr.PaddleOCR(
                    use_angle_cls=use_angle_cls,
                    lang=lang,
                    use_gpu=False,
                    show_log=False,
                    det_limit_side_len=det_limit_side_len,
                    det_limit_type=det_limit_type,
                    drop_score=text_score,
                )
            else:
                self.engine = paddleocr.PaddleOCR(
                    lang=lang,
                    use_textline_orientation=use_angle_cls,
                    use_doc_orientation_classify=False,
                    use_doc_unwarping=False,
                    text_det_limit_side_len=det_limit_side_len,
                    text_det_limit_type=det_limit_type,
                    text_rec_score_thresh=text_score,
                )
        except Exception as error:  # first use downloads models: offline this fails deep inside paddle
            raise UserError(
                f"ocr: PaddleOCR could not start ({type(error).__name__}: {str(error)[:200]}); "
                "it downloads its "
                "models on first use (needs internet once), or use backend='rapidocr' (weights in its wheel)"
            ) from None

    def read(self, image_bgr: np.ndarray) -> list[tuple[str, float]]:
        if self.major < 3:
            result: Any = self.engine.ocr(image_bgr, cls=self.use_angle_cls)
            lines = result[0] if result else None
            return [(str(line[1][0]), float(line[1][1])) for line in lines or []]
        found = []
        for page in self.engine.predict(image_bgr):
            found += [(str(t), float(s)) for t, s in zip(page["rec_texts"], page["rec_scores"], strict=True)]
        return found


def make_engine(backend: str, **options: Any) -> OcrEngine:
    if backend == "rapidocr":
        options.pop("lang", None)
        return RapidOcrEngine(**options)
    if backend == "paddleocr":
        return PaddleOcrEngine(**options)
    raise UserError(f"ocr: unknown backend {backend!r}; available: rapidocr, paddleocr")
