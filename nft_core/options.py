"""Validating option tables with pydantic models: the one place validation errors become one line.

A contract module: plugins import it to validate their own options the way the core does, so every
option error, from a TOML file or a Python call, reads the same: `<path>: <problem>; allowed: ...`.
"""

from __future__ import annotations

import datetime
import json
import math
import types
import typing
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from nft_core.errors import ConfigError, UserError

__all__ = ["check_finite", "explain", "parse_option", "toml_json", "toml_path", "validate_options"]

Model = TypeVar("Model", bound=BaseModel)

_EXPECTED = {
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "string_type": "a string",
    "list_type": "an array",
    "tuple_type": "an array",
    "dict_type": "a table",
    "model_type": "a table",
    "model_attributes_type": "a table",
}
"""What a type error of one union member expects, in TOML words (`lora`: true or false, or a table)."""


def toml_path(location: tuple[Any, ...]) -> str:
    """`('reward', 0, 'weight')` -> `reward[0].weight`."""
    text = ""
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _walk(values: Any, check: Any, location: tuple[Any, ...] = ()) -> None:
    """Call `check(value, location)` on every leaf of nested tables and arrays."""
    if isinstance(values, dict):
        for key, item in values.items():
            _walk(item, check, (*location, key))
    elif isinstance(values, (list, tuple)):
        for index, item in enumerate(values):
            _walk(item, check, (*location, index))
    else:
        check(values, location)


def _joined(prefix: str, location: tuple[Any, ...]) -> str:
    path = toml_path(location)
    return f"{prefix}.{path}" if prefix and path else prefix or path


def check_finite(values: Any, prefix: str = "") -> None:
    """A ConfigError naming the first key whose number is infinite or NaN: no option of a run, the
    core's or a plugin's, accepts one (TOML writes them `inf` and `nan`; an lr of inf ends in NaN
    weights)."""

    def reject(value: Any, location: tuple[Any, ...]) -> None:
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{_joined(prefix, location)}: must be a finite number (got {value})")

    _walk(values, reject)


def toml_json(values: dict[str, Any], prefix: str = "") -> str:
    """TOML data as JSON text, for pydantic's strict JSON-mode validation: a string is not a number,
    `1` is not `true`, and an array is a tuple. A TOML date or time, or a number that is not finite, is a
    ConfigError naming its key."""

    def reject(value: Any, location: tuple[Any, ...]) -> None:
        if isinstance(value, (datetime.date, datetime.time)):  # datetime is a date
            path = _joined(prefix, location)
            raise ConfigError(f"{path}: a TOML date/time is not allowed here (got {value}); quote it")

    _walk(values, reject)
    check_finite(values, prefix)
    return json.dumps(values)


def _union_members(annotation: Any) -> tuple[Any, ...] | None:
    """The members of a union other than None, or None when `annotation` is not a union."""
    if typing.get_origin(annotation) not in (typing.Union, types.UnionType):
        return None
    return tuple(member for member in typing.get_args(annotation) if member is not type(None))


def _child(annotation: Any, part: Any) -> Any:
    """The annotation of `part` (a field name, key or index) inside `annotation`; None when unknown."""
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        field = annotation.model_fields.get(part) if isinstance(part, str) else None
        return None if field is None else field.annotation
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (list, set, frozenset) and args:
        return args[0]
    if origin is tuple and args:
        if len(args) == 2 and args[1] is Ellipsis:
            return args[0]
        return args[part] if isinstance(part, int) and part < len(args) else None
    if origin is dict and len(args) == 2:
        return args[1]
    return None


def _tag(member: Any) -> str:
    return member.__name__ if isinstance(member, type) else str(member)


def _resolve(
    model: type[BaseModel] | None, location: tuple[Any, ...]
) -> tuple[tuple[Any, ...], int | None, Any]:
    """A pydantic error location without union member tags (`('lora', 'LoraOptions', 'rank')` ->
    `('lora', 'rank')`), where in it the first union was (or None), and the annotation holding its last
    part (a model, for an unknown key)."""
    current: Any = model
    parent: Any = None
    clean: list[Any] = []
    union_at: int | None = None
    for part in location:
        while typing.get_origin(current) is typing.Annotated:
            current = typing.get_args(current)[0]
        members = _union_members(current)
        if members is not None and len(members) == 1:
            current, members = members[0], None
        if members is not None:  # this part is the tag of the union member that failed
            union_at = len(clean) if union_at is None else union_at
            current = next((member for member in members if _tag(member) == part), None)
            continue
        clean.append(part)
        parent, current = current, _child(current, part)
    return tuple(clean), union_at, parent


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model `annotation` is, or holds as a union member."""
    for candidate in (annotation, *(_union_members(annotation) or ())):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _choose(errors: list[Any], model: type[BaseModel] | None) -> tuple[Any, tuple[Any, ...], Any, list[str]]:
    """The error to report, its clean location, the annotation holding its key and, when a value
    matched no member of a union, what each member expects."""
    first = errors[0]
    location, union_at, parent = _resolve(model, tuple(first["loc"]))
    if union_at is None:
        return first, location, parent, []
    group = []
    for error in errors:
        clean, at, holder = _resolve(model, tuple(error["loc"]))
        if at == union_at and clean[:union_at] == location[:union_at]:
            group.append((error, clean, holder))
    deeper = [item for item in group if len(item[1]) > union_at]
    if deeper:  # the value has the right type for one member (a table for a model): its first problem
        error, clean, holder = deeper[0]
        return error, clean, holder, []
    expected = [_EXPECTED.get(e["type"], e["msg"].removeprefix("Input should be ")) for e, _, _ in group]
    return first, location, parent, list(dict.fromkeys(expected))


def explain(error: ValidationError, model: type[BaseModel] | None = None, prefix: str = "") -> str:
    """One line for the first validation error: the TOML path, what is wrong, what is allowed.

    `prefix` is the TOML path of the validated table (`reward[0].options`); `model` lists the allowed
    keys of an unknown one and tells union members (`lora`: true or a table) apart.
    """
    first, location, parent, alternatives = _choose(error.errors(), model)
    path = toml_path(location)
    if prefix:
        path = f"{prefix}.{path}" if path else prefix
    kind = first["type"]
    if kind == "extra_forbidden":
        holder = _model_of(parent)
        allowed = sorted(holder.model_fields) if holder is not None else []
        return f"{path}: unknown key" + (f"; allowed: {', '.join(allowed)}" if allowed else "")
    if kind == "missing":
        return f"{path}: required key is missing"
    if alternatives:
        message = "Input should be " + " or ".join(alternatives)
    elif kind in ("dict_type", "model_type", "model_attributes_type"):
        message = "Input should be a table"  # not pydantic's "an object" / "a valid dictionary"
    else:
        message = first["msg"].removeprefix("Value error, ")
    value = first.get("input")
    if isinstance(value, (str, int, float, bool)):
        shown = f" (got {value!r})" if len(repr(value)) < 60 else ""
    elif kind.endswith("_type") or alternatives:  # a type error: say what was given instead
        containers = {list: "an array", tuple: "an array", dict: "a table"}
        shown = f" (got {containers[type(value)]})" if type(value) in containers else ""
    else:
        shown = ""
    return f"{path}: {message}{shown}" if path else f"{message}{shown}"


def validate_options(
    model: type[Model], values: dict[str, Any], path: str = "", owner: str = "", toml: bool = False
) -> Model:
    """`model.model_validate(values)`; a problem is one `ConfigError` line.

    `path` prefixes the offending key as a TOML path; `owner` names what the options belong to when
    there is no file (`reward 'ocr'`), as in `reward 'ocr': qualty: unknown key; allowed: ...`.
    `toml`: the values come from a TOML file, so their types are checked strictly (`steps = true` or
    `steps = "10"` is an error, not 1 or 10).
    """
    try:
        if toml:
            return model.model_validate_json(toml_json(values, path), strict=True)
        check_finite(values, path or owner)
        return model.model_validate(values)
    except ValidationError as error:
        line = explain(error, model, path)
        raise ConfigError(f"{owner}: {line}" if owner else line) from None


def parse_option(text: str) -> tuple[str, Any]:
    """`key=value` of a command line's `-o/--set`, the value read as a JSON literal (`1e-3`, `true`, `"x"`),
    else kept as a string."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise UserError(f"--option expects key=value, got {text!r}")
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    return key.strip(), parsed
