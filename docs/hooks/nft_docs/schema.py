"""The keys of a pydantic model as documentation rows: dotted path, type, default and meaning."""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from enum import Enum
from pathlib import PurePath
from typing import Any, Literal

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from nft_docs.text import literal

_SCALARS = {bool: "bool", int: "int", float: "float", str: "str"}
_BOUNDS = (
    (annotated_types.Ge, "ge", "≥"),
    (annotated_types.Gt, "gt", ">"),
    (annotated_types.Le, "le", "≤"),
    (annotated_types.Lt, "lt", "<"),
    (annotated_types.MinLen, "min_length", "length ≥"),
    (annotated_types.MaxLen, "max_length", "length ≤"),
)


@dataclass(frozen=True)
class Key:
    """One documented key: its dotted path (relative to the table it lives in), its type in words
    (allowed values spelt out), its default as TOML, and its description."""

    path: str
    type: str
    default: str
    description: str


def type_name(annotation: Any) -> str:
    """An annotation in words: `int`, `list of float`, `one of "all", "positive"`, `str or unset`."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return "any"
    if annotation is type(None):
        return "unset"
    if annotation in _SCALARS:
        return _SCALARS[annotation]
    if origin is Literal:
        return "one of " + ", ".join(literal(arg) for arg in args)
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return "one of " + ", ".join(literal(member.value) for member in annotation)
    if isinstance(annotation, type) and issubclass(annotation, PurePath):
        return "path"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "table"
    if origin in (typing.Union, types.UnionType):
        present = [arg for arg in args if arg is not type(None)]
        words = " or ".join(type_name(arg) for arg in present)
        return f"{words} or unset" if len(present) < len(args) else words
    if origin in (list, set, frozenset) or (origin is tuple and len(args) == 2 and args[1] is Ellipsis):
        return f"list of {type_name(args[0])}" if args else "list"
    if origin is tuple:
        return "[" + ", ".join(type_name(arg) for arg in args) + "]"
    if origin is dict:
        if not args or args[1] is Any:
            return "table"
        return f"table of {type_name(args[1])}"
    return getattr(annotation, "__name__", str(annotation))


def bounds(field: FieldInfo) -> str:
    """The numeric and length constraints of a field, e.g. `≥ 0, < 1`."""
    found = []
    for constraint in field.metadata:
        for kind, attribute, sign in _BOUNDS:
            if isinstance(constraint, kind):
                found.append(f"{sign} {literal(getattr(constraint, attribute))}")
    return ", ".join(found)


def field_type(field: FieldInfo) -> str:
    """The field's type in words with its constraints."""
    words = type_name(field.annotation)
    limits = bounds(field)
    return f"{words}, {limits}" if limits else words


def default_of(field: FieldInfo, instance: BaseModel | None = None, name: str = "") -> Any:
    """The field's default (from the parent's default instance when there is one); `PydanticUndefined`
    for a required field."""
    if instance is not None and name in type(instance).model_fields:
        return getattr(instance, name)
    if field.is_required():
        return PydanticUndefined
    return field.get_default(call_default_factory=True)


def default_text(value: Any) -> str:
    """A default as shown in the tables: TOML, `required`, or `unset` for None."""
    if value is PydanticUndefined:
        return "required"
    if value is None:
        return "unset"
    if isinstance(value, BaseModel):
        return "a table"
    return literal(value)


def nested_models(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation holds directly or as a union member (`bool | LoraOptions`)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [model for arg in typing.get_args(annotation) for model in nested_models(arg)]
    return []


def model_keys(model: type[BaseModel], prefix: str = "", instance: BaseModel | None = None) -> list[Key]:
    """Every key of `model`, nested tables flattened into dotted paths (`lora.rank`), in declaration
    order; a nested table's own row comes first (its type says what else it takes, e.g. `bool or table`)."""
    keys = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        value = default_of(field, instance, name)
        keys.append(Key(path, field_type(field), default_text(value), field.description or ""))
        for nested in nested_models(field.annotation):
            keys += model_keys(nested, f"{path}.", value if isinstance(value, nested) else None)
    return keys
