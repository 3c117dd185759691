"""Validating option tables with pydantic models: the one place validation errors become one line.

A contract module: plugins import it to validate their own options the way the core does, so every
option error, from a TOML file or a Python call, reads the same: `<path>: <problem>; allowed: ...`.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from nft_core.errors import ConfigError

__all__ = ["explain", "toml_path", "validate_options"]

Model = TypeVar("Model", bound=BaseModel)


def toml_path(location: tuple[Any, ...]) -> str:
    """`('reward', 0, 'weight')` -> `reward[0].weight`."""
    text = ""
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _allowed_keys(model: type[BaseModel] | None, location: tuple[Any, ...]) -> list[str] | None:
    """Field names of the (sub)model at a pydantic error location, to list what is allowed."""
    current: Any = model
    for part in location[:-1]:
        if isinstance(part, int):
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return None
        annotation = field.annotation
        args = getattr(annotation, "__args__", ())
        current = next(
            (a for a in (annotation, *args) if isinstance(a, type) and issubclass(a, BaseModel)), None
        )
        if current is None:
            return None
    fields = getattr(current, "model_fields", None)
    return sorted(fields) if fields else None


def explain(error: ValidationError, model: type[BaseModel] | None = None, prefix: str = "") -> str:
    """One line for the first validation error: the TOML path, what is wrong, what is allowed.

    `prefix` is the TOML path of the validated table (`reward[0].options`); `model` lists the allowed
    keys of an unknown one.
    """
    first = error.errors()[0]
    location = tuple(first["loc"])
    path = toml_path(location)
    if prefix:
        path = f"{prefix}.{path}" if path else prefix
    kind = first["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(model, location)
        return f"{path}: unknown key" + (f"; allowed: {', '.join(allowed)}" if allowed else "")
    if kind == "missing":
        return f"{path}: required key is missing"
    message = first["msg"].removeprefix("Value error, ")
    value = first.get("input")
    shown = (
        f" (got {value!r})" if isinstance(value, (str, int, float, bool)) and len(repr(value)) < 60 else ""
    )
    return f"{path}: {message}{shown}" if path else f"{message}{shown}"


def validate_options(model: type[Model], values: dict[str, Any], path: str = "", owner: str = "") -> Model:
    """`model.model_validate(values)`; a problem is one `ConfigError` line.

    `path` prefixes the offending key as a TOML path; `owner` names what the options belong to when
    there is no file (`reward 'ocr'`), as in `reward 'ocr': qualty: unknown key; allowed: ...`.
    """
    try:
        return model.model_validate(values)
    except ValidationError as error:
        line = explain(error, model, path)
        raise ConfigError(f"{owner}: {line}" if owner else line) from None
