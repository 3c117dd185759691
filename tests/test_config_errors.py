"""Malformed configs, generated from `examples/*.toml`: each is one `error:` line naming its TOML key.

The table is not written by hand: it walks every example config and, at every key of every table
(plugin option tables included), writes a wrong type, an unknown key, a typo in a plugin's name, a value
outside the schema's bounds; then the file-level failures (empty, bad syntax, binary, a folder,
missing). Each runs through `nft validate --portable` in-process and must exit 2 with at most 3 lines
that name the key (or the file) and hold no traceback.
"""

from __future__ import annotations

import copy
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import annotated_types
import pytest
import tomli_w
import tomllib
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from typer.testing import CliRunner

from nft_core import registry
from nft_core.cli.app import build_app
from nft_core.config import (
    ObjectiveConfig,
    PolicyConfig,
    RewardConfig,
    RunConfig,
    SolverConfig,
    load_config,
    resolved_config,
)
from nft_core.options import toml_path

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.toml"))
PLUGIN_KINDS: dict[type[BaseModel], str] = {
    PolicyConfig: "policies",
    SolverConfig: "solvers",
    ObjectiveConfig: "objectives",
}
"""The tables whose `name` picks a plugin; their undeclared keys are that plugin's options."""
UNKNOWN_KEY = "unknown_key"

runner = CliRunner()  # Click >= 8.2: `result.output` holds stdout and stderr, interleaved as written
APP = build_app()  # one app for every case (`build_app` returns the same module-level app each time)

KeyPath = tuple[str | int, ...]


@dataclass(frozen=True)
class Case:
    """One malformed config: its file content (None: no file is written) and what the error names."""

    id: str
    content: str | bytes | None
    path: str = ""  # the TOML path the message names; "" for a file-level case (the file is named)
    expect: tuple[str, ...] = ()  # further text the message holds (what is allowed, a suggestion)
    folder: bool = False  # the config argument is a folder


# --- the schema of a key: a core field or a plugin's option -----------------------------------------


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model `annotation` is or holds as a union member (`bool | LoraOptions`)."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _plugin_options(kind: str, node: dict[str, Any], table: type[BaseModel]) -> type[BaseModel]:
    name = node.get("name", table.model_fields["name"].default)
    options = registry.registrations(kind)[name].options
    assert options is not None, f"{kind} {name!r} registers no options model"
    return options


def table_model(data: dict[str, Any], path: KeyPath) -> tuple[type[BaseModel], type[BaseModel] | None]:
    """The model of the table at `path` and, for a plugin table, the plugin's options model."""
    model: Any = RunConfig
    node: Any = data
    info: FieldInfo | None = None
    for depth, part in enumerate(path):
        if isinstance(part, int):  # a table of an array of tables: [[reward]]
            assert info is not None
            model = _model_of(typing.get_args(info.annotation)[0])
        elif model is RewardConfig and part == "options":
            model = _plugin_options("rewards", node, RewardConfig)
        else:
            info = field_info(data, path[: depth + 1])
            model = _model_of(info.annotation)
        node = node[part]
    plugin = _plugin_options(PLUGIN_KINDS[model], node, model) if model in PLUGIN_KINDS else None
    return model, plugin


def _parent(data: dict[str, Any], path: KeyPath) -> Any:
    node: Any = data
    for part in path[:-1]:
        node = node[part]
    return node


def field_info(data: dict[str, Any], path: KeyPath) -> FieldInfo:
    """The schema field of the key at `path` (a name; its table is a core one or a plugin's)."""
    model, plugin = table_model(data, path[:-1])
    key = path[-1]
    if key in model.model_fields:
        return model.model_fields[key]
    assert plugin is not None and key in plugin.model_fields, f"{toml_path(path)} is in no schema"
    return plugin.model_fields[key]


def toml_kinds(annotation: Any) -> set[str]:
    """The TOML value kinds a field accepts: str, int, float, bool, array, table (all for `Any`)."""
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return {"str", "int", "float", "bool", "array", "table"}
    if origin in (typing.Union, types.UnionType):
        return set().union(*(toml_kinds(arg) for arg in args if arg is not type(None)))
    if origin is typing.Literal:
        return {kind_of(value) for value in args}
    if origin in (list, tuple, set) or annotation in (list, tuple):
        return {"array"}
    if origin is dict or annotation is dict or _model_of(annotation) is annotation:
        return {"table"}
    if annotation is float:
        return {"int", "float"}  # TOML `lr = 1` is a float
    return {kind_of_type(annotation)}


def kind_of_type(annotation: Any) -> str:
    """The TOML kind of a scalar Python type."""
    return {str: "str", int: "int", float: "float", bool: "bool"}[annotation]


def kind_of(value: Any) -> str:
    """The TOML kind of a parsed value."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, dict):
        return "table"
    if isinstance(value, list):
        return "array"
    return kind_of_type(type(value))


# --- the generator ------------------------------------------------------------------------------------


def tables(node: dict[str, Any], path: KeyPath = ()) -> Iterator[tuple[KeyPath, dict[str, Any]]]:
    """Every table (top level, sub-tables, inline tables, each table of an array of tables)."""
    yield path, node
    for key, value in node.items():
        if isinstance(value, dict):
            yield from tables(value, (*path, key))
        elif isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
            for index, item in enumerate(value):
                yield from tables(item, (*path, key, index))


def leaves(data: dict[str, Any]) -> Iterator[tuple[KeyPath, Any]]:
    """Every key whose value is not a table (arrays of values included), with its value."""
    for path, table in tables(data):
        for key, value in table.items():
            if not isinstance(value, dict) and not (
                isinstance(value, list) and value and all(isinstance(item, dict) for item in value)
            ):
                yield (*path, key), value


def wrong_values(value: Any) -> list[tuple[str, Any]]:
    """Values of a wrong type for a key that now holds `value`, labelled: each the kind of mistake."""
    table = {"value": value}
    if isinstance(value, bool):
        return [("yes-string", "yes"), ("number", 1), ("array", [value]), ("table", table)]
    if isinstance(value, (int, float)):
        return [("quoted", str(value)), ("bool", True), ("array", [value]), ("table", table)]
    if isinstance(value, str):
        return [("number", 5), ("bool", True), ("array", [value]), ("table", table)]
    if isinstance(value, list):
        return [("scalar", value[0] if value else 1), ("table", table)]
    raise AssertionError(f"no wrong values for {value!r}")


def typo(name: str) -> str:
    """A near miss of a name: its middle character doubled (`dpm2` -> `dppm2`)."""
    middle = len(name) // 2
    return name[:middle] + name[middle] + name[middle:]


def out_of_range(info: FieldInfo, value: Any) -> list[tuple[str, Any]]:
    """One value beyond each bound the field declares (`ge=1` -> 0, `gt=0` -> 0, `le=512` -> 513)."""
    integer = isinstance(value, int)
    step = 1 if integer else 0.5
    found: list[tuple[str, Any]] = []
    for bound in info.metadata:
        if isinstance(bound, annotated_types.Gt):
            found.append((f"not-above-{bound.gt}", bound.gt))
        elif isinstance(bound, annotated_types.Ge):
            found.append((f"below-{bound.ge}", bound.ge - step))
        elif isinstance(bound, annotated_types.Lt):
            found.append((f"not-below-{bound.lt}", bound.lt))
        elif isinstance(bound, annotated_types.Le):
            found.append((f"above-{bound.le}", bound.le + step))
    return [(label, int(v) if integer else float(v)) for label, v in found]


def mutated(data: dict[str, Any], path: KeyPath, value: Any) -> str:
    """The config with the key at `path` set to `value`, as TOML text."""
    copied = copy.deepcopy(data)
    _parent(copied, path)[path[-1]] = value
    return tomli_w.dumps(copied)


def key_cases(stem: str, data: dict[str, Any]) -> Iterator[tuple[Any, Case]]:
    """Each key's mutations, with a key that tells the same mutation of another example apart."""
    for path, value in leaves(data):
        where = toml_path(path)
        info = field_info(data, path)
        accepted = toml_kinds(info.annotation)
        for label, wrong in wrong_values(value):
            # A mutation the schema accepts is a valid config, not an error case: an int where a float
            # is, a table or true where `policy.lora` is (a table or a bool), ... So only kinds the
            # field's annotation rules out are written.
            if kind_of(wrong) in accepted:
                continue
            case = Case(f"{stem}:{where}={label}", mutated(data, path, wrong), where, ("Input should be",))
            yield (where, label, id(info)), case
        if isinstance(value, list) and value:  # an array of values: its first element of a wrong type
            element = typing.get_args(info.annotation)[0]
            wrong = [True] if "bool" not in toml_kinds(element) else ["x"]
            case = Case(f"{stem}:{where}[0]=wrong-element", mutated(data, path, wrong + value[1:]),
                        f"{where}[0]", ("Input should be",))  # fmt: skip
            yield (where, "element", id(info)), case
        if path[-1] == "name" and len(path) > 1:  # a plugin's name: policy, solver, objective, reward
            near = typo(value)
            kind = "rewards" if path[0] == "reward" else PLUGIN_KINDS[table_model(data, path[:-1])[0]]
            assert near not in registry.registrations(kind)
            expect = ("available:", f"did you mean {value!r}?")
            yield (
                (where, "typo", value),
                Case(f"{stem}:{where}=typo", mutated(data, path, near), where, expect),
            )
        if typing.get_origin(info.annotation) is typing.Literal and isinstance(value, str):
            expect = tuple(repr(allowed) for allowed in typing.get_args(info.annotation))
            case = Case(f"{stem}:{where}=not-allowed", mutated(data, path, typo(value)), where, expect)
            yield (where, "literal", id(info)), case
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            for label, beyond in out_of_range(info, value):
                case = Case(
                    f"{stem}:{where}={label}", mutated(data, path, beyond), where, ("Input should be",)
                )
                yield (where, label, id(info)), case


def table_cases(stem: str, data: dict[str, Any]) -> Iterator[tuple[Any, Case]]:
    """An unknown key in every table, a table without an options table given one with an unknown key,
    and every sub-table replaced by a value."""
    for path, table in tables(data):
        where = toml_path((*path, UNKNOWN_KEY))
        models = table_model(data, path)
        text = mutated(data, (*path, UNKNOWN_KEY), 1)
        yield (where, "unknown", models), Case(f"{stem}:{where}", text, where, ("unknown key; allowed:",))
        if len(path) == 2 and path[0] == "reward" and "options" not in table:
            where = toml_path((*path, "options", UNKNOWN_KEY))
            text = mutated(data, (*path, "options"), {UNKNOWN_KEY: 1})
            yield (where, "unknown", models), Case(f"{stem}:{where}", text, where, ("unknown key; allowed:",))
        if path and isinstance(path[-1], str):  # a sub-table (not an element of [[reward]]) as a value
            where = toml_path(path)
            accepted = toml_kinds(field_info(data, path).annotation)
            for label, value in [("string", "yes"), ("number", 5)]:
                if kind_of(value) not in accepted:  # `policy.lora = true` is valid
                    yield (
                        (where, label, models),
                        Case(f"{stem}:{where}={label}", mutated(data, path, value), where),
                    )
    where = "reward"
    for label, value in [("table", {"name": data["reward"][0]["name"]}), ("empty", [])]:
        copied = dict(data, reward=value)
        yield (where, label), Case(f"{stem}:{where}={label}", tomli_w.dumps(copied), where)


def file_cases() -> list[Case]:
    """Failures of the file itself; the message names it."""
    text = EXAMPLES[0].read_text()
    line = next(line for line in text.splitlines() if "=" in line and not line.startswith("#"))
    broken = text.replace(line, line.split("=")[0], 1)  # a key without `= value`
    binary = b"\x89PNG\r\n\x1a\n\x00\xff\xfe" + bytes(range(128, 256))
    latin_1 = text.replace("#", "# caf\u00e9", 1).encode("latin-1")  # not UTF-8
    return [
        Case("file:empty", "", expect=("empty config",)),
        Case("file:comments-only", "# nothing but a comment\n", expect=("empty config",)),
        Case("file:syntax-error", broken, expect=("invalid TOML", "line")),
        Case("file:unterminated-string", text + '\nname = "open\n', expect=("invalid TOML",)),
        Case("file:binary", binary, expect=("not a text file",)),
        Case("file:latin-1", latin_1, expect=("not a text file",)),
        Case("file:folder", None, folder=True, expect=("a folder",)),
        Case("file:missing", None, expect=("not found",)),
    ]


def generate() -> list[Case]:
    """The whole table: every example's mutations (one per distinct schema field), then the files."""
    seen: dict[Any, Case] = {}
    for example in EXAMPLES:
        data = tomllib.loads(example.read_text())
        for key, case in [*key_cases(example.stem, data), *table_cases(example.stem, data)]:
            seen.setdefault(key, case)  # the sd35m presets share most keys: each mutation once
    return [*seen.values(), *file_cases()]


CASES = generate()


def config_file(case: Case, tmp_path: Path) -> Path:
    """Where the case's config is: a written file, a folder, or a path with nothing there."""
    path = tmp_path / "bad.toml"
    if case.folder:
        path.mkdir()
    elif isinstance(case.content, bytes):
        path.write_bytes(case.content)
    elif case.content is not None:
        path.write_text(case.content, encoding="utf-8")
    return path


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_a_malformed_config_is_one_error_line_naming_the_key(case: Case, tmp_path: Path) -> None:
    path = config_file(case, tmp_path)
    result = runner.invoke(APP, ["validate", "--portable", str(path)])
    output = result.output
    assert result.exit_code == 2, output
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # not an uncaught error
    assert "Traceback" not in output
    assert 1 <= len(output.strip().splitlines()) <= 3, output
    assert "error:" in output, output
    if case.path:
        assert f": {case.path}: " in output, output  # `error: <file>: <path>: ...`
    else:
        assert str(path) in output, output
    for text in case.expect:
        assert text in output, output


def test_the_examples_themselves_validate(tmp_path: Path) -> None:
    """Every case's error comes from its mutation: the unmutated examples are valid, and so is the
    `config.resolved.toml` a run of each writes (which `nft sample RUN_DIR` reads back)."""
    for example in EXAMPLES:
        result = runner.invoke(APP, ["validate", "--portable", str(example)])
        assert result.exit_code == 0, result.output
        resolved = tmp_path / f"{example.stem}.resolved.toml"
        resolved.write_text(tomli_w.dumps(resolved_config(load_config(example))))
        result = runner.invoke(APP, ["validate", "--portable", str(resolved)])
        assert result.exit_code == 0, result.output


MUST_NAME = [
    "name",
    "train.epochs",
    "train.betas",
    "policy.lora",
    "policy.lora.rank",
    "policy.resolution",
    "reward[0].options.outcome",
    "solver.steps",
    "objective.beta",
    "objective.old_decay",
    "eval.solver.steps",
    "eval.baseline_guidance[0]",
    "reward[1].alias",
]
MUST_HAVE_UNKNOWN_KEY = [
    "",
    "policy.",
    "policy.lora.",
    "solver.",
    "eval.solver.",
    "objective.",
    "train.",
    "data.",
    "eval.",
    "log.",
    "reward[0].",
    "reward[1].",
    "reward[0].options.",
]
MUST_LABEL = [
    "=yes-string",
    "=quoted",
    "=number",
    "=array",
    "=table",
    "=bool",
    "=scalar",
    "=below-1",
    "=above-512",
    "=not-above-0",
    "=not-below-1",
    "=not-allowed",
    "[0]=wrong-element",
]


def test_the_table_covers_every_table_and_kind_of_mistake() -> None:
    """The generator reaches the plugin option tables and writes each kind of mistake."""
    assert len(CASES) >= 40
    paths = {case.path for case in CASES}
    assert set(MUST_NAME) <= paths, set(MUST_NAME) - paths
    assert {f"{table}{UNKNOWN_KEY}" for table in MUST_HAVE_UNKNOWN_KEY} <= paths
    ids = " ".join(case.id for case in CASES)
    for name in ["policy.name", "solver.name", "eval.solver.name", "objective.name", "reward[2].name"]:
        assert f":{name}=typo" in ids, name
    for label in MUST_LABEL:
        assert label in ids, label
