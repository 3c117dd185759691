"""Find and load a diffusers pipeline of a policy's family: a local folder or a hub id, never a deep
traceback.

A hub id `org/name` is looked up, in order, in `<weights_dir>/<org>/<name>/` (the `weights_dir` option,
else `$NFT_WEIGHTS_DIR`, as for the rewards) and the Hugging Face cache (downloading into it unless
`HF_HUB_OFFLINE=1`). When none has it, one `UserError` line says what to download and where.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nft_core.errors import UserError
from nft_core.weights import hub_offline, is_hub_id
from nft_core.weights import weights_dir as resolve_weights_dir


@dataclass(frozen=True)
class PipelineSpec:
    """What a policy needs of a pipeline folder: the diffusers class named in `model_index.json`, the
    component folders it must hold, and the ones an option may leave out (with that option's hint)."""

    policy: str
    pipeline_class: str
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()
    optional_hint: str = ""


def _download_hint(model: str, directory: Path | None) -> str:
    target = directory / model if directory else Path("<dir>") / model
    where = "" if directory else f' and set NFT_WEIGHTS_DIR=<dir> (or model = "{target}")'
    return (
        f"download it on a machine with internet: `hf download {model} --local-dir {target}`{where} "
        "(gated models: accept the licence on the model's hub page and log in with `hf auth login` first)"
    )


def check_folder(folder: Path, model: str, spec: PipelineSpec, with_optional: bool = True) -> None:
    """A diffusers folder of `spec`'s family: `model_index.json` naming its pipeline class and the
    component subfolders (the optional ones too, unless `with_optional` is false)."""
    index = folder / "model_index.json"
    if not index.is_file():
        raise UserError(
            f"policy.model: {model!r} is not a diffusers pipeline folder (no model_index.json in {folder})"
        )
    try:
        class_name = json.loads(index.read_text(encoding="utf-8")).get("_class_name")
    except (json.JSONDecodeError, AttributeError):
        raise UserError(f"policy.model: {index} is not valid JSON") from None
    if class_name != spec.pipeline_class:
        raise UserError(
            f"policy.model: {model!r} holds a {class_name} pipeline; the {spec.policy} policy needs "
            f"{spec.pipeline_class}"
        )
    parts = spec.required + (spec.optional if with_optional else ())
    missing = [part for part in parts if not (folder / part).is_dir()]
    if missing:
        only_optional = spec.optional_hint and set(missing) <= set(spec.optional)
        raise UserError(
            f"policy.model: {folder} lacks the component folder(s) {', '.join(missing)}"
            + (f" ({spec.optional_hint})" if only_optional else "")
        )


def resolve_folder(model: str, revision: str | None = None, weights_dir: str | None = None) -> Path:
    """The local folder holding `model` (a folder path or a hub id), downloading it when allowed."""
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
        from diffusers import DiffusionPipeline

        return Path(DiffusionPipeline.download(model, revision=revision, local_files_only=offline))
    except Exception as error:  # any hub or cache failure becomes one line that says what to do
        why = (
            "offline and not in the Hugging Face cache"
            if offline
            else f"download failed: {type(error).__name__}: {str(error).splitlines()[0][:160]}"
        )
        raise UserError(
            f"policy.model: {model!r} is not available ({why}); {_download_hint(model, directory)}"
        ) from None


def load_pipeline(
    spec: PipelineSpec,
    model: str,
    revision: str | None,
    weights_dir: str | None,
    frozen_dtype: Any,
    with_optional: bool = True,
):
    """The pipeline of `spec`'s class: transformer and VAE in float32, the text encoders in
    `frozen_dtype`; without `with_optional`, the optional components are not loaded (None)."""
    import diffusers
    import torch

    folder = resolve_folder(model, revision, weights_dir)
    check_folder(folder, model, spec, with_optional)
    extra: dict[str, Any] = {} if with_optional else dict.fromkeys(spec.optional)
    dtypes = {"default": frozen_dtype, "transformer": torch.float32, "vae": torch.float32}
    pipeline_class = getattr(diffusers, spec.pipeline_class)
    try:
        with warnings.catch_warnings():  # newer diffusers renamed `torch_dtype` to `dtype`; both take a dict
            warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
            return pipeline_class.from_pretrained(str(folder), torch_dtype=dtypes, **extra)
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        first = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise UserError(
            f"policy.model: cannot load the {spec.pipeline_class} pipeline from {folder}: {first}"
        ) from None


__all__ = ["PipelineSpec", "check_folder", "is_hub_id", "load_pipeline", "resolve_folder"]
