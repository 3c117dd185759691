"""Throughput of each reward wrapper against calling its underlying engine directly on the same batch.

For every reward the same images and prompts go (a) through the `nft_rewards` object and (b) through the
engine the way the reference scorers call it (processor + model forward + formula, or PIL / rapidocr
loops). Both are timed interleaved in one run; the ratio wrapper/engine is the overhead (goal <= 1.05).

    python benchmarks/rewards.py                       # tiny random models (offline), CPU
    python benchmarks/rewards.py --real --device cuda  # default checkpoints (weights dir or HF cache)

Writes JSON (default `benchmarks/results/rewards.json`) and prints it.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import nft_rewards  # noqa: E402
from nft_rewards.base import features, quantize_uint8, to_numpy_hwc  # noqa: E402


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def pickscore_engine(reward, images, prompts):
    """NFT `PickScoreScorer.__call__` on uint8 PIL-equivalent arrays."""
    model, device = reward.model, reward.device
    pixels = reward.image_processor(images=list(to_numpy_hwc(quantize_uint8(images))), return_tensors="pt")
    tokens = reward.tokenizer(prompts, padding=True, truncation=True, max_length=77, return_tensors="pt")
    image_embeds = features(model.get_image_features(pixel_values=pixels["pixel_values"].to(device)))
    text_embeds = features(model.get_text_features(**{k: v.to(device) for k, v in tokens.items()}))
    image_embeds = image_embeds / image_embeds.norm(p=2, dim=-1, keepdim=True)
    text_embeds = text_embeds / text_embeds.norm(p=2, dim=-1, keepdim=True)
    return (model.logit_scale.exp() * (text_embeds @ image_embeds.T)).diag() / 26


def clipscore_engine(reward, images, prompts):
    """NFT `ClipScorer.__call__`: torchvision transform, full CLIP forward, diagonal / 100."""
    from nft_rewards.clip_score import clip_tensor_preprocess

    pixels = clip_tensor_preprocess(images, reward.image_config).to(images.dtype)
    tokens = reward.tokenizer(
        prompts, padding="max_length", truncation=True, max_length=77, return_tensors="pt"
    )
    out = reward.model(
        pixel_values=pixels.to(reward.device), **{k: v.to(reward.device) for k, v in tokens.items()}
    )
    return out.logits_per_image.diagonal() / 100


def aesthetic_engine(reward, images, prompts):
    """NFT `AestheticScorer.__call__`: processor on uint8, image features, normalize, MLP."""
    pixels = reward.image_processor(images=list(to_numpy_hwc(quantize_uint8(images))), return_tensors="pt")
    embeds = reward.projection(
        reward.vision(pixel_values=pixels["pixel_values"].to(reward.device)).pooler_output
    )
    return reward.head(embeds / embeds.norm(p=2, dim=-1, keepdim=True)).squeeze(-1)


def hps_engine(reward, images, prompts):
    """NFT `HPSv2Scorer.__call__`: tensor ResizeMaxSize + normalize, open_clip forward, diagonal."""
    from torchvision.transforms import functional as tvf

    from nft_rewards.hps import resize_max_size

    pixels = tvf.normalize(resize_max_size(images.float(), reward.image_size), reward.mean, reward.std)
    out = reward.model(pixels, reward.tokenizer(prompts).to(reward.device))
    return (out["image_features"] @ out["text_features"].T).diagonal()


def jpeg_engine(reward, images, prompts):
    import io

    from PIL import Image

    sizes = []
    for array in to_numpy_hwc(quantize_uint8(images)):
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="JPEG", quality=95)
        sizes.append(-buffer.tell() / 1000 / 500)
    return sizes


def ocr_engine(reward, images, prompts):
    return [
        reward.engine.read(np.ascontiguousarray(a[:, :, ::-1])) for a in to_numpy_hwc(quantize_uint8(images))
    ]


def geneval_engine(reward, images, prompts):
    """The detector as mmdet's `inference_detector` runs it: network + instance post-processing (masks, boxes,
    scores). The wrapper adds quantization, GenEval's filtering and scoring, and colour classification
    (none here: random tiny detectors find nothing above the 0.3 threshold)."""
    return reward.detector.detect(quantize_uint8(images), min_score=0.3)


ENGINES = {
    "pickscore": pickscore_engine,
    "clipscore": clipscore_engine,
    "aesthetic": aesthetic_engine,
    "hpsv2": hps_engine,
    "jpeg-compressibility": jpeg_engine,
    "ocr": ocr_engine,
    "geneval": geneval_engine,
}


def tiny_options(folder: Path) -> dict[str, dict]:
    """Options that point every reward at tiny random models built in `folder` (the tests' builders)."""
    from _rewards_tiny import save_tiny_clip, save_tiny_mask2former, save_tiny_open_clip

    from nft_rewards.aesthetic import AestheticMLP

    clip = save_tiny_clip(folder / "clip", image_size=224)
    torch.save(AestheticMLP(16).state_dict(), folder / "head.pth")
    hps_config, hps_weights = save_tiny_open_clip(folder / "hps", "bench-hps", wrap="state_dict")
    color_config, color_weights = save_tiny_open_clip(folder / "colors", "bench-colors")
    detector = save_tiny_mask2former(folder / "mask2former")
    return {
        "pickscore": {"model": str(clip), "processor": str(clip)},
        "clipscore": {"model": str(clip)},
        "aesthetic": {"model": str(clip), "head": str(folder / "head.pth")},
        "hpsv2": {
            "checkpoint": str(hps_weights),
            "architecture": "bench-hps",
            "model_config_file": str(hps_config),
        },
        "jpeg-compressibility": {},
        "ocr": {"det_limit_side_len": 320},
        "geneval": {
            "detector_model": str(detector),
            "color_model": "bench-colors",
            "color_weights": str(color_weights),
            "color_model_config_file": str(color_config),
            "short_side": 256,
            "long_side": 512,
        },
    }


def metadata_for(n: int) -> list[dict]:
    return [
        {
            "tag": "color_attr",
            "include": [
                {"class": "cup", "count": 1, "color": "red"},
                {"class": "dog", "count": 1, "color": "blue"},
            ],
        }
    ] * n


def measure(name: str, reward, images, prompts, repeats: int, device: str) -> dict:
    engine = ENGINES[name]
    metadata = metadata_for(len(prompts)) if name == "geneval" else None
    wrapper_times, engine_times = [], []
    with torch.no_grad():
        reward(images, prompts, metadata)  # warm-up both paths
        engine(reward, images.to(reward.device), prompts)
        for _ in range(repeats):  # interleaved, so drift hits both alike
            sync(device)
            start = time.perf_counter()
            reward(images, prompts, metadata)
            sync(device)
            wrapper_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            engine(reward, images.to(reward.device), prompts)
            sync(device)
            engine_times.append(time.perf_counter() - start)
    wrapper, direct = statistics.median(wrapper_times), statistics.median(engine_times)
    return {
        "images": len(prompts),
        "wrapper_images_per_second": len(prompts) / wrapper,
        "engine_images_per_second": len(prompts) / direct,
        "overhead_ratio": wrapper / direct,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--real", action="store_true", help="default checkpoints instead of tiny random models"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=8, help="images per call")
    parser.add_argument("--size", type=int, default=512, help="image side (the references use 512)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: see docs/rewards.md)")
    parser.add_argument("--rewards", default=",".join(ENGINES), help="comma-separated names")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "rewards.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(args.batch, 3, args.size, args.size, generator=generator)
    prompts = [f'a photo of a red cup next to a sign that says "hello {i}"' for i in range(args.batch)]
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        options = {} if args.real else tiny_options(Path(folder))
        for name in args.rewards.split(","):
            reward = nft_rewards.load(name, batch_size=args.batch, **options.get(name, {})).to(args.device)
            results[name] = measure(name, reward, images, prompts, args.repeats, args.device)
            print(name, json.dumps(results[name]), flush=True)
    report = {
        "benchmark": "reward wrapper vs direct engine call, same batch, interleaved medians",
        "models": "real default checkpoints"
        if args.real
        else "tiny random models (architecture families only)",
        "device": args.device,
        "threads": args.threads,
        "batch": args.batch,
        "image_size": args.size,
        "repeats": args.repeats,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
