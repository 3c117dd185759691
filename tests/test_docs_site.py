"""The documentation site: `mkdocs build --strict` succeeds offline, the nav reaches every page, and the
generated references cover every key the example configs use and every command of `nft`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomllib
import typer.main
import yaml
from pydantic import BaseModel

from nft_core.cli.app import build_app
from nft_core.config import RunConfig

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS / "hooks"))  # the generators the mkdocs hook calls

from mkdocs_hooks import generated_files  # noqa: E402
from nft_docs import config_reference, links  # noqa: E402
from nft_docs.cli_reference import render_cli_reference  # noqa: E402

PLUGIN_TABLES = {
    ("policy",): "policies",
    ("solver",): "solvers",
    ("eval", "solver"): "solvers",
    ("objective",): "objectives",
}
"""Tables whose `name` picks a plugin: a key the core does not declare there is that plugin's option."""
EXTERNAL = re.compile(r"<(?:script|link|img|iframe|source)\b[^>]*\b(?:src|href)=[\"'](?:https?:)?//", re.I)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(folder)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, (
        f"mkdocs build --strict failed:\n{result.stdout[-3000:]}{result.stderr[-5000:]}"
    )
    return folder


@pytest.fixture(scope="module")
def config_page() -> str:
    return config_reference.render_config_reference()


def test_site_builds_strict_and_offline(site: Path) -> None:
    pages = list(site.rglob("*.html"))
    assert (site / "reference" / "config" / "index.html").is_file()
    assert (site / "reference" / "cli" / "index.html").is_file()
    assert (site / "figures" / "nft-concepts.svg").read_bytes().startswith(b"<?xml")
    external = {
        str(page.relative_to(site)) for page in pages if EXTERNAL.search(page.read_text(encoding="utf-8"))
    }
    assert external == set(), "pages that load scripts, styles, fonts or images from the network"
    rewards = (site / "rewards" / "index.html").read_text(encoding="utf-8")
    assert "nft-docs: registered" not in rewards and "reference/config/#reward-pickscore" in rewards


def _nav_pages(entries: Any) -> Iterator[str]:
    for entry in entries:
        if isinstance(entry, str):
            yield entry
        elif isinstance(entry, dict):
            for value in entry.values():
                yield from [value] if isinstance(value, str) else _nav_pages(value)


def test_every_page_is_in_the_nav() -> None:
    nav = set(_nav_pages(yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))["nav"]))
    on_disk = {
        path.relative_to(DOCS).as_posix()
        for path in DOCS.rglob("*.md")
        if "hooks" not in path.parts and "history" not in path.parts  # lab notebooks: not_in_nav
    }
    generated = {path for path in generated_files() if path.endswith(".md")}
    assert on_disk - nav == set(), "pages no nav entry reaches"
    assert nav - on_disk - generated == set(), "nav entries without a page"
    assert generated <= nav


def _leaves(table: dict[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for key, value in table.items():
        path = (*prefix, key)
        if isinstance(value, dict) and value:
            yield from _leaves(value, path)
        else:
            yield path


def example_keys(data: dict[str, Any]) -> Iterator[tuple[str, tuple[str, str] | None, str]]:
    """(dotted path, plugin, key inside the plugin's options) for every key of one example config; the
    plugin, a (kind, name) pair, is None for keys outside a plugin's table."""
    data = dict(data)
    evaluation = dict(data.pop("eval", {}))
    rewards = [("reward", table) for table in data.pop("reward", [])]
    rewards += [("eval.reward", table) for table in evaluation.pop("reward", [])]
    for where, table in rewards:
        for key, value in table.items():
            if key != "options":
                yield f"{where}.{key}", None, ""
                continue
            for path in _leaves(value):
                yield f"{where}.options.{'.'.join(path)}", ("rewards", table["name"]), ".".join(path)
    data["eval"] = evaluation
    for path in _leaves(data):
        owner = next((prefix for prefix in PLUGIN_TABLES if path[: len(prefix)] == prefix), None)
        if owner is None:
            yield ".".join(path), None, ""
            continue
        table = data[owner[0]] if len(owner) == 1 else data[owner[0]][owner[1]]
        yield ".".join(path), (PLUGIN_TABLES[owner], table["name"]), ".".join(path[len(owner) :])


def _section(page: str, anchor: str) -> str:
    start = page.index(f"{{#{anchor}}}")
    following = re.search(r"\n#{2,3} ", page[start:])
    return page[start : start + following.start()] if following else page[start:]


def _has_row(text: str, key: str) -> bool:
    return f"\n| `{key}` |" in text


@pytest.mark.parametrize("example", sorted((ROOT / "examples").glob("*.toml")), ids=lambda path: path.name)
def test_example_keys_are_in_the_config_reference(example: Path, config_page: str) -> None:
    core = config_page[
        config_page.index("{#tables}") : config_page.index("\n## ", config_page.index("{#tables}"))
    ]
    missing = []
    for path, plugin, key in example_keys(tomllib.loads(example.read_text(encoding="utf-8"))):
        if _has_row(core, path):
            continue
        if plugin is None or not _has_row(_section(config_page, config_reference.anchor(*plugin)), key):
            missing.append(f"{path} ({plugin[1] if plugin else 'run config'})")
    assert missing == []


def _literal_fields(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, tuple[Any, ...]]]:
    for name, field in model.model_fields.items():
        args = typing.get_args(field.annotation)
        if typing.get_origin(field.annotation) is typing.Literal:
            yield f"{prefix}{name}", args
        inner = [
            arg for arg in (field.annotation, *args) if isinstance(arg, type) and issubclass(arg, BaseModel)
        ]
        for nested in inner:
            yield from _literal_fields(nested, f"{prefix}{name}.")


def test_allowed_values_are_in_the_config_reference(config_page: str) -> None:
    fields = list(_literal_fields(RunConfig))
    assert any(path == "objective.adv_mode" for path, _ in fields)
    for path, allowed in fields:
        row = next(line for line in config_page.split("\n") if line.startswith(f"| `{path}` |"))
        assert all(f'"{value}"' in row for value in allowed), (path, row)


def _commands(command: Any, path: str = "nft") -> Iterator[tuple[str, Any]]:
    yield path, command
    for name, child in sorted(getattr(command, "commands", {}).items()):
        if not child.hidden:
            yield from _commands(child, f"{path} {name}")


def test_every_command_is_in_the_cli_reference() -> None:
    page = render_cli_reference()
    commands = list(_commands(typer.main.get_command(build_app())))
    assert {"nft run", "nft eval", "nft plugin new"} <= {path for path, _ in commands}
    for path, command in commands:
        assert re.search(rf"^#{{2,4}} `{path}` ", page, re.M), path
        section = _section(page, path.replace(" ", "-"))
        for param in command.params:
            name = param.name.upper() if param.param_type_name == "argument" else param.opts[0]
            assert name == "--help" or name in section, (path, name)


def test_page_mentions_become_links_outside_code() -> None:
    text = "see docs/core.md (and docs/recipes/absent.md); `docs/core.md` stays\n```\ndocs/core.md\n```"
    linked = links.link_mentions(text, "recipes/evaluation.md", {"core.md"})
    assert (
        linked.split("\n")[0]
        == "see [docs/core.md](../core.md) (and docs/recipes/absent.md); `docs/core.md` stays"
    )
    assert linked.split("\n")[2] == "docs/core.md"
