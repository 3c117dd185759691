"""Plugin tooling in-process: the `nft plugin new` scaffold, hook tracing, load-error warnings."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib
from typer.testing import CliRunner

from nft_core import plugins, registry
from nft_core.cli.app import build_app
from nft_core.cli.scaffold import TEMPLATE_DIR, TEMPLATE_TOKENS, scaffold_plugin
from nft_core.errors import UserError
from nft_core.hookspecs import hookimpl

runner = CliRunner()


@pytest.mark.parametrize(
    ("name", "kind", "hook", "registered", "class_name"),
    [
        ("nft-sharpness", "reward", "register_rewards", "sharpness", "SharpnessReward"),
        ("two-step", "solver", "register_solvers", "two-step", "TwoStepSolver"),
    ],
)
def test_plugin_new_writes_a_complete_package(tmp_path, name, kind, hook, registered, class_name):
    result = runner.invoke(build_app(), ["plugin", "new", name, "--kind", kind, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    distribution = name if name.startswith("nft-") else f"nft-{name}"
    module = distribution.replace("-", "_")
    root = tmp_path / distribution
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert files == ["README.md", f"{module}.py", "pyproject.toml", f"tests/test_{module}.py"]
    for path in root.rglob("*"):
        if path.is_file():
            text = path.read_text()
            assert not any(token in text for token in TEMPLATE_TOKENS), path
    project = tomllib.loads((root / "pyproject.toml").read_text())
    assert project["project"]["name"] == distribution
    assert project["project"]["entry-points"]["nft"] == {distribution: module}
    assert project["tool"]["setuptools"]["py-modules"] == [module]
    source = (root / f"{module}.py").read_text()
    tree = ast.parse(source)
    functions = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    classes = {node.name for node in tree.body if isinstance(node, ast.ClassDef)}
    assert hook in functions and class_name in classes and f'"{registered}"' in source
    tests = (root / "tests" / f"test_{module}.py").read_text()
    ast.parse(tests)
    assert "nft_core.testing" in tests and f'check_listed("{distribution}", ' in tests


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["Bad_Name"], "plugin name 'Bad_Name': use lowercase letters"),
        (["nft"], "plugin name 'nft'"),
        (["ok", "--kind", "policy"], "--kind 'policy': no template .* kinds: reward, solver"),
    ],
)
def test_plugin_new_refuses_bad_input_with_one_line(tmp_path, args, message):
    result = runner.invoke(build_app(), ["plugin", "new", *args, "--out", str(tmp_path)])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert re.search(message, lines[0]), lines[0]
    assert not any(tmp_path.iterdir())


def test_plugin_new_never_overwrites(tmp_path):
    scaffold_plugin("nft-once", "reward", tmp_path)
    with pytest.raises(UserError, match="already exists"):
        scaffold_plugin("once", "reward", tmp_path)


def test_template_folders_are_the_documented_kinds():
    assert sorted(p.name for p in TEMPLATE_DIR.iterdir() if p.is_dir()) == ["reward", "solver"]


@pytest.mark.slow
def test_the_built_wheel_ships_every_package_the_checkpoint_and_the_template(tmp_path):
    # `nft plugin new` and the embedded default must work from a plain `pip install diffusion-nft`
    pytest.importorskip("setuptools")
    root, source = Path(__file__).resolve().parents[1], tmp_path / "source"
    # build from a copy: setuptools leaves build/ and egg-info in the tree it builds
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for name in ("nft_core", "nft_solvers", "nft_rewards", "nft_policies", "nft_shapes"):
        shutil.copytree(root / name, source / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, source / name)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(source),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("diffusion_nft-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        archive.extractall(tmp_path / "site", [n for n in names if "/plugin_template/" in n])
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        assert "shapes = nft_shapes.detector:GENEVAL_BACKEND" in archive.read(entry_points).decode()
    rooms = ("nft_core/loop", "nft_core/state", "nft_core/outputs", "nft_core/cli", "nft_core/config")
    for package in ("nft_core", *rooms, "nft_core/distributed", "nft_solvers", "nft_rewards", "nft_shapes"):
        assert f"{package}/__init__.py" in names, package
    for shipped_file in ("shapes-tiny.safetensors", "shapes-tiny.json"):
        assert f"nft_shapes/checkpoints/{shipped_file}" in names
    shipped = tmp_path / "site" / "nft_core" / "cli" / "plugin_template"
    for kind in ("reward", "solver"):
        from_wheel = scaffold_plugin("nft-shipped", kind, tmp_path / f"wheel-{kind}", template=shipped)
        from_source = scaffold_plugin("nft-shipped", kind, tmp_path / f"source-{kind}")
        files = sorted(str(p.relative_to(from_source)) for p in from_source.rglob("*") if p.is_file())
        assert files == sorted(str(p.relative_to(from_wheel)) for p in from_wheel.rglob("*") if p.is_file())
        for name in files:
            assert (from_wheel / name).read_text() == (from_source / name).read_text(), name


def test_trace_prints_hook_calls_and_registered_names():
    lines: list[str] = []
    stop = plugins.trace_hook_calls(lines.append)
    registry.clear_cache()
    try:
        registry.registrations("solvers")
    finally:
        stop()
        registry.clear_cache()
    assert "nft trace: nft_solvers.plugin.register_solvers" in lines
    assert "nft trace:   nft_solvers.plugin registers solver 'dpm2'" in lines
    assert any(line.startswith("nft trace: nft_solvers.plugin.register_solvers took ") for line in lines)
    lines.clear()
    registry.registrations("solvers")
    assert not lines, "tracing stops when asked"


def test_run_and_validate_warn_about_plugins_that_failed_to_load(fast_config, monkeypatch):
    broken = plugins.PluginLoadError("nft-broken", "nft-broken", "ImportError: no module named 'missing'")
    monkeypatch.setattr(plugins, "load_errors", [broken])
    result = runner.invoke(build_app(), ["validate", str(fast_config)])
    assert result.exit_code == 0, result.output
    assert (
        "warning: plugin 'nft-broken' (distribution nft-broken) failed to load: "
        "ImportError: no module named 'missing'"
    ) in result.output


class _ClashingSolvers:
    """A third-party plugin that registers a name a built-in already has."""

    @staticmethod
    @hookimpl
    def register_solvers(register):
        register("euler", lambda **options: None)


def test_a_name_registered_by_two_plugins_is_a_one_line_user_error(fast_config):
    plugins.load_plugins()
    plugins.pm.register(_ClashingSolvers, name="nft-clash")
    registry.clear_cache()
    try:
        with pytest.raises(UserError, match="solver 'euler' is registered twice") as raised:
            registry.registrations("solvers")
        assert "plugin 'nft-clash'" in str(raised.value)
        assert re.search(r"plugin 'nft_solvers.plugin' \(diffusion-nft[^)]*\)", str(raised.value))
        assert "uninstall one" in str(raised.value)
        result = runner.invoke(build_app(), ["validate", str(fast_config)])
        assert result.exit_code == 2, result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and "registered twice" in lines[0], result.output
    finally:
        plugins.pm.unregister(name="nft-clash")
        registry.clear_cache()
