"""Find and load a `StableDiffusion3Pipeline`: a local diffusers folder or a hub id, never a deep traceback.

A hub id `org/name` is looked up, in order, in `<weights_dir>/<org>/<name>/` (the `weights_dir` option,
else `$NFT_WEIGHTS_DIR`, as for the rewards) and the Hugging Face cache (downloading into it unless
`HF_HUB_OFFLINE=1`). When none has it, one `UserError` line says what to download and where.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from nft_core.errors import UserError
from nft_rewards.weights import is_hub_id

PIPELINE_CLASS = "StableDiffusion3Pipeline"
REQUIRED = ("transformer", "vae", "scheduler", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2")
T5_PARTS = ("text_encoder_3", "tokenizer_3")


def _download_hint(model: str, directory: Path | None) -> str:
    target = directory / model if directory else Path("<dir>") / model
    where = "" if directory else f' and set NFT_WEIGHTS_DIR=<dir> (or model = "{target}")'
    return (
        f"download it on a machine with internet: `hf download {model} --local-dir {target}`{where} "
        "(gated models: accept the licence on the model's hub page and log in with `hf auth login` first)"
    )


def check_folder(folder: Path, model: str, t5: bool) -> None:
    """A diffusers SD3 folder: `model_index.json` naming the SD3 pipeline and the component subfolders."""
    index = folder / "model_index.json"
    if not index.is_file():
        raise UserError(
            f"policy.model: {model!r} is not a diffusers pipeline folder (no model_index.json in {folder})"
        )
    try:
        class_name = json.loads(index.read_text(encoding="utf-8")).get("_class_name")
    except (json.JSONDecodeError, AttributeError):
        raise UserError(f"policy.model: {index} is not valid JSON") from None
    if class_name != PIPELINE_CLASS:
        raise UserError(
            f"policy.model: {model!r} holds a {class_name} pipeline; the sd3 policy needs {PIPELINE_CLASS}"
        )
    parts = REQUIRED + (T5_PARTS if t5 else ())
    missing = [part for part in parts if not (folder / part).is_dir()]
    if missing:
        raise UserError(
            f"policy.model: {folder} lacks the component folder(s) {', '.join(missing)}"
            + (" (set t5 = false to run without the T5 encoder)" if set(missing) <= set(T5_PARTS) else "")
        )


def resolve_folder(model: str, revision: str | None = None, weights_dir: str | None = None) -> Path:
    """The local folder holding `model` (a folder path or a hub id), downloading it when allowed."""
    from nft_rewards.weights import hub_offline
    from nft_rewards.weights import weights_dir as resolve_weights_dir

    path = Path(model).expanduser()
    if path.exists() or not is_hub_id(model):
        if not path.is_dir():
            what = "is not a folder" if path.exists() else "does not exist"
            raise UserError(
                f"policy.model: {model!r} {what} (expected a diffusers folder or a hub id org/name)"
            )
        return path
    directory = resolve_weights_dir(weights_dir)
    if directory is not None and (directory / model / "model_index.json").is_file():
        return directory / model
    offline = hub_offline()
    try:
        from diffusers import StableDiffusion3Pipeline

        return Path(StableDiffusion3Pipeline.download(model, revision=revision, local_files_only=offline))
    except Exception as error:  # any hub or cache failure becomes one line that says what to do
        why = (
            "offline and not in the Hugging Face cache"
            if offline
            else f"download failed: {type(error).__name__}: {str(error).splitlines()[0][:160]}"
        )
        raise UserError(
            f"policy.model: {model!r} is not available ({why}); {_download_hint(model, directory)}"
        ) from None


def load_pipeline(model: str, revision: str | None, weights_dir: str | None, t5: bool, frozen_dtype: Any):
    """The pipeline: transformer and VAE in float32, the text encoders in `frozen_dtype`."""
    import torch
    from diffusers import StableDiffusion3Pipeline

    folder = resolve_folder(model, revision, weights_dir)
    check_folder(folder, model, t5)
    extra: dict[str, Any] = {} if t5 else {"text_encoder_3": None, "tokenizer_3": None}
    dtypes = {"default": frozen_dtype, "transformer": torch.float32, "vae": torch.float32}
    try:
        with warnings.catch_warnings():  # newer diffusers renamed `torch_dtype` to `dtype`; both take a dict
            warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
            return StableDiffusion3Pipeline.from_pretrained(str(folder), torch_dtype=dtypes, **extra)
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        first = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise UserError(f"policy.model: cannot load the SD3 pipeline from {folder}: {first}") from None


__all__ = ["check_folder", "load_pipeline", "resolve_folder"]
