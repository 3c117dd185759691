"""reference/config.md: every table and key of the run config (`nft_core.config.RunConfig`) and every
registered plugin's options, generated from their pydantic models."""

from __future__ import annotations

import typing
from dataclasses import dataclass

from pydantic import BaseModel

from nft_core import registry
from nft_core.config import ObjectiveConfig, PolicyConfig, RunConfig, SolverConfig
from nft_docs.schema import Key, default_of, default_text, field_type, model_keys
from nft_docs.text import cell, code, escape, literal, table

PAGE = "reference/config.md"

PLUGIN_TABLES: dict[type[BaseModel], str] = {
    PolicyConfig: "policies",
    SolverConfig: "solvers",
    ObjectiveConfig: "objectives",
}
"""Config tables whose `name` picks a plugin: their undeclared keys are that plugin's options."""

LINKED_KEYS = {
    "reward.options": "rewards",
    "eval.reward.options": "rewards",
    "log.monitors": "monitors",
    "data.prompts": "prompt-sources",
    "eval.prompts": "prompt-sources",
}
"""Core keys whose values are registered names or their options: their rows link to that section."""

KIND_ORDER = ("policies", "solvers", "objectives", "rewards", "monitors", "prompt_sources")
"""The order of the plugin sections; kinds the registry adds later follow in its own order."""

WHERE = {
    "policies": "Keys of `[policy]` next to `name = {name}`.",
    "solvers": "Keys of `[solver]` (collection) or `[eval.solver]` (evaluation) next to `name = {name}`.",
    "objectives": "Keys of `[objective]` next to `name = {name}`, besides the [core keys](#objective).",
    "rewards": "Keys of the `options` table of a `[[reward]]` or `[[eval.reward]]` with `name = {name}`.",
    "monitors": "Named in `log.monitors`; the run builds it with these options' defaults.",
    "prompt_sources": "Used as `{bare}:ARG` in `data.prompts` or `eval.prompts`.",
}
"""Where a registered name's options go in a run config, per kind."""


@dataclass(frozen=True)
class Table:
    """One table of the run config: its dotted path, TOML header, description and own keys (full paths)."""

    path: str
    header: str
    description: str
    keys: list[Key]
    plugin_kind: str | None


def anchor(kind: str, name: str) -> str:
    """The anchor of a registered name's section, e.g. `reward-geneval` (links point at it)."""
    singular = registry.SINGULAR.get(kind, kind).replace(" ", "-")
    return f"{singular}-{name}"


def table_anchor(path: str) -> str:
    """The anchor of a config table's section: `train`, `eval-solver`, `top-level`."""
    return path.replace(".", "-") or "top-level"


def _table_model(annotation: typing.Any) -> tuple[type[BaseModel] | None, bool]:
    """The model of a field that is a table (`[x]`) or an array of tables (`[[x]]`), and which it is."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is list and args and isinstance(args[0], type):
        if issubclass(args[0], BaseModel):
            return args[0], True
    return None, False


def _shared_models(
    model: type[BaseModel], seen: dict[type[BaseModel], int] | None = None
) -> set[type[BaseModel]]:
    """The table models that serve more than one table (`SolverConfig`: `[solver]` and `[eval.solver]`)."""
    seen = {} if seen is None else seen
    for field in model.model_fields.values():
        inner, _ = _table_model(field.annotation)
        if inner is not None:
            seen[inner] = seen.get(inner, 0) + 1
            _shared_models(inner, seen)
    return {table_model for table_model, count in seen.items() if count > 1}


def _table_description(model: type[BaseModel], field_description: str, shared: bool) -> str:
    """The class docstring; for a model that serves several tables, the field's own description first
    (what this table is for), its `[header]:` prefix dropped."""
    doc = " ".join((model.__doc__ or "").split())
    lead = field_description.split("`: ", 1)[-1] if field_description.startswith("`[") else field_description
    if not shared or not lead:
        return doc
    return f"{lead[:1].upper()}{lead[1:]}. {doc}"


def config_tables(
    model: type[BaseModel] = RunConfig,
    path: str = "",
    header: str = "top level",
    instance: BaseModel | None = None,
    description: str = "",
) -> list[Table]:
    """The run config's tables in declaration order, each with its own keys as full dotted paths."""
    shared = _shared_models(RunConfig)
    own, nested = [], []
    for name, field in model.model_fields.items():
        full = f"{path}.{name}" if path else name
        inner, array = _table_model(field.annotation)
        value = default_of(field, instance, name)
        if inner is None:
            own.append(Key(full, field_type(field), default_text(value), field.description or ""))
            continue
        inner_header = f"[[{full}]]" if array else f"[{full}]"
        inner_description = _table_description(inner, field.description or "", inner in shared)
        inner_instance = value if isinstance(value, inner) else None
        nested += config_tables(inner, full, inner_header, inner_instance, inner_description)
    description = description or " ".join((model.__doc__ or "").split())
    extras = dict(instance.model_extra or {}) if instance is not None else {}
    if extras:
        written = ", ".join(f"{key} = {literal(value)}" for key, value in extras.items())
        description += f" Its default also sets `{written}`."
    return [Table(path, header, description, own, PLUGIN_TABLES.get(model)), *nested]


def _kinds() -> list[str]:
    return [
        *(kind for kind in KIND_ORDER if kind in registry.KINDS),
        *(k for k in registry.KINDS if k not in KIND_ORDER),
    ]


def _row(key: Key, link: str | None = None) -> tuple[str, str, str, str]:
    default = key.default if key.default in ("required", "unset") else code(key.default)
    meaning = cell(key.description)
    if link:
        meaning += f" ([{link.replace('-', ' ')}](#{link}))"
    return code(key.path), cell(key.type), default, meaning


def _render_table(config_table: Table) -> str:
    title = "Top level" if not config_table.path else f"`{config_table.header}`"
    lines = [f"### {title} {{#{table_anchor(config_table.path)}}}", "", escape(config_table.description)]
    if config_table.plugin_kind:
        singular = registry.SINGULAR.get(config_table.plugin_kind, config_table.plugin_kind)
        lines += [
            "",
            f"Every other key of this table is an option of the chosen {singular}: "
            f"[{config_table.plugin_kind.replace('_', ' ')}](#{config_table.plugin_kind.replace('_', '-')}).",
        ]
    rows = [_row(key, LINKED_KEYS.get(key.path)) for key in config_table.keys]
    if rows:
        lines += ["", table(("key", "type", "default", "meaning"), rows)]
    return "\n".join(lines)


def _render_registration(kind: str, item: registry.Registration) -> str:
    lines = [f"### `{item.name}` {{#{anchor(kind, item.name)}}}", ""]
    summary = escape(item.description).rstrip()
    summary = summary[:1].upper() + summary[1:]
    if summary and summary[-1] not in ".!?)":
        summary += "."
    lines.append(f"{summary} Registered by `{item.plugin}`.".strip())
    where = WHERE.get(kind, "Options of the {singular} `{bare}`.")
    lines += [
        "",
        where.format(name=literal(item.name), bare=item.name, singular=registry.SINGULAR.get(kind, kind)),
    ]
    if item.options is None:
        lines += ["", "No options."]
        return "\n".join(lines)
    keys = model_keys(item.options)
    if not keys:
        lines += ["", "No options."]
        return "\n".join(lines)
    lines += ["", table(("key", "type", "default", "meaning"), [_row(key) for key in keys])]
    return "\n".join(lines)


def render_config_reference() -> str:
    """The markdown of reference/config.md."""
    parts = [
        "# Configuration reference",
        "",
        "Generated from the code when the site is built: the run config's pydantic schema "
        "(`nft_core.config.RunConfig`) and the options model of every name in the plugin registry "
        "(the built-ins and any plugin installed where the site was built). A run config is TOML; "
        "`nft validate CONFIG` checks one (keys, types, plugin names and their options) without loading "
        "a model, and `nft run CONFIG --set key.path=VALUE` overrides any key with a TOML literal "
        "(`--set reward[0].weight=0.5`, `--set 'solver.name=\"euler\"'`). Values keep their TOML types: "
        '`epochs = "80"` is an error, not 80; an integer is accepted where a number is. A key that is '
        "not listed here is an error naming its path.",
        "",
        "## Run config tables {#tables}",
    ]
    parts += ["", *(_render_table(item) + "\n" for item in config_tables())]
    for kind in _kinds():
        found = registry.registrations(kind)
        title = kind.replace("_", " ").capitalize()
        parts += [f"## {title} {{#{kind.replace('_', '-')}}}", ""]
        if not found:
            parts += ["None registered.", ""]
        for item in found.values():
            parts += [_render_registration(kind, item), ""]
    return "\n".join(parts).rstrip() + "\n"
