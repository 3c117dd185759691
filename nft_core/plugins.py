"""The plugin manager: built-ins and installed `nft` entry points, loaded once, lazily."""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import pluggy

from nft_core import hookspecs

DEFAULT_PLUGINS = (
    "nft_solvers.plugin",
    "nft_rewards.plugin",
    "nft_core.builtin_plugin",
    "nft_shapes.plugin",
    "nft_policies.plugin",
    "nft_trackers.plugin",
)
"""The built-in plugins, by module name: the only place the core names the packages it ships with; they
are imported by the manager and registered exactly as an installed plugin is."""
BUILTIN_PACKAGES = ("nft_core", "nft_solvers", "nft_rewards", "nft_shapes", "nft_policies", "nft_trackers")

pm = pluggy.PluginManager("nft")
pm.add_hookspecs(hookspecs)


@dataclass
class PluginLoadError:
    """A plugin that could not be imported: reported, never fatal."""

    name: str
    distribution: str | None
    error: str


load_errors: list[PluginLoadError] = []
_distributions: dict[str, tuple[str | None, str | None]] = {}
_loaded = False


def _allowed_plugins() -> set[str] | None:
    """`NFT_LOAD_PLUGINS` is an allow-list of entry-point names or distributions (empty string: none)."""
    value = os.environ.get("NFT_LOAD_PLUGINS")
    if value is None:
        return None
    return {item.strip() for item in value.split(",") if item.strip()}


def _load_entry_points() -> None:
    allowed = _allowed_plugins()
    for entry_point in importlib.metadata.entry_points(group="nft"):
        distribution = entry_point.dist.name if entry_point.dist else None
        if allowed is not None and entry_point.name not in allowed and distribution not in allowed:
            continue
        if pm.has_plugin(entry_point.name):
            continue
        try:
            module = entry_point.load()
        except Exception as error:  # a broken plugin must not take the host down
            load_errors.append(
                PluginLoadError(entry_point.name, distribution, f"{type(error).__name__}: {error}")
            )
            continue
        pm.register(module, name=entry_point.name)
        _distributions[entry_point.name] = (
            distribution,
            entry_point.dist.version if entry_point.dist else None,
        )


def load_plugins() -> pluggy.PluginManager:
    """Register the built-in plugins and (unless under pytest or disallowed) installed ones; idempotent."""
    global _loaded
    if _loaded:
        return pm
    _loaded = True
    # Tests never pick up installed third-party plugins unless they opt in with NFT_LOAD_PLUGINS.
    if "pytest" not in sys.modules or os.environ.get("NFT_LOAD_PLUGINS") is not None:
        _load_entry_points()
    for module_name in DEFAULT_PLUGINS:
        if not pm.has_plugin(module_name):
            pm.register(importlib.import_module(module_name), name=module_name)
    pm.check_pending()
    if os.environ.get("NFT_TRACE_PLUGINS"):
        trace_hook_calls()
    return pm


def trace_hook_calls(write: Callable[[str], None] = lambda line: print(line, file=sys.stderr)):
    """Print every hook call, each name it registers and its duration (`NFT_TRACE_PLUGINS=1`).

    Wraps the registered hook implementations (the registry calls them directly, not through
    `pm.hook`); returns the function that unwraps them.
    """
    wrapped = []
    for hook_name, caller in vars(pm.hook).items():
        for impl in caller.get_hookimpls():
            wrapped.append((impl, impl.function))
            impl.function = _traced(impl.function, impl.plugin_name, hook_name, impl.argnames, write)

    def undo() -> None:
        for impl, function in wrapped:
            impl.function = function

    return undo


def _traced(function, plugin_name: str, hook_name: str, argnames, write: Callable[[str], None]):
    kind = {"policies": "policy", "prompt_sources": "prompt source"}.get(
        hook_name.removeprefix("register_"), hook_name.removeprefix("register_").removesuffix("s")
    )

    def announce(register):
        def traced_register(name, *args, **kwargs):
            write(f"nft trace:   {plugin_name} registers {kind} {name!r}")
            return register(name, *args, **kwargs)

        return traced_register

    @functools.wraps(function)
    def traced(*args, **kwargs):
        if "register" in kwargs:
            kwargs["register"] = announce(kwargs["register"])
        elif args and argnames[:1] == ("register",):
            args = (announce(args[0]), *args[1:])
        write(f"nft trace: {plugin_name}.{hook_name}")
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        except Exception as error:
            write(f"nft trace: {plugin_name}.{hook_name} raised {type(error).__name__}: {error}")
            raise
        finally:
            write(
                f"nft trace: {plugin_name}.{hook_name} took {(time.perf_counter() - started) * 1000:.1f} ms"
            )

    return traced


def plugin_distribution(plugin_name: str) -> tuple[str | None, str | None]:
    """The distribution name and version a registered plugin came from."""
    if plugin_name in _distributions:
        return _distributions[plugin_name]
    if plugin_name.split(".")[0] in BUILTIN_PACKAGES:
        try:
            return "diffusion-nft", importlib.metadata.version("diffusion-nft")
        except importlib.metadata.PackageNotFoundError:
            return "diffusion-nft", None
    return None, None
