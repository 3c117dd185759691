"""Generators of the documentation site's reference pages, figure and catalogue tables.

Each module returns markdown (or SVG bytes) from the code itself: the pydantic schemas of the run
config and of every registered plugin's options, the Typer command tree, the registry. The mkdocs
hook `docs/hooks/mkdocs_hooks.py` calls them at build time; tests call them directly.
"""
