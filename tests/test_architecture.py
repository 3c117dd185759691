"""The import graph keeps the architecture: one direction between packages, no cycle anywhere.

Every `import` and `from ... import` of every module is read with `ast`, those inside functions too
(a lazy import is still a dependency). The rules (docs/plugins.md, "Dependencies"):

* `nft_core` imports no plugin package; it reaches the built-ins through the plugin manager only.
* A plugin package imports only the core's contract modules (`CONTRACT`), never its orchestration.
* `nft_rewards` and `nft_solvers` import neither each other nor `nft_policies` / `nft_shapes`.
* No cycle between packages, and none between modules.
* The core stays small: its top-level modules (contracts and algorithm) within `CORE_TOP_BUDGET` lines,
  the trainer within `TRAINER_BUDGET`; the rooms (`loop/`, `state/`, `outputs/`, `distributed/`, `cli/`)
  keep every module within `MODULE_BUDGET`. A budget is raised only in a commit that says why.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = "nft_core"
PLUGIN_PACKAGES = ("nft_rewards", "nft_solvers", "nft_policies", "nft_shapes", "nft_trackers")
PACKAGES = (CORE, *PLUGIN_PACKAGES)
CONTRACT = {
    "nft_core.errors",
    "nft_core.flow",
    "nft_core.hookspecs",
    "nft_core.io",
    "nft_core.lookup",
    "nft_core.options",
    "nft_core.protocols",
    "nft_core.sde",
    "nft_core.types",
    "nft_core.weights",
}
"""The core modules a plugin package may import: interfaces, value types, errors, option validation, the
one wording of unknown names, hook markers, file helpers (atomic writes, prompt files), where model weights
come from, and pure math: the forward process (`nft_core.flow`) and the FlowGRPO SDE step
(`nft_core.sde`)."""
FORBIDDEN = {
    "nft_rewards": {"nft_solvers", "nft_policies", "nft_shapes"},
    "nft_solvers": {"nft_rewards", "nft_policies", "nft_shapes"},
    "nft_policies": {"nft_shapes", "nft_rewards"},
    "nft_shapes": {"nft_policies"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "plugin_template" not in path.parts:  # the template is a separate distribution's source
                found[module_name(path)] = path
    return found


MODULES = modules()


def imports(name: str, path: Path) -> set[str]:
    """The modules of ours that `name` imports (the most specific one that exists)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets |= {f"{base}.{alias.name}" for alias in node.names} | {base}
    ours = set()
    for target in targets:
        while target and target not in MODULES:
            target = target.rpartition(".")[0]
        if target and target != name and target.split(".")[0] in PACKAGES:
            ours.add(target)
    return ours


GRAPH = {name: imports(name, path) for name, path in MODULES.items()}


def test_the_graph_sees_lazy_relative_and_from_imports():
    assert {name.split(".")[0] for name in MODULES} == set(PACKAGES)
    assert "nft_core.registry" in GRAPH["nft_core.config.loading"]  # `from nft_core import registry`
    assert "nft_rewards.geneval.mask2former" in GRAPH["nft_rewards.geneval.detectors"]  # inside a function
    assert "nft_core.outputs.report" in GRAPH["nft_core.outputs.observer"]  # inside a method


def imports_of(package: str, forbidden) -> list[tuple[str, str]]:
    """The (module, imported module) pairs of `package` whose target `forbidden(target)` rejects."""
    return sorted(
        (name, target)
        for name, targets in GRAPH.items()
        if name.split(".")[0] == package
        for target in targets
        if forbidden(target)
    )


def test_the_core_imports_no_plugin_package():
    assert imports_of(CORE, lambda target: target.split(".")[0] != CORE) == []


@pytest.mark.parametrize("package", PLUGIN_PACKAGES)
def test_plugin_packages_import_only_the_core_contract(package):
    assert imports_of(package, lambda target: target.split(".")[0] == CORE and target not in CONTRACT) == []


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_dependencies_between_plugin_packages_run_one_way(package):
    assert imports_of(package, lambda target: target.split(".")[0] in FORBIDDEN[package]) == []


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of a directed graph as a path `[a, b, ..., a]`, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for successor in sorted(graph.get(node, ())):
            if state.get(successor) == 1:
                return stack[stack.index(successor) :] + [successor]
            if successor not in state and (found := visit(successor)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_cycle_between_packages():
    packages: dict[str, set[str]] = {}
    for name, targets in GRAPH.items():
        top = name.split(".")[0]
        packages.setdefault(top, set()).update(t.split(".")[0] for t in targets if t.split(".")[0] != top)
    assert cycle(packages) is None


def test_no_cycle_between_modules():
    assert cycle(GRAPH) is None


def test_the_cycle_finder_finds_cycles():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set(), "c": {"a"}}) is None


def test_importing_rewards_and_solvers_stays_light():
    """`nft_rewards` and `nft_solvers` on their own: no plugin manager, CLI, model library or trainer."""
    code = (
        "import sys, json, nft_rewards, nft_solvers; nft_rewards.available(); nft_solvers.load('dpm2'); "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('typer', 'pluggy', 'diffusers', 'transformers', 'open_clip', 'rapidocr', 'onnxruntime', "
        "'torchvision', 'nft_policies', 'nft_shapes') "
        "or (m.startswith('nft_core.') and m not in " + repr(sorted(CONTRACT)) + "))))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


CORE_TOP_BUDGET = 3500
"""Lines of `nft_core/*.py` (the contracts, the algorithm, config and the plugin manager), without
`testing.py` (the conformance kit)."""
TRAINER_BUDGET = 400
"""Lines of `nft_core/loop/trainer.py`: the epoch and the lifecycle, its parts elsewhere."""
MODULE_BUDGET = 500
"""Lines of any other module of the core's rooms: past it, a module is a room to split."""


def lines(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


def test_the_core_keeps_its_size_budget():
    top = {path.name: lines(path) for path in (ROOT / CORE).glob("*.py") if path.name != "testing.py"}
    assert sum(top.values()) <= CORE_TOP_BUDGET, sorted(top.items(), key=lambda item: -item[1])[:8]
    assert lines(ROOT / CORE / "loop" / "trainer.py") <= TRAINER_BUDGET
    rooms = {
        str(path.relative_to(ROOT)): lines(path)
        for path in (ROOT / CORE).glob("*/*.py")
        if path.name != "trainer.py" and "plugin_template" not in path.parts
    }
    assert {name: count for name, count in rooms.items() if count > MODULE_BUDGET} == {}
