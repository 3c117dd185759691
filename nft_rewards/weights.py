"""Where reward weights come from: a local path, the weights directory, or the Hugging Face cache.

Every checkpoint option of a reward takes either a local path or a hub id (`org/name`). A hub id is looked
up, in order, in

1. the weights directory: the reward's `weights_dir` option, else the `NFT_WEIGHTS_DIR` environment
   variable, as `<weights_dir>/<org>/<name>/<files>` (what `nft weights download` writes);
2. the Hugging Face cache (`HF_HOME`), downloading into it unless `HF_HUB_OFFLINE=1`.

When none has the files, loading stops with one `UserError` line that names the files, where to put them
and the download command, never a deep library traceback. `huggingface_hub` is imported only when the
cache is consulted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nft_core.errors import UserError
from nft_core.weights import WEIGHTS_ENV, hub_offline, is_hub_id, weights_dir

__all__ = [
    "WEIGHTS",
    "WEIGHTS_ENV",
    "HubFiles",
    "is_hub_id",
    "download",
    "hub_offline",
    "resolve_file",
    "resolve_repo",
    "weights_dir",
]

MODEL_FILES = (("config.json",), ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"))
"""A transformers model folder: its config and one weights file (or shard index)."""
PROCESSOR_FILES = (("preprocessor_config.json",), ("tokenizer.json", "vocab.json"))
"""A transformers CLIP processor folder: image-processor config and tokenizer files."""
IMAGE_PROCESSOR_FILES = (("preprocessor_config.json",),)
OPEN_CLIP_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


@dataclass(frozen=True)
class HubFiles:
    """Files of one hub repository that a reward needs with its default options."""

    repo_id: str
    patterns: tuple[str, ...]
    purpose: str


WEIGHTS: dict[str, tuple[HubFiles, ...]] = {
    "pickscore": (
        HubFiles("yuvalkirstain/PickScore_v1", ("*.json", "*.safetensors"), "PickScore_v1 CLIP model"),
        HubFiles("laion/CLIP-ViT-H-14-laion2B-s32B-b79K", ("*.json", "*.txt"), "CLIP ViT-H/14 processor"),
    ),
    "hpsv2": (HubFiles("xswu/HPSv2", ("HPS_v2.1_compressed.pt",), "HPS v2.1 state dict"),),
    "clipscore": (
        HubFiles("openai/clip-vit-large-patch14", ("*.json", "*.txt", "*.safetensors"), "CLIP ViT-L/14"),
    ),
    "aesthetic": (
        HubFiles("openai/clip-vit-large-patch14", ("*.json", "*.txt", "*.safetensors"), "CLIP ViT-L/14"),
        HubFiles(
            "camenduru/improved-aesthetic-predictor",
            ("sac+logos+ava1-l14-linearMSE.pth",),
            "LAION aesthetic MLP (mirror of christophschuhmann/improved-aesthetic-predictor)",
        ),
    ),
    "geneval": (
        HubFiles(
            "facebook/mask2former-swin-small-coco-instance",
            ("*.json", "*.safetensors"),
            "Mask2Former Swin-S COCO",
        ),
        HubFiles(
            "timm/vit_large_patch14_clip_224.openai", ("open_clip_model.safetensors",), "OpenAI CLIP ViT-L/14"
        ),
    ),
    "ocr": (),
    "jpeg-compressibility": (),
    "jpeg-incompressibility": (),
    "remote": (),  # the served reward needs its weights where the server runs
}
"""Per reward, the hub files its default options need (`nft weights download REWARD` fetches them)."""


def _describe(groups: Sequence[Sequence[str]]) -> str:
    return ", ".join(
        group[0] if len(group) == 1 else f"{group[0]} (or {' / '.join(group[1:])})" for group in groups
    )


def _missing(folder: Path, groups: Sequence[Sequence[str]]) -> list[Sequence[str]]:
    return [group for group in groups if not any((folder / name).is_file() for name in group)]


def _where(reward: str, repo_id: str, directory: Path | None) -> str:
    target = (
        f"{directory / repo_id}/"
        if directory
        else f"${WEIGHTS_ENV}/{repo_id}/ (set {WEIGHTS_ENV} or weights_dir)"
    )
    return f"put them in {target}, or run `nft weights download {reward}` on a machine with internet"


def _unavailable(
    reward: str, option: str, repo_id: str, files: str, directory: Path | None, why: str
) -> UserError:
    return UserError(
        f"{reward}: weights for {option}={repo_id!r} not found ({why}); needed: {files} from hub repo "
        f"{repo_id}; {_where(reward, repo_id, directory)}; or pass a local path as {option}=..."
    )


def resolve_repo(
    reference: str,
    *,
    reward: str,
    option: str,
    required: Sequence[Sequence[str]],
    weights_dir_option: str | None = None,
    patterns: Sequence[str] = ("*.json", "*.txt", "*.safetensors", "*.model"),
) -> Path:
    """A local folder holding a model: `reference` is a folder path or a hub id.

    `required` lists groups of alternative file names, one of each group must be present (e.g.
    `[("config.json",), ("model.safetensors", "pytorch_model.bin")]`).
    """
    path = Path(reference).expanduser()
    directory = weights_dir(weights_dir_option)
    if path.exists() or not is_hub_id(reference):
        if not path.is_dir():
            what = "is not a folder" if path.exists() else "does not exist"
            raise UserError(
                f"{reward}: {option}={reference!r} {what} (expected a model folder or a hub id org/name)"
            )
        missing = _missing(path, required)
        if missing:
            raise UserError(f"{reward}: {option}={reference!r} lacks {_describe(missing)}")
        return path
    if directory is not None and (directory / reference).is_dir():
        folder = directory / reference
        missing = _missing(folder, required)
        if missing:
            raise _unavailable(
                reward, option, reference, _describe(missing), directory, f"incomplete {folder}"
            )
        return folder
    offline = hub_offline()
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(reference, allow_patterns=list(patterns), local_files_only=offline))
    except Exception as error:  # any hub/cache failure becomes the same one-line message
        why = (
            "offline and not in the Hugging Face cache"
            if offline
            else f"download failed: {type(error).__name__}"
        )
        raise _unavailable(reward, option, reference, _describe(required), directory, why) from None
    missing = _missing(folder, required)
    if missing and not offline and "*.safetensors" in patterns:
        try:  # older repositories ship only pytorch_model.bin
            folder = Path(snapshot_download(reference, allow_patterns=[*patterns, "pytorch_model*.bin"]))
        except Exception:
            pass
        missing = _missing(folder, required)
    if missing:
        raise _unavailable(
            reward, option, reference, _describe(missing), directory, "incomplete in the cache"
        )
    return folder


def resolve_file(
    reference: str,
    *,
    reward: str,
    option: str,
    filenames: Sequence[str],
    weights_dir_option: str | None = None,
) -> Path:
    """A local checkpoint file: `reference` is a file, a folder holding one of `filenames`, or a hub id."""
    path = Path(reference).expanduser()
    directory = weights_dir(weights_dir_option)
    if path.exists() or not is_hub_id(reference):
        if path.is_file():
            return path
        if path.is_dir():
            for name in filenames:
                if (path / name).is_file():
                    return path / name
            raise UserError(f"{reward}: {option}={reference!r} holds none of {', '.join(filenames)}")
        raise UserError(
            f"{reward}: {option}={reference!r} does not exist (expected a file, a folder or a hub id)"
        )
    if directory is not None:
        for name in filenames:
            if (directory / reference / name).is_file():
                return directory / reference / name
    offline = hub_offline()
    errors = []
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as error:  # pragma: no cover - huggingface_hub comes with transformers / open_clip
        errors.append(error)
    else:
        for name in filenames:
            try:
                return Path(hf_hub_download(reference, name, local_files_only=offline))
            except Exception as error:
                errors.append(error)
    why = (
        "offline and not in the Hugging Face cache"
        if offline
        else f"download failed: {type(errors[-1]).__name__}"
    )
    files = " (or ".join(filenames) + ")" * (len(filenames) - 1)
    raise _unavailable(reward, option, reference, files, directory, why)


def download(reward: str, directory: str | None = None) -> list[Path]:
    """Fetch the hub files of `reward`'s default options into the weights directory (or the HF cache).

    Needs internet. With a weights directory the files land in `<dir>/<org>/<name>/`, which is where
    `resolve_repo` / `resolve_file` look first.
    """
    if reward not in WEIGHTS:
        raise UserError(f"no weights table for reward {reward!r}; known: {', '.join(sorted(WEIGHTS))}")
    from huggingface_hub import HfApi, snapshot_download

    target = weights_dir(directory)
    paths = []
    for item in WEIGHTS[reward]:
        patterns = list(item.patterns)
        if "*.safetensors" in patterns:
            files = HfApi().list_repo_files(item.repo_id)
            if not any(name.endswith(".safetensors") for name in files):
                patterns[patterns.index("*.safetensors")] = "pytorch_model*.bin"
        local_dir = str(target / item.repo_id) if target else None
        paths.append(Path(snapshot_download(item.repo_id, allow_patterns=patterns, local_dir=local_dir)))
    return paths
