"""Named factories registered through the `nft` hooks, and their creation with validated options."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from nft_core.errors import ConfigError, UserError
from nft_core.lookup import lookup
from nft_core.options import check_finite, explain, validate_options
from nft_core.plugins import load_plugins, plugin_distribution

KINDS = {
    "rewards": "register_rewards",
    "solvers": "register_solvers",
    "policies": "register_policies",
    "objectives": "register_objectives",
    "monitors": "register_monitors",
    "trackers": "register_trackers",
    "levers": "register_levers",
    "prompt_sources": "register_prompt_sources",
}
DEPRECATED_HOOKS = {"register_loggers": "register_trackers"}
"""Old hook names still honoured (with a DeprecationWarning) -> the name that replaced them."""
SINGULAR = {
    "rewards": "reward",
    "solvers": "solver",
    "policies": "policy",
    "objectives": "objective",
    "monitors": "monitor",
    "trackers": "tracker",
    "levers": "lever",
    "prompt_sources": "prompt source",
}
"""What one registration of each kind is called in messages (`unknown policy 'sd33'`)."""


@dataclass(frozen=True)
class Registration:
    """One registered name: its factory, the pydantic model of its options, and the plugin that gave it."""

    kind: str
    name: str
    factory: Callable[..., Any]
    options: type[BaseModel] | None
    description: str
    plugin: str


_cache: dict[str, dict[str, Registration]] = {}


def registrations(kind: str) -> dict[str, Registration]:
    """All registrations of one kind (`rewards`, `solvers`, `policies`, `objectives`, `monitors`,
    `trackers`, `levers`, `prompt_sources`)."""
    if kind in _cache:
        return _cache[kind]
    manager = load_plugins()
    found: dict[str, Registration] = {}
    impls = list(reversed(getattr(manager.hook, KINDS[kind]).get_hookimpls()))
    for old_name, new_name in DEPRECATED_HOOKS.items():
        if KINDS[kind] == new_name:
            for impl in reversed(getattr(manager.hook, old_name).get_hookimpls()):
                warnings.warn(
                    f"plugin {impl.plugin_name!r} implements {old_name}, the old name of {new_name}; "
                    f"rename it (the old name goes in a later release)",
                    DeprecationWarning,
                    stacklevel=2,
                )
                impls.append(impl)
    for impl in impls:  # registration order: first registered first

        def register(
            name: str,
            factory: Callable[..., Any],
            options: type[BaseModel] | None = None,
            description: str = "",
            _plugin: str = impl.plugin_name,
        ) -> None:
            if name in found:
                raise UserError(
                    f"{SINGULAR[kind]} {name!r} is registered twice, by "
                    f"{_describe(found[name].plugin)} and by {_describe(_plugin)}; uninstall one, or "
                    "choose which plugins load with NFT_LOAD_PLUGINS"
                )
            doc = description or (factory.__doc__ or "").strip().split("\n")[0]
            found[name] = Registration(kind, name, factory, options, doc, _plugin)

        impl.function(register=register)
    _cache[kind] = found
    return found


def _describe(plugin_name: str) -> str:
    distribution, version = plugin_distribution(plugin_name)
    if distribution is None:
        return f"plugin {plugin_name!r}"
    return f"plugin {plugin_name!r} ({distribution}{' ' + version if version else ''})"


def clear_cache() -> None:
    """Forget cached registrations (after registering a plugin at run time, e.g. in tests)."""
    _cache.clear()


def get(kind: str, name: str, path: str) -> Registration:
    """Look up a registered name; an unknown one is a ConfigError that lists what is available and,
    for a near miss (a typo), suggests the closest name."""
    available = registrations(kind)
    return lookup(available, name, SINGULAR[kind], path, ConfigError, sorted(available))


def check_options(kind: str, name: str, options: dict[str, Any], path: str, toml: bool = False) -> None:
    """Validate a plugin's option table with the model it registered (no object is built; `nft validate`).

    `toml`: the options come from a TOML file, so their types are checked strictly (see
    `nft_core.options.validate_options`)."""
    registration = get(kind, name, path)
    if registration.options is not None:
        validate_options(registration.options, options, path, toml=toml)


def create(kind: str, name: str, options: dict[str, Any] | None = None, path: str = "") -> Any:
    """Build a registered object; the plugin's factory validates its options, once.

    A pydantic `ValidationError` from the factory becomes one ConfigError line at `path` (the TOML
    table of the options, e.g. `reward[0].options`).
    """
    path = path or kind
    registration = get(kind, name, path)
    check_finite(options or {}, path)
    try:
        return registration.factory(**(options or {}))
    except ValidationError as error:
        raise ConfigError(explain(error, registration.options, path)) from None
