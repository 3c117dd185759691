"""Where model weights come from, for rewards and policies alike (a contract module).

Every checkpoint option takes a local path or a hub id (`org/name`). A hub id is looked up first in the
weights directory (the `weights_dir` option, else `$NFT_WEIGHTS_DIR`, as `<dir>/<org>/<name>/`), then in
the Hugging Face cache, which is only downloaded into unless the environment says offline. The reward
and policy packages build their one-line "what to download and where" errors on these helpers.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["WEIGHTS_ENV", "hub_offline", "is_hub_id", "weights_dir"]

WEIGHTS_ENV = "NFT_WEIGHTS_DIR"


def weights_dir(option: str | None = None) -> Path | None:
    """The weights directory: the option if given, else `$NFT_WEIGHTS_DIR`, else None."""
    value = option or os.environ.get(WEIGHTS_ENV) or None
    return Path(value).expanduser() if value else None


def hub_offline() -> bool:
    """True when the environment forbids hub access (`HF_HUB_OFFLINE` / `TRANSFORMERS_OFFLINE`)."""
    return any(
        os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on")
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def is_hub_id(reference: str) -> bool:
    """Whether `reference` has the form of a hub id `org/name` (not a path such as `./x`, `/x`, `~/x`)."""
    parts = reference.split("/")
    return (
        len(parts) == 2
        and all(parts)
        and not reference.startswith((".", "~"))
        and not os.path.isabs(reference)
    )
