"""Loading a run config: read the TOML file, apply `--set` overrides, validate the tables and every
plugin's options (unknown keys are errors naming their path), and resolve it for the run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tomllib
from pydantic import ValidationError

from nft_core import registry
from nft_core.config.schema import RunConfig
from nft_core.errors import ConfigError
from nft_core.loop.precision import resolve_precision
from nft_core.options import explain, toml_json, toml_path
from nft_core.outputs.tracking import check_trackers


def parse_override(text: str) -> tuple[list[str | int], Any]:
    """`a.b=value` / `reward[0].weight=2` -> (path parts, value parsed as a TOML literal, else a string)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. train.lr=1e-4")
    key, raw = text.split("=", 1)
    parts: list[str | int] = []
    for piece in key.strip().replace("]", "").replace("[", ".").split("."):
        if piece:
            parts.append(int(piece) if piece.isdigit() else piece)
    if not parts or isinstance(parts[0], int):
        raise ConfigError(f"--set {text!r}: the key must start with a table or key name, e.g. train.lr=1e-4")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return parts, value


def apply_override(data: dict[str, Any], parts: list[str | int], value: Any) -> None:
    """Set a nested key in the raw TOML dict (creating tables as needed)."""
    node: Any = data
    for depth, (part, following) in enumerate(zip(parts[:-1], parts[1:], strict=True)):
        _check_container(node, part, parts, depth)
        if isinstance(part, int):
            if part >= len(node):
                raise ConfigError(f"--set {toml_path(tuple(parts))}: index {part} is out of range")
            node = node[part]
        else:
            node = node.setdefault(part, [] if isinstance(following, int) else {})
    last = parts[-1]
    _check_container(node, last, parts, len(parts) - 1)
    if isinstance(last, int):  # replace an element, or append one right after the last
        if last > len(node):
            raise ConfigError(
                f"--set {toml_path(tuple(parts))}: index {last} is out of range (allowed: 0 to {len(node)})"
            )
        node[last : last + 1] = [value]
        return
    node[last] = value


def _check_container(node: Any, part: str | int, parts: list[str | int], depth: int) -> None:
    """A ConfigError unless `node` (the value at `parts[:depth]`) can hold `part`: a table for a name,
    an array for an index."""
    where = toml_path(tuple(parts[:depth])) if depth else "the top level"
    if isinstance(part, int) and not isinstance(node, list):
        raise ConfigError(f"--set {toml_path(tuple(parts))}: {where} is not an array, so it has no [{part}]")
    if isinstance(part, str) and isinstance(node, list):
        raise ConfigError(
            f"--set {toml_path(tuple(parts))}: {where} is an array of tables; give an index, e.g. "
            f"{where}[0].{part}"
        )
    if isinstance(part, str) and not isinstance(node, dict):
        raise ConfigError(f"--set {toml_path(tuple(parts))}: {where} is a value, not a table with keys")


def load_raw(path: str | Path) -> dict[str, Any]:
    """Read a TOML file; a syntax error names the file and line."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: a folder, not a TOML config file")
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (a TOML config is UTF-8 text)") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: invalid TOML: {error}") from None
    except OSError as error:  # unreadable: permissions, a broken link, ...
        raise ConfigError(f"{path}: cannot read the config: {error.strerror or error}") from None
    if not data:
        raise ConfigError(f"{path}: an empty config (a run needs at least one [[reward]] table)")
    return data


RENAMED = {("sampler",): "solver", ("eval", "sampler"): "eval.solver"}
"""Tables renamed since an earlier release: an old config gets one line saying the new name."""


def _check_renamed(data: dict[str, Any]) -> None:
    for old, new in RENAMED.items():
        node: Any = data
        for part in old:
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:
            raise ConfigError(f"{'.'.join(old)}: renamed to {new} (write [{new}])")


def validate(data: dict[str, Any], source: str = "config") -> RunConfig:
    """Validate the raw dict, then each plugin's own table with the options model it registered."""
    try:
        _check_renamed(data)
        config = RunConfig.model_validate_json(toml_json(data), strict=True)  # TOML types, no coercion
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None
    except ValidationError as error:
        raise ConfigError(f"{source}: {explain(error, RunConfig)}") from None
    checks = [
        ("policies", config.policy.name, config.policy.options(), "policy", "policy"),
        ("solvers", config.solver.name, config.solver.options(), "solver", "solver"),
        ("solvers", config.eval.solver.name, config.eval.solver.options(), "eval.solver", "eval.solver"),
        ("objectives", config.objective.name, config.objective.options(), "objective", "objective"),
    ]
    for index, reward in enumerate(config.reward):
        checks.append(
            ("rewards", reward.name, reward.options, f"reward[{index}]", f"reward[{index}].options")
        )
    try:
        for kind, name, options, table, options_path in checks:
            registry.get(kind, name, f"{table}.name")
            registry.check_options(kind, name, options, options_path, toml=True)
        check_trackers(config.log.trackers, config.log.tracker_options)
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None
    return config


def resolved_config(config: RunConfig) -> dict[str, Any]:
    """`config` as a run directory's `config.resolved.toml` holds it: TOML types, unset options left
    out, `train.precision = "auto"` replaced by what it resolves to on this machine."""
    data = config.model_dump(mode="json", exclude_none=True)
    data["train"]["precision"] = resolve_precision(config.train.precision, config.train.device)
    return data


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Load, override (`--set`) and validate a run config."""
    data = load_raw(path)
    for text in overrides or []:
        parts, value = parse_override(text)
        apply_override(data, parts, value)
    return validate(data, str(path))
