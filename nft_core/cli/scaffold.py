"""`nft plugin new NAME`: a plugin package copied from the shipped template, its tokens replaced."""

from __future__ import annotations

import re
from pathlib import Path

from nft_core.errors import UserError
from nft_core.io import check_output_folder
from nft_core.lookup import did_you_mean

__all__ = ["TEMPLATE_DIR", "TEMPLATE_TOKENS", "scaffold_plugin"]

TEMPLATE_DIR = Path(__file__).resolve().parent / "plugin_template"
"""The plugin template, shipped in the package (`plugins/nft-plugin-template` in a checkout links to it):
one folder per kind, each a working plugin named by the tokens."""
TEMPLATE_TOKENS = ("nft-plugin-template", "nft_plugin_template", "PluginTemplate", "plugin-template")
"""Distribution, module, class prefix and registered name of the template; replaced in that order."""
SKIPPED_PARTS = frozenset({"__pycache__", "build", "dist"})
PLUGIN_NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
RESERVED_MODULES = frozenset({"nft_core", "nft_rewards", "nft_solvers", "nft_policies", "nft_shapes"})
"""The packages of this distribution: a plugin named `core` (module `nft_core`) would replace one."""


def scaffold_plugin(name: str, kind: str, out: Path, template: Path = TEMPLATE_DIR) -> Path:
    """Copy the template of `kind` to `out/<distribution>`, replacing its tokens; return the new folder.

    `name` is the distribution (`nft-colorfulness`) or the registered name (`colorfulness`): the
    distribution gets an `nft-` prefix, the module is the distribution with underscores, the
    registered name drops the prefix, and the class prefix is its CamelCase (`Colorfulness`).
    """
    if not PLUGIN_NAME.match(name) or name == "nft":
        raise UserError(
            f"plugin name {name!r}: use lowercase letters, digits and single hyphens, e.g. nft-sharpness"
        )
    registered = name.removeprefix("nft-")
    distribution = f"nft-{registered}"
    if distribution.replace("-", "_") in RESERVED_MODULES:
        raise UserError(
            f"plugin name {name!r}: its module {distribution.replace('-', '_')} would shadow the package of "
            "that name that diffusion-nft ships; choose another name"
        )
    values = (distribution, distribution.replace("-", "_"), registered.title().replace("-", ""), registered)
    source = template / kind
    if not source.is_dir():
        kinds = sorted(p.name for p in template.iterdir() if p.is_dir()) if template.is_dir() else []
        raise UserError(
            f"--kind {kind!r}: no template at {source}; kinds: {', '.join(kinds) or 'none (pass --template)'}"
            + did_you_mean(kind, kinds)
        )
    target = out / distribution
    if target.exists():
        raise UserError(f"{target} already exists; choose another --out or name")
    check_output_folder(target)  # --out a file, or not writable: before anything is written

    def substitute(text: str) -> str:
        for token, value in zip(TEMPLATE_TOKENS, values, strict=True):
            text = text.replace(token, value)
        return text

    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        # caches and build leftovers of a template that was itself installed or linted
        skipped = any(part.startswith(".") or part in SKIPPED_PARTS for part in relative.parts)
        if path.is_dir() or skipped or path.suffix == ".pyc" or ".egg-info" in str(relative):
            continue
        destination = target / substitute(str(relative))
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_text(substitute(path.read_text(encoding="utf-8")), encoding="utf-8")
    return target
