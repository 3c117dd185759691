"""Files: atomic writes (a run directory never holds a half-written file) and prompt files."""

from __future__ import annotations

import codecs
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from nft_core.errors import UserError
from nft_core.types import PromptItem


def _file_mode() -> int:
    """The mode `open()` gives a new file under the process umask (0644 under the usual 022)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def finite_json(data: Any, path: str = "") -> tuple[Any, list[str]]:
    """`data` with every NaN / inf float replaced by None, and the paths (`a.b`, `a[2]`) where that happened.

    JSON has no NaN: `json.dumps` would write a bare `NaN` that strict readers reject.
    """
    if isinstance(data, float) and not math.isfinite(data):
        return None, [path or "."]
    if isinstance(data, dict):
        out, where = {}, []
        for key, value in data.items():
            out[key], found = finite_json(value, f"{path}.{key}" if path else str(key))
            where += found
        return out, where
    if isinstance(data, list | tuple):
        out_list, where = [], []
        for index, value in enumerate(data):
            clean, found = finite_json(value, f"{path}[{index}]")
            out_list.append(clean)
            where += found
        return out_list, where
    return data, []


def strict_json(data: Any, **kwargs: Any) -> str:
    """JSON text with non-finite numbers as null; a dict gets `non_finite`: the keys that were."""
    clean, where = finite_json(data)
    if where and isinstance(clean, dict):
        clean["non_finite"] = where
    return json.dumps(clean, allow_nan=False, **kwargs)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, _file_mode())  # mkstemp makes 0600: teammates could not read a run's files
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Atomic UTF-8 text write."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, data: Any) -> None:
    """Atomic pretty JSON write (strict JSON: non-finite numbers as null, see `strict_json`)."""
    atomic_write_text(path, strict_json(data, indent=2) + "\n")


def check_output_folder(folder: str | Path, option: str = "--out") -> None:
    """A UserError, before any work starts, unless `folder` exists as a writable folder or can be made.

    Walks up to the nearest existing ancestor: a file there means the folder can never be made; else a
    probe file is created in it and removed, since only trying tells (root ignores permission bits, and
    /proc, read-only mounts and full quotas refuse what `os.access` allows).
    """
    folder = Path(folder)
    ancestor = folder
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(f"{option} {folder}: {ancestor} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".nft-write-probe-", dir=ancestor)
    except OSError as error:
        reason = error.strerror or error
        raise UserError(
            f"{option} {folder}: {ancestor} is not writable (creating a file in it failed: {reason})"
        ) from None
    os.close(fd)
    os.unlink(probe)


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """Append one JSON line (a crash can at worst lose the line being written, never corrupt earlier ones)."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(strict_json(record) + "\n")
        handle.flush()


KNOWN_PROMPT_FILES = {
    ("geneval", "evaluation_metadata.jsonl"): "prompts/evaluation_metadata.jsonl of djghosh13/geneval",
    ("ocr", "train.txt"): "the reference's dataset/ocr/train.txt (NVlabs/DiffusionNFT)",
    ("ocr", "test.txt"): "the reference's dataset/ocr/test.txt (NVlabs/DiffusionNFT)",
    ("pickscore", "train.txt"): "the reference's dataset/pickscore/train.txt (NVlabs/DiffusionNFT)",
    ("pickscore", "test.txt"): "the reference's dataset/pickscore/test.txt (NVlabs/DiffusionNFT)",
}
"""Prompt files the presets name and do not ship (licences and size), with where to get each."""


def missing_prompt_file(path: Path) -> str:
    """The one line for a prompt file that is not there: where to get it when a preset names it."""
    source = KNOWN_PROMPT_FILES.get((path.parent.name, path.name))
    if source is not None:
        return f"{path}: prompt file not found; download {source} and put it there (examples/README.md)"
    return f"{path}: prompt file not found"


def read_text_file(path: str | Path) -> str:
    """A user's text file as UTF-8 (a byte-order mark is dropped); a UserError naming the file and the
    byte offset of the first byte that is not UTF-8."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise UserError(f"{path}: cannot be read ({error.strerror or error})") from None
    skip = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[skip:].decode("utf-8")
    except UnicodeDecodeError as error:
        offset = skip + error.start
        line = data.count(b"\n", 0, offset) + 1
        raise UserError(
            f"{path}: not UTF-8 text: byte 0x{data[offset]:02x} at offset {offset} (line {line}: "
            f"{error.reason}); save the file as UTF-8"
        ) from None


def read_prompt_file(path: str | Path) -> list[PromptItem]:
    """`.txt`: one prompt per non-empty line. `.jsonl`: GenEval metadata lines with `prompt`. UTF-8."""
    path = Path(path)
    if not path.is_file():
        raise UserError(missing_prompt_file(path))
    lines = read_text_file(path).splitlines()
    if path.suffix == ".jsonl":
        items = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise UserError(f"{path}:{number}: invalid JSON ({error.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
                raise UserError(f"{path}:{number}: each line must be an object with a string `prompt`")
            items.append(PromptItem(record["prompt"], record))
        return items
    return [PromptItem(line.strip()) for line in lines if line.strip()]
